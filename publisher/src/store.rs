//! The validator's side of NATS JetStream: creating the buckets, reading state, history and
//! schemas, and committing a change set as one atomic batch. All KV keys and subjects come from
//! the wire contract (`mycosynth_subscriber::wire`).
//!
//! A commit is one JetStream atomic batch (ADR-50) on the config bucket's stream: every changed
//! key, the history record of the new version and, last, the version head, published with a
//! compare-and-set on the head's previous revision. Either all of it is stored or none of it, and
//! two validators racing on one namespace/environment cannot both win: the loser's batch fails
//! as a whole and it reloads and retries.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::committer::{self, Committer, HeadExpected, Message, Receipt, Staged};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use mycosynth_subscriber::kv_scan::{scan, ScanError};
use mycosynth_subscriber::wire::{
    classify_state_key, head_key, heads_filter, history_filter, history_key, kv_stream, kv_subject,
    request_key, state_filter, value_key, ChangeSetRecord, Environment, HeadRecord, KeyChange,
    Namespace, RequestRecord, SchemaRecord, StateEntry, ValueRecord, CONFIG_BUCKET, SCHEMA_BUCKET,
};
use mycosynth_subscriber::wire::{parent_key, ParentRecord};

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The head moved since it was read: another change set was committed first.
    #[error("the namespace/environment changed concurrently")]
    Conflict,
    /// NATS or JetStream did not answer, or answered that it cannot serve now.
    #[error("config store unavailable: {0}")]
    Unavailable(String),
    /// A stored record is not what this build can read.
    #[error("stored record {key} is damaged: {message}")]
    Damaged {
        /// The KV key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Anything else JetStream refused.
    #[error("config store refused the operation: {0}")]
    Refused(String),
}

impl From<ScanError> for StoreError {
    fn from(err: ScanError) -> Self {
        StoreError::Unavailable(err.to_string())
    }
}

/// The state of one namespace/environment as the validator sees it.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Current version (0: nothing committed yet).
    pub version: u64,
    /// KV revision of the head record (0: no head yet); the compare-and-set of the next commit.
    pub head_revision: u64,
    /// The state includes change sets staged but not yet acknowledged: the next commit's head
    /// compare-and-set is on theirs ([`HeadExpected::AfterPrevious`]), not on `head_revision`.
    pub pending: bool,
    /// Current values with their records.
    pub values: BTreeMap<String, ValueRecord>,
}

impl State {
    /// Just the values.
    pub fn documents(&self) -> BTreeMap<String, serde_json::Value> {
        self.values
            .iter()
            .map(|(k, r)| (k.clone(), r.value.clone()))
            .collect()
    }
}

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
    /// The new records of set keys; deleted keys are in `history.changes` with no value.
    pub values: Vec<(String, ValueRecord)>,
    /// The history record of the new version.
    pub history: ChangeSetRecord,
    /// The new head.
    pub head: HeadRecord,
    /// The client's idempotency key: recorded in the same batch, with a compare-and-set that
    /// fails the whole batch if the key was already applied.
    pub request_id: Option<&'a str>,
    /// The change event (subject, bytes), published once the change set is stored, in commit
    /// order.
    pub event: Option<(String, Bytes)>,
}

/// Handle on the buckets.
#[derive(Clone, Debug)]
pub struct Store {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The schema bucket, read by direct get (one round trip) on every change request.
    schemas: kv::Store,
    /// The config bucket, for direct gets of single keys (idempotency records).
    config: kv::Store,
    /// The group-commit task all commits go through.
    committer: Committer,
    read_timeout: Duration,
}

/// Bucket settings chosen at creation.
#[derive(Debug, Clone, Copy)]
pub struct BucketOptions {
    /// Replicas of each bucket's stream (1 on a single server, 3 on a cluster).
    pub replicas: usize,
}

const KV_HISTORY: i64 = 10;
/// How long a commit waits for JetStream's acknowledgement.
const COMMIT_ACK_TIMEOUT: Duration = Duration::from_millis(1500);
/// Largest stored message: a value of up to 1 MiB plus its metadata, or a history record of a
/// change set. The server's `max_payload` must be at least this (see `nats/`).
const MAX_MESSAGE_BYTES: i32 = 8 * 1024 * 1024;

