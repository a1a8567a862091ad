//! Admit: the steps that decide whether a change is new work at all. The idempotency key is
//! checked and looked up before the slot's lock (a retry of an applied request is answered with
//! its first outcome); under the lock, a retry of the change set that made the current head is
//! answered from the head, and `expected_version` is checked.

use mycosynth_subscriber::wire::{
    self, ApiError, ChangeOutcome, Environment, ErrorKind, Namespace, Violation,
};

use super::inputs::Inputs;
use super::order::Order;
use crate::failure::{failure, invalid, Failure};
use crate::store::State;
use crate::validate;
use crate::validator::instance::Validator;

/// Whether a change is new work.
pub enum Admission {
    /// Its idempotency key was applied already: this is the first outcome.
    Replayed(ChangeOutcome),
    /// It is, with these inputs gathered.
    Admitted(Inputs),
}

/// What the state says about the order's `expected_version`.
pub enum Expectation {
    /// None was given, or the state is at it.
    Met,
    /// The cached state may be behind another validator: read it afresh before refusing.
    Recheck,
    /// The state is at another version.
    Refused(Failure),
}

impl Validator {
    /// Checks the idempotency key and, together (one round trip, not three), looks it up and
    /// gathers the inputs that do not depend on this namespace/environment's own state: under
    /// the lock, every round trip to the config stream (which is busy with commits) would hold up
    /// every change set queued behind this one. A request applied meanwhile is still caught: by
    /// the head it made, by its idempotency record, or by the head's duplicate id (`committer`).
    pub(super) async fn admit(&self, order: &Order) -> Result<Admission, Failure> {
        if let Some(id) = &order.attribution.request_id {
            wire::check_request_id(id).map_err(|e| invalid(vec![validate::name_violation(&e)]))?;
        }
        let (ns, env) = (&order.namespace, &order.environment);
        let (replayed, inputs) = tokio::join!(self.replay(ns, env, order), self.inputs(ns, env));
        match replayed? {
            Some(outcome) => Ok(Admission::Replayed(outcome)),
            None => Ok(Admission::Admitted(inputs?)),
        }
    }

    /// The first outcome of the order's idempotency key, if that key was applied.
    pub(super) async fn replay(
        &self,
        ns: &Namespace,
        env: &Environment,
        order: &Order,
    ) -> Result<Option<ChangeOutcome>, Failure> {
        let Some(id) = order.attribution.request_id.as_deref() else {
            return Ok(None);
        };
        if order.dry_run {
            return Ok(None);
        }
        let Some(record) = self.store.applied_request(ns, env, id).await? else {
            return Ok(None);
        };
        metrics::counter!("mycosynth_validator_replayed_requests_total").increment(1);
        tracing::info!(
            request_id = id,
            version = record.version,
            "request already applied; replaying its outcome"
        );
        Ok(Some(replayed(record.version, record.change_id)))
    }
}

/// A retry of the change set that made the current version, which may have been committed a
/// moment ago (its idempotency record is written just after its head): its outcome, from the
/// head. While its first attempt is still in flight (the client gave up waiting), its outcome
/// is not known yet: neither replay nor apply it again.
pub fn from_head(order: &Order, state: &State) -> Option<Result<ChangeOutcome, Failure>> {
    let id = order.attribution.request_id.as_ref()?;
    let (last, change_id) = state.last_request.as_ref()?;
    if order.dry_run || id != last {
        return None;
    }
    if state.pending {
        return Some(Err(failure(
            ErrorKind::Unavailable,
            format!("request {id} is still being committed; retry"),
        )));
    }
    metrics::counter!("mycosynth_validator_replayed_requests_total").increment(1);
    tracing::info!(
        request_id = id,
        version = state.version,
        "request made the current head; replaying its outcome"
    );
    Some(Ok(replayed(state.version, change_id.clone())))
}

/// Checks the order's `expected_version` and [`Base`](super::order::Base) against `state` (`fresh`:
/// just read from KV).
pub fn expectation(order: &Order, state: &State, fresh: bool) -> Expectation {
    if let Some(base) = &order.base {
        let moved = moved_since(base, state);
        if !moved.is_empty() {
            if !fresh {
                return Expectation::Recheck;
            }
            metrics::counter!("mycosynth_validator_rejections_total", "reason" => "conflict")
                .increment(1);
            let version = state.version;
            let violations = moved
                .iter()
                .map(|key| Violation {
                    key: key.clone(),
                    rule: "conflicting_change".into(),
                    message: format!("changed since version {} (now {version})", base.version),
                })
                .collect();
            return Expectation::Refused(ApiError {
                current_version: Some(version),
                violations,
                ..failure(
                    ErrorKind::Conflict,
                    format!(
                        "ConflictingChange: keys changed since version {} (now {version}): {}; rebase the change request",
                        base.version,
                        moved.join(", ")
                    ),
                )
            });
        }
    }
    let Some(expected) = order.expected_version else {
        return Expectation::Met;
    };
    if expected == state.version {
        return Expectation::Met;
    }
    if !fresh {
        return Expectation::Recheck;
    }
    let version = state.version;
    metrics::counter!("mycosynth_validator_rejections_total", "reason" => "conflict").increment(1);
    let (ns, env) = (&order.namespace, &order.environment);
    Expectation::Refused(ApiError {
        current_version: Some(version),
        ..failure(
            ErrorKind::Conflict,
            format!("{ns}/{env} is at version {version}, not {expected}"),
        )
    })
}

/// The keys of `base` whose version in `state` is not the one they had at the base (a key
/// unset at the base and unset now counts as unchanged).
pub fn moved_since(base: &super::order::Base, state: &State) -> Vec<String> {
    base.keys
        .iter()
        .filter(|(key, then)| state.values.get(*key).map(|r| r.version) != **then)
        .map(|(key, _)| key.clone())
        .collect()
}

/// The outcome of an applied request, answered again.
fn replayed(version: u64, change_id: String) -> ChangeOutcome {
    ChangeOutcome {
        version,
        previous_version: version.saturating_sub(1),
        committed: true,
        change_id: Some(change_id),
        diff: Vec::new(),
        replayed: true,
        proposed: None,
    }
}
