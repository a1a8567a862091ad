//! # mycosynth-subscriber
//!
//! What a service links to read its configuration from Mycosynth. [`Subscriber::builder`]
//! connects to NATS, loads the full snapshot of one namespace/environment from JetStream KV,
//! then follows the namespace's change events. Reads ([`Subscriber::get`] and friends) are
//! served from memory: they never touch the network and never wait for the updater.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = mycosynth_subscriber::Subscriber::builder("payment-service", "production")
//!     .nats_url("nats://127.0.0.1:4222")
//!     .connect()
//!     .await?;
//! let pool_size: u32 = config.get("database.pool_size")?;
//! let dark_mode = config.get_or("feature.dark_mode", false);
//! println!("pool {pool_size}, dark mode {dark_mode}, version {}", config.version());
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//! - **Order:** change sets become visible in version order, each one whole: a change set of
//!   many keys is one snapshot swap, so a reader never sees half of it.
//! - **Gaps:** an event whose previous version is not the one held is kept aside for
//!   `gap_timeout` (another validator's event may be late); if the gap is not filled by then,
//!   the subscriber reloads the whole state from KV. Duplicates are ignored.
//! - **Reconnects:** after every reconnect to NATS the subscriber reloads from KV, so changes
//!   made while it was cut off are caught up.
//! - **Untrusted bytes:** events are validated by rkyv before use; malformed ones are counted
//!   ([`Stats::decode_errors`]) and logged, never applied, never a panic.
//! - **Resolution order** of every read: stored value, then the schema's `default`, then the
//!   caller's default (`get_or`), then [`GetError::Missing`] naming the key.
//!
//! ## Fleet receipts and client-side validation
//! - Each instance reports the version it holds on `mycosynth.receipts.<env>.<namespace>` at every
//!   change and as a heartbeat ([`SubscriberBuilder::receipts`], on by default every 10 s), from
//!   its own task, so reporting never delays reads or updates. `mycosynth status` shows them.
//! - With the feature `validation` and [`SubscriberBuilder::validate_against_schema`], each new
//!   snapshot is checked against the namespace schema before it is served; a version that breaks
//!   it is refused (the previous snapshot stays), logged, counted
//!   (`mycosynth_subscriber_rejected_versions_total`) and reported as rejected.
//!
//! ## When NATS is down
//! - **Reads never fail because of NATS.** They are served from the last snapshot, however long
//!   the outage; [`Subscriber::status`] tells how stale it is.
//! - **Last-known-good cache** ([`SubscriberBuilder::cache_dir`]): after every applied version
//!   the snapshot (values, schema defaults, version) is written to
//!   `<dir>/<namespace>.<env>.lkg` atomically (temp file, fsync, rename) with a format version
//!   and a CRC-32, by a separate task, so a slow disk never delays updates. A truncated,
//!   corrupted, foreign-format or other-namespace file is refused as a whole with one warning.
//! - **Offline start:** with a usable cache, `connect` returns at once serving it and connects
//!   in the background, catching up by itself when NATS answers. Without one,
//!   [`StartPolicy`] decides: fail at once (default), wait up to a deadline, or start from the
//!   schema's defaults.
//! - **Backoff:** reconnects and resync retries back off exponentially with jitter
//!   ([`SubscriberBuilder::backoff`], default 250 ms doubling to 30 s), so a fleet does not
//!   stampede a recovering server.
//! - **Anti-entropy:** every [`SubscriberBuilder::anti_entropy_interval`] (default 30 s) the held
//!   version is compared with the authoritative head, so a lost final event is repaired even
//!   when no further event arrives.
//! - **Metrics:** `mycosynth_subscriber_connected`, `_staleness_seconds`, `_version` (gauges);
//!   `_updates_applied_total`, `_resyncs_total`, `_decode_errors_total`, `_reconnects_total`,
//!   `_connect_attempts_total`, `_cache_writes_total`, `_cache_refused_total`,
//!   `_anti_entropy_repairs_total`, `_snapshot_copies_total` (counters); `_apply_delay_seconds`
//!   (histogram). `_version`, `_staleness_seconds`, `_updates_applied_total`,
//!   `_snapshot_copies_total` and `_apply_delay_seconds` carry `namespace` and `environment`
//!   labels, so several subscribers in one process are told apart.
#![deny(missing_docs)]