impl Store {
    /// Opens the buckets, creating them on first use with atomic batch publish enabled.
    pub async fn open(
        client: async_nats::Client,
        options: BucketOptions,
    ) -> Result<Store, StoreError> {
        // Short acks: when a stream leader dies mid-commit, answer "unavailable" (the client
        // retries with its idempotency key) instead of holding the namespace's commit lock
        // through a long timeout while a new leader is already elected.
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .ack_timeout(COMMIT_ACK_TIMEOUT)
            .build(client.clone());
        ensure_bucket(
            &js,
            CONFIG_BUCKET,
            "Mycosynth config values, version heads and history",
            true,
            options,
        )
        .await?;
        ensure_bucket(
            &js,
            SCHEMA_BUCKET,
            "Mycosynth namespace JSON Schemas",
            false,
            options,
        )
        .await?;
        let schemas = js
            .get_key_value(SCHEMA_BUCKET)
            .await
            .map_err(|e| StoreError::Unavailable(format!("bucket {SCHEMA_BUCKET}: {e}")))?;
        let config = js
            .get_key_value(CONFIG_BUCKET)
            .await
            .map_err(|e| StoreError::Unavailable(format!("bucket {CONFIG_BUCKET}: {e}")))?;
        let committer = Committer::start(client.clone(), js.clone());
        Ok(Store {
            committer,
            client,
            js,
            schemas,
            config,
            read_timeout: Duration::from_secs(10),
        })
    }

    /// The JetStream context the store uses (the access policy's bucket is opened with it).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The NATS client the store uses (the validator publishes events on it too).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Reads the current state of `ns`/`env` from KV.
    pub async fn load_state(&self, ns: &Namespace, env: &Environment) -> Result<State, StoreError> {
        let entries = scan(
            &self.js,
            CONFIG_BUCKET,
            &state_filter(ns, env),
            self.read_timeout,
        )
        .await?;
        let mut state = State::default();
        for entry in entries.iter().filter(|e| !e.deleted) {
            match classify_state_key(ns, env, &entry.key) {
                Some(StateEntry::Value(key)) => {
                    let record = parse::<ValueRecord>(&entry.key, &entry.payload)?;
                    state.values.insert(key.to_owned(), record);
                }
                Some(StateEntry::Head) => {
                    let head = parse::<HeadRecord>(&entry.key, &entry.payload)?;
                    state.version = head.version;
                    state.head_revision = entry.revision;
                }
                Some(StateEntry::OtherMeta) | None => {}
            }
        }
        Ok(state)
    }

    /// Commits a change set atomically and waits for it. Returns the KV revision of the new head.
    pub async fn commit(&self, commit: &Commit<'_>) -> Result<u64, StoreError> {
        committer::outcome(self.stage(commit).await?).await
    }

    /// Queues a change set for the group committer ([`crate::committer`]): it is written
    /// atomically, possibly in one batch with others ready at the same time. The receipt
    /// resolves to the KV revision of the new head.
    pub async fn stage(&self, commit: &Commit<'_>) -> Result<Receipt, StoreError> {
        let (ns, env) = (commit.namespace, commit.environment);
        let message = |subject: String, payload: Bytes, expected: Option<u64>| Message {
            subject,
            deleted: payload.is_empty(),
            payload,
            expected_last_subject_sequence: expected,
        };
        let mut messages = Vec::with_capacity(commit.history.changes.len() + 3);
        let records: BTreeMap<&str, &ValueRecord> =
            commit.values.iter().map(|(k, r)| (k.as_str(), r)).collect();
        for KeyChange { key, value } in &commit.history.changes {
            let subject = kv_subject(CONFIG_BUCKET, &value_key(ns, env, key));
            match (value, records.get(key.as_str())) {
                (Some(_), Some(record)) => messages.push(message(subject, to_json(record)?, None)),
                (None, _) => messages.push(message(subject, Bytes::new(), None)),
                (Some(_), None) => {
                    return Err(StoreError::Refused(format!("no record for key {key}")))
                }
            }
        }
        messages.push(message(
            kv_subject(CONFIG_BUCKET, &history_key(ns, env, commit.head.version)),
            to_json(&commit.history)?,
            None,
        ));
        // The idempotency record must not exist yet: expected last subject sequence 0.
        if let Some(id) = commit.request_id {
            let record = RequestRecord {
                version: commit.head.version,
                change_id: commit.head.meta.change_id.clone(),
            };
            messages.push(message(
                kv_subject(CONFIG_BUCKET, &request_key(ns, env, id)),
                to_json(&record)?,
                Some(0),
            ));
        }
        // Last, the head, with its compare-and-set.
        self.committer
            .enqueue(Staged {
                messages,
                head: (
                    kv_subject(CONFIG_BUCKET, &head_key(ns, env)),
                    to_json(&commit.head)?,
                ),
                head_expected: commit.head_expected,
                event: commit.event.clone(),
            })
            .await
    }

    /// The record of an applied idempotency key, if that request was applied.
    pub async fn applied_request(
        &self,
        ns: &Namespace,
        env: &Environment,
        request_id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        get_record(
            &self.config,
            &request_key(ns, env, request_id),
            self.read_timeout,
        )
        .await
    }

