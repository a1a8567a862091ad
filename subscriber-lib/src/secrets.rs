//! Opening sensitive values on the subscriber's side: the namespace's data key is read from the
//! keys bucket (the service's credentials may read only its own namespace's key), and sealed
//! values are opened when state is loaded and when events are applied, so the snapshot holds
//! clear values and nothing else in the service sees the sealed form.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;

use crate::snapshot::FastMap;
use crate::wire::{
    data_key_key, is_sealed, sealed_key_id, DataKey, DataKeyRecord, Environment, Namespace,
    KEYS_BUCKET,
};

/// Prefix of the event parse error that means "this event needs a data key not loaded yet"; the
/// updater answers it with a resync, which loads the key.
pub(crate) const NEEDS_KEY: &str = "needs data key";

/// Reads the data key of `ns` (None: the namespace has none).
pub(crate) async fn load_data_key(
    js: &jetstream::Context,
    ns: &Namespace,
    deadline: Duration,
) -> Result<Option<DataKey>, String> {
    let read = async {
        let kv = js
            .get_key_value(KEYS_BUCKET)
            .await
            .map_err(|e| format!("bucket {KEYS_BUCKET}: {e}"))?;
        let Some(bytes) = kv
            .get(data_key_key(ns))
            .await
            .map_err(|e| format!("data key of {ns}: {e}"))?
        else {
            return Ok(None);
        };
        let record: DataKeyRecord =
            serde_json::from_slice(&bytes).map_err(|_| format!("data key of {ns} is damaged"))?;
        DataKey::from_record(&record)
            .map(Some)
            .map_err(|e| format!("data key of {ns}: {e}"))
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| format!("reading the data key of {ns} timed out"))?
}

/// Opens every sealed value in `values`; a value that does not open is dropped, logged by key
/// name and counted (never its content).
pub(crate) fn open_values(
    ns: &Namespace,
    env: &Environment,
    key: Option<&DataKey>,
    values: &mut FastMap<Arc<Value>>,
) {
    values.retain(|name, value| {
        if !is_sealed(value) {
            return true;
        }
        match open_one(ns, env, key, name, Value::clone(value)) {
            Ok(clear) => {
                *value = Arc::new(clear);
                true
            }
            Err(reason) => {
                metrics::counter!("mycosynth_subscriber_unopened_values_total").increment(1);
                tracing::warn!(namespace = %ns, environment = %env, key = %name, %reason, "dropping a sensitive value that does not open");
                false
            }
        }
    });
}

/// Opens one value if it is sealed; clear values pass through.
pub(crate) fn open_one(
    ns: &Namespace,
    env: &Environment,
    key: Option<&DataKey>,
    name: &str,
    value: Value,
) -> Result<Value, String> {
    if !is_sealed(&value) {
        return Ok(value);
    }
    let Some(key) = key.filter(|k| Some(k.id()) == sealed_key_id(&value)) else {
        return Err(format!(
            "{NEEDS_KEY} {:?} for key {name}",
            sealed_key_id(&value)
        ));
    };
    key.open(ns.as_str(), env.as_str(), name, &value)
        .map_err(|e| format!("key {name}: {e}"))
}
