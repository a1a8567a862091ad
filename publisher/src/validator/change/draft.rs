//! Draft: the steps of the change path up to the seal, without the commit. The validated,
//! sealed change set comes back with the version it applies on and the versions of the keys
//! it touches there: what a change request stores, and what its approvals are bound to.

use std::collections::BTreeMap;

use tracing::Instrument;

use super::admit::{self, Expectation};
use super::order::{Order, MAX_COMMIT_ATTEMPTS};
use super::plan;
use crate::failure::{failure, Failure};
use crate::validate::Plan;
use crate::validator::instance::Validator;
use mycosynth_subscriber::wire::ErrorKind;

/// A change set validated and sealed on a version, not committed.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The change set (sensitive values sealed), its diff (redacted) and resulting document.
    pub plan: Plan,
    /// The version it was validated on.
    pub base_version: u64,
    /// The version each key it touches had there (None: not set).
    pub base_keys: BTreeMap<String, Option<u64>>,
}

impl Validator {
    /// Validates and seals `order` on the current state, committing nothing.
    pub async fn draft(&self, order: &Order) -> Result<Draft, Failure> {
        let span = tracing::info_span!("draft", namespace = %order.namespace, environment = %order.environment, author = %order.attribution.author);
        self.drafted(order).instrument(span).await
    }

    async fn drafted(&self, order: &Order) -> Result<Draft, Failure> {
        let (ns, env) = (&order.namespace, &order.environment);
        let inputs = self.inputs(ns, env).await?;
        let slot = self.slot(ns, env);
        let mut cached = slot.lock().await;
        let mut fresh = false;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let Some(mut state) = self.current_state(ns, env, &mut cached, &mut fresh).await?
            else {
                continue;
            };
            match admit::expectation(order, &state, fresh) {
                Expectation::Met => {}
                Expectation::Recheck => {
                    fresh = true;
                    continue;
                }
                Expectation::Refused(conflict) => {
                    *cached = Some(state);
                    return Err(conflict);
                }
            }
            let (current, conformed) = self.document(ns, env, &mut state).await?;
            let planned = plan::plan(
                &inputs,
                current,
                conformed.as_ref(),
                &order.intent,
                self.require_schema,
            );
            let mut planned = match planned {
                Ok(planned) => planned,
                Err(violations) => {
                    *cached = Some(state);
                    return Err(plan::refusal(&inputs, violations));
                }
            };
            let schema = inputs.schema.as_deref();
            self.vault
                .seal_plan(ns, env, schema, &mut planned.plan)
                .await?;
            let base_keys = planned
                .plan
                .changes
                .iter()
                .map(|c| (c.key.clone(), state.values.get(&c.key).map(|r| r.version)))
                .collect();
            let base_version = state.version;
            *cached = Some(state);
            return Ok(Draft {
                plan: planned.plan,
                base_version,
                base_keys,
            });
        }
        Err(failure(
            ErrorKind::Unavailable,
            format!("{ns}/{env} is changing too fast; try again"),
        ))
    }
}
