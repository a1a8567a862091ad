//! Apply: an approved proposal goes through the change path once. The commit's idempotency key
//! is derived from the proposal's id and content, so a retry, another validator firing the same
//! schedule, or an apply racing the scheduler replays the first commit instead of making a
//! second; the proposal's record then moves to `applied` by compare-and-set. At apply the change
//! set is validated again on the current state and schema, and refused as a conflict (naming
//! the keys) when the keys it touches changed since its base.

use mycosynth_subscriber::wire::{
    ApiError, Applied, ChangeOutcome, ErrorKind, ProposalId, ProposalKind, ProposalOutcome,
    ProposalRecord, ProposalState, Violation,
};

use super::records::{expire_if_due, not_pending, verdict, STEP_ATTEMPTS};
use crate::clock::meta_time;
use crate::failure::{failure, Failure};
use crate::store::{StoreError, Stored};
use crate::validator::change::{Attribution, Base, Intent, Order};
use crate::validator::instance::Validator;

/// Who applies a scheduled proposal at its time.
pub const SCHEDULER: &str = "scheduler";

impl Validator {
    /// Applies proposal `id` for `by` (`SCHEDULER` at its time).
    pub async fn apply_proposal(
        &self,
        id: &ProposalId,
        by: &str,
    ) -> Result<ProposalOutcome, Failure> {
        let stored = self.stored_proposal(id).await?;
        self.apply_stored(id, stored, by).await
    }

    /// Applies a proposal read at a revision.
    pub(super) async fn apply_stored(
        &self,
        id: &ProposalId,
        (record, _): Stored,
        by: &str,
    ) -> Result<ProposalOutcome, Failure> {
        if record.state == ProposalState::Applied {
            // A retry, or someone else was first: it applied once, and this is how.
            return Ok(ProposalOutcome {
                request: record,
                diff_now: Vec::new(),
                conflicts: Vec::new(),
                applied: None,
            });
        }
        ready_to_apply(&record, meta_time().1)?;
        let changes = self.open_changes(id, &record.changes).await?;
        let order = Order {
            namespace: id.namespace().clone(),
            environment: id.environment().clone(),
            intent: Intent::Changes {
                changes,
                replace: false,
            },
            expected_version: None,
            base: Some(Base {
                version: record.base_version,
                keys: record.base_keys.clone(),
            }),
            attribution: Attribution {
                author: record.author.clone(),
                reason: record.reason.clone(),
                source: record.source,
                git_commit: record.git_commit.clone(),
                // One commit per proposal and content, whoever applies it and however often.
                request_id: Some(format!("cr-{}-{}", id.short(), &record.content_hash[..16])),
                emergency: false,
                approved_by: record.approved_by(),
                change_request: Some(record.id.clone()),
            },
            dry_run: false,
        };
        let committed = self.commit(order).await?;
        let record = self.mark_applied(id, &committed, by).await?;
        self.announce(
            &record,
            if by == SCHEDULER { "fire" } else { "apply" },
            by,
            Some(committed.version),
        )
        .await;
        self.supersede_overlapping(&record).await;
        Ok(ProposalOutcome {
            request: record,
            diff_now: Vec::new(),
            conflicts: Vec::new(),
            applied: Some(committed),
        })
    }

    /// A change request rolled out through a canary is applied when its rollout promotes:
    /// marks proposal `id` applied with the promotion's commit and announces it (logged, not
    /// failed, when the record cannot be moved: the commit already stands).
    pub(crate) async fn applied_by_rollout(&self, id: &str, committed: &ChangeOutcome, by: &str) {
        let Ok(id) = ProposalId::parse(id) else {
            return;
        };
        match self.mark_applied(&id, committed, by).await {
            Ok(record) => {
                self.announce(&record, "apply", by, Some(committed.version))
                    .await;
                self.supersede_overlapping(&record).await;
            }
            Err(err) => {
                tracing::warn!(request = %id, error = %err.message, "promoted, but the change request could not be marked applied");
            }
        }
    }

