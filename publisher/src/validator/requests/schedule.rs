//! The scheduler: every validator instance follows the change requests (a KV watch, in memory)
//! and, every [`TICK`], applies the approved ones whose time has come on the namespaces and
//! environments it owns. When the owner is gone (stopped, or killed at the very moment), the
//! instance that owns the slot next fires it once it stops hearing from the old one. Firing is
//! exactly once whoever fires and however often: see `apply.rs`.
//!
//! A schedule that no validator could apply within its grace after its time is marked `missed`,
//! never applied late; one refused at its time (its keys changed, the schema moved) is marked
//! `failed` with the reason. Pending proposals past their expiry are marked `expired`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mycosynth_subscriber::wire::{ErrorKind, ProposalId, ProposalRecord, ProposalState, Reply};
use tokio::sync::watch;

use super::apply::SCHEDULER;
use super::records::{pending, verdict};
use crate::clock::now_us;
use crate::validator::instance::Validator;

/// How often the scheduler looks for what is due at the latest (changes to the requests reach
/// it through the watch); it also wakes at the time of the next schedule, so a schedule fires
/// late by its commit, not by the tick.
pub const TICK: Duration = Duration::from_millis(50);

/// What is due for one proposal now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Fire,
    Miss,
    Expire,
}

fn due(record: &ProposalRecord, now_us: i64) -> Option<Due> {
    let pending = matches!(
        record.state,
        ProposalState::Open | ProposalState::Approved | ProposalState::Superseded
    );
    if !pending {
        return None;
    }
    if let Some(at) = record.at_us.filter(|at| *at <= now_us) {
        let grace = i64::try_from(record.grace_s).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
        if now_us > at.saturating_add(grace) {
            return Some(Due::Miss);
        }
        if record.state == ProposalState::Approved {
            return Some(Due::Fire);
        }
    }
    (now_us >= record.expires_us).then_some(Due::Expire)
}

/// Runs the scheduler of `validator` until `stop` turns true.
pub async fn run(validator: Arc<Validator>, mut stop: watch::Receiver<bool>) {
    let mut wake = TICK;
    let mut known: HashMap<String, (Bytes, ProposalRecord)> = HashMap::new();
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut steps = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(wake) => {}
            Some(_) = steps.join_next(), if !steps.is_empty() => continue,
        }
        let Some(entries) = validator.store.watched_proposals() else {
            continue;
        };
        refresh(&mut known, entries);
        let now = now_us();
        wake = next_wake(known.values().map(|(_, r)| r), now);
        for (record, due) in known.values().filter_map(|(_, r)| Some((r, due(r, now)?))) {
            let Ok(id) = ProposalId::parse(&record.id) else {
                continue;
            };
            if validator
                .affinity
                .owner(id.namespace().as_str(), id.environment().as_str())
                .is_some()
            {
                continue;
            }
            let claimed = lock(&in_flight).insert(record.id.clone());
            if !claimed {
                continue;
            }
            let (validator, in_flight) = (Arc::clone(&validator), Arc::clone(&in_flight));
            let at_us = record.at_us;
            steps.spawn(async move {
                validator.take_due(&id, due, at_us).await;
                lock(&in_flight).remove(&id.to_string());
            });
        }
    }
    while steps.join_next().await.is_some() {}
}

/// How long to sleep: until the next approved schedule's time, at most [`TICK`].
fn next_wake<'a>(records: impl Iterator<Item = &'a ProposalRecord>, now_us: i64) -> Duration {
    records
        .filter(|r| r.state == ProposalState::Approved)
        .filter_map(|r| r.at_us)
        .filter(|at| *at > now_us)
        .map(|at| Duration::from_micros((at - now_us) as u64))
        .min()
        .map_or(TICK, |until| until.min(TICK))
}

fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// Brings the parsed proposals up to what the watch holds, parsing only records whose bytes
/// changed.
fn refresh(known: &mut HashMap<String, (Bytes, ProposalRecord)>, entries: Vec<(String, Bytes)>) {
    let present: HashSet<&String> = entries.iter().map(|(k, _)| k).collect();
    known.retain(|key, _| present.contains(key));
    for (key, bytes) in &entries {
        if known.get(key).is_some_and(|(old, _)| old == bytes) {
            continue;
        }
        match serde_json::from_slice::<ProposalRecord>(bytes) {
            Ok(record) => {
                known.insert(key.clone(), (bytes.clone(), record));
            }
            Err(err) => {
                metrics::counter!("mycosynth_change_requests_damaged_total").increment(1);
                tracing::warn!(key, error = %err, "skipping a damaged change request record");
            }
        }
    }
}

