//! The validator's side of NATS JetStream: creating the buckets, reading state, history and
//! schemas, and staging change sets for the committer. All KV keys and subjects come from the
//! wire contract (`mycosynth_subscriber::wire`).
//!
//! The commit point of a change set is its version head, written with a compare-and-set on the
//! head's previous revision and carrying the whole change set: two validators racing on one
//! namespace/environment cannot both win. The value keys, the history record and the idempotency
//! record of that version are its materialisation: written with the head (one atomic batch) or
//! right after it, conditional on the head still being that version. Readers roll a head's
//! change set forward over whatever of it is not materialised yet, and a writer completes it
//! ([`Store::complete`]) before committing the next version, so at most the newest version is
//! ever incomplete. See [`crate::committer`] for when each way is used.

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
use mycosynth_subscriber::wire::{parent_key, parents_filter, ParentRecord};

use crate::watched::Watched;

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
    /// The idempotency key and change id of the change set that made `version`, if it had a key:
    /// a retry of it is answered from here even before its idempotency record is written.
    pub last_request: Option<(String, String)>,
    /// The head's change set was not (completely) materialised when this state was read: `values`
    /// include it (rolled forward), and [`Store::complete`] must write it before the next commit.
    pub incomplete: Option<Box<HeadRecord>>,
    /// `values` as the next change set is validated against them, left by the commit path
    /// after its last change set, so that a change set costs what it touches rather than a copy
    /// of the namespace. `None` when not known (it is then built from `values`); whatever
    /// changes `values` other than the commit path clears it.
    pub document: Option<KeptDocument>,
}

/// The opened values (sealed values in the clear) of a [`State`], with the schema they are
/// known to conform to.
#[derive(Debug, Clone)]
pub struct KeptDocument {
    /// Each key's value.
    pub values: BTreeMap<String, serde_json::Value>,
    /// The schema `values` were checked against and conform to, if any (only its identity
    /// matters, so it is held weakly): the next change set is then checked on the keys it
    /// changes ([`crate::validate::plan_on`]).
    pub conforms_to: Option<std::sync::Weak<crate::schema::Schema>>,
}

impl State {
    /// Moves this state to `head` (stored at `revision`), applying the head's change set to
    /// the values (`HeadRecord::roll_forward`). Returns whether that changed any value, i.e.
    /// whether the values read were missing part of the head's change set.
    pub fn follow(&mut self, head: &HeadRecord, revision: u64) -> bool {
        self.document = None;
        self.version = head.version;
        self.head_revision = revision;
        self.pending = false;
        self.last_request = head
            .meta
            .request_id
            .clone()
            .map(|id| (id, head.meta.change_id.clone()));
        let values = std::cell::RefCell::new(&mut self.values);
        head.roll_forward(
            |key, value| {
                let record = head.value_record(value.clone());
                let old = values.borrow_mut().insert(key.to_owned(), record.clone());
                old.as_ref() != Some(&record)
            },
            |key| values.borrow_mut().remove(key).is_some(),
        )
    }

    /// Just the values, as stored (sealed values sealed): a copy of the whole namespace.
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
    /// Every schema, kept by a watch (read on every change request).
    schema_watch: Watched,
    /// Every parent declaration, kept by a watch (read on every change request).
    parent_watch: Watched,
    read_timeout: Duration,
}

/// Bucket settings chosen at creation.
#[derive(Debug, Clone, Copy)]
pub struct BucketOptions {
    /// Replicas of each bucket's stream (1 on a single server, 3 on a cluster).
    pub replicas: usize,
}