mod backoff;
mod builder;
pub mod cache;
mod check;
mod credentials;
mod inherit;
pub mod kv_scan;
mod loader;
mod next_values;
mod reporter;
mod rollout;
mod secrets;
mod site;
mod snapshot;
mod status;
mod updater;
pub mod wire;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use backoff::Backoff;
pub use builder::{StartPolicy, SubscriberBuilder};
pub use credentials::{Credentials, CredentialsError};
pub use site::EventSource;
pub use snapshot::{GetError, Resolved, Snapshot, ValueSource};
pub use status::{Origin, Status};
pub use updater::{ChangeNotice, NoticeCause};

/// The README's examples compile as written.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme_examples {}

/// So do the examples of the pages in `docs/`.
#[cfg(doctest)]
mod docs_examples {
    #[doc = include_str!("../../docs/operations.md")]
    mod operations {}
    #[doc = include_str!("../../docs/config-as-code.md")]
    mod config_as_code {}
    #[doc = include_str!("../../docs/security.md")]
    mod security {}
    #[doc = include_str!("../../docs/change-requests.md")]
    mod change_requests {}
    #[doc = include_str!("../../docs/performance.md")]
    mod performance {}
    #[doc = include_str!("../../docs/regions.md")]
    mod regions {}
    #[doc = include_str!("../../docs/backup.md")]
    mod backup {}
}

use kv_scan::ScanError;
use updater::Shared;
use wire::NameError;

/// Why a subscriber could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The namespace or environment name breaks the naming rules.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The server URL(s).
        url: String,
        /// What the client said.
        message: String,
    },
    /// The snapshot could not be loaded from KV.
    #[error("cannot load config from NATS KV: {0}")]
    Load(#[from] ScanError),
    /// Subscribing to change events failed.
    #[error("cannot subscribe to change events: {0}")]
    Subscribe(String),
}

/// Counters of what a subscriber did since it started.
///
/// ```no_run
/// # async fn run(config: mycosynth_subscriber::Subscriber) {
/// let stats = config.stats();
/// println!("{} events applied, {} malformed", stats.updates_applied, stats.decode_errors);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Change events applied in order.
    pub updates_applied: u64,
    /// Full reloads from KV (not counting the first load).
    pub resyncs: u64,
    /// Resync attempts that failed (NATS unreachable).
    pub resync_failures: u64,
    /// Malformed or foreign events received and ignored.
    pub decode_errors: u64,
    /// Events for versions already held, ignored.
    pub duplicates_ignored: u64,
    /// Connection attempts made after a failure (initial retries and reconnects).
    pub connect_attempts: u64,
    /// Times a connection was established (the first one included).
    pub reconnects: u64,
    /// Change events whose new snapshot copied the whole value map of the current one: the
    /// first event, the first after a resync or a schema reload, and any event applied while a
    /// reader still held the snapshot before the current one. Every other event reuses that
    /// snapshot's map and costs only the keys it changes.
    pub snapshot_copies: u64,
}

/// Stops the updater task when the last handle goes.
struct Lifetime {
    shutdown: watch::Sender<bool>,
    /// The updater and, with a cache, the cache writer.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

/// A live, in-memory view of one namespace/environment's config. Cheap to clone; every clone
/// reads the same snapshot. The background task stops when the last clone is dropped or
/// [`Subscriber::shutdown`] is called.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use mycosynth_subscriber::Subscriber;
/// let config = Subscriber::builder("payment-service", "production").connect().await?;
/// let timeout_ms: u64 = config.get_or("http.timeout_ms", 250);
/// # let _ = timeout_ms;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Subscriber {
    shared: Arc<Shared>,
    lifetime: Arc<Lifetime>,
    /// Inner subscribers of the declared parent environments, nearest first (usually empty).
    parents: Arc<[Subscriber]>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("namespace", &self.shared.namespace)
            .field("environment", &self.shared.environment)
            .field("version", &self.version())
            .finish()
    }
}

