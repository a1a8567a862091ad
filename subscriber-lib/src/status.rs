//! What a subscriber knows about its own health: connection, version, and how stale it is.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::updater::now_us;

/// Where the snapshot being served came from at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from NATS KV (or resynced since).
    Nats,
    /// The last-known-good cache file; NATS has not been reached since start.
    Cache,
    /// The schema defaults given to `StartPolicy::SchemaDefaults`; nothing loaded yet.
    Defaults,
}

/// A subscriber's health, as [`Subscriber::status`](crate::Subscriber::status) reports it.
///
/// ```no_run
/// # fn run(config: mycosynth_subscriber::Subscriber) {
/// let status = config.status();
/// if status.staleness > std::time::Duration::from_secs(300) {
///     eprintln!("config v{} unconfirmed for {:?} (connected: {})", status.version, status.staleness, status.connected);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Connected to NATS right now.
    pub connected: bool,
    /// Since when the connection has been in its current state (connected or not).
    pub since: SystemTime,
    /// The version held.
    pub version: u64,
    /// Where the served snapshot came from.
    pub origin: Origin,
    /// When the held version was made visible (None: never updated since start).
    pub last_update: Option<SystemTime>,
    /// When NATS last confirmed that the held version is current (load, event, resync or
    /// anti-entropy check). None: never since start.
    pub last_confirmed: Option<SystemTime>,
    /// Time since `last_confirmed` (or since start, if never).
    pub staleness: Duration,
    /// The name of the NATS server the subscriber is (or was last) connected to.
    pub server: Option<String>,
}

/// The atomics behind [`Status`], updated by the connection callback and the updater.
#[derive(Debug)]
pub(crate) struct Health {
    pub connected: AtomicBool,
    pub state_since_us: AtomicI64,
    pub started_us: i64,
    pub last_update_us: AtomicI64,
    pub confirmed_us: AtomicI64,
    pub origin: AtomicU8,
    pub connect_attempts: AtomicU64,
    pub reconnects: AtomicU64,
}

impl Health {
    pub fn new() -> Health {
        let now = now_us();
        Health {
            connected: AtomicBool::new(false),
            state_since_us: AtomicI64::new(now),
            started_us: now,
            last_update_us: AtomicI64::new(0),
            confirmed_us: AtomicI64::new(0),
            origin: AtomicU8::new(Origin::Nats as u8),
            connect_attempts: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    pub fn set_connected(&self, connected: bool) {
        if self.connected.swap(connected, Ordering::SeqCst) != connected {
            self.state_since_us.store(now_us(), Ordering::SeqCst);
        }
        metrics::gauge!("mycosynth_subscriber_connected").set(if connected { 1.0 } else { 0.0 });
    }

    pub fn confirm(&self) {
        self.confirmed_us.store(now_us(), Ordering::SeqCst);
        self.origin.store(Origin::Nats as u8, Ordering::SeqCst);
    }

    /// A change from NATS became visible at `at_us`: fresh, and confirmed.
    pub fn applied(&self, at_us: i64) {
        self.last_update_us.store(at_us, Ordering::SeqCst);
        self.confirmed_us.store(at_us, Ordering::SeqCst);
        self.origin.store(Origin::Nats as u8, Ordering::SeqCst);
    }

    pub fn set_origin(&self, origin: Origin) {
        self.origin.store(origin as u8, Ordering::SeqCst);
    }

    pub fn staleness(&self) -> Duration {
        let confirmed = self.confirmed_us.load(Ordering::SeqCst);
        let since = if confirmed > 0 {
            confirmed
        } else {
            self.started_us
        };
        Duration::from_micros(u64::try_from(now_us() - since).unwrap_or(0))
    }

    pub fn status(&self, version: u64, server: Option<String>) -> Status {
        let time = |us: i64| UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0));
        let optional = |us: i64| (us > 0).then(|| time(us));
        Status {
            connected: self.connected.load(Ordering::SeqCst),
            since: time(self.state_since_us.load(Ordering::SeqCst)),
            version,
            origin: match self.origin.load(Ordering::SeqCst) {
                x if x == Origin::Cache as u8 => Origin::Cache,
                x if x == Origin::Defaults as u8 => Origin::Defaults,
                _ => Origin::Nats,
            },
            last_update: optional(self.last_update_us.load(Ordering::SeqCst)),
            last_confirmed: optional(self.confirmed_us.load(Ordering::SeqCst)),
            staleness: self.staleness(),
            server,
        }
    }
}
