//! Reading and writing one JSON record of a bucket.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use mycosynth_subscriber::wire::{Namespace, SchemaRecord};

use super::error::StoreError;

/// One record by direct get (one round trip, served by any replica); None if the key is absent.
pub(super) async fn get_record<T: serde::de::DeserializeOwned>(
    bucket: &kv::Store,
    key: &str,
    timeout: Duration,
) -> Result<Option<T>, StoreError> {
    let entry = get_bytes(bucket, key, timeout).await?;
    entry.map(|payload| parse(key, &payload)).transpose()
}

/// The stored bytes of `key` in `bucket`, if any.
pub(super) async fn get_bytes(
    bucket: &kv::Store,
    key: &str,
    timeout: Duration,
) -> Result<Option<Bytes>, StoreError> {
    tokio::time::timeout(timeout, bucket.get(key))
        .await
        .map_err(|_| StoreError::Unavailable(format!("reading {key} timed out")))?
        .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))
}

/// A schema record of `ns` from its stored bytes ([`Store::schema_bytes`]).
pub fn parse_schema(ns: &Namespace, bytes: &[u8]) -> Result<SchemaRecord, StoreError> {
    parse(ns.as_str(), bytes)
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(
    key: &str,
    payload: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(payload).map_err(|e| StoreError::Damaged {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<Bytes, StoreError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| StoreError::Refused(e.to_string()))
}
