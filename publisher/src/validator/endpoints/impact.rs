//! `impact`: the fleet's health signals in a window before and after a version was committed,
//! and canary against control while a rollout runs.

use std::sync::Arc;

use mycosynth_subscriber::wire::{
    ErrorKind, ImpactOutcome, ImpactRequest, RolloutImpact, IMPACT_WINDOW_DEFAULT_S,
    IMPACT_WINDOW_MAX_S,
};

use super::Call;
use crate::failure::{failure, Failure};
use crate::validator::instance::Validator;

/// `impact`: version N's (default: the latest) signals before against after its commit.
pub async fn impact(
    validator: Arc<Validator>,
    call: Call,
    request: ImpactRequest,
) -> Result<ImpactOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    let window_s = request.window_s.unwrap_or(IMPACT_WINDOW_DEFAULT_S);
    if window_s == 0 || window_s > IMPACT_WINDOW_MAX_S {
        return Err(failure(
            ErrorKind::Validation,
            format!("window {window_s}s broke rule \"between 1s and {IMPACT_WINDOW_MAX_S}s\" (the validator keeps an hour of signals)"),
        ));
    }
    let version = match request.version {
        Some(version) => version,
        None => validator
            .store
            .head(ns, env)
            .await?
            .map_or(0, |h| h.version),
    };
    let set = validator
        .store
        .change_set(ns, env, version)
        .await?
        .ok_or_else(|| {
            failure(
                ErrorKind::NotFound,
                format!("{ns}/{env} has no version {version}"),
            )
        })?;
    let committed_at_us = set.meta.time_us;
    let window_us = i64::try_from(window_s).unwrap_or(i64::MAX / 2) * 1_000_000;
    let signals = validator.fleet.impact(
        ns.as_str(),
        env.as_str(),
        version,
        committed_at_us,
        window_us,
    );
    let outcome = validator.rollout_outcome(ns, env, None).await?;
    let rollout = outcome
        .rollout
        .filter(|r| r.state.is_live())
        .map(|r| RolloutImpact {
            id: r.id,
            comparison: outcome.comparison,
        });
    Ok(ImpactOutcome {
        version,
        committed_at_us,
        window_s,
        signals,
        rollout,
    })
}
