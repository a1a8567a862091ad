//! Settle: the committer's answer becomes the reply. A lost compare-and-set (another validator
//! committed first) steps the cached state back to what the change set was validated against,
//! catches it up with the winner's version from the head, and lets the driver try again.

use std::time::{Duration, Instant};

use mycosynth_subscriber::wire::{ChangeOutcome, Environment, Namespace};

use super::order::{Attempt, Order};
use super::stage::{Pending, Undo};
use crate::failure::Failure;
use crate::store::{State, StoreError};
use crate::validator::instance::Validator;

/// How long after losing a compare-and-set to another writer a namespace/environment's commits
/// go one at a time instead of pipelined.
const CONTENTION_WINDOW: Duration = Duration::from_secs(2);

impl Validator {
    /// Turns the committer's answer for `pending` into the reply, or into another attempt.
    pub(super) async fn settle(
        &self,
        order: &Order,
        pending: Pending,
        committed: Result<u64, StoreError>,
        cached: &mut Option<State>,
    ) -> Result<Attempt, Failure> {
        let (ns, env) = (&order.namespace, &order.environment);
        let version = pending.version;
        let request_id = order.attribution.request_id.as_deref().unwrap_or("");
        match committed {
            Ok(head_revision) => {
                metrics::histogram!("mycosynth_validator_commit_seconds")
                    .record(pending.started.elapsed().as_secs_f64());
                metrics::counter!("mycosynth_validator_commits_total").increment(1);
                if let Some(current) = cached.as_mut().filter(|s| s.version == version) {
                    current.head_revision = head_revision;
                    current.pending = false;
                }
                tracing::info!(version, keys = pending.keys, change_id = %pending.meta.change_id, request_id, "committed");
                Ok(Attempt::Done(ChangeOutcome {
                    version,
                    previous_version: version - 1,
                    committed: true,
                    change_id: Some(pending.meta.change_id),
                    diff: pending.diff,
                    replayed: false,
                    proposed: None,
                }))
            }
            Err(StoreError::Conflict) => {
                let base = step_back(cached.take(), version, pending.undo);
                self.mark_contended(ns, env);
                // Either this very request was applied already (a retry whose first reply was
                // lost), or another change set won the race.
                if let Some(outcome) = self.replay(ns, env, order).await? {
                    return Ok(Attempt::Done(outcome));
                }
                // Another validator committed first: catch up with its version (or reload) and
                // validate again.
                metrics::counter!("mycosynth_validator_commit_conflicts_total").increment(1);
                if let Some(base) = base {
                    *cached = self.store.catch_up(ns, env, base).await.unwrap_or(None);
                }
                Ok(Attempt::Again)
            }
            Err(err) => {
                // The outcome of an unanswered commit is unknown: reload before the next one.
                *cached = None;
                tracing::warn!(error = %err, version, request_id, "commit failed");
                Err(err.into())
            }
        }
    }

    /// Whether another writer won a compare-and-set on `ns`/`env` lately.
    pub(super) fn contended(&self, ns: &Namespace, env: &Environment) -> bool {
        let contended = self.contended.lock().unwrap_or_else(|p| p.into_inner());
        contended
            .get(&(ns.clone(), env.clone()))
            .is_some_and(|until| Instant::now() < *until)
    }

    fn mark_contended(&self, ns: &Namespace, env: &Environment) {
        let mut contended = self.contended.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        contended.retain(|_, until| *until > now);
        contended.insert((ns.clone(), env.clone()), now + CONTENTION_WINDOW);
    }
}

/// The state a lost change set was validated against, when nothing was chained on it (another
/// validator's commit is usually one version on top of it): `cached` with `undo` reverted.
fn step_back(cached: Option<State>, version: u64, undo: Undo) -> Option<State> {
    let (revision, last_request, chained) = undo.before;
    let mut state = cached.filter(|s| s.version == version && !chained)?;
    for (key, replaced) in undo.replaced {
        match replaced {
            Some(record) => state.values.insert(key, record),
            None => state.values.remove(&key),
        };
    }
    state.version = version - 1;
    state.document = None;
    state.head_revision = revision;
    state.last_request = last_request;
    state.pending = false;
    Some(state)
}
