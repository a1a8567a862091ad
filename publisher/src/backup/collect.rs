//! Reading a cluster's state for a backup, while writes continue.
//!
//! The config bucket is read in one pass of one ordered consumer (`LastPerSubject` over every
//! key, `kv_scan`): the result is the bucket as it stood after one stream sequence, the cut.
//! In it every version before a head's is materialised (the validator materialises v before it
//! commits v+1); a head whose own change set is not materialised yet is completed in the
//! archive with the records the validator would write ([`crate::store::materialised_records`]).
//! So each namespace/environment is at exactly its head's version. Schemas, policy and data
//! keys are read the same way; the audit log up to its last sequence when the read began.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use futures::StreamExt;
use mycosynth_subscriber::kv_scan::{scan_each, ScanError};
use mycosynth_subscriber::wire::{
    kv_stream, Environment, HeadRecord, Namespace, ValueRecord, AUDIT_STREAM, CONFIG_BUCKET,
    KEYS_BUCKET, POLICY_BUCKET, SCHEMA_BUCKET,
};

use super::{AuditEntry, BackupError, Contents, KvEntry, Manifest};

const READ_TIMEOUT: Duration = Duration::from_secs(600);

/// Stored bytes by KV key.
type Records = BTreeMap<String, Vec<u8>>;

