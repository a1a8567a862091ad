//! The change-request endpoints: list, show, approve, reject, cancel, amend, rebase, apply.
//! The rows need only read (write for amend and apply) on the request's namespace and
//! environment; who may approve, reject, cancel, amend or rebase is the approval rule's and the
//! author's to say, checked in `validator/requests/` (the rows' `finer` column).

use std::sync::Arc;

use mycosynth_subscriber::wire::{
    is_sealed, AmendRequest, ApproveRequest, DiffEntry, ListFilter, ProposalId, ProposalKind,
    ProposalList, ProposalOutcome, ProposalRecord, ProposalState, RejectRequest, RequestIdRequest,
    RequestListRequest, REDACTED,
};
use serde_json::Value;

use super::Call;
use crate::clock::now_us;
use crate::failure::{invalid, Failure};
use crate::store::State;
use crate::validate;
use crate::validator::change::{moved_since, Base};
use crate::validator::instance::Validator;
use crate::validator::requests::{effective_state, visible_to, Reviewer};

/// The proposal a request names.
fn proposal_id(id: &str) -> Result<ProposalId, Failure> {
    ProposalId::parse(id).map_err(|e| invalid(vec![validate::name_violation(&e)]))
}

fn reviewer<'a>(call: &'a Call, name: &'a str) -> Reviewer<'a> {
    Reviewer {
        caller: &call.caller,
        name,
    }
}

/// `request-list`.
pub async fn list(
    validator: Arc<Validator>,
    call: Call,
    request: RequestListRequest,
) -> Result<ProposalList, Failure> {
    let who = call.caller.author(request.author.clone());
    let now = now_us();
    let mut requests: Vec<ProposalRecord> = validator
        .store
        .proposals(None)
        .await?
        .into_iter()
        .map(|(mut record, _)| {
            record.state = effective_state(&record, now);
            record
        })
        .filter(|r| visible_to(&call.caller, r))
        .filter(|r| {
            request
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == r.namespace)
        })
        .filter(|r| {
            request
                .environment
                .as_ref()
                .is_none_or(|env| *env == r.environment)
        })
        .filter(|r| listed(&call, &who, request.filter, r))
        .collect();
    match request.filter {
        ListFilter::Scheduled => requests.sort_by_key(|r| r.at_us),
        _ => requests.sort_by_key(|r| std::cmp::Reverse(r.created_us)),
    }
    Ok(ProposalList { requests })
}

/// Whether `filter` lists `record` for `who`.
fn listed(call: &Call, who: &str, filter: ListFilter, record: &ProposalRecord) -> bool {
    let pending = !record.state.is_final();
    match filter {
        ListFilter::All => true,
        ListFilter::Pending => pending,
        ListFilter::Mine => record.author == who,
        ListFilter::Scheduled => pending && record.at_us.is_some(),
        ListFilter::Review => {
            record.kind == ProposalKind::Review && record.state == ProposalState::Open
        }
        ListFilter::ToApprove => {
            let rule = call
                .caller
                .approval_rule(&record.namespace, &record.environment);
            record.state == ProposalState::Open
                && record.author != who
                && !record.approvals.iter().any(|a| a.identity == who)
                && call
                    .caller
                    .may_approve(rule, &record.namespace, &record.environment)
                    .is_ok()
        }
    }
}

/// `request-show`: the proposal, what it would change now, and the keys it conflicts on.
pub async fn show(
    validator: Arc<Validator>,
    _call: Call,
    request: RequestIdRequest,
) -> Result<ProposalOutcome, Failure> {
    let id = proposal_id(&request.id)?;
    let (mut record, _) = validator.store.proposal(&id).await?.ok_or_else(|| {
        crate::failure::failure(
            mycosynth_subscriber::wire::ErrorKind::NotFound,
            format!("no change request {id}"),
        )
    })?;
    record.state = effective_state(&record, now_us());
    let state = validator
        .store
        .load_state(id.namespace(), id.environment())
        .await?;
    let base = Base {
        version: record.base_version,
        keys: record.base_keys.clone(),
    };
    let conflicts = if record.kind == ProposalKind::Change && !record.state.is_final() {
        moved_since(&base, &state)
    } else {
        Vec::new()
    };
    let diff_now = if record.kind == ProposalKind::Change {
        diff_against(&record, &state)
    } else {
        Vec::new()
    };
    Ok(ProposalOutcome {
        request: record,
        diff_now,
        conflicts,
        applied: None,
    })
}

