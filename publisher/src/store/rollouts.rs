//! Rollouts as stored: one JSON [`RolloutRecord`] per namespace/environment at
//! `<namespace>.<env>._meta.rollout` in the config bucket (the last one started there), every
//! write a compare-and-set on its KV revision, so two validators cannot both take one step.

use async_nats::jetstream::kv;
use mycosynth_subscriber::kv_scan::scan;
use mycosynth_subscriber::wire::{
    rollout_key, rollouts_filter, Environment, Namespace, RolloutRecord, CONFIG_BUCKET,
};

use super::buckets::Store;
use super::error::StoreError;
use super::records::{parse, to_json};

/// A stored rollout and the KV revision it was read at (None: no record yet).
pub type StoredRollout = (RolloutRecord, u64);

impl Store {
    /// The rollout record of `ns`/`env`, if one was ever written.
    pub async fn rollout(
        &self,
        ns: &Namespace,
        env: &Environment,
    ) -> Result<Option<StoredRollout>, StoreError> {
        let key = rollout_key(ns, env);
        let entry = tokio::time::timeout(self.read_timeout, self.config.entry(&key))
            .await
            .map_err(|_| StoreError::Unavailable(format!("reading {key} timed out")))?
            .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?;
        match entry.filter(|e| e.operation == kv::Operation::Put) {
            Some(entry) => Ok(Some((parse(&key, &entry.value)?, entry.revision))),
            None => Ok(None),
        }
    }

    /// Writes `record` over the one read at `revision` (None: there was none); `Conflict` when
    /// it moved since. Returns the new revision.
    pub async fn put_rollout(
        &self,
        ns: &Namespace,
        env: &Environment,
        record: &RolloutRecord,
        revision: Option<u64>,
    ) -> Result<u64, StoreError> {
        let key = rollout_key(ns, env);
        let bytes = to_json(record)?;
        match revision {
            None => self
                .config
                .create(&key, bytes)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => StoreError::Conflict,
                    _ => StoreError::Unavailable(format!("writing {key}: {e}")),
                }),
            Some(revision) => self
                .config
                .update(&key, bytes, revision)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => StoreError::Conflict,
                    _ => StoreError::Unavailable(format!("writing {key}: {e}")),
                }),
        }
    }

    /// Every rollout record, as stored (damaged ones are skipped and logged).
    pub async fn rollouts(&self) -> Result<Vec<StoredRollout>, StoreError> {
        let entries = scan(
            &self.js,
            CONFIG_BUCKET,
            &rollouts_filter(),
            self.read_timeout,
        )
        .await?;
        Ok(entries
            .iter()
            .filter(|e| !e.deleted)
            .filter_map(|e| match parse(&e.key, &e.payload) {
                Ok(record) => Some((record, e.revision)),
                Err(err) => {
                    tracing::warn!(key = %e.key, error = %err, "skipping a damaged rollout record");
                    None
                }
            })
            .collect())
    }
}
