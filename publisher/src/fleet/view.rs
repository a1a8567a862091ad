//! The fleet view: which subscriber instances hold which version. Every validator instance
//! listens to all receipts (a plain subscription, not the queue group), so any of them can answer
//! `status`; records of instances that stop reporting expire by themselves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use mycosynth_subscriber::wire::{
    InstanceState, InstanceStatus, Receipt, SignalImpact, StatusOutcome,
};

use super::signals::SignalHistory;

/// How long until an instance is called stale, and until it is forgotten.
#[derive(Debug, Clone, Copy)]
pub struct FleetOptions {
    /// No receipt for this long: the instance is listed as stale.
    pub stale_after: Duration,
    /// No receipt for this long: the instance is dropped from the live list.
    pub expire_after: Duration,
}

impl Default for FleetOptions {
    /// Stale after 25 s (two missed 10 s heartbeats and change), forgotten after 60 s.
    fn default() -> Self {
        FleetOptions {
            stale_after: Duration::from_secs(25),
            expire_after: Duration::from_secs(60),
        }
    }
}

struct Seen {
    receipt: Receipt,
    last_seen_us: i64,
}

/// Receipts by (namespace, environment) and instance id.
pub struct Fleet {
    options: FleetOptions,
    instances: Mutex<HashMap<(String, String), HashMap<String, Seen>>>,
    /// The last version whose convergence time was recorded, per namespace/environment.
    converged: Mutex<HashMap<(String, String), u64>>,
    /// The health signals of the last hour, for `impact`.
    signals: Mutex<SignalHistory>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Fleet {
    /// An empty fleet.
    pub fn new(options: FleetOptions) -> Fleet {
        Fleet {
            options,
            instances: Mutex::default(),
            converged: Mutex::default(),
            signals: Mutex::default(),
        }
    }

    /// How long an instance may be silent before it is listed as stale.
    pub fn stale_after(&self) -> Duration {
        self.options.stale_after
    }

    /// Records a receipt received at `now_us`.
    pub fn record(&self, receipt: Receipt, now_us: i64) {
        self.signals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(&receipt, now_us);
        let mut instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        let group = instances
            .entry((receipt.namespace.clone(), receipt.environment.clone()))
            .or_default();
        group.insert(
            receipt.instance_id.clone(),
            Seen {
                receipt,
                last_seen_us: now_us,
            },
        );
    }

    /// The health signals of `ns`/`env` in the `window_us` before and after the commit of
    /// `version` at `committed_at_us`.
    pub fn impact(
        &self,
        ns: &str,
        env: &str,
        version: u64,
        committed_at_us: i64,
        window_us: i64,
    ) -> Vec<SignalImpact> {
        self.signals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .impact(ns, env, version, committed_at_us, window_us)
    }

    /// Forgets instances not heard from within the expiry.
    pub fn expire(&self, now_us: i64) {
        let expire = micros(self.options.expire_after);
        let mut instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        for group in instances.values_mut() {
            group.retain(|_, seen| now_us - seen.last_seen_us <= expire);
        }
        instances.retain(|_, group| !group.is_empty());
    }

    /// The namespace/environment pairs with live instances.
    pub fn groups(&self) -> Vec<(String, String)> {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The fleet of `ns`/`env` against the latest version.
    pub fn status(
        &self,
        ns: &str,
        env: &str,
        latest_version: u64,
        latest_committed_at_us: i64,
        now_us: i64,
    ) -> StatusOutcome {
        self.expire(now_us);
        let stale = micros(self.options.stale_after);
        let instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<InstanceStatus> = instances
            .get(&(ns.to_owned(), env.to_owned()))
            .map(|group| {
                group
                    .values()
                    .map(|seen| {
                        let r = &seen.receipt;
                        let state = if now_us - seen.last_seen_us > stale {
                            InstanceState::Stale
                        } else if r.version >= latest_version {
                            InstanceState::Current
                        } else if r.rejected.is_some() {
                            InstanceState::Rejected
                        } else {
                            InstanceState::Behind
                        };
                        InstanceStatus {
                            receipt: r.clone(),
                            state,
                            last_seen_us: seen.last_seen_us,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        list.sort_by(|a, b| a.receipt.instance_id.cmp(&b.receipt.instance_id));
        let holding_latest = list
            .iter()
            .filter(|i| i.receipt.version >= latest_version)
            .count();
        let convergence_ms = (holding_latest == list.len()
            && !list.is_empty()
            && latest_committed_at_us > 0)
            .then(|| {
                list.iter()
                    .filter(|i| i.receipt.version == latest_version && i.receipt.applied_at_us > 0)
                    .map(|i| i.receipt.applied_at_us)
                    .max()
                    .map(|last| (last - latest_committed_at_us) as f64 / 1000.0)
            })
            .flatten();
        StatusOutcome {
            latest_version,
            latest_committed_at_us,
            instances: list,
            holding_latest,
            convergence_ms,
            sites: Vec::new(),
        }
    }

    /// Exports the fleet gauges of `ns`/`env`, and the convergence time of a version once.
    pub fn export(&self, ns: &str, env: &str, status: &StatusOutcome, now_us: i64) {
        let labels = [
            ("namespace", ns.to_owned()),
            ("environment", env.to_owned()),
        ];
        let behind = status
            .instances
            .iter()
            .filter(|i| i.state != InstanceState::Current)
            .count();
        let max_silence = status
            .instances
            .iter()
            .map(|i| now_us - i.last_seen_us)
            .max()
            .unwrap_or(0);
        metrics::gauge!("mycosynth_fleet_instances", &labels).set(status.instances.len() as f64);
        metrics::gauge!("mycosynth_fleet_instances_behind", &labels).set(behind as f64);
        metrics::gauge!("mycosynth_fleet_max_staleness_seconds", &labels)
            .set(max_silence as f64 / 1e6);
        if let Some(ms) = status.convergence_ms {
            let mut converged = self.converged.lock().unwrap_or_else(|p| p.into_inner());
            let last = converged
                .entry((ns.to_owned(), env.to_owned()))
                .or_insert(0);
            if *last < status.latest_version {
                *last = status.latest_version;
                metrics::histogram!("mycosynth_fleet_convergence_seconds", &labels)
                    .record(ms / 1000.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::{ReceiptKind, Rejection};

    fn receipt(id: &str, version: u64, applied_at_us: i64) -> Receipt {
        Receipt {
            namespace: "ns".into(),
            environment: "e".into(),
            instance_id: id.into(),
            host: "h".into(),
            pid: 1,
            started_at_us: 0,
            version,
            applied_at_us,
            committed_at_us: 1_000,
            connected: true,
            kind: ReceiptKind::Applied,
            rejected: None,
            sent_at_us: applied_at_us,
            labels: Default::default(),
            health: Default::default(),
            rollout: None,
        }
    }

    #[test]
    fn states_convergence_and_expiry() {
        let fleet = Fleet::new(FleetOptions {
            stale_after: Duration::from_secs(2),
            expire_after: Duration::from_secs(5),
        });
        let s = 1_000_000;
        fleet.record(receipt("a", 3, 4_000), s);
        fleet.record(receipt("b", 3, 9_000), s);
        let status = fleet.status("ns", "e", 3, 1_000, s);
        assert_eq!(
            (status.holding_latest, status.convergence_ms),
            (2, Some(8.0))
        );
        let mut c = receipt("c", 2, 0);
        c.rejected = Some(Rejection {
            version: 3,
            reason: "bad".into(),
        });
        fleet.record(c, s);
        fleet.record(receipt("d", 2, 0), s - 3_000_000);
        let status = fleet.status("ns", "e", 3, 1_000, s);
        let states: Vec<_> = status
            .instances
            .iter()
            .map(|i| (i.receipt.instance_id.as_str(), i.state))
            .collect();
        assert_eq!(
            states,
            [
                ("a", InstanceState::Current),
                ("b", InstanceState::Current),
                ("c", InstanceState::Rejected),
                ("d", InstanceState::Stale)
            ]
        );
        assert_eq!(status.convergence_ms, None);
        let later = fleet.status("ns", "e", 3, 1_000, s + 5_500_000);
        assert!(later.instances.is_empty(), "everyone expired");
    }
}
