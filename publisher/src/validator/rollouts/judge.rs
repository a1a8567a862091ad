//! The driver's judgement, pure: who is in which cohort (from the fleet's receipts), how the
//! health rules compare the cohorts, and what is due for a rollout now.

use mycosynth_subscriber::wire::{
    CohortMember, HealthRule, InstanceStatus, RolloutRecord, RolloutState, SignalComparison,
};

/// The targeted instances of a rollout, split by cohort.
#[derive(Debug, Default)]
pub struct Cohorts {
    /// Those whose id hashes below the current step.
    pub canaries: Vec<CohortMember>,
    /// The other targeted instances.
    pub control: Vec<CohortMember>,
    /// Rejections of the candidate reported by canaries: (instance, reason).
    pub rejections: Vec<(String, String)>,
    /// When the last canary receipt arrived, µs since the epoch.
    pub canary_last_seen_us: Option<i64>,
}

/// Splits the fleet's live instances into the rollout's cohorts.
pub fn cohorts(record: &RolloutRecord, instances: &[InstanceStatus]) -> Cohorts {
    let mut out = Cohorts::default();
    for instance in instances {
        let receipt = &instance.receipt;
        if !record.targets(&receipt.labels) {
            continue;
        }
        let hold = receipt.rollout.as_ref().filter(|h| h.id == record.id);
        let member = CohortMember {
            instance_id: receipt.instance_id.clone(),
            version: receipt.version,
            candidate: hold.is_some_and(|h| h.candidate),
            health: receipt.health.clone(),
        };
        if record.holds_candidate(&receipt.instance_id, &receipt.labels) {
            if let Some(reason) = hold.and_then(|h| h.rejected.clone()) {
                out.rejections.push((member.instance_id.clone(), reason));
            }
            out.canary_last_seen_us = out.canary_last_seen_us.max(Some(instance.last_seen_us));
            out.canaries.push(member);
        } else {
            out.control.push(member);
        }
    }
    out
}

fn mean(members: &[CohortMember], signal: &str) -> Option<f64> {
    let values: Vec<f64> = members
        .iter()
        .filter_map(|m| m.health.get(signal).copied())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Each rule of the rollout on the cohorts' means (canaries that serve the candidate only).
pub fn compare(record: &RolloutRecord, cohorts: &Cohorts) -> Vec<SignalComparison> {
    let serving: Vec<CohortMember> = cohorts
        .canaries
        .iter()
        .filter(|m| m.candidate)
        .cloned()
        .collect();
    record
        .health
        .iter()
        .map(|text| {
            let Ok(rule) = HealthRule::parse(text) else {
                return SignalComparison {
                    rule: text.clone(),
                    canary: None,
                    control: None,
                    limit: None,
                    holds: false,
                };
            };
            let canary = mean(&serving, &rule.signal);
            let control = mean(&cohorts.control, &rule.signal);
            let limit = rule.limit(control);
            let holds = match (canary, limit) {
                (Some(c), Some(l)) => c <= l,
                _ => true,
            };
            SignalComparison {
                rule: text.clone(),
                canary,
                control,
                limit,
                holds,
            }
        })
        .collect()
}

/// What is due for a rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    /// Nothing yet.
    Wait,
    /// Its step baked: the next step.
    Advance,
    /// The last step baked: commit the candidate.
    Promote,
    /// Back to stable, for this reason.
    Abort(String),
    /// A regression without `--auto-rollback`: stop advancing, for this reason.
    Pause(String),
}

/// What is due for `record` at `now_us`, given its cohorts and their comparison.
/// Canaries not heard from for `silence_us` (the fleet's stale threshold) count as gone.
pub fn due(
    record: &RolloutRecord,
    cohorts: &Cohorts,
    comparison: &[SignalComparison],
    now_us: i64,
    silence_us: i64,
) -> Due {
    if record.state != RolloutState::Running {
        return Due::Wait;
    }
    let failing: Vec<String> = comparison
        .iter()
        .filter(|c| !c.holds)
        .map(|c| {
            format!(
                "{} broken: canary {} against a limit of {}",
                c.rule,
                fmt(c.canary),
                fmt(c.limit)
            )
        })
        .collect();
    let stop = |reason: String| {
        if record.auto_rollback {
            Due::Abort(reason)
        } else {
            Due::Pause(reason)
        }
    };
    if let Some((instance, reason)) = cohorts.rejections.first() {
        return stop(format!(
            "instance {instance} rejected the candidate: {reason}"
        ));
    }
    if !failing.is_empty() {
        return stop(failing.join("; "));
    }
    // Canaries that were there and stopped reporting: killed, hung, or cut off.
    let silent = !cohorts.canaries.is_empty()
        && cohorts
            .canary_last_seen_us
            .is_none_or(|seen| now_us - seen > silence_us);
    if record.auto_rollback && silent {
        return Due::Abort(format!(
            "no canary reported for {} s",
            (silence_us / 1_000_000).max(1)
        ));
    }
    let baked = now_us - record.step_started_us >= (record.bake_s as i64).saturating_mul(1_000_000);
    // A step bakes with its canaries serving the candidate (a step too small to hold any
    // instance of this fleet has nothing to try and only waits out its bake).
    let tried = cohorts.canaries.is_empty() || cohorts.canaries.iter().any(|m| m.candidate);
    if !baked || !tried {
        return Due::Wait;
    }
    if record.step + 1 < record.steps.len() {
        Due::Advance
    } else {
        Due::Promote
    }
}

