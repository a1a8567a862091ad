//! Writing an archive back into a cluster.
//!
//! The validator is the only writer of config in normal operation; a restore is the one
//! exception, and it is made safe by when it runs: into an empty cluster (or one emptied by
//! `--force`), with no validator running (checked: no answer to the validator's service
//! ping), by an operator holding credentials that may create streams and write every bucket
//! (`nats-admin`). It creates the buckets and the audit stream with the validator's own
//! settings (`store::ensure_bucket`, `Vault::open`, `Auditor::open`), then writes the stored
//! bytes of each record as they are in the archive: config records other than heads first,
//! heads last (a head is the commit point, so a validator started on a restore cut short
//! sees only complete versions), then each audit record at its own sequence (expected last
//! sequence = the one before, with its message id), so the hash chain continues where the
//! archive left it. Validators started afterwards read it all as their own.

use std::time::Duration;

use std::future::IntoFuture;

use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::HeaderMap;
use mycosynth_subscriber::wire::{
    kv_stream, kv_subject, validator_ping_subject, AUDIT_STREAM, CONFIG_BUCKET, KEYS_BUCKET,
    POLICY_BUCKET, SCHEMA_BUCKET,
};

use super::{BackupError, Contents, KvEntry};
use crate::store::BucketOptions;

/// How many writes are in flight at once.
const WINDOW: usize = 256;

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    /// KV records.
    pub kv: u64,
    /// Data keys.
    pub data_keys: u64,
    /// Audit records.
    pub audit: u64,
}

/// The streams a restore writes, and how many messages each holds now.
pub async fn occupied(js: &jetstream::Context) -> Result<Vec<(String, u64)>, BackupError> {
    let mut found = Vec::new();
    for name in [
        kv_stream(CONFIG_BUCKET),
        kv_stream(SCHEMA_BUCKET),
        kv_stream(POLICY_BUCKET),
        kv_stream(KEYS_BUCKET),
        AUDIT_STREAM.to_owned(),
    ] {
        let Ok(mut stream) = js.get_stream(&name).await else {
            continue;
        };
        let info = stream
            .info()
            .await
            .map_err(|e| BackupError::Unavailable(format!("stream {name}: {e}")))?;
        if info.state.messages > 0 || info.state.last_sequence > 0 {
            found.push((name, info.state.messages));
        }
    }
    Ok(found)
}

/// Refuses while any validator answers its service ping.
pub async fn check_no_validator(client: &async_nats::Client) -> Result<(), BackupError> {
    let ping = tokio::time::timeout(
        Duration::from_millis(750),
        client.request(validator_ping_subject(), bytes::Bytes::new()),
    )
    .await;
    match ping {
        Ok(Ok(reply)) if reply.status.is_none() => Err(BackupError::NotEmpty(
            "a validator is running: stop every `mycosynth serve` before a restore (it would keep serving the state it holds in memory)".into(),
        )),
        _ => Ok(()),
    }
}

/// Deletes the streams a restore writes (for `--force`).
pub async fn clear(js: &jetstream::Context, streams: &[(String, u64)]) -> Result<(), BackupError> {
    for (name, _) in streams {
        js.delete_stream(name)
            .await
            .map_err(|e| BackupError::Unavailable(format!("deleting stream {name}: {e}")))?;
        tracing::warn!(stream = %name, "deleted for a forced restore");
    }
    Ok(())
}

/// Creates the buckets and writes `contents` (checked already) into an empty cluster.
pub async fn write(
    client: &async_nats::Client,
    contents: &Contents,
    options: BucketOptions,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Restored, BackupError> {
    let unavailable = |e: &dyn std::fmt::Display| BackupError::Unavailable(e.to_string());
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client.clone());
    crate::store::ensure_bucket(
        &js,
        CONFIG_BUCKET,
        "Mycosynth config values, version heads and history",
        true,
        options,
    )
    .await
    .map_err(|e| unavailable(&e))?;
    crate::store::ensure_bucket(
        &js,
        SCHEMA_BUCKET,
        "Mycosynth namespace JSON Schemas",
        false,
        options,
    )
    .await
    .map_err(|e| unavailable(&e))?;
    let policy = contents.kv.iter().any(|e| e.bucket == POLICY_BUCKET);
    if policy {
        crate::store::ensure_bucket(
            &js,
            POLICY_BUCKET,
            "Mycosynth access policy",
            false,
            options,
        )
        .await
        .map_err(|e| unavailable(&e))?;
    }
    crate::access::vault::Vault::open(&js, options.replicas)
        .await
        .map_err(|e| unavailable(&e))?;
    crate::audit::Auditor::open(crate::audit::context(client), options.replicas)
        .await
        .map_err(|e| unavailable(&e))?;

    // Heads last: each is the commit point of its version.
    let is_head = |e: &&KvEntry| e.bucket == CONFIG_BUCKET && e.key.ends_with("._meta.head");
    let ordered = contents
        .kv
        .iter()
        .filter(|e| !is_head(e))
        .chain(contents.data_keys.iter())
        .chain(contents.kv.iter().filter(is_head));
    let mut window = Vec::with_capacity(WINDOW);
    for entry in ordered {
        let ack = js
            .publish(
                kv_subject(&entry.bucket, &entry.key),
                entry.value.clone().into(),
            )
            .await
            .map_err(|e| unavailable(&format!("writing {} {}: {e}", entry.bucket, entry.key)))?;
        window.push(ack);
        if window.len() == WINDOW {
            drain(&mut window, tick).await?;
        }
    }
    drain(&mut window, tick).await?;

    for record in &contents.audit {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Sequence",
            (record.seq - 1).to_string().as_str(),
        );
        if !record.msg_id.is_empty() {
            headers.insert("Nats-Msg-Id", record.msg_id.as_str());
        }
        let ack = js
            .publish_with_headers(
                record.subject.clone(),
                headers,
                record.payload.clone().into(),
            )
            .await
            .map_err(|e| unavailable(&format!("writing audit record {}: {e}", record.seq)))?;
        window.push(ack);
        if window.len() == WINDOW {
            drain(&mut window, tick).await?;
        }
    }
    drain(&mut window, tick).await?;
    Ok(Restored {
        kv: contents.kv.len() as u64,
        data_keys: contents.data_keys.len() as u64,
        audit: contents.audit.len() as u64,
    })
}

async fn drain(
    window: &mut Vec<PublishAckFuture>,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<(), BackupError> {
    let count = window.len() as u64;
    for ack in futures::future::join_all(window.drain(..).map(|ack| ack.into_future())).await {
        ack.map_err(|e| BackupError::Unavailable(format!("a write was refused: {e}")))?;
    }
    tick(count);
    Ok(())
}
