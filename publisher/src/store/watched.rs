//! KV records the validator reads on every change request (schemas, parent declarations), kept
//! in memory by a watch instead of fetched each time: a round trip saved per request, on the
//! path every change takes.
//!
//! A task follows the keys with an ordered consumer (`LastPerSubject`, then every update) and
//! keeps the latest bytes of each. Until it has caught up with the stream, and whenever its
//! consumer fails, [`Watched::get`] answers "not known" and the caller reads KV itself, so a
//! cold or broken watch costs a round trip, never a wrong answer. What this instance writes it
//! records at once ([`Watched::record`]); what another instance writes arrives with the watch,
//! as fast as a subscriber's change event (well under a millisecond on one host).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use bytes::Bytes;
use futures::StreamExt;
use mycosynth_subscriber::kv_scan::is_delete_marker;
use mycosynth_subscriber::wire::{kv_stream, kv_subject};

/// How long the watch waits before following again after its consumer failed.
const RETRY: Duration = Duration::from_millis(500);

/// The latest value of every key matching a filter of one bucket.
#[derive(Debug, Clone)]
pub struct Watched {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Present keys and their latest bytes.
    entries: RwLock<HashMap<String, Bytes>>,
    /// Caught up with the stream: a key absent from `entries` is absent from KV.
    current: AtomicBool,
}

impl Watched {
    /// Starts following `key_filter` in `bucket` on the current runtime. The task holds only a
    /// weak reference: once the last handle is dropped it ends at its next message or retry.
    pub fn start(js: jetstream::Context, bucket: &str, key_filter: &str) -> Watched {
        let inner = Arc::new(Inner::default());
        tokio::spawn(follow(
            js,
            bucket.to_owned(),
            key_filter.to_owned(),
            Arc::downgrade(&inner),
        ));
        Watched { inner }
    }

    /// The bytes of `key`: `Some(None)` when it is known to be absent, `None` when the watch is
    /// not caught up (read KV instead).
    pub fn get(&self, key: &str) -> Option<Option<Bytes>> {
        if !self.inner.current.load(Ordering::Acquire) {
            metrics::counter!("mycosynth_validator_watch_misses_total").increment(1);
            return None;
        }
        let entries = self.inner.entries.read().unwrap_or_else(|p| p.into_inner());
        Some(entries.get(key).cloned())
    }

    /// Every present key and its bytes; `None` when the watch is not caught up.
    pub fn entries(&self) -> Option<Vec<(String, Bytes)>> {
        if !self.inner.current.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.inner.entries.read().unwrap_or_else(|p| p.into_inner());
        Some(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Records what this instance just wrote (`None`: deleted), before its watch delivers it.
    pub fn record(&self, key: &str, value: Option<Bytes>) {
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match value {
            Some(bytes) => entries.insert(key.to_owned(), bytes),
            None => entries.remove(key),
        };
    }
}

async fn follow(
    js: jetstream::Context,
    bucket: String,
    key_filter: String,
    inner: std::sync::Weak<Inner>,
) {
    loop {
        if let Err(err) = follow_once(&js, &bucket, &key_filter, &inner).await {
            tracing::debug!(bucket, filter = key_filter, error = %err, "watch interrupted; reads go to KV until it catches up");
        }
        match inner.upgrade() {
            Some(inner) => inner.current.store(false, Ordering::Release),
            None => return,
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Follows until the consumer fails or every handle is dropped (`Ok`).
async fn follow_once(
    js: &jetstream::Context,
    bucket: &str,
    key_filter: &str,
    weak: &std::sync::Weak<Inner>,
) -> Result<(), String> {
    let stream = js
        .get_stream(kv_stream(bucket))
        .await
        .map_err(|e| e.to_string())?;
    let prefix_len = kv_subject(bucket, "").len();
    let consumer = stream
        .create_consumer(OrderedConfig {
            name: Some(format!("mycosynth-watch-{}", nuid::next())),
            filter_subject: kv_subject(bucket, key_filter),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    {
        let Some(inner) = weak.upgrade() else {
            return Ok(());
        };
        // What this watch will deliver replaces what the previous one knew.
        inner
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if consumer.cached_info().num_pending == 0 {
            inner.current.store(true, Ordering::Release);
        }
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let pending = message.info().map(|i| i.pending).unwrap_or(1);
        let Some(inner) = weak.upgrade() else {
            return Ok(());
        };
        let deleted = is_delete_marker(message.headers.as_ref());
        let key = message.subject.get(prefix_len..).unwrap_or_default();
        {
            let mut entries = inner.entries.write().unwrap_or_else(|p| p.into_inner());
            if deleted {
                entries.remove(key);
            } else {
                entries.insert(key.to_owned(), message.payload.clone());
            }
        }
        if pending == 0 {
            inner.current.store(true, Ordering::Release);
        }
    }
    Err("the watch ended".into())
}