pub(crate) const KV_HISTORY: i64 = 10;
/// How long a commit waits for JetStream's acknowledgement.
const COMMIT_ACK_TIMEOUT: Duration = Duration::from_millis(1500);
/// Largest stored message: a value of up to 1 MiB plus its metadata, or a history record of a
/// change set. The server's `max_payload` must be at least this (see `nats/`).
pub(crate) const MAX_MESSAGE_BYTES: i32 = 8 * 1024 * 1024;

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
        let config_replicas = ensure_bucket(
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
        let committer = Committer::start(client.clone(), js.clone(), config_replicas > 1);
        Ok(Store {
            schema_watch: Watched::start(js.clone(), SCHEMA_BUCKET, ">"),
            parent_watch: Watched::start(js.clone(), CONFIG_BUCKET, &parents_filter()),
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
        let mut head = None;
        for entry in entries.iter().filter(|e| !e.deleted) {
            match classify_state_key(ns, env, &entry.key) {
                Some(StateEntry::Value(key)) => {
                    let record = parse::<ValueRecord>(&entry.key, &entry.payload)?;
                    state.values.insert(key.to_owned(), record);
                }
                Some(StateEntry::Head) => {
                    head = Some((
                        parse::<HeadRecord>(&entry.key, &entry.payload)?,
                        entry.revision,
                    ));
                }
                Some(StateEntry::OtherMeta) | None => {}
            }
        }
        // The head is the commit point: apply its change set to values not yet materialised.
        if let Some((head, revision)) = head {
            if state.follow(&head, revision) {
                state.incomplete = Some(Box::new(head));
            }
        }
        Ok(state)
    }

    /// Brings `state` (complete at its version, nothing in flight) up to the current head when
    /// the head is exactly one version ahead and carries its change set, which is the usual case
    /// after losing a race to another validator: one direct get instead of a full reload. The
    /// head's materialisation is completed first if its last key is not written yet (the other
    /// validator may have died; if it is still writing, the same records are written twice).
    /// `None` when the state cannot be caught up this way (reload it).
    pub async fn catch_up(
        &self,
        ns: &Namespace,
        env: &Environment,
        mut state: State,
    ) -> Result<Option<State>, StoreError> {
        let key = head_key(ns, env);
        let entry = tokio::time::timeout(self.read_timeout, self.config.entry(&key))
            .await
            .map_err(|_| StoreError::Unavailable(format!("reading {key} timed out")))?
            .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let head = parse::<HeadRecord>(&key, &entry.value)?;
        let Some(last) = head.changes.as_ref().and_then(|c| c.last()).cloned() else {
            return Ok(None);
        };
        if head.version != state.version + 1 {
            return Ok(None);
        }
        state.follow(&head, entry.revision);
        let written = get_record::<ValueRecord>(
            &self.config,
            &value_key(ns, env, &last.key),
            self.read_timeout,
        )
        .await?;
        let complete = match (&last.value, written) {
            (Some(_), Some(record)) => record.meta.change_id == head.meta.change_id,
            (None, None) => true,
            _ => false,
        };
        if !complete {
            state.incomplete = Some(Box::new(head));
            match self.complete(ns, env, &mut state).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => return Ok(None),
                Err(err) => return Err(err),
            }
        }
        metrics::counter!("mycosynth_validator_catch_ups_total").increment(1);
        Ok(Some(state))
    }

    /// Makes sure the change set of `state`'s head is materialised (values, history record,
    /// idempotency record) before a change set is committed on top of it: the writer before us
    /// may have died between its commit and its materialisation. Cheap when nothing is missing
    /// (one direct get of the history record). `Conflict` when the head moved meanwhile.
    pub async fn complete(
        &self,
        ns: &Namespace,
        env: &Environment,
        state: &mut State,
    ) -> Result<(), StoreError> {
        let head = match state.incomplete.take() {
            Some(head) => *head,
            None if state.version == 0 => return Ok(()),
            None => {
                let history = history_key(ns, env, state.version);
                let Some(head) = self.head(ns, env).await? else {
                    return Ok(());
                };
                if head.changes.is_none()
                    || head.version != state.version
                    || get_record::<ChangeSetRecord>(&self.config, &history, self.read_timeout)
                        .await?
                        .is_some()
                {
                    return Ok(());
                }
                head
            }
        };
        metrics::counter!("mycosynth_validator_materialisations_completed_total").increment(1);
        tracing::info!(namespace = %ns, environment = %env, version = head.version, "completing the materialisation of a committed change set");
        let messages = materialisation(ns, env, &head, None)?;
        committer::materialise(
            &self.client,
            &self.js,
            &kv_subject(CONFIG_BUCKET, &head_key(ns, env)),
            state.head_revision,
            &messages,
            self.committer.replicated(),
        )
        .await
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
        // The newest version's record may not be materialised yet; its head carries it.
        let newest = sets.iter().map(|s| s.version).max().unwrap_or(0);
        if let Some(set) = self
            .head(ns, env)
            .await?
            .filter(|head| head.version > newest)
            .and_then(|head| head.change_set(ns.as_str(), env.as_str()))
        {
            sets.push(set);
        }
        sets.sort_by_key(|s| s.version);
        Ok(sets)
    }

    /// The schema of `ns`, if one was pushed.
    pub async fn schema(&self, ns: &Namespace) -> Result<Option<SchemaRecord>, StoreError> {
        let bytes = self.schema_bytes(ns).await?;
        bytes.map(|bytes| parse(ns.as_str(), &bytes)).transpose()
    }

    /// The stored schema record of `ns` as it is stored, unparsed (see [`parse_schema`]): what
    /// the validator compares with the record its compiled schema came from, on every change.
    pub async fn schema_bytes(&self, ns: &Namespace) -> Result<Option<Bytes>, StoreError> {
        match self.schema_watch.get(ns.as_str()) {
            Some(known) => Ok(known),
            None => get_bytes(&self.schemas, ns.as_str(), self.read_timeout).await,
        }
    }

    /// Stores the schema of `ns`; returns the stored bytes.
    pub async fn put_schema(
        &self,
        ns: &Namespace,
        record: &SchemaRecord,
    ) -> Result<Bytes, StoreError> {
        let payload = to_json(record)?;
        self.js
            .publish(kv_subject(SCHEMA_BUCKET, ns.as_str()), payload.clone())
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        self.schema_watch.record(ns.as_str(), Some(payload.clone()));
        Ok(payload)
    }

    /// The parent declaration of `ns`/`env`, if any.
    pub async fn parent(
        &self,
        ns: &Namespace,
        env: &Environment,
    ) -> Result<Option<ParentRecord>, StoreError> {
        let key = parent_key(ns, env);
        match self.parent_watch.get(&key) {
            Some(known) => known.map(|bytes| parse(&key, &bytes)).transpose(),
            None => get_record(&self.config, &key, self.read_timeout).await,
        }
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
        let payload = record.map(to_json).transpose()?;
        match &payload {
            Some(payload) => self
                .config
                .put(&key, payload.clone())
                .await
                .map(|_| ())
                .map_err(|e| unavailable(e.to_string()))?,
            None => self
                .config
                .delete(&key)
                .await
                .map_err(|e| unavailable(e.to_string()))?,
        }
        self.parent_watch.record(&key, payload);
        Ok(())
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
    let entry = get_bytes(bucket, key, timeout).await?;
    entry.map(|payload| parse(key, &payload)).transpose()
}

/// The stored bytes of `key` in `bucket`, if any.
async fn get_bytes(
    bucket: &kv::Store,
    key: &str,
    timeout: Duration,
) -> Result<Option<Bytes>, StoreError> {
    tokio::time::timeout(timeout, bucket.get(key))
        .await
        .map_err(|_| StoreError::Unavailable(format!("reading {key} timed out")))?
        .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))
}

/// What a committed head's change set writes besides the head, in this order: the history record,
/// the idempotency record, then every changed key. Values come last, so a reader that finds them
/// all written knows the records before them are too. `new_request`: the idempotency key of a
/// change set not committed yet (its record must not exist: expected sequence 0, which fails a
/// batch that retries an applied request); completing a committed head passes None and writes
/// the head's own key unconditionally.
fn materialisation(
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

/// A schema record of `ns` from its stored bytes ([`Store::schema_bytes`]).
pub fn parse_schema(ns: &Namespace, bytes: &[u8]) -> Result<SchemaRecord, StoreError> {
    parse(ns.as_str(), bytes)
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
) -> Result<usize, StoreError> {
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
    Ok(info.config.num_replicas)
}