/// What `record`'s change set would change on `state` (sealed values shown redacted).
fn diff_against(record: &ProposalRecord, state: &State) -> Vec<DiffEntry> {
    let shown = |v: &Value| {
        if is_sealed(v) {
            Value::String(REDACTED.into())
        } else {
            v.clone()
        }
    };
    record
        .changes
        .iter()
        .filter_map(|change| {
            let old = state.values.get(&change.key).map(|r| &r.value);
            if old == change.value.as_ref() {
                return None;
            }
            Some(DiffEntry {
                key: change.key.clone(),
                old: old.map(shown),
                new: change.value.as_ref().map(shown),
            })
        })
        .collect()
}

/// `request-approve`.
pub async fn approve(
    validator: Arc<Validator>,
    call: Call,
    request: ApproveRequest,
) -> Result<ProposalOutcome, Failure> {
    let id = proposal_id(&request.id)?;
    let name = call.caller.author(request.author);
    let record = validator
        .approve(
            &id,
            &reviewer(&call, &name),
            &request.content_hash,
            &request.comment,
        )
        .await?;
    Ok(outcome(record))
}

/// `request-reject`.
pub async fn reject(
    validator: Arc<Validator>,
    call: Call,
    request: RejectRequest,
) -> Result<ProposalOutcome, Failure> {
    let id = proposal_id(&request.id)?;
    let name = call.caller.author(request.author);
    let record = validator
        .reject(&id, &reviewer(&call, &name), &request.reason)
        .await?;
    Ok(outcome(record))
}

/// `request-cancel`.
pub async fn cancel(
    validator: Arc<Validator>,
    call: Call,
    request: RequestIdRequest,
) -> Result<ProposalOutcome, Failure> {
    let id = proposal_id(&request.id)?;
    let name = call.caller.author(request.author);
    let record = validator
        .cancel(&id, &reviewer(&call, &name), &request.reason)
        .await?;
    Ok(outcome(record))
}

/// `request-amend`.
pub async fn amend(
    validator: Arc<Validator>,
    call: Call,
    request: AmendRequest,
) -> Result<ProposalOutcome, Failure> {
    let id = proposal_id(&request.id)?;
    let name = call.caller.author(request.author);
    let record = validator
        .amend(
            &id,
            &reviewer(&call, &name),
            request.changes,
            &request.reason,
        )
        .await?;
    Ok(outcome(record))
}

/// `request-rebase`.
pub async fn rebase(
    validator: Arc<Validator>,
    call: Call,
    request: RequestIdRequest,
) -> Result<ProposalOutcome, Failure> {
    let id = proposal_id(&request.id)?;
    let name = call.caller.author(request.author);
    let record = validator.rebase(&id, &reviewer(&call, &name)).await?;
    Ok(outcome(record))
}

/// `request-apply`.
pub async fn apply(
    validator: Arc<Validator>,
    call: Call,
    request: RequestIdRequest,
) -> Result<ProposalOutcome, Failure> {
    let id = proposal_id(&request.id)?;
    let name = call.caller.author(request.author);
    validator.apply_proposal(&id, &name).await
}

fn outcome(record: ProposalRecord) -> ProposalOutcome {
    ProposalOutcome {
        request: record,
        diff_now: Vec::new(),
        conflicts: Vec::new(),
        applied: None,
    }
}