impl Subscriber {
    /// Starts building a subscriber for `namespace` in `environment`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), mycosynth_subscriber::Error> {
    /// let config = mycosynth_subscriber::Subscriber::builder("payment-service", "staging")
    ///     .nats_url("nats://10.0.0.1:4222,nats://10.0.0.2:4222")
    ///     .connect()
    ///     .await?;
    /// # let _ = config; Ok(()) }
    /// ```
    pub fn builder(
        namespace: impl Into<String>,
        environment: impl Into<String>,
    ) -> SubscriberBuilder {
        SubscriberBuilder::new(namespace.into(), environment.into())
    }

    /// The value of `key` as `T` (stored, else a parent environment's, nearest first, else
    /// the schema default, else [`GetError::Missing`]).
    /// Memory only: a lock-free snapshot load and a map lookup.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) -> Result<(), mycosynth_subscriber::GetError> {
    /// let pool_size: u32 = config.get("database.pool_size")?;
    /// # let _ = pool_size; Ok(()) }
    /// ```
    #[inline]
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T, GetError> {
        if self.parents.is_empty() {
            return self.with_current(|s| s.get(key));
        }
        inherit::resolve(self, &self.parents, key, |value| match value {
            Some(Resolved { value, .. }) => {
                T::deserialize(value).map_err(|err| GetError::WrongType {
                    key: key.to_owned(),
                    message: err.to_string(),
                })
            }
            None => Err(GetError::Missing {
                key: key.to_owned(),
            }),
        })
    }

    /// The value of `key` as `T`, or `default` when neither stored nor defaulted by the schema.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// let retries: u32 = config.get_or("http.retries", 3);
    /// # let _ = retries; }
    /// ```
    #[inline]
    pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> T {
        if self.parents.is_empty() {
            return self.with_current(|s| s.get_or(key, default));
        }
        snapshot::or_default(self.get(key), default)
    }

    /// Every key under `prefix.` as a nested object deserialized into `T`.
    ///
    /// ```no_run
    /// #[derive(serde::Deserialize)]
    /// struct Database { pool_size: u32, host: String }
    /// # fn run(config: mycosynth_subscriber::Subscriber) -> Result<(), mycosynth_subscriber::GetError> {
    /// let db: Database = config.get_section("database")?;
    /// # let _ = db; Ok(()) }
    /// ```
    pub fn get_section<T: DeserializeOwned>(&self, prefix: &str) -> Result<T, GetError> {
        if self.parents.is_empty() {
            return self.with_current(|s| s.get_section(prefix));
        }
        inherit::merged(self, &self.parents).get_section(prefix)
    }

