//! The driver: every [`TICK`], on the namespaces/environments this instance owns
//! (`affinity`), each running rollout is judged on the fleet's receipts (`judge.rs`) and moved
//! on: the next step after its bake, promotion after the last, an abort (or, without
//! `--auto-rollback`, a pause) on a regression, a rejection or silent canaries. All it knows is
//! the stored record, so a restarted validator, or the next owner, carries on where it stood.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycosynth_subscriber::wire::{
    Environment, Namespace, RolloutRecord, RolloutState, PROMETHEUS_EVERY_MS,
};
use tokio::sync::watch;

use super::external::{self, Reading};
use super::judge::{cohorts, compare, due, Due};
use super::steps::{verdict, DRIVER};
use crate::clock::now_us;
use crate::failure::{failure, Failure};
use crate::validator::instance::Validator;

/// How often running rollouts are judged.
pub const TICK: Duration = Duration::from_millis(250);
/// How often the list of rollouts is scanned again (started ones show up by then).
const RESCAN: Duration = Duration::from_secs(1);

/// Drives the rollouts of `validator` until `stop` turns true.
pub async fn run(validator: Arc<Validator>, mut stop: watch::Receiver<bool>) {
    let mut live: BTreeSet<(String, String)> = BTreeSet::new();
    let mut scanned: Option<Instant> = None;
    // The last reading of each rollout's Prometheus query, by rollout id.
    let mut readings: HashMap<String, (Instant, Reading)> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        if scanned.is_none_or(|at| at.elapsed() >= RESCAN) {
            match validator.store.rollouts().await {
                Ok(records) => {
                    live = records
                        .into_iter()
                        .filter(|(r, _)| r.state == RolloutState::Running)
                        .map(|(r, _)| (r.namespace, r.environment))
                        .collect();
                    scanned = Some(Instant::now());
                }
                Err(err) => tracing::debug!(error = %err, "could not scan the rollouts"),
            }
        }
        for (ns, env) in live.clone() {
            let (Ok(ns), Ok(env)) = (Namespace::new(ns), Environment::new(env)) else {
                continue;
            };
            if validator
                .affinity
                .owner(ns.as_str(), env.as_str())
                .is_some()
            {
                continue;
            }
            if let Err(err) = validator.drive_rollout(&ns, &env, &mut readings).await {
                tracing::warn!(%ns, %env, error = %err.message, "rollout step failed; retrying");
            }
        }
    }
}

impl Validator {
    /// Judges the rollout of `ns`/`env` once and takes the step that is due.
    async fn drive_rollout(
        &self,
        ns: &Namespace,
        env: &Environment,
        readings: &mut HashMap<String, (Instant, Reading)>,
    ) -> Result<(), Failure> {
        let Some((record, _)) = self.store.rollout(ns, env).await? else {
            return Ok(());
        };
        if record.state != RolloutState::Running {
            return Ok(());
        }
        let stable = self.store.head(ns, env).await?.map_or(0, |h| h.version);
        let now = now_us();
        let fleet = self.fleet.status(ns.as_str(), env.as_str(), stable, 0, now);
        let cohorts = cohorts(&record, &fleet.instances);
        let mut comparison = compare(&record, &cohorts);
        let mut unread = false;
        if let Some(rule) = &record.prometheus {
            let reading = prometheus_reading(readings, &record.id, rule).await;
            if let Err(why) = &reading {
                tracing::warn!(rollout = %record.id, error = %why, "prometheus unreadable; holding the step");
                unread = true;
            }
            comparison.push(external::comparison(rule, &reading));
        }
        let silence = i64::try_from(self.fleet.stale_after().as_micros()).unwrap_or(i64::MAX);
        let due = match due(&record, &cohorts, &comparison, now, silence) {
            // A signal that cannot be read is not a healthy one: no step on without it.
            Due::Advance | Due::Promote if unread => Due::Wait,
            due => due,
        };
        match due {
            Due::Wait => Ok(()),
            Due::Advance => {
                let advanced = self
                    .rollout_step(ns, env, |r| {
                        same_step(r, &record)?;
                        r.step += 1;
                        r.step_started_us = now_us();
                        Ok(())
                    })
                    .await?;
                metrics::counter!("mycosynth_rollouts_steps_total").increment(1);
                let reason = format!(
                    "step {} of {}: {}%",
                    advanced.step + 1,
                    advanced.steps.len(),
                    advanced.percent()
                );
                tracing::info!(rollout = %advanced.id, %reason, "rollout advanced");
                self.audit_rollout("rollout-step", &advanced, &reason).await;
                Ok(())
            }
            Due::Promote => {
                let promoted = self.promote_rollout(ns, env, DRIVER).await?;
                self.audit_rollout("rollout-promote", &promoted, "every step baked healthy")
                    .await;
                Ok(())
            }
            Due::Abort(reason) => {
                let cause = if reason.starts_with("prometheus") {
                    "external"
                } else if reason.contains("rejected") {
                    "rejection"
                } else if reason.contains("no canary") {
                    "silent"
                } else {
                    "regression"
                };
                let aborted = self
                    .abort_rollout(ns, env, DRIVER, reason.clone(), cause)
                    .await?;
                self.audit_rollout("rollout-abort", &aborted, &reason).await;
                Ok(())
            }
            Due::Pause(reason) => {
                let paused = self
                    .rollout_step(ns, env, |r| {
                        same_step(r, &record)?;
                        r.state = RolloutState::Paused;
                        r.verdict = Some(verdict(DRIVER, reason.clone()));
                        Ok(())
                    })
                    .await?;
                self.audit_rollout("rollout-pause", &paused, &reason).await;
                Ok(())
            }
        }
    }
}

/// The reading of `id`'s query, asked again once [`PROMETHEUS_EVERY_MS`] passed.
async fn prometheus_reading(
    readings: &mut HashMap<String, (Instant, Reading)>,
    id: &str,
    rule: &mycosynth_subscriber::wire::PrometheusRule,
) -> Reading {
    let every = Duration::from_millis(PROMETHEUS_EVERY_MS);
    if let Some((_, reading)) = readings.get(id).filter(|(at, _)| at.elapsed() < every) {
        return reading.clone();
    }
    let reading = external::read(rule).await;
    readings.retain(|_, (at, _)| at.elapsed() < every * 30);
    readings.insert(id.to_owned(), (Instant::now(), reading.clone()));
    reading
}

/// Refuses a driver's step on a record that moved since it was judged.
fn same_step(now: &RolloutRecord, judged: &RolloutRecord) -> Result<(), Failure> {
    if now.id == judged.id && now.state == RolloutState::Running && now.step == judged.step {
        Ok(())
    } else {
        Err(failure(
            mycosynth_subscriber::wire::ErrorKind::Conflict,
            "the rollout moved since it was judged",
        ))
    }
}
