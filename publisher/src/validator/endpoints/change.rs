//! `change` and `rollback`: each becomes an [`Order`] for the change path.

use std::sync::Arc;

use mycosynth_subscriber::wire::{
    ChangeOutcome, ChangeRequest, ChangeSource, ErrorKind, RollbackRequest, Violation,
};

use super::Call;
use crate::failure::{failure, invalid, Failure};
use crate::store::state_at;
use crate::validator::change::{Attribution, Intent, Order};
use crate::validator::instance::Validator;

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
        attribution: Attribution {
            author: call.caller.author(request.author),
            reason: request.reason,
            source: request.source,
            git_commit: request.git_commit,
            request_id: request.request_id,
            emergency: request.emergency,
        },
        dry_run,
    };
    let outcome = validator.commit(order).await?;
    if only_deletes && !outcome.committed && outcome.diff.is_empty() && !dry_run {
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
        attribution: Attribution {
            author: call.caller.author(request.author),
            reason,
            source: ChangeSource::Rollback,
            git_commit: None,
            request_id: request.request_id,
            emergency: false,
        },
        dry_run: request.dry_run,
    };
    validator.commit(order).await
}
