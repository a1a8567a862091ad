//! The review steps: approve (bound to the content hash the approver saw; the author never
//! approves), reject, cancel, and amend or rebase (a new draft of the change set on the
//! current state, which drops every approval).

use std::collections::BTreeMap;

use mycosynth_subscriber::wire::{
    content_hash, Approval, ErrorKind, KeyChange, ProposalId, ProposalKind, ProposalRecord,
    ProposalState, Role, Violation,
};

use super::records::{not_pending, pending, verdict};
use crate::access::{Caller, Scope};
use crate::clock::meta_time;
use crate::failure::{failure, invalid, Failure};
use crate::validator::change::{Attribution, Intent, Order};
use crate::validator::instance::Validator;

/// Who takes a step: the authenticated caller, and the name it is recorded under.
pub struct Reviewer<'a> {
    /// The caller, with the policy of this request.
    pub caller: &'a Caller,
    /// The verified identity (open mode: the declared author).
    pub name: &'a str,
}

impl Validator {
    /// Approves the content `hash` of proposal `id`.
    pub async fn approve(
        &self,
        id: &ProposalId,
        by: &Reviewer<'_>,
        hash: &str,
        comment: &str,
    ) -> Result<ProposalRecord, Failure> {
        let (ns, env) = (id.namespace().as_str(), id.environment().as_str());
        let rule = by.caller.approval_rule(ns, env).cloned();
        let record = self
            .take_step(id, |record| {
                pending(record)?;
                if record.author == by.name {
                    return Err(failure(
                        ErrorKind::AccessDenied,
                        format!(
                            "identity {:?} may not approve change request {}: the author of a change request never approves it",
                            by.name, record.id
                        ),
                    ));
                }
                by.caller.may_approve(rule.as_ref(), ns, env)?;
                if record.content_hash != hash {
                    return Err(failure(
                        ErrorKind::Conflict,
                        format!(
                            "change request {} changed since you reviewed it (amended or rebased; now {}): show it again and approve what it is now",
                            record.id, record.content_hash
                        ),
                    ));
                }
                if !record.approvals.iter().any(|a| a.identity == by.name) {
                    record.approvals.push(Approval {
                        identity: by.name.to_owned(),
                        time: meta_time().0,
                        comment: comment.to_owned(),
                    });
                }
                if record.has_approvals() {
                    record.state = ProposalState::Approved;
                }
                Ok(())
            })
            .await?;
        self.announce(&record, "approve", by.name, None).await;
        Ok(record)
    }

    /// Rejects proposal `id` (approvers only), with `reason`.
    pub async fn reject(
        &self,
        id: &ProposalId,
        by: &Reviewer<'_>,
        reason: &str,
    ) -> Result<ProposalRecord, Failure> {
        if reason.trim().is_empty() {
            return Err(invalid(vec![Violation {
                key: "(reason)".into(),
                rule: "reject_reason".into(),
                message: "a rejection needs a --reason".into(),
            }]));
        }
        let (ns, env) = (id.namespace().as_str(), id.environment().as_str());
        let rule = by.caller.approval_rule(ns, env).cloned();
        let record = self
            .take_step(id, |record| {
                pending(record)?;
                by.caller.may_approve(rule.as_ref(), ns, env)?;
                record.state = ProposalState::Rejected;
                record.closed = Some(verdict(by.name, reason.to_owned()));
                Ok(())
            })
            .await?;
        self.announce(&record, "reject", by.name, None).await;
        Ok(record)
    }

    /// Withdraws proposal `id` (its author, or an admin of its namespace/environment).
    pub async fn cancel(
        &self,
        id: &ProposalId,
        by: &Reviewer<'_>,
        reason: &str,
    ) -> Result<ProposalRecord, Failure> {
        let record = self
            .take_step(id, |record| {
                if record.state != ProposalState::Superseded {
                    pending(record)?;
                }
                author_or(by, record, Role::Admin, "cancel")?;
                record.state = ProposalState::Cancelled;
                record.closed = Some(verdict(by.name, reason.to_owned()));
                Ok(())
            })
            .await?;
        self.announce(&record, "cancel", by.name, None).await;
        Ok(record)
    }

    /// Replaces the change set of proposal `id` with `changes` (its author only), validated on
    /// the current state; every approval is dropped.
    pub async fn amend(
        &self,
        id: &ProposalId,
        by: &Reviewer<'_>,
        changes: Vec<KeyChange>,
        reason: &str,
    ) -> Result<ProposalRecord, Failure> {
        let (record, _) = self.stored_proposal(id).await?;
        author_or(by, &record, Role::Admin, "amend")?;
        self.redraft(id, by, record, changes, reason, "amend").await
    }

