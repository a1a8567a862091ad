//! The one background task of a subscriber: applies change events in version order, resyncs
//! from KV on a gap, a reconnect or a request, and publishes change notices. Readers never wait
//! for it: it builds each new [`Snapshot`] aside and swaps it in whole.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_nats::jetstream;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use crate::backoff::Backoff;
use crate::check::SchemaCheck;
use crate::loader::{defaults_of, load_schema, load_state};
use crate::next_values::{Change, NextValues, Source};
use crate::reporter::ReportState;
use crate::snapshot::Snapshot;
use crate::status::Health;
use crate::wire::{
    head_key, Environment, EventBytes, HeadRecord, Namespace, ReceiptKind, Rejection, CONFIG_BUCKET,
};

/// What caused a change notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeCause {
    /// A change event, applied in order.
    Event,
    /// A full reload from KV (first load, gap, reconnect, or request).
    Resync,
    /// A parent environment changed keys this environment inherits (its own version is
    /// unchanged; author, reason and change id are the parent's).
    Inherited,
}

/// A new version became visible to readers.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeNotice {
    /// The version now held.
    pub version: u64,
    /// The version held before.
    pub previous_version: u64,
    /// The keys whose values changed, sorted.
    pub keys: Vec<String>,
    /// Who made the change (empty after a resync, which may span many change sets).
    pub author: String,
    /// Why (empty after a resync).
    pub reason: String,
    /// Change set id (empty after a resync).
    pub change_id: String,
    /// The verified identities that approved the change request the change set came from
    /// (empty when it needed no approval, and after a resync).
    pub approved_by: Vec<String>,
    /// The change request it came from, if any (none after a resync).
    pub change_request: Option<String>,
    /// Commit time in µs since the Unix epoch (for a resync, of the newest change set).
    pub committed_at_us: i64,
    /// When this subscriber made the version visible, µs since the Unix epoch.
    pub applied_at_us: i64,
    /// Event or resync.
    pub cause: NoticeCause,
}

/// Counters of what the updater did; see [`Subscriber::stats`](crate::Subscriber::stats).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub applied: AtomicU64,
    pub resyncs: AtomicU64,
    pub decode_errors: AtomicU64,
    pub duplicates: AtomicU64,
    pub resync_failures: AtomicU64,
    pub snapshot_copies: AtomicU64,
}

/// State shared by every clone of a subscriber handle and its task.
pub(crate) struct Shared {
    pub namespace: Namespace,
    pub environment: Environment,
    pub snapshot: ArcSwap<Snapshot>,
    pub notices: broadcast::Sender<Arc<ChangeNotice>>,
    pub version: watch::Sender<u64>,
    pub counters: Counters,
    pub resync_requests: mpsc::Sender<()>,
    pub health: Arc<Health>,
    /// The connection, for reporting which server it is on.
    pub client: async_nats::Client,
    /// This instance in rollouts: identity, labels, signals, the candidate it serves.
    pub canary: Arc<crate::rollout::Canary>,
}

/// The metrics the event path records, registered once with the subscriber's namespace and
/// environment as labels (several subscribers in one process each have their own series),
/// rather than looked up by name in the recorder on every change.
pub(crate) struct Meters {
    applied: metrics::Counter,
    version: metrics::Gauge,
    apply_delay: metrics::Histogram,
    staleness: metrics::Gauge,
    snapshot_copies: metrics::Counter,
}

impl Meters {
    pub fn new(namespace: &Namespace, environment: &Environment) -> Meters {
        let (ns, env) = (namespace.to_string(), environment.to_string());
        Meters {
            applied: metrics::counter!("mycosynth_subscriber_updates_applied_total", "namespace" => ns.clone(), "environment" => env.clone()),
            version: metrics::gauge!("mycosynth_subscriber_version", "namespace" => ns.clone(), "environment" => env.clone()),
            apply_delay: metrics::histogram!("mycosynth_subscriber_apply_delay_seconds", "namespace" => ns.clone(), "environment" => env.clone()),
            staleness: metrics::gauge!("mycosynth_subscriber_staleness_seconds", "namespace" => ns.clone(), "environment" => env.clone()),
            snapshot_copies: metrics::counter!("mycosynth_subscriber_snapshot_copies_total", "namespace" => ns, "environment" => env),
        }
    }
}

