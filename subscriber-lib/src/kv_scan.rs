//! Reads the last value of every KV key under a filter, as of one moment, through a named
//! ordered consumer (`DeliverPolicy::LastPerSubject`). Used by subscribers to load a snapshot and
//! by the validator to load state and history.
//!
//! Why a consumer and not `kv.get` per key: one pass returns a consistent cut, the state after
//! one stream sequence. In it every version before the head's is complete (a writer materialises
//! a version before it commits the next), and the head carries its own change set for whatever
//! of it is not written yet (`HeadRecord::roll_forward`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use bytes::Bytes;
use futures::StreamExt;

use crate::wire::{kv_stream, kv_subject};

/// Whether a KV stream message with these headers is a delete or purge marker.
///
/// ```
/// let mut headers = async_nats::HeaderMap::new();
/// assert!(!mycosynth_subscriber::kv_scan::is_delete_marker(Some(&headers)));
/// headers.insert("KV-Operation", "DEL");
/// assert!(mycosynth_subscriber::kv_scan::is_delete_marker(Some(&headers)));
/// ```
pub fn is_delete_marker(headers: Option<&async_nats::HeaderMap>) -> bool {
    headers
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE")
}

/// One KV entry found by [`scan`].
#[derive(Debug, Clone)]
pub struct ScanEntry {
    /// The KV key (without the `$KV.<bucket>.` prefix).
    pub key: String,
    /// The stored bytes (empty for a deletion).
    pub payload: Bytes,
    /// The stream sequence (KV revision) of this entry.
    pub revision: u64,
    /// The entry is a delete or purge marker.
    pub deleted: bool,
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The bucket's stream does not exist (nothing was ever written).
    #[error("bucket {0} does not exist")]
    NoBucket(String),
    /// NATS did not answer in time, or refused.
    #[error("reading {filter} failed: {message}")]
    Nats {
        /// The key filter.
        filter: String,
        /// What NATS said.
        message: String,
    },
}

/// Scans the latest entry of every key of `bucket` matching `key_filter` (NATS wildcards allowed),
/// including delete markers, in stream order. Gives up after `deadline`.
///
/// ```no_run
/// # async fn example(js: async_nats::jetstream::Context) -> Result<(), mycosynth_subscriber::kv_scan::ScanError> {
/// use std::time::Duration;
/// let entries = mycosynth_subscriber::kv_scan::scan(&js, "mycosynth-config", "payment-service.production.>", Duration::from_secs(5)).await?;
/// for entry in entries.iter().filter(|e| !e.deleted) {
///     println!("{} = {}", entry.key, String::from_utf8_lossy(&entry.payload));
/// }
/// # Ok(()) }
/// ```
pub async fn scan(
    js: &jetstream::Context,
    bucket: &str,
    key_filter: &str,
    deadline: Duration,
) -> Result<Vec<ScanEntry>, ScanError> {
    let mut entries = Vec::new();
    scan_each(js, bucket, key_filter, deadline, |entry| {
        entries.push(entry)
    })
    .await?;
    Ok(entries)
}

/// Like [`scan`], handing each entry to `each` as it arrives, so that work on the entries
/// (parsing, for a snapshot) overlaps with the transfer of the rest.
///
/// ```no_run
/// # async fn example(js: async_nats::jetstream::Context) -> Result<(), mycosynth_subscriber::kv_scan::ScanError> {
/// use std::time::Duration;
/// let mut keys = 0;
/// mycosynth_subscriber::kv_scan::scan_each(&js, "mycosynth-config", "payment-service.production.>", Duration::from_secs(5), |entry| {
///     keys += usize::from(!entry.deleted);
/// }).await?;
/// # Ok(()) }
/// ```
pub async fn scan_each(
    js: &jetstream::Context,
    bucket: &str,
    key_filter: &str,
    deadline: Duration,
    each: impl FnMut(ScanEntry),
) -> Result<(), ScanError> {
    match tokio::time::timeout(deadline, scan_inner(js, bucket, key_filter, each)).await {
        Ok(result) => result,
        Err(_) => Err(ScanError::Nats {
            filter: key_filter.to_owned(),
            message: "timed out".into(),
        }),
    }
}

async fn scan_inner(
    js: &jetstream::Context,
    bucket: &str,
    key_filter: &str,
    mut each: impl FnMut(ScanEntry),
) -> Result<(), ScanError> {
    let nats_err = |message: String| ScanError::Nats {
        filter: key_filter.to_owned(),
        message,
    };
    // No stream info first: the consumer's creation answers "no such stream" itself, and a
    // scan (a cold namespace's state, a subscriber's start) costs one round trip less.
    let stream = js
        .get_stream_no_info(kv_stream(bucket))
        .await
        .map_err(|err| nats_err(err.to_string()))?;
    let prefix_len = kv_subject(bucket, "").len();
    let consumer = stream
        .create_consumer(OrderedConfig {
            // A name keeps the filter in the API subject, which per-namespace permissions need.
            name: Some(format!("mycosynth-scan-{}", nuid::next())),
            filter_subject: kv_subject(bucket, key_filter),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|err| match err.kind() {
            jetstream::stream::ConsumerErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                ScanError::NoBucket(bucket.to_owned())
            }
            _ => nats_err(err.to_string()),
        })?;
    let consumer_name = consumer.cached_info().name.clone();
    let mut remaining = consumer.cached_info().num_pending;
    if remaining > 0 {
        let mut messages = consumer
            .messages()
            .await
            .map_err(|err| nats_err(err.to_string()))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|err| nats_err(err.to_string()))?;
            let info = message.info().map_err(|err| nats_err(err.to_string()))?;
            remaining = info.pending;
            let revision = info.stream_sequence;
            let deleted = is_delete_marker(message.headers.as_ref());
            let key = message
                .subject
                .get(prefix_len..)
                .unwrap_or_default()
                .to_owned();
            each(ScanEntry {
                key,
                payload: message.payload.clone(),
                revision,
                deleted,
            });
            if remaining == 0 {
                break;
            }
        }
    }
    // Best effort, and not waited for: the ordered consumer is ephemeral and expires by itself
    // anyway.
    let stream_api = stream.clone();
    tokio::spawn(async move {
        let _ = stream_api.delete_consumer(&consumer_name).await;
    });
    Ok(())
}
