//! Sensitive values on the validator's side: each namespace's data key (created on first use in
//! the `mycosynth-keys` bucket), sealing the values of keys its schema marks sensitive before
//! they are committed, opening them where the validator needs clear values (validation against
//! the whole document, rollback, reveal), and keeping them out of diffs and refusal messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_nats::jetstream::{self, kv};
use mycosynth_subscriber::wire::{
    data_key_key, is_sealed, ApiError, DataKey, DataKeyRecord, Environment, ErrorKind, Namespace,
    Violation, KEYS_BUCKET, REDACTED,
};
use serde_json::Value;

use crate::failure::failure;
use crate::store::StoreError;
use crate::validate::{Plan, Schema};

/// The data keys of every namespace.
#[derive(Debug)]
pub struct Vault {
    kv: kv::Store,
    keys: Mutex<HashMap<Namespace, DataKey>>,
}

impl Vault {
    /// Opens the keys bucket, creating it on first use.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Vault, StoreError> {
        let kv = match js.get_key_value(KEYS_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => {
                let created = js
                    .create_key_value(kv::Config {
                        bucket: KEYS_BUCKET.to_owned(),
                        description: "Mycosynth per-namespace data keys of sensitive values".into(),
                        history: 5,
                        num_replicas: replicas.max(1),
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(kv) => kv,
                    // Another validator created it a moment ago.
                    Err(_) => js.get_key_value(KEYS_BUCKET).await.map_err(|e| {
                        StoreError::Unavailable(format!("bucket {KEYS_BUCKET}: {e}"))
                    })?,
                }
            }
        };
        Ok(Vault {
            kv,
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// The data key of `ns`; created (once, by whichever instance is first) when `create`.
    async fn key(&self, ns: &Namespace, create: bool) -> Result<Option<DataKey>, ApiError> {
        if let Some(key) = self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(ns) {
            return Ok(Some(key.clone()));
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            failure(
                ErrorKind::Unavailable,
                format!("data key of {ns} unavailable: {e}"),
            )
        };
        let mut stored = self
            .kv
            .get(data_key_key(ns))
            .await
            .map_err(|e| unavailable(&e))?;
        if stored.is_none() && create {
            let created = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let (_, record) = DataKey::generate(1, &created);
            let bytes = serde_json::to_vec(&record).map_err(|e| unavailable(&e))?;
            match self.kv.create(data_key_key(ns), bytes.into()).await {
                Ok(_) => tracing::info!(namespace = %ns, "created the namespace's data key"),
                // Another validator created it first: use theirs.
                Err(err) => tracing::debug!(namespace = %ns, error = %err, "data key exists"),
            }
            stored = self
                .kv
                .get(data_key_key(ns))
                .await
                .map_err(|e| unavailable(&e))?;
        }
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let record: DataKeyRecord = serde_json::from_slice(&bytes)
            .map_err(|_| failure(ErrorKind::Internal, format!("data key of {ns} is damaged")))?;
        let key = DataKey::from_record(&record)
            .map_err(|e| failure(ErrorKind::Internal, format!("data key of {ns}: {e}")))?;
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.clone(), key.clone());
        Ok(Some(key))
    }

    /// Seals the new values of sensitive keys in `plan` (validated in clear before this) and
    /// redacts them in its diff.
    pub async fn seal_plan(
        &self,
        ns: &Namespace,
        env: &Environment,
        schema: Option<&Schema>,
        plan: &mut Plan,
    ) -> Result<(), ApiError> {
        let Some(sensitive) = schema.map(Schema::sensitive_keys).filter(|k| !k.is_empty()) else {
            return Ok(());
        };
        for entry in plan.diff.iter_mut().filter(|d| sensitive.contains(&d.key)) {
            for side in [&mut entry.old, &mut entry.new] {
                if side.is_some() {
                    *side = Some(Value::String(REDACTED.into()));
                }
            }
        }
        let needs_key = plan
            .changes
            .iter()
            .any(|c| sensitive.contains(&c.key) && c.value.as_ref().is_some_and(|v| !is_sealed(v)));
        if !needs_key {
            return Ok(());
        }
        let Some(key) = self.key(ns, true).await? else {
            return Err(failure(
                ErrorKind::Unavailable,
                format!("no data key for {ns}"),
            ));
        };
        for change in plan
            .changes
            .iter_mut()
            .filter(|c| sensitive.contains(&c.key))
        {
            if let Some(value) = change.value.as_mut().filter(|v| !is_sealed(v)) {
                *value = key.seal(ns.as_str(), env.as_str(), &change.key, value);
            }
        }
        metrics::counter!("mycosynth_validator_sealed_values_total").increment(1);
        Ok(())
    }

    /// Opens every sealed value of a document of `ns`/`env`.
    pub async fn open_document(
        &self,
        ns: &Namespace,
        env: &Environment,
        mut document: BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, Value>, ApiError> {
        if !document.values().any(is_sealed) {
            return Ok(document);
        }
        let key = self.key(ns, false).await?.ok_or_else(|| {
            failure(
                ErrorKind::Internal,
                format!("{ns} has sealed values but no data key"),
            )
        })?;
        for (name, value) in document.iter_mut().filter(|(_, v)| is_sealed(v)) {
            *value = key
                .open(ns.as_str(), env.as_str(), name, value)
                .map_err(|e| {
                    failure(
                        ErrorKind::Internal,
                        format!("sealed value of key {name} in {ns}/{env}: {e}"),
                    )
                })?;
        }
        Ok(document)
    }
}

/// Refusal messages of sensitive keys, without the value (schema messages quote it).
pub fn redact_violations(schema: Option<&Schema>, violations: Vec<Violation>) -> Vec<Violation> {
    let none = std::collections::BTreeSet::new();
    let sensitive = schema.map_or(&none, Schema::sensitive_keys);
    violations
        .into_iter()
        .map(|v| {
            if sensitive.contains(&v.key) {
                Violation {
                    message: format!(
                        "the value of sensitive key {:?} breaks rule {:?} (value not shown)",
                        v.key, v.rule
                    ),
                    ..v
                }
            } else {
                v
            }
        })
        .collect()
}