/// Timing options of the updater.
#[derive(Debug, Clone)]
pub(crate) struct UpdaterOptions {
    pub gap_timeout: Duration,
    pub load_timeout: Duration,
    pub backoff: Backoff,
    pub anti_entropy_interval: Duration,
}

pub(crate) struct Updater {
    pub shared: Arc<Shared>,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Handle on the config bucket for anti-entropy head reads, opened on first use.
    pub kv: Option<jetstream::kv::Store>,
    /// Where to hand each new snapshot for the last-known-good cache writer.
    pub cache: Option<watch::Sender<Arc<Snapshot>>>,
    /// Where to hand what the fleet receipts report.
    pub reports: Option<watch::Sender<ReportState>>,
    /// Check each new snapshot against the namespace schema before serving it.
    pub validate: bool,
    /// The compiled schema for that check (None: no schema, or not loaded yet).
    pub schema_check: Option<Arc<SchemaCheck>>,
    /// The check the current snapshot passed, if any: under it, the next event's keys are
    /// checked alone ([`SchemaCheck::check_changes`]).
    pub checked_with: Option<Arc<SchemaCheck>>,
    pub events: async_nats::Subscriber,
    /// What `events` carries: the validator's change events, or a site mirror's heads.
    pub events_from: crate::EventSource,
    pub schema_changes: async_nats::Subscriber,
    pub resync_requests: mpsc::Receiver<()>,
    pub options: UpdaterOptions,
    pub meters: Meters,
    /// Events that arrived ahead of a missing one, by the version they apply on.
    pub pending: BTreeMap<u64, ParsedEvent>,
    /// Since when a gap has been waiting to be filled.
    pub gap_since: Option<Instant>,
    /// When to retry a failed resync, and how many attempts failed in a row.
    pub retry: Option<(Instant, u32)>,
    /// The namespace's data key for sensitive values (loaded by the first resync that needs it).
    pub data_key: Option<crate::wire::DataKey>,
    /// Builds each event's value map from the snapshot before the current one when nobody
    /// reads it anymore, rather than copying the current map whole.
    pub next_values: NextValues,
}

