//! Fleet view: the receipts subscribers publish about the version they hold, and the validator's
//! answer to "which instances hold which version".

use serde::{Deserialize, Serialize};

/// Why a receipt was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// A new version became visible to readers.
    Applied,
    /// Periodic: nothing changed, still alive.
    Heartbeat,
    /// A change was refused by the instance (bad bytes or failed client-side validation).
    Rejected,
}

/// What one subscriber instance reports, as JSON on
/// [`receipt_subject`](super::receipt_subject).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Namespace the instance reads.
    pub namespace: String,
    /// Environment it reads.
    pub environment: String,
    /// Unique per process (host, pid and a random part by default).
    pub instance_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Process start (of the subscriber), µs since the Unix epoch.
    pub started_at_us: i64,
    /// The version it holds.
    pub version: u64,
    /// When it made that version visible, µs since the epoch (0: loaded at start).
    pub applied_at_us: i64,
    /// When that version was committed, µs since the epoch (0: unknown).
    pub committed_at_us: i64,
    /// Connected to NATS when sending (always true when the receipt arrives, but a receipt
    /// sent right after a reconnect says it was not before).
    pub connected: bool,
    /// Why this receipt was sent.
    pub kind: ReceiptKind,
    /// For a rejection: the version refused and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejection>,
    /// When it was sent, µs since the epoch.
    pub sent_at_us: i64,
    /// The instance's labels (`.labels(..)`), matched by a rollout's `--target`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its health signals now (`health_signal`), compared between a rollout's cohorts.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub health: std::collections::BTreeMap<String, f64>,
    /// The running rollout it knows of, and whether it serves its candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::RolloutHold>,
}

/// A change an instance refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The version refused.
    pub version: u64,
    /// Why, in one line.
    pub reason: String,
}

/// Ask the validator which instances of a namespace/environment hold which version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
}

/// How an instance stands against the latest version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Holds the latest version.
    Current,
    /// Reporting, but holds an older version.
    Behind,
    /// Refused the latest change it saw and serves an older version.
    Rejected,
    /// Has not reported for longer than two heartbeats.
    Stale,
}

/// One live instance in a [`StatusOutcome`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The instance's last receipt.
    pub receipt: Receipt,
    /// Its standing.
    pub state: InstanceState,
    /// When the validator last heard from it, µs since the epoch.
    pub last_seen_us: i64,
}

/// The fleet of a namespace/environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusOutcome {
    /// The authoritative version.
    pub latest_version: u64,
    /// When it was committed, µs since the epoch.
    pub latest_committed_at_us: i64,
    /// Live instances (records expire after the validator's instance expiry).
    pub instances: Vec<InstanceStatus>,
    /// How many live instances hold the latest version.
    pub holding_latest: usize,
    /// From the commit of the latest version until the last live instance applied it, in ms
    /// (None while some instance does not hold it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence_ms: Option<f64>,
    /// The read-only site replicas the validator watches (`serve --site`), with their lag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<super::SiteLag>,
}
