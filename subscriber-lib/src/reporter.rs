//! Receipts: each instance tells the fleet which version it holds, at every change and as a
//! heartbeat. A separate task publishes them; the updater only swaps the latest state into a
//! watch channel, so reporting never delays reads or updates.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::status::Health;
use crate::updater::now_us;
use crate::wire::{Receipt, ReceiptKind, Rejection};

/// This instance's receipt with its identity filled in (host, pid, start time, instance id) and
/// nothing reported yet; every receipt sent is a copy of it with the current state.
pub(crate) fn identity(namespace: &str, environment: &str, instance_id: String) -> Receipt {
    let host = host_name();
    let pid = std::process::id();
    Receipt {
        namespace: namespace.to_owned(),
        environment: environment.to_owned(),
        instance_id,
        host,
        pid,
        started_at_us: now_us(),
        version: 0,
        applied_at_us: 0,
        committed_at_us: 0,
        connected: false,
        kind: ReceiptKind::Heartbeat,
        rejected: None,
        sent_at_us: 0,
        labels: Default::default(),
        health: Default::default(),
        rollout: None,
    }
}

/// The host name (`/etc/hostname`, else `$HOSTNAME`).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The default instance id: `<host>-<pid>`, and `-<n>` for the n-th subscriber after the first
/// in this process (several subscribers of one process stay apart in the fleet view).
pub(crate) fn default_instance_id() -> String {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = format!("{}-{}", host_name(), std::process::id());
    if n == 0 {
        base
    } else {
        format!("{base}-{n}")
    }
}

/// The latest thing to report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReportState {
    pub version: u64,
    pub applied_at_us: i64,
    pub committed_at_us: i64,
    pub kind: ReceiptKind,
    /// The last refused version, until a newer version is applied.
    pub rejected: Option<Rejection>,
}

/// Publishes a receipt whenever the state changes and every `interval` otherwise.
pub(crate) fn spawn_reporter(
    client: async_nats::Client,
    subject: String,
    identity: Receipt,
    interval: Duration,
    (health, canary): (Arc<Health>, Arc<crate::rollout::Canary>),
    mut state: watch::Receiver<ReportState>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let kind = tokio::select! {
                _ = shutdown.changed() => break,
                changed = state.changed() => match changed {
                    Ok(()) => None,
                    Err(_) => break,
                },
                _ = heartbeat.tick() => Some(ReceiptKind::Heartbeat),
            };
            let current = state.borrow_and_update().clone();
            let receipt = Receipt {
                version: current.version,
                applied_at_us: current.applied_at_us,
                committed_at_us: current.committed_at_us,
                connected: health.connected.load(std::sync::atomic::Ordering::Relaxed),
                kind: kind.unwrap_or(current.kind),
                rejected: current.rejected.clone(),
                sent_at_us: now_us(),
                labels: canary.labels.clone(),
                health: canary.health(),
                rollout: canary.hold(),
                ..identity.clone()
            };
            if client.connection_state() != async_nats::connection::State::Connected {
                continue; // Nobody would hear it; the next heartbeat after reconnecting will.
            }
            match serde_json::to_vec(&receipt) {
                Ok(body) => {
                    if let Err(err) = client.publish(subject.clone(), Bytes::from(body)).await {
                        tracing::debug!(error = %err, "could not publish a receipt");
                    }
                }
                Err(err) => tracing::debug!(error = %err, "could not encode a receipt"),
            }
        }
    })
}
