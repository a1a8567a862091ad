//! [`Store`], the handle on the buckets: creating them on first use with the settings every
//! validator instance agrees on, and the reads and writes of single records.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use mycosynth_subscriber::kv_scan::scan;
use mycosynth_subscriber::wire::{
    all_heads_filter, head_key, heads_filter, history_filter, history_key, kv_stream, kv_subject,
    parent_key, parents_filter, proposals_filter, request_key, ChangeSetRecord, Environment,
    HeadRecord, Namespace, ParentRecord, RequestRecord, SchemaRecord, CONFIG_BUCKET, SCHEMA_BUCKET,
};

use super::committer::Committer;
use super::error::StoreError;
use super::records::{get_bytes, get_record, parse, to_json};
use super::watched::Watched;
use crate::validate::inherit::MAX_CHAIN;

/// Handle on the buckets.
#[derive(Clone, Debug)]
pub struct Store {
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    /// The schema bucket, read by direct get (one round trip) on every change request.
    schemas: kv::Store,
    /// The config bucket, for direct gets of single keys (idempotency records).
    pub(super) config: kv::Store,
    /// The group-commit task all commits go through.
    pub(super) committer: Committer,
    /// Every schema, kept by a watch (read on every change request).
    schema_watch: Watched,
    /// Every change request, kept by a watch (the scheduler reads it every tick).
    pub(super) proposal_watch: Watched,
    /// Every parent declaration, kept by a watch (read on every change request).
    parent_watch: Watched,
    pub(super) read_timeout: Duration,
}

/// Bucket settings chosen at creation.
#[derive(Debug, Clone, Copy)]
pub struct BucketOptions {
    /// Replicas of each bucket's stream (1 on a single server, 3 on a cluster).
    pub replicas: usize,
}

/// KV revisions kept per key (versions and rollback come from the history records, not these).
pub const KV_HISTORY: i64 = 10;
/// Largest stored message: a value of up to 1 MiB plus its metadata, or a history record of a
/// change set. The server's `max_payload` must be at least this (see `nats/`).
pub const MAX_MESSAGE_BYTES: i32 = 8 * 1024 * 1024;

/// Opens `bucket`, creating it when missing (`atomic`: with atomic batch publish enabled on its
/// stream). Returns its stream's replica count.
pub async fn ensure_bucket(
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

/// How long a commit waits for JetStream's acknowledgement.
const COMMIT_ACK_TIMEOUT: Duration = Duration::from_millis(1500);

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
            proposal_watch: Watched::start(js.clone(), CONFIG_BUCKET, &proposals_filter(None)),
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

    /// The change set of `version` of `ns`/`env` (None: no such version). The newest one may
    /// be only in its head, not yet materialised.
    pub async fn change_set(
        &self,
        ns: &Namespace,
        env: &Environment,
        version: u64,
    ) -> Result<Option<ChangeSetRecord>, StoreError> {
        let kept: Option<ChangeSetRecord> = get_record(
            &self.config,
            &history_key(ns, env, version),
            self.read_timeout,
        )
        .await?;
        if kept.is_some() {
            return Ok(kept);
        }
        Ok(self
            .head(ns, env)
            .await?
            .filter(|head| head.version == version)
            .and_then(|head| head.change_set(ns.as_str(), env.as_str())))
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

    /// The parents of `env`, nearest first (empty when it declares none). A stored cycle (which
    /// the validator never writes) is cut at the first repeat.
    pub async fn parent_chain(
        &self,
        ns: &Namespace,
        env: &Environment,
    ) -> Result<Vec<Environment>, StoreError> {
        let mut out: Vec<Environment> = Vec::new();
        let mut at = env.clone();
        while out.len() < MAX_CHAIN {
            let Some(record) = self.parent(ns, &at).await? else {
                break;
            };
            let Ok(parent) = Environment::new(&record.parent) else {
                break;
            };
            if &parent == env || out.contains(&parent) {
                break;
            }
            out.push(parent.clone());
            at = parent;
        }
        Ok(out)
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
            .filter_map(|e| head_names(&e.key).map(|(_, env)| env))
            .collect())
    }

    /// The head of every namespace/environment that has a version, with its names. Heads
    /// that do not parse are skipped (and logged): one bad record does not hide the rest.
    pub async fn heads(&self) -> Result<Vec<(Namespace, Environment, HeadRecord)>, StoreError> {
        let entries = scan(
            &self.js,
            CONFIG_BUCKET,
            &all_heads_filter(),
            self.read_timeout,
        )
        .await?;
        Ok(entries
            .iter()
            .filter(|e| !e.deleted)
            .filter_map(|e| {
                let (ns, env) = head_names(&e.key)?;
                match parse::<HeadRecord>(&e.key, &e.payload) {
                    Ok(head) => Some((ns, env, head)),
                    Err(err) => {
                        tracing::warn!(key = %e.key, error = %err, "unreadable head skipped");
                        None
                    }
                }
            })
            .collect())
    }
}

/// The namespace and environment of a head key (`<ns>.<env>._meta.head`).
fn head_names(key: &str) -> Option<(Namespace, Environment)> {
    let mut parts = key.split('.');
    let ns = Namespace::new(parts.next()?).ok()?;
    let env = Environment::new(parts.next()?).ok()?;
    Some((ns, env))
}
