//! Gather: what a change set is validated with. Before the slot's lock, the namespace's
//! compiled schema and what the environment inherits; under it, the current state (cached
//! between requests, else loaded and completed) and its document in clear.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use mycosynth_subscriber::wire::{Environment, Namespace};
use serde_json::Value;

use crate::failure::{invalid, Failure};
use crate::store::{parse_schema, State, StoreError};
use crate::validate::Schema;
use crate::validator::instance::Validator;

/// What a change set is validated with, besides the state it applies to.
pub struct Inputs {
    /// The namespace's schema, compiled.
    pub schema: Option<Arc<Schema>>,
    /// What the environment inherits from its parents (empty without parents).
    pub inherited: BTreeMap<String, Value>,
}

impl Validator {
    /// The schema and the inherited document of `ns`/`env`, read together.
    pub(super) async fn inputs(
        &self,
        ns: &Namespace,
        env: &Environment,
    ) -> Result<Inputs, Failure> {
        let (schema, inherited) = tokio::join!(self.schema(ns), self.inherited(ns, env));
        Ok(Inputs {
            schema: schema?,
            inherited: inherited?,
        })
    }

    /// The compiled schema of `ns`. Read on every change so that all validator instances use the
    /// schema just pushed (from the watched copy in memory); parsed and compiled only when the
    /// stored record differs from the cached one's (a comparison of bytes: parsing a large
    /// schema on every change costs more than the change).
    async fn schema(&self, ns: &Namespace) -> Result<Option<Arc<Schema>>, Failure> {
        let Some(bytes) = self.store.schema_bytes(ns).await? else {
            return Ok(None);
        };
        if let Some((known, compiled)) = self
            .schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns)
        {
            if *known == bytes {
                return Ok(Some(Arc::clone(compiled)));
            }
        }
        let record = parse_schema(ns, &bytes)?;
        let compiled = Arc::new(Schema::compile(record.schema).map_err(|v| invalid(vec![v]))?);
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.clone(), (bytes, Arc::clone(&compiled)));
        Ok(Some(compiled))
    }

    /// What `env` inherits: its parents' values, nearest parent winning, sensitive values opened
    /// (each parent's are sealed for that parent's environment).
    pub(crate) async fn inherited(
        &self,
        ns: &Namespace,
        env: &Environment,
    ) -> Result<BTreeMap<String, Value>, Failure> {
        let mut document = BTreeMap::new();
        let chain = self.store.parent_chain(ns, env).await?;
        for parent in chain.iter().rev() {
            let state = self.store.load_state(ns, parent).await?;
            document.extend(
                self.vault
                    .open_document(ns, parent, state.documents())
                    .await?,
            );
        }
        Ok(document)
    }

    /// The state to validate against: the cached one, else loaded from KV and completed (the
    /// writer before may have died between its head and its values). `None`: the head moved
    /// while it was read; read again. `fresh` turns true when it comes from KV.
    pub(super) async fn current_state(
        &self,
        ns: &Namespace,
        env: &Environment,
        cached: &mut Option<State>,
        fresh: &mut bool,
    ) -> Result<Option<State>, Failure> {
        if let Some(state) = cached.take() {
            return Ok(Some(state));
        }
        *fresh = true;
        let mut state = self.store.load_state(ns, env).await?;
        match self.store.complete(ns, env, &mut state).await {
            Ok(()) => Ok(Some(state)),
            Err(StoreError::Conflict) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// The document of `state` in clear, with the schema it is known to conform to: the one the
    /// last change set left (then a change set costs what it touches), else a copy of the whole
    /// namespace (after a load, a refusal, a dry run, a lost race, or a change set that carried
    /// a value already sealed).
    pub(super) async fn document(
        &self,
        ns: &Namespace,
        env: &Environment,
        state: &mut State,
    ) -> Result<(BTreeMap<String, Value>, Option<Weak<Schema>>), Failure> {
        if let Some(kept) = state.document.take() {
            return Ok((kept.values, kept.conforms_to));
        }
        metrics::counter!("mycosynth_validator_document_builds_total").increment(1);
        let clear = self.vault.open_document(ns, env, state.documents()).await?;
        Ok((clear, None))
    }
}