    /// The version head of `ns`/`env` (None: nothing committed yet).
    pub async fn head(
        &self,
        ns: &Namespace,
        env: &Environment,
    ) -> Result<Option<HeadRecord>, StoreError> {
        get_record(&self.config, &head_key(ns, env), self.read_timeout).await
    }

    /// Every change set of `ns`/`env`, oldest first.
    pub async fn history(
        &self,
        ns: &Namespace,
        env: &Environment,
    ) -> Result<Vec<ChangeSetRecord>, StoreError> {
        let entries = scan(
            &self.js,
            CONFIG_BUCKET,
            &history_filter(ns, env),
            self.read_timeout,
        )
        .await?;
        let mut sets = entries
            .iter()
            .filter(|e| !e.deleted)
            .map(|e| parse::<ChangeSetRecord>(&e.key, &e.payload))
            .collect::<Result<Vec<_>, _>>()?;
        sets.sort_by_key(|s| s.version);
        Ok(sets)
    }

    /// The schema of `ns`, if one was pushed.
    pub async fn schema(&self, ns: &Namespace) -> Result<Option<SchemaRecord>, StoreError> {
        get_record(&self.schemas, ns.as_str(), self.read_timeout).await
    }

    /// Stores the schema of `ns`.
    pub async fn put_schema(
        &self,
        ns: &Namespace,
        record: &SchemaRecord,
    ) -> Result<(), StoreError> {
        let payload = to_json(record)?;
        self.js
            .publish(kv_subject(SCHEMA_BUCKET, ns.as_str()), payload)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// The parent declaration of `ns`/`env`, if any.
    pub async fn parent(
        &self,
        ns: &Namespace,
        env: &Environment,
    ) -> Result<Option<ParentRecord>, StoreError> {
        get_record(&self.config, &parent_key(ns, env), self.read_timeout).await
    }

    /// Stores (Some) or removes (None) the parent declaration of `ns`/`env`.
    pub async fn put_parent(
        &self,
        ns: &Namespace,
        env: &Environment,
        record: Option<&ParentRecord>,
    ) -> Result<(), StoreError> {
        let key = parent_key(ns, env);
        let unavailable = |e: String| StoreError::Unavailable(format!("writing {key}: {e}"));
        match record {
            Some(record) => self
                .config
                .put(&key, to_json(record)?)
                .await
                .map(|_| ())
                .map_err(|e| unavailable(e.to_string())),
            None => self
                .config
                .delete(&key)
                .await
                .map_err(|e| unavailable(e.to_string())),
        }
    }

    /// The environments of `ns` that have a version.
    pub async fn environments(&self, ns: &Namespace) -> Result<Vec<Environment>, StoreError> {
        let entries = scan(
            &self.js,
            CONFIG_BUCKET,
            &heads_filter(ns),
            self.read_timeout,
        )
        .await?;
        Ok(entries
            .iter()
            .filter(|e| !e.deleted)
            .filter_map(|e| {
                e.key
                    .split('.')
                    .nth(1)
                    .and_then(|env| Environment::new(env).ok())
            })
            .collect())
    }
}

/// One record by direct get (one round trip, served by any replica); None if the key is absent.
async fn get_record<T: serde::de::DeserializeOwned>(
    bucket: &kv::Store,
    key: &str,
    timeout: Duration,
) -> Result<Option<T>, StoreError> {
    let entry = tokio::time::timeout(timeout, bucket.get(key))
        .await
        .map_err(|_| StoreError::Unavailable(format!("reading {key} timed out")))?
        .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?;
    entry.map(|payload| parse(key, &payload)).transpose()
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, payload: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(payload).map_err(|e| StoreError::Damaged {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Bytes, StoreError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| StoreError::Refused(e.to_string()))
}

pub(crate) async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    atomic: bool,
    options: BucketOptions,
) -> Result<(), StoreError> {
    let unavailable =
        |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("bucket {bucket}: {e}"));
    let mut stream = match js.get_stream(kv_stream(bucket)).await {
        Ok(stream) => stream,
        Err(_) => {
            let created = js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: description.to_owned(),
                    history: KV_HISTORY,
                    max_value_size: MAX_MESSAGE_BYTES,
                    num_replicas: options.replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await;
            if let Err(err) = created {
                // Another validator may have created it a moment ago; if so, use theirs.
                tracing::debug!(bucket, error = %err, "bucket creation failed; reading it back");
            }
            js.get_stream(kv_stream(bucket))
                .await
                .map_err(|e| unavailable(&e))?
        }
    };
    let info = stream.info().await.map_err(|e| unavailable(&e))?;
    if atomic && !info.config.allow_atomic_publish {
        let mut config = info.config.clone();
        config.allow_atomic_publish = true;
        js.update_stream(config)
            .await
            .map_err(|e| unavailable(&e))?;
        tracing::info!(
            bucket,
            "enabled atomic batch publish on the bucket's stream"
        );
    }
    Ok(())
}
