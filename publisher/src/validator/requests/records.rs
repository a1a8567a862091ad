//! Reading and writing proposals for the workflow: a missing one is "not found", a step taken
//! on a proposal that moved meanwhile is retried on the fresh record, and a proposal past its
//! expiry is expired before any step.

use mycosynth_subscriber::wire::{
    ErrorKind, ProposalId, ProposalRecord, ProposalState, Role, Verdict,
};

use crate::access::{Caller, Scope};
use crate::clock::meta_time;
use crate::failure::{failure, Failure};
use crate::store::{StoreError, Stored};
use crate::validator::instance::Validator;

/// How many times a step is taken again on a proposal that moved meanwhile.
pub const STEP_ATTEMPTS: usize = 8;

impl Validator {
    /// The proposal `id` as stored, or "not found".
    pub(super) async fn stored_proposal(&self, id: &ProposalId) -> Result<Stored, Failure> {
        self.store
            .proposal(id)
            .await?
            .ok_or_else(|| failure(ErrorKind::NotFound, format!("no change request {id}")))
    }

    /// Takes `step` on proposal `id`: reads it (expiring it if due), lets `step` change it, and
    /// writes it with a compare-and-set on the revision read, again on a fresh read when
    /// another writer moved it. Returns the record as written.
    pub(super) async fn take_step(
        &self,
        id: &ProposalId,
        mut step: impl FnMut(&mut ProposalRecord) -> Result<(), Failure>,
    ) -> Result<ProposalRecord, Failure> {
        for _ in 0..STEP_ATTEMPTS {
            let (mut record, revision) = self.stored_proposal(id).await?;
            if expire_if_due(&mut record, meta_time().1) {
                // Expired before this step: record that, then refuse the step.
                match self.store.update_proposal(&record, revision).await {
                    Ok(_) => {
                        self.announce(&record, "expire", "scheduler", None).await;
                        self.audit_step("request-expire", &record, br#"{"ok":{}}"#)
                            .await;
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(err) => return Err(err.into()),
                }
                return Err(not_pending(&record));
            }
            step(&mut record)?;
            match self.store.update_proposal(&record, revision).await {
                Ok(_) => return Ok(record),
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(failure(
            ErrorKind::Unavailable,
            format!("change request {id} is changing too fast; try again"),
        ))
    }
}

/// Marks `record` expired when it is still pending at `now_us` past its expiry.
pub fn expire_if_due(record: &mut ProposalRecord, now_us: i64) -> bool {
    let pending = matches!(
        record.state,
        ProposalState::Open | ProposalState::Approved | ProposalState::Superseded
    );
    if !pending || now_us < record.expires_us {
        return false;
    }
    record.state = ProposalState::Expired;
    record.closed = Some(verdict("scheduler", "not applied before its expiry".into()));
    true
}

/// The state `record` is in at `now_us` (a pending one past its expiry is expired, even before
/// the scheduler writes it so).
pub fn effective_state(record: &ProposalRecord, now_us: i64) -> ProposalState {
    let mut copy = record.clone();
    expire_if_due(&mut copy, now_us);
    copy.state
}

/// A verdict by `identity` now.
pub fn verdict(identity: &str, reason: String) -> Verdict {
    Verdict {
        identity: identity.to_owned(),
        time: meta_time().0,
        reason,
    }
}

/// The refusal of a step on a proposal that is no longer pending (or superseded).
pub fn not_pending(record: &ProposalRecord) -> Failure {
    let why = record
        .closed
        .as_ref()
        .map(|v| format!(" ({})", v.reason))
        .unwrap_or_default();
    failure(
        ErrorKind::Conflict,
        format!(
            "change request {} is {}{why}",
            record.id,
            record.state.as_str()
        ),
    )
}

/// Ok when `record` is open or approved.
pub fn pending(record: &ProposalRecord) -> Result<(), Failure> {
    match record.state {
        ProposalState::Open | ProposalState::Approved => Ok(()),
        _ => Err(not_pending(record)),
    }
}

/// Whether `caller` may read the namespace/environment of `record` (lists show only those).
pub fn visible_to(caller: &Caller, record: &ProposalRecord) -> bool {
    let scope = Scope::Env(&record.namespace, &record.environment);
    caller.may_quietly(Role::Read, scope)
}
