//! The change path: every change set the validator commits (a change, a rollback, a deploy's
//! change set) goes through the same named steps, each a function that reads alone:
//!
//! 1. **admit** (`admit.rs`): the idempotency key is well formed and not applied already;
//! 2. **gather** (`inputs.rs`): the schema and what the environment inherits, read before the
//!    slot's lock and together; then, under the lock, the current [`State`] (cached, or loaded
//!    and completed);
//! 3. **replay or expect** (`admit.rs`): a retry of the change set that made the current head
//!    is answered with its outcome; `expected_version` is checked;
//! 4. **plan** (`plan.rs`, pure): validate the resulting document and diff it;
//! 5. **seal** (the vault): sensitive values are sealed once validated in clear;
//! 6. **stage** (`stage.rs`): the head, its change event, and the hand-over to the committer,
//!    which commits the head, publishes the event and materialises the version;
//! 7. **settle** (`settle.rs`): the reply; after a lost race the state steps back to what it
//!    was validated against, catches up with the winner, and the driver tries again.
//!
//! [`Validator::commit`] is the driver over them. What a change asks for is an [`Order`]; the
//! approved, scheduled and canary changes of later features are orders too (an [`Intent`] and
//! a condition on the state it applies to), so they take the same steps and the same checks.

mod admit;
mod inputs;
mod plan;
mod settle;
mod stage;

use std::collections::BTreeMap;

use mycosynth_subscriber::wire::{
    ChangeOutcome, ChangeSource, Environment, ErrorKind, KeyChange, Namespace,
};
use serde_json::Value;
use tracing::Instrument;

use super::instance::Validator;
use crate::failure::{failure, Failure};
use admit::Admission;
pub use inputs::Inputs;
use stage::Prepared;

/// How many times a change set without `expected_version` is retried after losing a race.
const MAX_COMMIT_ATTEMPTS: usize = 8;

/// What a change asks for.
#[derive(Debug, Clone)]
pub enum Intent {
    /// Set/delete these keys (`replace`: and delete every other key).
    Changes {
        /// The keys to set (a value) or delete (none).
        changes: Vec<KeyChange>,
        /// Keys absent from `changes` are deleted.
        replace: bool,
    },
    /// Make the state equal to this document (a rollback).
    Restore(BTreeMap<String, Value>),
}

/// Who/why/where of a change, before it is committed.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// The recorded author: the verified identity in signed mode.
    pub author: String,
    /// Why.
    pub reason: String,
    /// Where the change comes from.
    pub source: ChangeSource,
    /// The git commit of the files it came from.
    pub git_commit: Option<String>,
    /// The client's idempotency key.
    pub request_id: Option<String>,
    /// Marked as an emergency override.
    pub emergency: bool,
}

/// One change on its way through the steps: where, what, on which condition, by whom.
#[derive(Debug, Clone)]
pub struct Order {
    /// Namespace.
    pub namespace: Namespace,
    /// Environment.
    pub environment: Environment,
    /// What it asks for.
    pub intent: Intent,
    /// Commit only if the namespace/environment is at this version.
    pub expected_version: Option<u64>,
    /// Who, why, from where.
    pub attribution: Attribution,
    /// Validate and diff only; write nothing.
    pub dry_run: bool,
}

/// How one attempt of the driver ended.
enum Attempt {
    /// With this answer.
    Done(ChangeOutcome),
    /// Try again (a lost race caught up, or a state to read afresh).
    Again,
}

impl Validator {
    /// Takes `order` through the change path (see the module docs) and answers it.
    pub async fn commit(&self, order: Order) -> Result<ChangeOutcome, Failure> {
        // Instrumented, not entered: a span entered across an await stays "current" on the
        // worker thread for whatever task runs next there, and spans created there take it as
        // their parent; under load the parent chains grow until closing one overflows the stack.
        let span = tracing::info_span!("commit", namespace = %order.namespace, environment = %order.environment, author = %order.attribution.author);
        self.drive(order).instrument(span).await
    }

    async fn drive(&self, order: Order) -> Result<ChangeOutcome, Failure> {
        let inputs = match self.admit(&order).await? {
            Admission::Replayed(outcome) => return Ok(outcome),
            Admission::Admitted(inputs) => inputs,
        };
        let (ns, env) = (&order.namespace, &order.environment);
        let slot = self.slot(ns, env);
        let mut cached = slot.lock().await;
        let mut fresh = false;
        for attempt in 1..=MAX_COMMIT_ATTEMPTS {
            let Some(state) = self.current_state(ns, env, &mut cached, &mut fresh).await? else {
                continue;
            };
            let prepared = self.prepare(&order, &inputs, state, &mut cached, &mut fresh);
            let staged = match prepared.await? {
                Prepared::Answer(outcome) => return Ok(outcome),
                Prepared::Recheck => continue,
                Prepared::Staged(staged) => staged,
            };
            let (receipt, staged) = staged.into_parts();
            let committed = if self.contended(ns, env) {
                // Another validator commits here too: change sets chained on this one would
                // fail with it on the other's commits, so hold the slot until it is stored.
                crate::store::committer::outcome(receipt).await
            } else {
                drop(cached);
                let committed = crate::store::committer::outcome(receipt).await;
                cached = slot.lock().await;
                committed
            };
            match self.settle(&order, staged, committed, &mut cached).await? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Again => {
                    tracing::debug!(attempt, "lost a commit race; caught up");
                    fresh = false;
                }
            }
        }
        Err(failure(
            ErrorKind::Unavailable,
            format!("{ns}/{env} is changing too fast; try again"),
        ))
    }
}