    /// Calls `read` with the JSON value of `key` and where it came from (this environment,
    /// a parent environment, or the schema default), or with `None` when it has no value.
    /// Memory only, like [`Subscriber::get`]; the value is borrowed from the snapshot for the
    /// length of the call, so nothing is copied.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// let line = config.read_raw("database.pool_size", |found| match found {
    ///     Some(r) => format!("{} ({} from {})", r.value, r.source.as_str(), r.environment),
    ///     None => "not set".to_owned(),
    /// });
    /// println!("{line}");
    /// # }
    /// ```
    #[inline]
    pub fn read_raw<R>(&self, key: &str, read: impl FnOnce(Option<Resolved<'_>>) -> R) -> R {
        inherit::resolve(self, &self.parents, key, read)
    }

    /// Every key that has a value, with its value and where it came from: own values, then
    /// inherited values no nearer environment shadows, then schema defaults of keys set
    /// nowhere. A copy, sorted by key; for reading single keys use [`Subscriber::get`].
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// for (key, (value, source)) in config.effective() {
    ///     println!("{key} = {value} ({})", source.as_str());
    /// }
    /// # }
    /// ```
    pub fn effective(
        &self,
    ) -> std::collections::BTreeMap<String, (serde_json::Value, ValueSource)> {
        inherit::effective(self, &self.parents)
    }

    /// The versions held of the parent environments, nearest first (empty without a parent).
    /// With [`Subscriber::version`] they tell whether anything a read can return has changed.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// println!("own v{}, parents {:?}", config.version(), config.parent_versions());
    /// # }
    /// ```
    pub fn parent_versions(&self) -> Vec<u64> {
        self.parents.iter().map(Subscriber::version).collect()
    }

    /// The environments this one inherits from, nearest first (empty without a declared
    /// parent). Read at connect; a new declaration takes effect when the subscriber restarts.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// println!("inherits from {:?}", config.parents());
    /// # }
    /// ```
    pub fn parents(&self) -> Vec<String> {
        self.parents
            .iter()
            .map(|p| p.shared.environment.to_string())
            .collect()
    }

    /// The whole current snapshot; it stays the same for as long as it is held, so several reads
    /// from it are consistent with each other.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// let snapshot = config.snapshot();
    /// println!("version {} with {} keys", snapshot.version(), snapshot.len());
    /// # }
    /// ```
    pub fn snapshot(&self) -> Arc<Snapshot> {
        if self.shared.canary.serving.load(Ordering::Relaxed) {
            if let Some(candidate) = self.shared.canary.candidate.load_full() {
                return candidate;
            }
        }
        self.shared.snapshot.load_full()
    }

    /// Runs `read` on the snapshot served now: the rollout's candidate while this instance is
    /// in its cohort, else the stable one.
    #[inline]
    fn with_current<T>(&self, read: impl FnOnce(&Snapshot) -> T) -> T {
        if self.shared.canary.serving.load(Ordering::Relaxed) {
            if let Some(candidate) = self.shared.canary.candidate.load().as_deref() {
                return read(candidate);
            }
        }
        read(&self.shared.snapshot.load())
    }

    /// The rollout whose candidate this instance serves now, if any (docs/rollouts.md). Its
    /// [`version`](Self::version) stays the stable version the candidate is built on.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// if let Some(rollout) = config.rollout() {
    ///     println!("canary of {rollout}");
    /// }
    /// # }
    /// ```
    pub fn rollout(&self) -> Option<String> {
        self.shared
            .canary
            .hold()
            .filter(|h| h.candidate)
            .map(|h| h.id)
    }

    /// This instance's id in the fleet view and in rollouts.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// println!("I am {}", config.instance_id());
    /// # }
    /// ```
    pub fn instance_id(&self) -> &str {
        &self.shared.canary.instance_id
    }

    /// Registers a health indicator: its value travels in every receipt, and a rollout compares
    /// its canary cohort's mean with the control cohort's. Registering a name again replaces
    /// it. `value` runs on the receipt task, so it should be quick (read an atomic).
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// let errors = Arc::new(AtomicU64::new(0));
    /// let seen = Arc::clone(&errors);
    /// config.health_signal("http_5xx_ratio", move || seen.load(Ordering::Relaxed) as f64 / 1e3);
    /// # }
    /// ```
    pub fn health_signal<F>(&self, name: impl Into<String>, value: F)
    where
        F: Fn() -> f64 + Send + Sync + 'static,
    {
        let name = name.into();
        let mut signals = self
            .shared
            .canary
            .signals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        signals.retain(|(n, _)| *n != name);
        signals.push((name, Arc::new(value)));
    }

    /// The service's own check of a rollout's candidate before serving it: an `Err` keeps this
    /// instance on the stable version and reports the rejection, which aborts a rollout started
    /// with `--auto-rollback`.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// config.check_candidate(|candidate| match candidate.get::<u32>("database.pool_size") {
    ///     Ok(n) if n > 500 => Err(format!("pool of {n} exceeds this host's file limit")),
    ///     _ => Ok(()),
    /// });
    /// # }
    /// ```
    pub fn check_candidate<F>(&self, check: F)
    where
        F: Fn(&Snapshot) -> Result<(), String> + Send + Sync + 'static,
    {
        *self
            .shared
            .canary
            .check
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(check));
    }

