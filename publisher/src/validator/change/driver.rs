//! The driver over the steps: admit, then under the slot's lock as many attempts as a lost
//! race needs (current state, prepare, the committer's answer, settle).

use mycosynth_subscriber::wire::{ChangeOutcome, ErrorKind};
use tracing::Instrument;

use super::admit::Admission;
use super::order::{Attempt, Order, MAX_COMMIT_ATTEMPTS};
use super::stage::Prepared;
use crate::failure::{failure, Failure};
use crate::validator::instance::Validator;

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