/// Reads everything a backup holds. `tick` is called once per record read.
pub async fn collect(
    js: &jetstream::Context,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Contents, BackupError> {
    let (config, config_seq) = read_bucket(js, CONFIG_BUCKET, tick).await?;
    let (config, versions) = complete_heads(config)?;
    let mut kv: Vec<KvEntry> = config
        .into_iter()
        .map(|(key, value)| KvEntry {
            bucket: CONFIG_BUCKET.to_owned(),
            key,
            value,
        })
        .collect();
    for bucket in [SCHEMA_BUCKET, POLICY_BUCKET] {
        let (entries, _) = read_bucket(js, bucket, tick).await?;
        kv.extend(entries.into_iter().map(|(key, value)| KvEntry {
            bucket: bucket.to_owned(),
            key,
            value,
        }));
    }
    let (keys, _) = read_bucket(js, KEYS_BUCKET, tick).await?;
    let data_keys: Vec<KvEntry> = keys
        .into_iter()
        .map(|(key, value)| KvEntry {
            bucket: KEYS_BUCKET.to_owned(),
            key,
            value,
        })
        .collect();
    let audit = read_audit(js, tick).await?;
    let now = time::OffsetDateTime::now_utc();
    Ok(Contents {
        manifest: Manifest {
            archive_id: uuid::Uuid::now_v7().to_string(),
            created: now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            created_us: i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(0),
            config_seq,
            versions,
            audit_last_seq: audit.last().map_or(0, |a| a.seq),
            data_keys: !data_keys.is_empty(),
        },
        kv,
        data_keys,
        audit,
    })
}

/// How many records a backup will read (for the progress bar): keys of each bucket and
/// audit records.
pub async fn estimate(js: &jetstream::Context) -> u64 {
    let mut total = 0;
    for stream in [
        kv_stream(CONFIG_BUCKET),
        kv_stream(SCHEMA_BUCKET),
        kv_stream(POLICY_BUCKET),
        kv_stream(KEYS_BUCKET),
    ] {
        if let Ok(mut stream) = js.get_stream(&stream).await {
            if let Ok(info) = stream.info().await {
                total += info.state.subjects_count;
            }
        }
    }
    if let Ok(mut stream) = js.get_stream(AUDIT_STREAM).await {
        if let Ok(info) = stream.info().await {
            total += info.state.last_sequence;
        }
    }
    total
}

/// Every live key of `bucket` at one cut, and the last stream sequence read.
async fn read_bucket(
    js: &jetstream::Context,
    bucket: &str,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<(Records, u64), BackupError> {
    let mut entries = BTreeMap::new();
    let mut last = 0;
    let scanned = scan_each(js, bucket, ">", READ_TIMEOUT, |entry| {
        last = last.max(entry.revision);
        tick(1);
        // Later entries of a key (written while the scan ran) replace earlier ones.
        if entry.deleted {
            entries.remove(&entry.key);
        } else {
            entries.insert(entry.key, entry.payload.to_vec());
        }
    })
    .await;
    match scanned {
        Ok(()) | Err(ScanError::NoBucket(_)) => Ok((entries, last)),
        Err(err) => Err(BackupError::Unavailable(err.to_string())),
    }
}

/// Completes every head whose change set is not materialised in `config`; returns the records
/// and each namespace/environment's version.
fn complete_heads(
    mut config: BTreeMap<String, Vec<u8>>,
) -> Result<(Records, BTreeMap<String, u64>), BackupError> {
    let heads: Vec<(Namespace, Environment, HeadRecord)> = config
        .iter()
        .filter_map(|(key, bytes)| {
            let mut parts = key.splitn(3, '.');
            let (ns, env, rest) = (parts.next()?, parts.next()?, parts.next()?);
            if rest != "_meta.head" {
                return None;
            }
            let head = serde_json::from_slice::<HeadRecord>(bytes).ok()?;
            Some((Namespace::new(ns).ok()?, Environment::new(env).ok()?, head))
        })
        .collect();
    let mut versions = BTreeMap::new();
    for (ns, env, head) in heads {
        versions.insert(format!("{ns}.{env}"), head.version);
        if head.changes.is_none() || is_materialised(&config, &ns, &env, &head) {
            continue;
        }
        tracing::info!(namespace = %ns, environment = %env, version = head.version, "the backup completes a head committed but not yet materialised");
        let records = crate::store::materialised_records(&ns, &env, &head)
            .map_err(|e| BackupError::Unavailable(e.to_string()))?;
        for (key, value) in records {
            match value {
                Some(bytes) => config.insert(key, bytes.to_vec()),
                None => config.remove(&key),
            };
        }
    }
    Ok((config, versions))
}

/// Whether every record of the head's version is in `config` (history record, and each
/// changed key at this version or deleted).
fn is_materialised(
    config: &BTreeMap<String, Vec<u8>>,
    ns: &Namespace,
    env: &Environment,
    head: &HeadRecord,
) -> bool {
    use mycosynth_subscriber::wire::{history_key, value_key};
    if !config.contains_key(&history_key(ns, env, head.version)) {
        return false;
    }
    head.changes.iter().flatten().all(|change| {
        let stored = config.get(&value_key(ns, env, &change.key));
        match (&change.value, stored) {
            (None, stored) => stored.is_none(),
            (Some(_), None) => false,
            (Some(_), Some(bytes)) => serde_json::from_slice::<ValueRecord>(bytes)
                .is_ok_and(|record| record.version == head.version),
        }
    })
}

/// The audit log from record 1 to the last one stored when this began.
async fn read_audit(
    js: &jetstream::Context,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Vec<AuditEntry>, BackupError> {
    let unavailable =
        |e: &dyn std::fmt::Display| BackupError::Unavailable(format!("reading the audit log: {e}"));
    let mut stream = match js.get_stream(AUDIT_STREAM).await {
        Ok(stream) => stream,
        Err(err) => {
            return match err.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(Vec::new())
                }
                _ => Err(unavailable(&err)),
            }
        }
    };
    let last = stream
        .info()
        .await
        .map_err(|e| unavailable(&e))?
        .state
        .last_sequence;
    let mut records = Vec::new();
    if last == 0 {
        return Ok(records);
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            name: Some(format!("mycosynth-backup-{}", nuid::next())),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    let read = async {
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| unavailable(&e))?;
            let seq = message.info().map_err(|e| unavailable(&e))?.stream_sequence;
            if seq > last {
                break;
            }
            let msg_id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            records.push(AuditEntry {
                seq,
                subject: message.subject.to_string(),
                msg_id,
                payload: message.payload.to_vec(),
            });
            tick(1);
            if seq == last {
                break;
            }
        }
        Ok::<(), BackupError>(())
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| unavailable(&"timed out"))??;
    if records.len() as u64 != last || records.iter().zip(1..).any(|(r, n)| r.seq != n) {
        return Err(BackupError::Unavailable(format!(
            "the audit log has gaps: {} records up to sequence {last}",
            records.len()
        )));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::{ChangeMeta, ChangeSource, KeyChange};

    fn head(version: u64, changes: Vec<KeyChange>) -> HeadRecord {
        HeadRecord {
            version,
            keys: 1,
            meta: ChangeMeta {
                change_id: format!("c{version}"),
                author: "alice".into(),
                time: "2026-01-01T00:00:00Z".into(),
                time_us: 1,
                reason: String::new(),
                source: ChangeSource::Cli,
                git_commit: None,
                request_id: Some("r1".into()),
                emergency: false,
                approved_by: vec![],
                change_request: None,
            },
            changes: Some(changes),
        }
    }

    #[test]
    fn a_head_committed_but_not_materialised_is_completed_as_the_validator_would() {
        let (ns, env) = (
            Namespace::new("ns").unwrap(),
            Environment::new("prod").unwrap(),
        );
        let head = head(
            2,
            vec![KeyChange::set("a", json(5)), KeyChange::delete("b")],
        );
        let mut cut = BTreeMap::new();
        cut.insert(
            "ns.prod._meta.head".to_owned(),
            serde_json::to_vec(&head).unwrap(),
        );
        cut.insert(
            "ns.prod.b".to_owned(),
            b"{\"value\":1,\"version\":1}".to_vec(),
        );
        let (completed, versions) = complete_heads(cut.clone()).unwrap();
        assert_eq!(versions["ns.prod"], 2);
        let expected = crate::store::materialised_records(&ns, &env, &head).unwrap();
        for (key, bytes) in expected {
            assert_eq!(
                completed.get(&key).map(Vec::as_slice),
                bytes.as_deref(),
                "{key}"
            );
        }
        assert!(completed.contains_key("_history.ns.prod.2"));
        assert!(completed.contains_key("_requests.ns.prod.r1"));
        // Once complete, nothing is rewritten.
        let (again, _) = complete_heads(completed.clone()).unwrap();
        assert_eq!(again, completed);
    }

    fn json(n: u64) -> serde_json::Value {
        serde_json::Value::from(n)
    }
}
