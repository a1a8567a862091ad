//! Change requests as stored: one JSON [`ProposalRecord`] per proposal under
//! `_proposals.<namespace>.<env>.<short id>` in the config bucket, every change of state a
//! compare-and-set on the record's revision, so two validators (or a client's retries) cannot
//! both take the same step.

use async_nats::jetstream::kv;
use mycosynth_subscriber::kv_scan::scan;
use mycosynth_subscriber::wire::{
    proposal_key, proposals_filter, Environment, Namespace, ProposalId, ProposalRecord,
    CONFIG_BUCKET,
};

use super::buckets::Store;
use super::error::StoreError;
use super::records::{parse, to_json};

/// A stored proposal and the KV revision it was read at (the compare-and-set of its next step).
pub type Stored = (ProposalRecord, u64);

impl Store {
    /// The proposal `id`, if there is one.
    pub async fn proposal(&self, id: &ProposalId) -> Result<Option<Stored>, StoreError> {
        let key = proposal_key(id);
        let entry = tokio::time::timeout(self.read_timeout, self.config.entry(&key))
            .await
            .map_err(|_| StoreError::Unavailable(format!("reading {key} timed out")))?
            .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?;
        match entry.filter(|e| e.operation == kv::Operation::Put) {
            Some(entry) => Ok(Some((parse(&key, &entry.value)?, entry.revision))),
            None => Ok(None),
        }
    }

    /// Stores a new proposal; `Conflict` when its id is taken.
    pub async fn create_proposal(&self, record: &ProposalRecord) -> Result<u64, StoreError> {
        let id = parsed_id(record)?;
        let key = proposal_key(&id);
        let bytes = to_json(record)?;
        let revision =
            self.config
                .create(&key, bytes.clone())
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => StoreError::Conflict,
                    _ => StoreError::Unavailable(format!("writing {key}: {e}")),
                })?;
        self.proposal_watch.record(&key, Some(bytes));
        Ok(revision)
    }

    /// Replaces a proposal read at `revision`; `Conflict` when it moved since.
    pub async fn update_proposal(
        &self,
        record: &ProposalRecord,
        revision: u64,
    ) -> Result<u64, StoreError> {
        let id = parsed_id(record)?;
        let key = proposal_key(&id);
        let bytes = to_json(record)?;
        let revision = self
            .config
            .update(&key, bytes.clone(), revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => StoreError::Conflict,
                _ => StoreError::Unavailable(format!("writing {key}: {e}")),
            })?;
        self.proposal_watch.record(&key, Some(bytes));
        Ok(revision)
    }

    /// Every change request as the watch holds it (bytes; `None` until it has caught up).
    pub fn watched_proposals(&self) -> Option<Vec<(String, bytes::Bytes)>> {
        self.proposal_watch.entries()
    }

    /// Every proposal (`Some`: of one namespace/environment), as stored.
    pub async fn proposals(
        &self,
        at: Option<(&Namespace, &Environment)>,
    ) -> Result<Vec<Stored>, StoreError> {
        let entries = scan(
            &self.js,
            CONFIG_BUCKET,
            &proposals_filter(at),
            self.read_timeout,
        )
        .await?;
        entries
            .iter()
            .filter(|e| !e.deleted)
            .map(|e| Ok((parse(&e.key, &e.payload)?, e.revision)))
            .collect()
    }
}

fn parsed_id(record: &ProposalRecord) -> Result<ProposalId, StoreError> {
    ProposalId::parse(&record.id).map_err(|e| StoreError::Refused(e.to_string()))
}