/// A checked event whose values have been parsed.
pub(crate) struct ParsedEvent {
    version: u64,
    previous_version: u64,
    committed_at_us: i64,
    /// Each changed key with its parsed value (`None`: deleted), ready for the value map.
    changes: Vec<Change>,
    /// The event, read again for its attribution only if someone listens for change notices.
    bytes: EventBytes,
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Updater {
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut anti_entropy = tokio::time::interval(self.options.anti_entropy_interval);
        anti_entropy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        anti_entropy.reset();
        let mut gauges = tokio::time::interval(Duration::from_secs(1));
        // The version loaded at start, before any change arrives.
        self.meters
            .version
            .set(self.shared.snapshot.load().version() as f64);
        if self.validate
            && self.client.connection_state() == async_nats::connection::State::Connected
        {
            self.reload_defaults().await;
        }
        // Made once: a future made anew on every turn would register its waker anew too.
        let stop = shutdown.changed();
        tokio::pin!(stop);
        loop {
            let gap_deadline = self.gap_since.map(|since| since + self.options.gap_timeout);
            let retry_at = self.retry.map(|(at, _)| at);
            // In order, so that an event is applied without polling the timers first: this is
            // the turn every change takes, in every subscriber. The gap and retry deadlines come
            // before it (they are off, and cost nothing, unless a resync is due), so a steady
            // stream of events cannot hold a due resync back.
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = sleep_until(gap_deadline), if gap_deadline.is_some() => self.resync("gap").await,
                _ = sleep_until(retry_at), if retry_at.is_some() => self.resync("retry").await,
                message = self.events.next() => match message {
                    Some(message) if self.events_from == crate::EventSource::SiteMirror => {
                        self.on_site_head(&message.payload)
                    }
                    Some(message) => self.on_event_bytes(&message.payload),
                    None => break,
                },
                message = self.schema_changes.next() => match message {
                    Some(_) => self.reload_defaults().await,
                    None => break,
                },
                Some(()) = self.resync_requests.recv() => self.resync("requested").await,
                _ = anti_entropy.tick() => self.check_head().await,
                _ = gauges.tick() => {
                    self.meters.staleness.set(self.shared.health.staleness().as_secs_f64());
                }
            }
        }
        tracing::debug!(namespace = %self.shared.namespace, environment = %self.shared.environment, "subscriber stopped");
    }

    fn on_event_bytes(&mut self, bytes: &[u8]) {
        let parsed = match self.parse(bytes) {
            Ok(parsed) => parsed,
            Err(reason) => {
                self.count_decode_error();
                tracing::warn!(
                    namespace = %self.shared.namespace,
                    environment = %self.shared.environment,
                    bytes = bytes.len(),
                    %reason,
                    "ignoring a malformed change event"
                );
                self.report_rejection(0, format!("malformed change event: {reason}"));
                if reason.starts_with(crate::secrets::NEEDS_KEY) {
                    // A sensitive value sealed with a key not loaded yet: reload now.
                    self.gap_since = Some(Instant::now() - self.options.gap_timeout);
                }
                return;
            }
        };
        let current = self.shared.snapshot.load().version();
        let event = &parsed;
        if event.version <= current {
            self.shared
                .counters
                .duplicates
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if event.previous_version == current {
            self.apply(parsed);
            self.drain_pending();
        } else if event.previous_version > current {
            // Missed one or more change sets. Another validator's event may simply be late, so
            // wait a little for it before reloading everything.
            self.pending.insert(event.previous_version, parsed);
            self.gap_since.get_or_insert_with(Instant::now);
        } else {
            // An event that spans our version: the history disagrees with what we hold.
            self.gap_since = Some(Instant::now() - self.options.gap_timeout);
        }
    }

    fn count_decode_error(&self) {
        self.shared
            .counters
            .decode_errors
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mycosynth_subscriber_decode_errors_total").increment(1);
    }

    /// A head republished by a site's mirror: applied as the change event of its version.
    fn on_site_head(&mut self, payload: &[u8]) {
        match crate::site::head_event(&self.shared.namespace, &self.shared.environment, payload) {
            Ok(crate::site::SiteMessage::Event(bytes)) => self.on_event_bytes(&bytes),
            Ok(crate::site::SiteMessage::Resync) => {
                self.gap_since = Some(Instant::now() - self.options.gap_timeout)
            }
            Ok(crate::site::SiteMessage::Ignore) => {}
            Err(reason) => {
                self.count_decode_error();
                tracing::warn!(namespace = %self.shared.namespace, environment = %self.shared.environment, %reason, "ignoring a malformed republished head");
            }
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<ParsedEvent, String> {
        // Read in place: the strings of the event are not copied out, only its keys and values.
        let bytes = EventBytes::copy_from(bytes).map_err(|e| e.to_string())?;
        let (version, previous_version, committed_at_us, changes) = bytes
            .read(|event| {
                if event.namespace.as_str() != self.shared.namespace.as_str()
                    || event.environment.as_str() != self.shared.environment.as_str()
                {
                    return Err(format!(
                        "event for {}/{} on this subject",
                        event.namespace, event.environment
                    ));
                }
                let (version, previous_version) = (
                    event.version.to_native(),
                    event.previous_version.to_native(),
                );
                if version != previous_version.wrapping_add(1) {
                    return Err(format!(
                        "event version {version} does not follow {previous_version}"
                    ));
                }
                let changes = event
                    .changes
                    .iter()
                    .map(|change| {
                        let key = change.key.as_str();
                        let value = match change.value_json.as_ref() {
                            Some(json) => Some(Arc::new(crate::secrets::open_one(
                                &self.shared.namespace,
                                &self.shared.environment,
                                self.data_key.as_ref(),
                                key,
                                serde_json::from_str(json.as_str())
                                    .map_err(|e| format!("value of key {key:?}: {e}"))?,
                            )?)),
                            None => None,
                        };
                        Ok((Arc::from(key), value))
                    })
                    .collect::<Result<Vec<Change>, String>>()?;
                Ok((
                    version,
                    previous_version,
                    event.committed_at_us.to_native(),
                    changes,
                ))
            })
            .map_err(|e| e.to_string())??;
        Ok(ParsedEvent {
            version,
            previous_version,
            committed_at_us,
            changes,
            bytes,
        })
    }

    fn apply(&mut self, parsed: ParsedEvent) {
        let current = self.shared.snapshot.load_full();
        let changes = parsed.changes;
        let (values, source) = self.next_values.after(&current, &changes);
        if source == Source::Copy {
            self.shared
                .counters
                .snapshot_copies
                .fetch_add(1, Ordering::Relaxed);
            self.meters.snapshot_copies.increment(1);
        }
        let version = parsed.version;
        let next = Snapshot::new(
            version,
            values,
            current.defaults().clone(),
            parsed.committed_at_us,
        );
        if let Err(reason) = self.check(&next, Some(&changes)) {
            self.reject(version, reason);
            return;
        }
        let (committed_at_us, bytes) = (parsed.committed_at_us, parsed.bytes);
        self.publish(next, committed_at_us, || {
            // Checked when it was parsed, so this second read does not fail.
            let (author, reason, change_id, approved_by, change_request) = bytes
                .read(|e| {
                    let text = |s: &rkyv::string::ArchivedString| s.as_str().to_owned();
                    (
                        text(&e.author),
                        text(&e.reason),
                        text(&e.change_id),
                        e.approved_by.iter().map(text).collect(),
                        e.change_request.as_ref().map(text),
                    )
                })
                .unwrap_or_default();
            ChangeNotice {
                version,
                previous_version: parsed.previous_version,
                keys: changes.iter().map(|(key, _)| key.to_string()).collect(),
                author,
                reason,
                change_id,
                approved_by,
                change_request,
                committed_at_us,
                applied_at_us: 0,
                cause: NoticeCause::Event,
            }
        });
        // `current` is out of the ArcSwap now; once its last reader lets go, its map becomes
        // the next version's.
        self.next_values.keep(current, changes, version);
        self.shared.counters.applied.fetch_add(1, Ordering::Relaxed);
        self.meters.applied.increment(1);
    }

    /// Client-side validation of a snapshot about to be served: of the keys `changes` set when
    /// the current snapshot passed this same check, else of the whole snapshot.
    fn check(&mut self, next: &Snapshot, changes: Option<&[Change]>) -> Result<(), String> {
        let (Some(check), true) = (&self.schema_check, self.validate) else {
            return Ok(());
        };
        let passed = self
            .checked_with
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, check));
        let verdict = match changes
            .filter(|_| passed)
            .and_then(|c| check.check_changes(c))
        {
            Some(verdict) => verdict,
            None => check.check(next),
        };
        if verdict.is_ok() {
            self.checked_with = Some(Arc::clone(check));
        }
        verdict
    }

    /// Keeps serving the current snapshot, and says so in logs, metrics and receipts. Buffered
    /// events that would build on the refused version are dropped.
    fn reject(&mut self, version: u64, reason: String) {
        metrics::counter!("mycosynth_subscriber_rejected_versions_total").increment(1);
        tracing::warn!(namespace = %self.shared.namespace, environment = %self.shared.environment, version, %reason, "refusing a version that breaks the namespace schema; serving the last good snapshot");
        // On the event path `after` has used the spare up already; after a refused resync it
        // would still be valid, and dropping it costs one copy on the next event.
        self.next_values.forget();
        self.pending.clear();
        self.gap_since = None;
        self.report_rejection(version, reason);
    }

    fn report_rejection(&self, version: u64, reason: String) {
        if let Some(reports) = &self.reports {
            reports.send_modify(|state| {
                state.kind = ReceiptKind::Rejected;
                state.rejected = Some(Rejection { version, reason });
            });
        }
    }

    /// Makes `next` the snapshot readers load. Every publication goes through here and forgets
    /// the spare: only `apply` knows the changes from the replaced snapshot to `next`, and it
    /// keeps them anew afterwards.
    fn store(&mut self, next: Arc<Snapshot>) {
        self.next_values.forget();
        self.shared.snapshot.store(next);
    }

    /// Serves `next` and tells everyone who follows versions. The change notice is built (by
    /// `notice`) only when someone listens for notices: on every event in every subscriber,
    /// an unread notice is allocations for nothing.
    fn publish(
        &mut self,
        next: Snapshot,
        committed_at_us: i64,
        notice: impl FnOnce() -> ChangeNotice,
    ) {
        let version = next.version();
        let next = Arc::new(next);
        self.store(Arc::clone(&next));
        let applied_at_us = now_us();
        self.shared.health.applied(applied_at_us);
        if let Some(cache) = &self.cache {
            cache.send_replace(next);
        }
        if let Some(reports) = &self.reports {
            reports.send_modify(|state| {
                state.version = version;
                state.applied_at_us = applied_at_us;
                state.committed_at_us = committed_at_us;
                state.kind = ReceiptKind::Applied;
                if state
                    .rejected
                    .as_ref()
                    .is_some_and(|r| r.version <= version)
                {
                    state.rejected = None;
                }
            });
        }
        if committed_at_us > 0 {
            let delay = (applied_at_us - committed_at_us).max(0) as f64 / 1e6;
            self.meters.apply_delay.record(delay);
        }
        self.meters.version.set(version as f64);
        self.shared.version.send_replace(version);
        if self.shared.notices.receiver_count() > 0 {
            let mut notice = notice();
            notice.applied_at_us = applied_at_us;
            // A receiver may go between the count and the send: nobody observing is fine.
            let _ = self.shared.notices.send(Arc::new(notice));
        }
    }

    fn drain_pending(&mut self) {
        loop {
            let current = self.shared.snapshot.load().version();
            // Drop whatever is already covered.
            self.pending = self.pending.split_off(&current);
            match self.pending.remove(&current) {
                Some(next) => self.apply(next),
                None => break,
            }
        }
        if self.pending.is_empty() {
            self.gap_since = None;
        }
    }

    /// Reloads the whole state from KV and swaps it in if it is newer; then applies whatever
    /// buffered events follow it.
    pub async fn resync(&mut self, why: &'static str) {
        let shared = Arc::clone(&self.shared);
        if self.client.connection_state() != async_nats::connection::State::Connected {
            // The reconnect itself triggers a resync; asking a disconnected client would only
            // wait out its request timeout.
            self.retry = None;
            return;
        }
        if self.validate && self.schema_check.is_none() {
            self.reload_defaults().await;
        }
        let started = Instant::now();
        let loaded = load_state(
            &self.js,
            &shared.namespace,
            &shared.environment,
            self.options.load_timeout,
        )
        .await;
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                shared
                    .counters
                    .resync_failures
                    .fetch_add(1, Ordering::Relaxed);
                let failures = self.retry.map_or(1, |(_, n)| n + 1);
                let delay = self.options.backoff.delay(failures);
                tracing::warn!(namespace = %shared.namespace, environment = %shared.environment, error = %err, retry_in_ms = delay.as_millis() as u64, "resync failed; serving the last good snapshot");
                self.retry = Some((Instant::now() + delay, failures));
                return;
            }
        };
        self.retry = None;
        if loaded.data_key.is_some() {
            self.data_key.clone_from(&loaded.data_key);
        }
        shared.health.confirm();
        shared.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mycosynth_subscriber_resyncs_total").increment(1);
        let current = shared.snapshot.load_full();
        if loaded.version > current.version() {
            let keys = changed_keys(current.values(), &loaded.values);
            let next = Snapshot::new(
                loaded.version,
                loaded.values,
                current.defaults().clone(),
                loaded.committed_at_us,
            );
            if let Err(reason) = self.check(&next, None) {
                self.reject(loaded.version, reason);
                return;
            }
            tracing::info!(namespace = %shared.namespace, environment = %shared.environment, from = current.version(), to = loaded.version, why, took_ms = started.elapsed().as_millis() as u64, "resynced from KV");
            self.publish(next, loaded.committed_at_us, || ChangeNotice {
                version: loaded.version,
                previous_version: current.version(),
                keys,
                author: String::new(),
                reason: String::new(),
                change_id: String::new(),
                approved_by: Vec::new(),
                change_request: None,
                committed_at_us: loaded.committed_at_us,
                applied_at_us: 0,
                cause: NoticeCause::Resync,
            });
        }
        self.drain_pending();
        // Anything still pending starts a fresh wait; it may be filled by a late event.
        if !self.pending.is_empty() {
            self.gap_since = Some(Instant::now());
        }
    }

    /// Anti-entropy: compares the held version with the authoritative head, so a lost final
    /// event is noticed even when no further event arrives.
    async fn check_head(&mut self) {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let kv = match &self.kv {
            Some(kv) => kv.clone(),
            None => match self.js.get_key_value(CONFIG_BUCKET).await {
                Ok(kv) => {
                    self.kv = Some(kv.clone());
                    kv
                }
                // No bucket yet: nothing committed, nothing to compare.
                Err(_) => return,
            },
        };
        let key = head_key(&self.shared.namespace, &self.shared.environment);
        let head = match tokio::time::timeout(self.options.load_timeout, kv.get(&key)).await {
            Ok(Ok(Some(bytes))) => match serde_json::from_slice::<HeadRecord>(&bytes) {
                Ok(head) => head.version,
                Err(_) => return,
            },
            Ok(Ok(None)) => 0,
            _ => return,
        };
        let held = self.shared.snapshot.load().version();
        if head > held {
            metrics::counter!("mycosynth_subscriber_anti_entropy_repairs_total").increment(1);
            tracing::info!(namespace = %self.shared.namespace, environment = %self.shared.environment, held, head, "anti-entropy: behind the authoritative version");
            self.resync("anti-entropy").await;
        } else if head == held {
            self.shared.health.confirm();
        }
    }

    async fn reload_defaults(&mut self) {
        match load_schema(&self.js, &self.shared.namespace, self.options.load_timeout).await {
            Ok(schema) => {
                if self.validate {
                    self.schema_check =
                        schema.as_ref().and_then(SchemaCheck::compile).map(Arc::new);
                }
                let current = self.shared.snapshot.load_full();
                let mut next = (*current).clone();
                next.set_defaults(Arc::new(defaults_of(schema.as_ref())));
                let next = Arc::new(next);
                self.store(Arc::clone(&next));
                if let Some(cache) = &self.cache {
                    cache.send_replace(next);
                }
            }
            Err(err) => {
                tracing::warn!(namespace = %self.shared.namespace, error = %err, "could not reload the schema")
            }
        }
    }
}

fn changed_keys(
    old: &crate::snapshot::FastMap<Arc<Value>>,
    new: &crate::snapshot::FastMap<Arc<Value>>,
) -> Vec<String> {
    let mut keys: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(k.as_ref()) != Some(*v))
        .map(|(k, _)| k.to_string())
        .chain(
            old.keys()
                .filter(|k| !new.contains_key(k.as_ref()))
                .map(|k| k.to_string()),
        )
        .collect();
    keys.sort();
    keys
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