    /// The version currently held.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// println!("serving version {}", config.version());
    /// # }
    /// ```
    pub fn version(&self) -> u64 {
        self.shared.snapshot.load().version()
    }

    /// A stream of change notices, one per version made visible. A receiver that falls more
    /// than 1,024 notices behind gets `RecvError::Lagged` and can read the snapshot instead.
    ///
    /// ```no_run
    /// # async fn run(config: mycosynth_subscriber::Subscriber) {
    /// let mut changes = config.subscribe();
    /// while let Ok(notice) = changes.recv().await {
    ///     println!("now at version {}: {:?}", notice.version, notice.keys);
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeNotice>> {
        self.shared.notices.subscribe()
    }

    /// Calls `callback` for every change notice, on a task that ends with the subscriber.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// config.on_change(|notice| println!("changed: {:?}", notice.keys));
    /// # }
    /// ```
    pub fn on_change<F>(&self, callback: F)
    where
        F: Fn(&ChangeNotice) + Send + 'static,
    {
        let mut notices = self.subscribe();
        let mut shutdown = self.lifetime.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    notice = notices.recv() => match notice {
                        Ok(notice) => callback(&notice),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
    }

    /// A watch channel of the version held, for waiting on a version.
    ///
    /// ```no_run
    /// # async fn run(config: mycosynth_subscriber::Subscriber) {
    /// let mut version = config.version_watch();
    /// version.wait_for(|v| *v >= 10).await.ok();
    /// # }
    /// ```
    pub fn version_watch(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    /// Waits until the version held is at least `version`; false if `timeout` passes first.
    ///
    /// ```no_run
    /// # async fn run(config: mycosynth_subscriber::Subscriber) {
    /// let caught_up = config.wait_for_version(42, std::time::Duration::from_secs(1)).await;
    /// # let _ = caught_up; }
    /// ```
    pub async fn wait_for_version(&self, version: u64, timeout: Duration) -> bool {
        let mut watch = self.version_watch();
        tokio::time::timeout(timeout, watch.wait_for(|v| *v >= version))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Asks the subscriber to reload its state from KV now (it also does so by itself on gaps
    /// and reconnects).
    ///
    /// ```no_run
    /// # async fn run(config: mycosynth_subscriber::Subscriber) {
    /// config.resync().await;
    /// # }
    /// ```
    pub async fn resync(&self) {
        let _ = self.shared.resync_requests.send(()).await;
    }

    /// What the subscriber did since it started.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// assert_eq!(config.stats().decode_errors, 0);
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            updates_applied: c.applied.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            resync_failures: c.resync_failures.load(Ordering::Relaxed),
            decode_errors: c.decode_errors.load(Ordering::Relaxed),
            duplicates_ignored: c.duplicates.load(Ordering::Relaxed),
            connect_attempts: self.shared.health.connect_attempts.load(Ordering::Relaxed),
            reconnects: self.shared.health.reconnects.load(Ordering::Relaxed),
            snapshot_copies: c.snapshot_copies.load(Ordering::Relaxed),
        }
    }

    /// Stops the background task and waits for it. Reads keep working on the last snapshot.
    ///
    /// ```no_run
    /// # async fn run(config: mycosynth_subscriber::Subscriber) {
    /// config.shutdown().await;
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        self.lifetime.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = self
            .lifetime
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// Connection, version, origin and staleness, for health checks and dashboards.
    ///
    /// ```no_run
    /// # fn run(config: mycosynth_subscriber::Subscriber) {
    /// let status = config.status();
    /// println!("v{} connected={} stale for {:?}", status.version, status.connected, status.staleness);
    /// # }
    /// ```
    pub fn status(&self) -> Status {
        let server = self.shared.client.server_info().server_name;
        self.shared
            .health
            .status(self.version(), (!server.is_empty()).then_some(server))
    }
}
