//! What one change set writes, and staging it for the group committer.

use bytes::Bytes;
use mycosynth_subscriber::wire::{
    head_key, history_key, kv_subject, request_key, value_key, Environment, HeadRecord, KeyChange,
    Namespace, RequestRecord, CONFIG_BUCKET,
};

use super::buckets::Store;
use super::committer::{self, HeadExpected, Message, Receipt, Staged};
use super::error::StoreError;
use super::records::to_json;

/// What one commit writes.
#[derive(Debug)]
pub struct Commit<'a> {
    /// Namespace.
    pub namespace: &'a Namespace,
    /// Environment.
    pub environment: &'a Environment,
    /// What the head must be for the commit to succeed: the revision the change set was
    /// validated against, or the head of the previous change set still in flight.
    pub head_expected: HeadExpected,
    /// The new head, carrying the change set (`changes`): value records and the history record
    /// are derived from it.
    pub head: HeadRecord,
    /// The client's idempotency key: recorded with the commit; a retry of an applied key never
    /// commits twice.
    pub request_id: Option<&'a str>,
    /// The change event (subject, bytes), published once the change set is stored, in commit
    /// order.
    pub event: Option<(String, Bytes)>,
}

impl Store {
    /// Commits a change set atomically and waits for it. Returns the KV revision of the new head.
    pub async fn commit(&self, commit: &Commit<'_>) -> Result<u64, StoreError> {
        committer::outcome(self.stage(commit).await?).await
    }

    /// Queues a change set for the group committer ([`super::committer`]): it is written
    /// atomically, possibly in one batch with others ready at the same time. The receipt
    /// resolves to the KV revision of the new head.
    pub async fn stage(&self, commit: &Commit<'_>) -> Result<Receipt, StoreError> {
        let (ns, env) = (commit.namespace, commit.environment);
        if commit.head.changes.is_none() {
            return Err(StoreError::Refused("a head without its change set".into()));
        }
        let messages = materialisation(ns, env, &commit.head, commit.request_id)?;
        self.committer
            .enqueue(Staged {
                messages,
                head: (
                    kv_subject(CONFIG_BUCKET, &head_key(ns, env)),
                    to_json(&commit.head)?,
                ),
                head_expected: commit.head_expected,
                event: commit.event.clone(),
                dedup_id: commit.request_id.map(|id| request_key(ns, env, id)),
            })
            .await
    }
}

/// What a committed head's change set writes besides the head, in this order: the history record,
/// the idempotency record, then every changed key. Values come last, so a reader that finds them
/// all written knows the records before them are too. `new_request`: the idempotency key of a
/// change set not committed yet (its record must not exist: expected sequence 0, which fails a
/// batch that retries an applied request); completing a committed head passes None and writes
/// the head's own key unconditionally.
pub(super) fn materialisation(
    ns: &Namespace,
    env: &Environment,
    head: &HeadRecord,
    new_request: Option<&str>,
) -> Result<Vec<Message>, StoreError> {
    let message = |key: String, payload: Bytes, expected: Option<u64>| Message {
        subject: kv_subject(CONFIG_BUCKET, &key),
        deleted: payload.is_empty(),
        payload,
        expected_last_subject_sequence: expected,
    };
    let history = head
        .change_set(ns.as_str(), env.as_str())
        .ok_or_else(|| StoreError::Refused("a head without its change set".into()))?;
    let mut messages = Vec::with_capacity(history.changes.len() + 2);
    messages.push(message(
        history_key(ns, env, head.version),
        to_json(&history)?,
        None,
    ));
    let request = new_request.or(head.meta.request_id.as_deref());
    if let Some(id) = request {
        let record = RequestRecord {
            version: head.version,
            change_id: head.meta.change_id.clone(),
        };
        let expected = new_request.map(|_| 0);
        messages.push(message(
            request_key(ns, env, id),
            to_json(&record)?,
            expected,
        ));
    }
    for KeyChange { key, value } in &history.changes {
        let payload = match value {
            Some(value) => to_json(&head.value_record(value.clone()))?,
            None => Bytes::new(),
        };
        messages.push(message(value_key(ns, env, key), payload, None));
    }
    Ok(messages)
}

/// The records that materialise `head`'s version, as (KV key, bytes; `None` for a deletion):
/// exactly what the committer writes after the head. A backup that finds a head committed but
/// not materialised completes it with these.
pub fn materialised_records(
    ns: &Namespace,
    env: &Environment,
    head: &HeadRecord,
) -> Result<Vec<(String, Option<Bytes>)>, StoreError> {
    let prefix = kv_subject(CONFIG_BUCKET, "");
    Ok(materialisation(ns, env, head, None)?
        .into_iter()
        .map(|m| {
            let key = m
                .subject
                .strip_prefix(&prefix)
                .unwrap_or(&m.subject)
                .to_owned();
            (key, (!m.deleted).then_some(m.payload))
        })
        .collect())
}
