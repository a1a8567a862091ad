//! Propose: a change that needs review (or asks for it, or is scheduled) is validated like any
//! change ([`Validator::draft`]) and stored as a proposal with its exact change set, base,
//! author, reason and content hash. A refused change set is never stored. An emergency change
//! where approval is required commits at once and opens a review of itself.

use mycosynth_subscriber::wire::{
    content_hash, ChangeOutcome, DiffEntry, KeyChange, ProposalId, ProposalKind, ProposalRecord,
    ProposalState, Proposed, Violation,
};
use sha2::{Digest, Sha256};

use crate::clock::meta_time;
use crate::failure::{invalid, Failure};
use crate::store::StoreError;
use crate::validator::change::{Draft, Order};
use crate::validator::instance::Validator;

/// How a change becomes a proposal.
#[derive(Debug, Clone, Copy)]
pub struct ProposalPlan {
    /// Approvals it needs (0: approved at once, e.g. a schedule where none is required).
    pub required: u32,
    /// When it applies, µs since the epoch.
    pub at_us: Option<i64>,
    /// Expires after this many seconds unapplied.
    pub expires_s: u64,
    /// How late after `at_us` it may still apply.
    pub grace_s: u64,
}

/// Parses `--at`: RFC 3339, later than `now_us`.
pub fn parse_at(at: &str, now_us: i64) -> Result<i64, Failure> {
    let refuse = |message: String| {
        invalid(vec![Violation {
            key: "(at)".into(),
            rule: "at".into(),
            message,
        }])
    };
    let when = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map_err(|e| refuse(format!("--at {at:?} is not an RFC 3339 time ({e})")))?;
    let when_us = i64::try_from(when.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
    if when_us <= now_us {
        return Err(refuse(format!("--at {at:?} is in the past")));
    }
    Ok(when_us)
}

impl Validator {
    /// Stores `draft` of `order` as a proposal; the answer says so (nothing is committed). A
    /// retry with the same idempotency key finds the proposal its first attempt made.
    pub async fn propose(
        &self,
        order: &Order,
        draft: Draft,
        plan: ProposalPlan,
    ) -> Result<ChangeOutcome, Failure> {
        let (text, now_us) = meta_time();
        let id = proposal_id(order);
        let attribution = &order.attribution;
        let changes = draft.plan.changes;
        let hash = content_hash(
            order.namespace.as_str(),
            order.environment.as_str(),
            draft.base_version,
            &changes,
        );
        let record = ProposalRecord {
            id: id.to_string(),
            namespace: order.namespace.to_string(),
            environment: order.environment.to_string(),
            kind: ProposalKind::Change,
            state: if plan.required == 0 {
                ProposalState::Approved
            } else {
                ProposalState::Open
            },
            changes,
            base_version: draft.base_version,
            base_keys: draft.base_keys,
            diff: draft.plan.diff.clone(),
            content_hash: hash,
            author: attribution.author.clone(),
            reason: attribution.reason.clone(),
            source: attribution.source,
            git_commit: attribution.git_commit.clone(),
            created: text,
            created_us: now_us,
            expires_us: now_us.saturating_add(seconds_us(plan.expires_s)),
            required: plan.required,
            approvals: Vec::new(),
            at_us: plan.at_us,
            grace_s: plan.grace_s,
            applied: None,
            closed: None,
        };
        let record = self.store_new(&id, record, "propose").await?;
        Ok(ChangeOutcome {
            version: record.base_version,
            previous_version: record.base_version,
            committed: false,
            change_id: None,
            diff: draft.plan.diff,
            replayed: false,
            proposed: Some(proposed(&record)),
        })
    }

    /// Opens the post-hoc review of an emergency change `order` committed as `committed`.
    pub async fn open_review(
        &self,
        order: &Order,
        committed: &ChangeOutcome,
        required: u32,
    ) -> Result<Proposed, Failure> {
        let (text, now_us) = meta_time();
        let id = proposal_id(order);
        let shown: Vec<KeyChange> = committed.diff.iter().map(shown_change).collect();
        let ns = order.namespace.as_str();
        let env = order.environment.as_str();
        let record = ProposalRecord {
            id: id.to_string(),
            namespace: ns.to_owned(),
            environment: env.to_owned(),
            kind: ProposalKind::Review,
            state: ProposalState::Open,
            content_hash: content_hash(ns, env, committed.previous_version, &shown),
            changes: Vec::new(),
            base_version: committed.previous_version,
            base_keys: Default::default(),
            diff: committed.diff.clone(),
            author: order.attribution.author.clone(),
            reason: order.attribution.reason.clone(),
            source: order.attribution.source,
            git_commit: order.attribution.git_commit.clone(),
            created: text.clone(),
            created_us: now_us,
            // A review stays until someone reviews it.
            expires_us: i64::MAX,
            required: required.max(1),
            approvals: Vec::new(),
            at_us: None,
            grace_s: 0,
            applied: committed.change_id.clone().map(|change_id| {
                mycosynth_subscriber::wire::Applied {
                    version: committed.version,
                    change_id,
                    by: order.attribution.author.clone(),
                    time: text,
                }
            }),
            closed: None,
        };
        let record = self.store_new(&id, record, "review").await?;
        Ok(proposed(&record))
    }

    /// Stores a new proposal and announces it; a proposal already under `id` (a retry) is
    /// answered instead.
    async fn store_new(
        &self,
        id: &ProposalId,
        record: ProposalRecord,
        step: &'static str,
    ) -> Result<ProposalRecord, Failure> {
        match self.store.create_proposal(&record).await {
            Ok(_) => {
                self.announce(&record, step, &record.author, None).await;
                Ok(record)
            }
            Err(StoreError::Conflict) => Ok(self.stored_proposal(id).await?.0),
            Err(err) => Err(err.into()),
        }
    }
}

/// The id of the proposal `order` opens: derived from its idempotency key when it has one (a
/// retry opens no second proposal), else random.
fn proposal_id(order: &Order) -> ProposalId {
    let random = match &order.attribution.request_id {
        Some(key) => {
            let digest = Sha256::digest(key.as_bytes());
            digest
                .iter()
                .take(8)
                .fold(0u64, |n, b| (n << 8) | u64::from(*b))
        }
        None => uuid::Uuid::now_v7().as_u128() as u64,
    };
    ProposalId::new(order.namespace.clone(), order.environment.clone(), random)
}

/// What a change answers about the proposal it opened.
pub fn proposed(record: &ProposalRecord) -> Proposed {
    Proposed {
        id: record.id.clone(),
        state: record.state,
        required: record.required,
        at_us: record.at_us,
        content_hash: record.content_hash.clone(),
    }
}

/// A diff entry as the change it shows (for a review's content hash).
fn shown_change(entry: &DiffEntry) -> KeyChange {
    KeyChange {
        key: entry.key.clone(),
        value: entry.new.clone(),
    }
}

fn seconds_us(seconds: u64) -> i64 {
    i64::try_from(seconds)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000)
}
