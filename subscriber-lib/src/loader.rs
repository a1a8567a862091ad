//! Loads a namespace/environment's state and its schema defaults from KV.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;

use crate::kv_scan::{scan, scan_each, ScanEntry, ScanError};
use crate::snapshot::{schema_defaults, FastMap};
use crate::wire::{
    classify_state_key, state_filter, Environment, HeadRecord, Namespace, SchemaRecord, StateEntry,
    CONFIG_BUCKET, SCHEMA_BUCKET,
};

/// The part of a stored [`ValueRecord`](crate::wire::ValueRecord) a snapshot needs: its value
/// (who set it, when and why are skipped, not built).
#[derive(serde::Deserialize)]
struct Stored {
    value: Value,
}

/// The state read from KV at one change-set boundary.
pub(crate) struct LoadedState {
    pub version: u64,
    pub values: FastMap<Arc<Value>>,
    pub committed_at_us: i64,
    /// The namespace's data key, when sealed values were found.
    pub data_key: Option<crate::wire::DataKey>,
}

/// Reads every value and the head of `ns`/`env`. Records that do not parse are skipped with a
/// warning and counted: a damaged entry must not stop a service from starting.
pub(crate) async fn load_state(
    js: &jetstream::Context,
    ns: &Namespace,
    env: &Environment,
    deadline: Duration,
) -> Result<LoadedState, ScanError> {
    let mut state = LoadedState {
        version: 0,
        values: FastMap::default(),
        committed_at_us: 0,
        data_key: None,
    };
    let mut head = None;
    // Each entry is parsed as it arrives, while the rest are still on their way.
    let parse_entry = |entry: ScanEntry| {
        if entry.deleted {
            return;
        }
        match classify_state_key(ns, env, &entry.key) {
            Some(StateEntry::Value(key)) => {
                match serde_json::from_slice::<Stored>(&entry.payload) {
                    Ok(record) => {
                        state.values.insert(Arc::from(key), Arc::new(record.value));
                    }
                    Err(err) => skip_damaged(&entry.key, &err),
                }
            }
            Some(StateEntry::Head) => match serde_json::from_slice::<HeadRecord>(&entry.payload) {
                Ok(found) => head = Some(found),
                Err(err) => skip_damaged(&entry.key, &err),
            },
            Some(StateEntry::OtherMeta) | None => {}
        }
    };
    match scan_each(
        js,
        CONFIG_BUCKET,
        &state_filter(ns, env),
        deadline,
        parse_entry,
    )
    .await
    {
        // No bucket yet: nothing was ever committed anywhere; version 0, no values.
        Ok(()) | Err(ScanError::NoBucket(_)) => {}
        Err(err) => return Err(err),
    }
    // The head is the commit point; its change set may not be materialised in the value keys yet.
    if let Some(head) = head {
        state.version = head.version;
        state.committed_at_us = head.meta.time_us;
        let values = std::cell::RefCell::new(&mut state.values);
        let rolled = head.roll_forward(
            |key, value| {
                let value = Arc::new(value.clone());
                values.borrow_mut().insert(Arc::from(key), value.clone()) != Some(value)
            },
            |key| values.borrow_mut().remove(key).is_some(),
        );
        if rolled {
            metrics::counter!("mycosynth_subscriber_rolled_forward_total").increment(1);
            tracing::debug!(namespace = %ns, environment = %env, version = head.version, "applied the head's change set to values not yet materialised");
        }
    }
    if state.values.values().any(|v| crate::wire::is_sealed(v)) {
        state.data_key = crate::secrets::load_data_key(js, ns, deadline)
            .await
            .map_err(|message| ScanError::Nats {
                filter: crate::wire::KEYS_BUCKET.to_owned(),
                message,
            })?;
        crate::secrets::open_values(ns, env, state.data_key.as_ref(), &mut state.values);
    }
    Ok(state)
}

fn skip_damaged(key: &str, err: &serde_json::Error) {
    metrics::counter!("mycosynth_subscriber_damaged_records_total").increment(1);
    tracing::warn!(kv_key = key, error = %err, "skipping a KV record that is not valid Mycosynth JSON");
}

/// Reads `ns`'s schema; None when there is none (or it is damaged, which is logged).
pub(crate) async fn load_schema(
    js: &jetstream::Context,
    ns: &Namespace,
    deadline: Duration,
) -> Result<Option<Value>, ScanError> {
    let entries = match scan(js, SCHEMA_BUCKET, ns.as_str(), deadline).await {
        Ok(entries) => entries,
        Err(ScanError::NoBucket(_)) => return Ok(None),
        Err(err) => return Err(err),
    };
    let Some(entry) = entries.into_iter().rfind(|e| !e.deleted) else {
        return Ok(None);
    };
    match serde_json::from_slice::<SchemaRecord>(&entry.payload) {
        Ok(record) => Ok(Some(record.schema)),
        Err(err) => {
            skip_damaged(&entry.key, &err);
            Ok(None)
        }
    }
}

/// The per-key defaults of a schema (none without one).
pub(crate) fn defaults_of(schema: Option<&Value>) -> FastMap<Value> {
    schema.map(schema_defaults).unwrap_or_default()
}
