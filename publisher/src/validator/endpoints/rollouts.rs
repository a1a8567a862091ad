//! The rollout endpoints: start, status, pause, resume, promote, abort. Each answers with the
//! record and its cohorts; the steps themselves live in `validator/rollouts/`.

use std::sync::Arc;

use mycosynth_subscriber::wire::{
    ApiError, ErrorKind, RolloutActionRequest, RolloutOutcome, RolloutStartRequest, RolloutState,
    Violation,
};

use super::Call;
use crate::failure::{failure, Failure};
use crate::validator::instance::Validator;

/// `rollout-start`.
pub async fn start(
    validator: Arc<Validator>,
    call: Call,
    request: RolloutStartRequest,
) -> Result<RolloutOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    // No side door around approvals: where changes need them, only an approved change
    // request may be rolled out.
    let required = call
        .caller
        .approval_rule(ns.as_str(), env.as_str())
        .map_or(0, |r| r.approvals);
    if required > 0 && request.change_request.is_none() {
        return Err(ApiError {
            kind: ErrorKind::AccessDenied,
            message: format!(
                "ApprovalRequired: changes to {ns}/{env} need {required} approval(s); propose the change (--propose) and roll out the approved request (rollout start --request ID)"
            ),
            violations: vec![Violation {
                key: format!("{ns}/{env}"),
                rule: "approval_required".into(),
                message: format!("0 of {required} approval(s)"),
            }],
            current_version: None,
        });
    }
    let author = call.caller.author(request.author.clone());
    let record = validator.start_rollout(ns, env, author, request).await?;
    validator.rollout_outcome(ns, env, Some(record)).await
}

/// `rollout-status`.
pub async fn status(
    validator: Arc<Validator>,
    call: Call,
    _request: RolloutActionRequest,
) -> Result<RolloutOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    validator.rollout_outcome(ns, env, None).await
}

/// `rollout-pause`.
pub async fn pause(
    validator: Arc<Validator>,
    call: Call,
    request: RolloutActionRequest,
) -> Result<RolloutOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    let by = call.caller.author(request.author.clone());
    let record = validator
        .rollout_step(ns, env, |r| {
            crate::validator::rollouts::live(r)?;
            r.state = RolloutState::Paused;
            r.verdict = Some(crate::validator::rollouts::verdict(
                &by,
                request.reason.clone(),
            ));
            Ok(())
        })
        .await?;
    validator.rollout_outcome(ns, env, Some(record)).await
}

/// `rollout-resume`: the current step bakes again from now.
pub async fn resume(
    validator: Arc<Validator>,
    call: Call,
    _request: RolloutActionRequest,
) -> Result<RolloutOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    let record = validator
        .rollout_step(ns, env, |r| {
            if r.state != RolloutState::Paused {
                return Err(failure(
                    ErrorKind::Conflict,
                    format!("rollout {} is not paused", r.id),
                ));
            }
            r.state = RolloutState::Running;
            r.step_started_us = crate::clock::now_us();
            Ok(())
        })
        .await?;
    validator.rollout_outcome(ns, env, Some(record)).await
}

/// `rollout-promote`: the candidate committed now, as one version.
pub async fn promote(
    validator: Arc<Validator>,
    call: Call,
    request: RolloutActionRequest,
) -> Result<RolloutOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    let by = call.caller.author(request.author.clone());
    let record = validator.promote_rollout(ns, env, &by).await?;
    validator.rollout_outcome(ns, env, Some(record)).await
}

/// `rollout-abort`: members back on stable.
pub async fn abort(
    validator: Arc<Validator>,
    call: Call,
    request: RolloutActionRequest,
) -> Result<RolloutOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    let by = call.caller.author(request.author.clone());
    let reason = if request.reason.is_empty() {
        format!("aborted by {by}")
    } else {
        request.reason.clone()
    };
    let record = validator
        .abort_rollout(ns, env, &by, reason, "operator")
        .await?;
    validator.rollout_outcome(ns, env, Some(record)).await
}