impl Validator {
    /// Takes the step that is due for proposal `id`.
    async fn take_due(&self, id: &ProposalId, due: Due, at_us: Option<i64>) {
        match due {
            Due::Fire => self.fire(id, at_us).await,
            Due::Miss => self.miss(id).await,
            // Any step on an expired proposal records its expiry first.
            Due::Expire => {
                let _ = self.take_step(id, |_| Ok(())).await;
            }
        }
    }

    /// Applies scheduled proposal `id`; a refusal marks it failed.
    async fn fire(&self, id: &ProposalId, at_us: Option<i64>) {
        match self.apply_proposal(id, SCHEDULER).await {
            Ok(outcome) => {
                if outcome.applied.is_some() {
                    if let Some(at) = at_us {
                        metrics::histogram!("mycosynth_change_requests_fire_lateness_seconds")
                            .record((now_us() - at).max(0) as f64 / 1e6);
                    }
                    let reply = serde_json::to_vec(&Reply::Ok(&outcome)).unwrap_or_default();
                    self.audit_step("request-fire", &outcome.request, &reply)
                        .await;
                }
            }
            Err(refused)
                if matches!(
                    refused.kind,
                    ErrorKind::Conflict | ErrorKind::Validation | ErrorKind::AccessDenied
                ) =>
            {
                let reason = refused.message.clone();
                let failed = self
                    .take_step(id, |record| {
                        pending(record)?;
                        record.state = ProposalState::Failed;
                        record.closed = Some(verdict(SCHEDULER, reason.clone()));
                        Ok(())
                    })
                    .await;
                if let Ok(record) = failed {
                    self.announce(&record, "fail", SCHEDULER, None).await;
                    let reply =
                        serde_json::to_vec(&Reply::<()>::Error(refused)).unwrap_or_default();
                    self.audit_step("request-fail", &record, &reply).await;
                }
            }
            Err(err) => {
                tracing::warn!(id = %id, error = %err.message, "could not fire a scheduled change request; retrying");
            }
        }
    }

    /// Marks scheduled proposal `id` missed: its grace after its time passed unapplied.
    async fn miss(&self, id: &ProposalId) {
        let missed = self
            .take_step(id, |record| {
                if record.state != ProposalState::Superseded {
                    pending(record)?;
                }
                record.state = ProposalState::Missed;
                record.closed = Some(verdict(
                    SCHEDULER,
                    format!(
                        "not applied within {} s after its time (no validator ran, or it was not approved by then)",
                        record.grace_s
                    ),
                ));
                Ok(())
            })
            .await;
        if let Ok(record) = missed {
            self.announce(&record, "miss", SCHEDULER, None).await;
            self.audit_step("request-miss", &record, br#"{"ok":{}}"#)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::{ChangeSource, ProposalKind};

    fn record(state: ProposalState, at_us: Option<i64>) -> ProposalRecord {
        ProposalRecord {
            id: "ns.env.0193f2a7c1d4".into(),
            namespace: "ns".into(),
            environment: "env".into(),
            kind: ProposalKind::Change,
            state,
            changes: Vec::new(),
            base_version: 1,
            base_keys: Default::default(),
            diff: Vec::new(),
            content_hash: String::new(),
            author: "alice".into(),
            reason: String::new(),
            source: ChangeSource::Cli,
            git_commit: None,
            created: String::new(),
            created_us: 0,
            expires_us: 10_000_000_000,
            required: 1,
            approvals: Vec::new(),
            at_us,
            grace_s: 600,
            applied: None,
            closed: None,
        }
    }

    #[test]
    fn approved_schedules_fire_at_their_time_and_miss_after_the_grace() {
        let at = 1_000_000_000;
        let approved = record(ProposalState::Approved, Some(at));
        assert_eq!(due(&approved, at - 1), None);
        assert_eq!(due(&approved, at), Some(Due::Fire));
        assert_eq!(due(&approved, at + 600_000_000), Some(Due::Fire));
        assert_eq!(due(&approved, at + 600_000_001), Some(Due::Miss));
        let open = record(ProposalState::Open, Some(at));
        assert_eq!(
            due(&open, at),
            None,
            "an unapproved schedule waits for approval"
        );
        assert_eq!(due(&open, at + 600_000_001), Some(Due::Miss));
        assert_eq!(due(&record(ProposalState::Applied, Some(at)), at), None);
        let unscheduled = record(ProposalState::Approved, None);
        assert_eq!(due(&unscheduled, at), None);
        assert_eq!(due(&unscheduled, 10_000_000_000), Some(Due::Expire));
    }
}
