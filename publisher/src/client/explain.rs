//! Where each key's value comes from: the namespace/environment's own value, one inherited from a
//! parent environment, or the schema's default, resolved the way a subscriber resolves it. Used
//! by `get --explain` and by the console's namespace page.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mycosynth_subscriber::wire::{
    endpoint, ApiError, ErrorKind, GetOutcome, GetRequest, SchemaGetRequest, SchemaRecord,
    ValueRecord,
};
use serde_json::Value;

use super::ApiClient;
use crate::validate::inherit::MAX_CHAIN;

/// Where one key's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Set in the environment itself.
    Own,
    /// Set in a parent environment.
    Inherited,
    /// Not set anywhere: the schema's `default`.
    SchemaDefault,
    /// Not set and no default.
    Unset,
}

impl Source {
    /// The name `--json` and the console show.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Own => "own",
            Source::Inherited => "inherited",
            Source::SchemaDefault => "schema_default",
            Source::Unset => "unset",
        }
    }
}

/// One key resolved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Resolution {
    /// The key.
    pub key: String,
    /// Its effective value.
    pub value: Option<Value>,
    /// Where the value comes from.
    pub source: Source,
    /// The environment that holds the value (own or a parent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The stored record (who set it, when, why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<ValueRecord>,
}

/// An environment and its own values, nearest first.
pub type Chain = Vec<(String, BTreeMap<String, ValueRecord>)>;

/// A namespace/environment read for explaining: its parent chain, its version and its schema.
#[derive(Debug, Clone)]
pub struct Explained {
    /// The environment and its parents with their own values, nearest first.
    pub chain: Chain,
    /// The environment's own version.
    pub version: u64,
    /// The namespace's schema (`None` without one).
    pub schema: Option<Value>,
}

impl Explained {
    /// Reads `namespace`/`env`, its parents and the schema (retrying within `budget`).
    pub async fn read(
        api: &ApiClient,
        namespace: &str,
        env: &str,
        budget: Duration,
    ) -> Result<Explained, ApiError> {
        let mut chain: Chain = Vec::new();
        let mut version = 0;
        let mut at = Some(env.to_owned());
        while let Some(current) = at.take() {
            if chain.iter().any(|(e, _)| *e == current) || chain.len() > MAX_CHAIN {
                break;
            }
            let outcome = live(api, namespace, &current, budget).await?;
            if chain.is_empty() {
                version = outcome.version;
            }
            at = outcome.parent.clone();
            chain.push((current, outcome.values.into_iter().collect()));
        }
        let schema = schema(api, namespace, budget).await?;
        Ok(Explained {
            chain,
            version,
            schema,
        })
    }

    /// The `default` of every property of the schema.
    pub fn defaults(&self) -> BTreeMap<String, Value> {
        properties(self.schema.as_ref())
            .filter_map(|(k, p)| Some((k.clone(), p.get("default")?.clone())))
            .collect()
    }

    /// The schema's property of `key`, if it declares one.
    pub fn property(&self, key: &str) -> Option<&Value> {
        self.schema.as_ref()?.get("properties")?.get(key)
    }

    /// Every key set anywhere on the chain or defaulted by the schema, resolved, sorted.
    pub fn resolve_all(&self) -> Vec<Resolution> {
        let defaults = self.defaults();
        let mut all: BTreeSet<String> = properties(self.schema.as_ref())
            .map(|(k, _)| k.clone())
            .collect();
        for (_, values) in &self.chain {
            all.extend(values.keys().cloned());
        }
        all.iter()
            .map(|k| resolve(&self.chain, &defaults, k))
            .collect()
    }

    /// One key resolved.
    pub fn resolve(&self, key: &str) -> Resolution {
        resolve(&self.chain, &self.defaults(), key)
    }
}

fn properties(schema: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

/// The current values of `namespace`/`env`.
pub async fn live(
    api: &ApiClient,
    namespace: &str,
    env: &str,
    budget: Duration,
) -> Result<GetOutcome, ApiError> {
    let request = GetRequest {
        namespace: namespace.to_owned(),
        environment: env.to_owned(),
        key: None,
    };
    api.call_retrying(endpoint::GET, &request, budget).await
}

/// The namespace's JSON Schema, `None` when it has none.
pub async fn schema(
    api: &ApiClient,
    namespace: &str,
    budget: Duration,
) -> Result<Option<Value>, ApiError> {
    let request = SchemaGetRequest {
        namespace: namespace.to_owned(),
    };
    match api
        .call_retrying::<_, SchemaRecord>(endpoint::SCHEMA_GET, &request, budget)
        .await
    {
        Ok(record) => Ok(Some(record.schema)),
        Err(err) if err.kind == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// `key` resolved over the chain, then the schema defaults.
pub fn resolve(chain: &Chain, defaults: &BTreeMap<String, Value>, key: &str) -> Resolution {
    for (i, (environment, values)) in chain.iter().enumerate() {
        if let Some(record) = values.get(key) {
            return Resolution {
                key: key.to_owned(),
                value: Some(record.value.clone()),
                source: if i == 0 {
                    Source::Own
                } else {
                    Source::Inherited
                },
                environment: Some(environment.clone()),
                record: Some(record.clone()),
            };
        }
    }
    let default = defaults.get(key).cloned();
    Resolution {
        key: key.to_owned(),
        source: if default.is_some() {
            Source::SchemaDefault
        } else {
            Source::Unset
        },
        value: default,
        environment: None,
        record: None,
    }
}