    /// Validates proposal `id` again on the current state (its author, or a writer), taking
    /// the current versions as its new base; every approval is dropped.
    pub async fn rebase(
        &self,
        id: &ProposalId,
        by: &Reviewer<'_>,
    ) -> Result<ProposalRecord, Failure> {
        let (record, _) = self.stored_proposal(id).await?;
        author_or(by, &record, Role::Write, "rebase")?;
        let changes = self.open_changes(id, &record.changes).await?;
        self.redraft(id, by, record, changes, "", "rebase").await
    }

    async fn redraft(
        &self,
        id: &ProposalId,
        by: &Reviewer<'_>,
        record: ProposalRecord,
        changes: Vec<KeyChange>,
        reason: &str,
        step: &'static str,
    ) -> Result<ProposalRecord, Failure> {
        if record.kind == ProposalKind::Review {
            return Err(failure(
                ErrorKind::Conflict,
                format!("change request {id} reviews a committed change: it cannot be {step}ed"),
            ));
        }
        if record.state != ProposalState::Superseded {
            pending(&record)?;
        }
        let order = Order {
            namespace: id.namespace().clone(),
            environment: id.environment().clone(),
            intent: Intent::Changes {
                changes,
                replace: false,
            },
            expected_version: None,
            base: None,
            attribution: Attribution {
                author: record.author.clone(),
                reason: record.reason.clone(),
                source: record.source,
                git_commit: record.git_commit.clone(),
                request_id: None,
                emergency: false,
                approved_by: Vec::new(),
                change_request: Some(record.id.clone()),
            },
            dry_run: false,
        };
        let draft = self.draft(&order).await?;
        if draft.plan.is_empty() {
            return Err(failure(
                ErrorKind::Conflict,
                format!(
                    "change request {id} would change nothing on version {}: cancel it",
                    draft.base_version
                ),
            ));
        }
        let hash = content_hash(
            id.namespace().as_str(),
            id.environment().as_str(),
            draft.base_version,
            &draft.plan.changes,
        );
        let updated = self
            .take_step(id, |stored| {
                if stored.state != ProposalState::Superseded {
                    pending(stored)?;
                }
                stored.changes = draft.plan.changes.clone();
                stored.base_version = draft.base_version;
                stored.base_keys = draft.base_keys.clone();
                stored.diff = draft.plan.diff.clone();
                stored.content_hash = hash.clone();
                stored.approvals.clear();
                stored.closed = None;
                stored.state = if stored.required == 0 {
                    ProposalState::Approved
                } else {
                    ProposalState::Open
                };
                if !reason.is_empty() {
                    stored.reason = reason.to_owned();
                }
                Ok(())
            })
            .await?;
        self.announce(&updated, step, by.name, None).await;
        Ok(updated)
    }

    /// `changes` of a proposal of `id`'s namespace/environment with sealed values opened (the
    /// change path validates them in clear and seals them again).
    pub(super) async fn open_changes(
        &self,
        id: &ProposalId,
        changes: &[KeyChange],
    ) -> Result<Vec<KeyChange>, Failure> {
        let set: BTreeMap<String, serde_json::Value> = changes
            .iter()
            .filter_map(|c| Some((c.key.clone(), c.value.clone()?)))
            .collect();
        let mut clear = self
            .vault
            .open_document(id.namespace(), id.environment(), set)
            .await?;
        Ok(changes
            .iter()
            .map(|c| KeyChange {
                key: c.key.clone(),
                value: c.value.as_ref().and(clear.remove(&c.key)),
            })
            .collect())
    }
}

/// Ok when `by` wrote `record`, or holds `role` on its namespace/environment.
fn author_or(
    by: &Reviewer<'_>,
    record: &ProposalRecord,
    role: Role,
    step: &str,
) -> Result<(), Failure> {
    let scope = Scope::Env(&record.namespace, &record.environment);
    if record.author == by.name || by.caller.may_quietly(role, scope) {
        return Ok(());
    }
    if record.state.is_final() {
        return Err(not_pending(record));
    }
    Err(failure(
        ErrorKind::AccessDenied,
        format!(
            "identity {:?} may not {step} change request {}: only its author {:?} (or {} on {}/{}) may",
            by.name,
            record.id,
            record.author,
            role.as_str(),
            record.namespace,
            record.environment
        ),
    ))
}
