//! `change` and `rollback`: each becomes an [`Order`] for the change path.

use std::sync::Arc;

use mycosynth_subscriber::wire::{
    ChangeOutcome, ChangeRequest, ChangeSource, ErrorKind, ProposeOptions, RollbackRequest,
    Violation, DEFAULT_EXPIRY_S, DEFAULT_GRACE_S,
};

use super::Call;
use crate::clock::now_us;
use crate::failure::{failure, invalid, Failure};
use crate::store::state_at;
use crate::validator::change::{Attribution, Intent, Order};
use crate::validator::instance::Validator;
use crate::validator::requests::{parse_at, ProposalPlan};

/// `change`: set or delete keys as one change set.
pub async fn change(
    validator: Arc<Validator>,
    call: Call,
    request: ChangeRequest,
) -> Result<ChangeOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    if request.emergency && request.reason.trim().is_empty() {
        return Err(invalid(vec![Violation {
            key: "(reason)".into(),
            rule: "emergency_reason".into(),
            message: "an emergency override needs a --reason".into(),
        }]));
    }
    let options = request.proposal.unwrap_or_default();
    let emergency = request.emergency;
    let only_deletes =
        !request.changes.is_empty() && request.changes.iter().all(|c| c.value.is_none());
    let dry_run = request.dry_run;
    let order = Order {
        namespace: ns.clone(),
        environment: env.clone(),
        intent: Intent::Changes {
            changes: request.changes,
            replace: request.replace,
        },
        expected_version: request.expected_version,
        base: None,
        attribution: Attribution {
            author: call.caller.author(request.author),
            reason: request.reason,
            source: request.source,
            git_commit: request.git_commit,
            request_id: request.request_id,
            emergency,
            approved_by: Vec::new(),
            change_request: None,
        },
        dry_run,
    };
    let outcome = commit_or_propose(&validator, &call, order, options).await?;
    let proposed = outcome.proposed.is_some();
    if only_deletes && !outcome.committed && outcome.diff.is_empty() && !dry_run && !proposed {
        return Err(failure(
            ErrorKind::NotFound,
            format!("no such key in {ns}/{env}"),
        ));
    }
    Ok(outcome)
}

/// `rollback`: restore the state of an earlier version as a new version.
pub async fn rollback(
    validator: Arc<Validator>,
    call: Call,
    request: RollbackRequest,
) -> Result<ChangeOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    let history = validator.store.history(ns, env).await?;
    let latest = history.last().map_or(0, |s| s.version);
    if request.to_version > latest {
        return Err(failure(
            ErrorKind::NotFound,
            format!(
                "{ns}/{env} has no version {} (latest is {latest})",
                request.to_version
            ),
        ));
    }
    let target = state_at(&history, request.to_version).map_err(|missing| {
        failure(
            ErrorKind::Internal,
            format!("history of {ns}/{env} lacks version {missing}"),
        )
    })?;
    let target = validator.vault.open_document(ns, env, target).await?;
    let reason = if request.reason.is_empty() {
        format!("rollback to version {}", request.to_version)
    } else {
        request.reason
    };
    let order = Order {
        namespace: ns.clone(),
        environment: env.clone(),
        intent: Intent::Restore(target),
        expected_version: request.expected_version,
        base: None,
        attribution: Attribution {
            author: call.caller.author(request.author),
            reason,
            source: ChangeSource::Rollback,
            git_commit: None,
            request_id: request.request_id,
            emergency: false,
            approved_by: Vec::new(),
            change_request: None,
        },
        dry_run: request.dry_run,
    };
    let options = request.proposal.unwrap_or_default();
    commit_or_propose(&validator, &call, order, options).await
}

/// Commits `order`, or proposes it for review where the approval rule requires approval (or
/// it asks to be proposed or scheduled). An emergency change where approval is required
/// commits at once, if the rule lets the caller, and opens a review of itself.
async fn commit_or_propose(
    validator: &Validator,
    call: &Call,
    order: Order,
    options: ProposeOptions,
) -> Result<ChangeOutcome, Failure> {
    let (ns, env) = (order.namespace.as_str(), order.environment.as_str());
    let rule = call.caller.approval_rule(ns, env).cloned();
    let required = rule.as_ref().map_or(0, |r| r.approvals);
    if order.attribution.emergency {
        if let Some(rule) = rule.as_ref().filter(|_| required > 0) {
            call.caller.may_take_emergency(rule, ns, env)?;
            let mut outcome = validator.commit(order.clone()).await?;
            if outcome.committed && !outcome.replayed {
                outcome.proposed = Some(validator.open_review(&order, &outcome, required).await?);
            }
            return Ok(outcome);
        }
        return validator.commit(order).await;
    }
    let scheduled = options.at.is_some();
    if order.dry_run || (required == 0 && !options.propose && !scheduled) {
        return validator.commit(order).await;
    }
    let plan = proposal_plan(
        &options,
        if options.propose {
            required.max(1)
        } else {
            required
        },
    )?;
    let draft = validator.draft(&order).await?;
    if draft.plan.is_empty() {
        return Ok(ChangeOutcome {
            version: draft.base_version,
            previous_version: draft.base_version,
            committed: false,
            change_id: None,
            diff: Vec::new(),
            replayed: false,
            proposed: None,
        });
    }
    validator.propose(&order, draft, plan).await
}

/// How `options` propose a change needing `required` approvals; `--at` must be a future
/// RFC 3339 time, and a schedule never expires before its grace has passed.
fn proposal_plan(options: &ProposeOptions, required: u32) -> Result<ProposalPlan, Failure> {
    let at_us = options
        .at
        .as_deref()
        .map(|at| parse_at(at, now_us()))
        .transpose()?;
    let grace_s = options.grace_s.unwrap_or(DEFAULT_GRACE_S);
    let mut expires_s = options.expires_s.unwrap_or(DEFAULT_EXPIRY_S);
    if expires_s == 0 {
        return Err(invalid(vec![Violation {
            key: "(expires)".into(),
            rule: "expires".into(),
            message: "--expires must be longer than 0 s".into(),
        }]));
    }
    if let Some(at) = at_us {
        let until_due_s = u64::try_from((at - now_us()) / 1_000_000).unwrap_or(0);
        expires_s = expires_s.max(until_due_s.saturating_add(grace_s));
    }
    Ok(ProposalPlan {
        required,
        at_us,
        expires_s,
        grace_s,
    })
}