fn fmt(value: Option<f64>) -> String {
    value.map_or_else(|| "none".into(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::{
        ChangeSource, InstanceState, Receipt, ReceiptKind, RolloutHold,
    };
    use std::collections::BTreeMap;

    fn record() -> RolloutRecord {
        RolloutRecord {
            prometheus: None,
            id: "ro-000000000001".into(),
            namespace: "ns".into(),
            environment: "env".into(),
            state: RolloutState::Running,
            updates: 0,
            changes: Vec::new(),
            diff: Vec::new(),
            base_version: 1,
            base_keys: BTreeMap::new(),
            steps: vec![50.0, 100.0],
            step: 0,
            step_started_us: 0,
            bake_s: 10,
            auto_rollback: true,
            health: vec!["err<=control*1.1+0.01".into()],
            target: BTreeMap::new(),
            change_request: None,
            author: "a".into(),
            reason: String::new(),
            source: ChangeSource::Cli,
            created_us: 0,
            verdict: None,
            promoted_version: None,
        }
    }

    fn instance(record: &RolloutRecord, id: &str, err: f64, seen: i64) -> InstanceStatus {
        let member = record.holds_candidate(id, &BTreeMap::new());
        InstanceStatus {
            receipt: Receipt {
                namespace: "ns".into(),
                environment: "env".into(),
                instance_id: id.into(),
                host: "h".into(),
                pid: 1,
                started_at_us: 0,
                version: 1,
                applied_at_us: 0,
                committed_at_us: 0,
                connected: true,
                kind: ReceiptKind::Heartbeat,
                rejected: None,
                sent_at_us: seen,
                labels: BTreeMap::new(),
                health: BTreeMap::from([("err".to_string(), err)]),
                rollout: Some(RolloutHold {
                    id: record.id.clone(),
                    candidate: member,
                    rejected: None,
                }),
            },
            state: InstanceState::Current,
            last_seen_us: seen,
        }
    }

    fn fleet(record: &RolloutRecord, canary_err: f64, seen: i64) -> Vec<InstanceStatus> {
        (0..20)
            .map(|i| {
                let id = format!("svc-{i:02}");
                let err = if record.holds_candidate(&id, &BTreeMap::new()) {
                    canary_err
                } else {
                    0.1
                };
                instance(record, &id, err, seen)
            })
            .collect()
    }

    #[test]
    fn a_baked_healthy_step_advances_then_promotes() {
        let mut record = record();
        let fleet = fleet(&record, 0.1, 11_000_000);
        let cohorts = cohorts(&record, &fleet);
        assert!(!cohorts.canaries.is_empty() && !cohorts.control.is_empty());
        let cmp = compare(&record, &cohorts);
        assert!(cmp[0].holds);
        assert_eq!(
            due(&record, &cohorts, &cmp, 5_000_000, 3_000_000),
            Due::Wait
        );
        assert_eq!(
            due(&record, &cohorts, &cmp, 11_000_000, 3_000_000),
            Due::Advance
        );
        record.step = 1;
        let cohorts = super::cohorts(&record, &fleet);
        let cmp = compare(&record, &cohorts);
        assert_eq!(
            due(&record, &cohorts, &cmp, 11_000_000, 3_000_000),
            Due::Promote
        );
    }

    #[test]
    fn a_regression_aborts_or_pauses() {
        let mut record = record();
        let fleet = fleet(&record, 0.5, 3_000_000);
        let cohorts = cohorts(&record, &fleet);
        let cmp = compare(&record, &cohorts);
        assert!(!cmp[0].holds);
        assert!((cmp[0].limit.unwrap() - 0.12).abs() < 1e-9);
        assert!(
            matches!(due(&record, &cohorts, &cmp, 1_000_000, 3_000_000), Due::Abort(r) if r.contains("err<=control"))
        );
        record.auto_rollback = false;
        assert!(matches!(
            due(&record, &cohorts, &cmp, 1_000_000, 3_000_000),
            Due::Pause(_)
        ));
    }

    #[test]
    fn a_rejection_or_silence_aborts() {
        let record = record();
        let mut instances = fleet(&record, 0.1, 1_000_000);
        let canary = instances
            .iter_mut()
            .find(|i| record.holds_candidate(&i.receipt.instance_id, &BTreeMap::new()))
            .unwrap();
        canary.receipt.rollout.as_mut().unwrap().rejected = Some("too big".into());
        let cohorts = cohorts(&record, &instances);
        assert!(
            matches!(due(&record, &cohorts, &[], 1_000_000, 3_000_000), Due::Abort(r) if r.contains("too big"))
        );
        let healthy = fleet(&record, 0.1, 1_000_000);
        let quiet = super::cohorts(&record, &healthy);
        assert_eq!(due(&record, &quiet, &[], 2_000_000, 3_000_000), Due::Wait);
        assert!(
            matches!(due(&record, &quiet, &[], 5_000_000, 3_000_000), Due::Abort(r) if r.contains("no canary"))
        );
        let empty = super::cohorts(&record, &[]);
        assert_eq!(due(&record, &empty, &[], 5_000_000, 3_000_000), Due::Wait);
        assert_eq!(
            due(&record, &empty, &[], 11_000_000, 3_000_000),
            Due::Advance,
            "a step without members only bakes"
        );
    }
}