    /// The identities that approved proposal `id` (none when it cannot be read).
    pub(crate) async fn approvers_of(&self, id: &str) -> Vec<String> {
        let Ok(id) = ProposalId::parse(id) else {
            return Vec::new();
        };
        match self.stored_proposal(&id).await {
            Ok((record, _)) => record.approved_by(),
            Err(_) => Vec::new(),
        }
    }

    /// Moves the record to `applied` with what `committed` made (a record another writer moved
    /// to `applied` first is kept as it is).
    async fn mark_applied(
        &self,
        id: &ProposalId,
        committed: &ChangeOutcome,
        by: &str,
    ) -> Result<ProposalRecord, Failure> {
        let change_id = committed.change_id.clone().unwrap_or_default();
        for _ in 0..STEP_ATTEMPTS {
            let (mut record, revision) = self.stored_proposal(id).await?;
            if record.state == ProposalState::Applied {
                return Ok(record);
            }
            record.state = ProposalState::Applied;
            record.applied = Some(Applied {
                version: committed.version,
                change_id: change_id.clone(),
                by: by.to_owned(),
                time: meta_time().0,
            });
            record.closed = None;
            match self.store.update_proposal(&record, revision).await {
                Ok(_) => return Ok(record),
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(failure(
            ErrorKind::Unavailable,
            format!("change request {id} was applied (version {}) but its record could not be updated; retry", committed.version),
        ))
    }

    /// The other pending proposals of the same namespace/environment that touch keys `applied`
    /// changed are superseded: they would conflict at apply, and their approvals were given to
    /// a base that is gone. Best effort: one that moved meanwhile is left as it is.
    async fn supersede_overlapping(&self, applied: &ProposalRecord) {
        let Ok(id) = ProposalId::parse(&applied.id) else {
            return;
        };
        let Ok(others) = self
            .store
            .proposals(Some((id.namespace(), id.environment())))
            .await
        else {
            return;
        };
        for (mut other, revision) in others {
            let overlaps = other
                .changes
                .iter()
                .any(|c| applied.changes.iter().any(|a| a.key == c.key));
            let pending = matches!(other.state, ProposalState::Open | ProposalState::Approved);
            if other.id == applied.id || !overlaps || !pending || other.kind == ProposalKind::Review
            {
                continue;
            }
            other.state = ProposalState::Superseded;
            other.closed = Some(verdict(
                SCHEDULER,
                format!("{} applied on the same keys; rebase it", applied.id),
            ));
            if self.store.update_proposal(&other, revision).await.is_ok() {
                self.announce(&other, "supersede", SCHEDULER, None).await;
            }
        }
    }
}

/// Ok when `record` may be applied now: approved, not expired, a change (not a review).
pub(super) fn ready_to_apply(record: &ProposalRecord, now_us: i64) -> Result<(), Failure> {
    let mut current = record.clone();
    expire_if_due(&mut current, now_us);
    if current.kind == ProposalKind::Review {
        return Err(failure(
            ErrorKind::Conflict,
            format!(
                "change request {} reviews a committed change: there is nothing to apply",
                record.id
            ),
        ));
    }
    match current.state {
        ProposalState::Approved => Ok(()),
        ProposalState::Open => {
            let has = record.approved_by().len();
            let rule = if has == 0 {
                "ApprovalRequired"
            } else {
                "InsufficientApprovers"
            };
            let message = format!(
                "{rule}: change request {} needs {} approval(s) and has {has}: it cannot be applied yet",
                record.id, record.required
            );
            Err(ApiError {
                violations: vec![Violation {
                    key: record.id.clone(),
                    rule: if has == 0 {
                        "approval_required"
                    } else {
                        "insufficient_approvers"
                    }
                    .into(),
                    message: format!("{} of {} approval(s)", has, record.required),
                }],
                ..failure(ErrorKind::AccessDenied, message)
            })
        }
        _ => Err(not_pending(&current)),
    }
}
