//! The fleet's health signals over time, for `impact`: every receipt that carries signals is
//! kept for an hour (at most [`MAX_SAMPLES`] per namespace/environment), and a version's impact
//! is the signals of the window before its commit against those of the window after it. Pure.
//!
//! Kept in memory by every validator instance (each one hears every receipt), so any of them
//! answers; a validator that has just started knows only what it heard since.

use std::collections::{BTreeMap, HashMap, VecDeque};

use mycosynth_subscriber::wire::{Receipt, SignalImpact, SignalWindow};

/// How long samples are kept, µs.
pub const RETAIN_US: i64 = 3_600 * 1_000_000;
/// The most samples kept per namespace/environment (oldest dropped first).
pub const MAX_SAMPLES: usize = 200_000;

/// One receipt's signals.
#[derive(Debug, Clone)]
struct Sample {
    at_us: i64,
    instance_id: String,
    version: u64,
    /// Served a rollout's candidate: not the stable version's signal.
    candidate: bool,
    health: BTreeMap<String, f64>,
}

/// Samples by (namespace, environment), oldest first.
#[derive(Debug, Default)]
pub struct SignalHistory {
    groups: HashMap<(String, String), VecDeque<Sample>>,
}

/// Per signal, per instance: (sum, count).
type Sums = BTreeMap<String, HashMap<String, (f64, usize)>>;

impl SignalHistory {
    /// Keeps the signals of `receipt`, heard at `now_us` (a receipt without signals is not kept).
    pub fn record(&mut self, receipt: &Receipt, now_us: i64) {
        if receipt.health.is_empty() {
            return;
        }
        let group = self
            .groups
            .entry((receipt.namespace.clone(), receipt.environment.clone()))
            .or_default();
        group.push_back(Sample {
            at_us: now_us,
            instance_id: receipt.instance_id.clone(),
            version: receipt.version,
            candidate: receipt.rollout.as_ref().is_some_and(|r| r.candidate),
            health: receipt.health.clone(),
        });
        while group.len() > MAX_SAMPLES
            || group.front().is_some_and(|s| now_us - s.at_us > RETAIN_US)
        {
            group.pop_front();
        }
    }

    /// The signals of `ns`/`env` in the `window_us` before `committed_at_us` (instances on an
    /// earlier version) against the `window_us` after it (instances on `version`), by name.
    pub fn impact(
        &self,
        ns: &str,
        env: &str,
        version: u64,
        committed_at_us: i64,
        window_us: i64,
    ) -> Vec<SignalImpact> {
        let mut before = Sums::new();
        let mut after = Sums::new();
        let key = (ns.to_string(), env.to_string());
        for sample in self.groups.get(&key).into_iter().flatten() {
            if sample.candidate {
                continue;
            }
            let side = if (committed_at_us - window_us..committed_at_us).contains(&sample.at_us)
                && sample.version < version
            {
                &mut before
            } else if (committed_at_us..=committed_at_us + window_us).contains(&sample.at_us)
                && sample.version == version
            {
                &mut after
            } else {
                continue;
            };
            for (signal, value) in &sample.health {
                if !value.is_finite() {
                    continue;
                }
                let sum = side
                    .entry(signal.clone())
                    .or_default()
                    .entry(sample.instance_id.clone())
                    .or_default();
                *sum = (sum.0 + value, sum.1 + 1);
            }
        }
        let names: std::collections::BTreeSet<&String> =
            before.keys().chain(after.keys()).collect();
        names
            .into_iter()
            .map(|signal| SignalImpact {
                signal: signal.clone(),
                before: before.get(signal).map(window),
                after: after.get(signal).map(window),
            })
            .collect()
    }
}

/// One side's figures: each instance's mean, then their mean and maximum.
fn window(instances: &HashMap<String, (f64, usize)>) -> SignalWindow {
    let means: Vec<f64> = instances.values().map(|(sum, n)| sum / *n as f64).collect();
    SignalWindow {
        instances: means.len(),
        samples: instances.values().map(|(_, n)| n).sum(),
        mean: means.iter().sum::<f64>() / means.len().max(1) as f64,
        max: means.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::ReceiptKind;

    fn receipt(instance: &str, version: u64, errors: f64) -> Receipt {
        Receipt {
            namespace: "orders".into(),
            environment: "production".into(),
            instance_id: instance.into(),
            host: "h".into(),
            pid: 1,
            started_at_us: 0,
            version,
            applied_at_us: 0,
            committed_at_us: 0,
            connected: true,
            kind: ReceiptKind::Heartbeat,
            rejected: None,
            sent_at_us: 0,
            labels: BTreeMap::new(),
            health: BTreeMap::from([("errors".to_string(), errors)]),
            rollout: None,
        }
    }

    #[test]
    fn before_and_after_the_commit_weigh_each_instance_once() {
        let mut history = SignalHistory::default();
        // Before the commit at t=100: a reports twice (0.1, 0.3), b once (0.2).
        history.record(&receipt("a", 1, 0.1), 10);
        history.record(&receipt("a", 1, 0.3), 20);
        history.record(&receipt("b", 1, 0.2), 30);
        // After: both on version 2, worse.
        history.record(&receipt("a", 2, 0.5), 110);
        history.record(&receipt("b", 2, 0.7), 120);
        // Outside the window, and an instance still on version 1 after the commit.
        history.record(&receipt("c", 2, 9.0), 500);
        history.record(&receipt("d", 1, 9.0), 130);
        let impact = history.impact("orders", "production", 2, 100, 100);
        assert_eq!(impact.len(), 1);
        let errors = &impact[0];
        let before = errors.before.expect("before");
        let after = errors.after.expect("after");
        assert_eq!((before.instances, before.samples), (2, 3));
        assert!((before.mean - 0.2).abs() < 1e-9, "{before:?}");
        assert!((before.max - 0.2).abs() < 1e-9, "{before:?}");
        assert_eq!((after.instances, after.samples), (2, 2));
        assert!((after.mean - 0.6).abs() < 1e-9, "{after:?}");
        assert!((errors.ratio().expect("ratio") - 3.0).abs() < 1e-9);
    }

    #[test]
    fn receipts_without_signals_or_of_other_groups_are_not_counted() {
        let mut history = SignalHistory::default();
        let mut quiet = receipt("a", 1, 0.0);
        quiet.health.clear();
        history.record(&quiet, 10);
        let mut other = receipt("b", 1, 1.0);
        other.environment = "staging".into();
        history.record(&other, 10);
        assert!(history
            .impact("orders", "production", 2, 100, 100)
            .is_empty());
    }

    #[test]
    fn old_samples_are_dropped() {
        let mut history = SignalHistory::default();
        history.record(&receipt("a", 1, 0.1), 0);
        history.record(&receipt("a", 1, 0.1), RETAIN_US + 1);
        let group = &history.groups[&("orders".to_string(), "production".to_string())];
        assert_eq!(group.len(), 1);
    }
}
