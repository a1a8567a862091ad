//! Change requests: a change set proposed for review instead of committed at once, its approvals
//! bound to its exact content, and its application (at once or scheduled). In code a change
//! request is a *proposal* ([`ProposalRecord`]), since [`ChangeRequest`](super::ChangeRequest) is
//! the API's message for a change.
//!
//! A proposal is stored as plain JSON under `_proposals.<namespace>.<env>.<short id>` in the
//! config bucket (only the validator writes it; services cannot read it), and each step is
//! announced on [`request_notice_subject`](super::request_notice_subject).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::api::{ChangeOutcome, DiffEntry};
use super::names::{Environment, NameError, Namespace};
use super::records::{ChangeSource, KeyChange};

/// How long a proposal stays open by default: seven days.
pub const DEFAULT_EXPIRY_S: u64 = 7 * 24 * 3600;
/// How late a scheduled proposal may still be applied when no validator ran at its time.
pub const DEFAULT_GRACE_S: u64 = 600;

/// An approval rule of the policy: in the namespaces × environments its globs match, a change
/// becomes a proposal that needs `approvals` approvals from `approvers` before it applies.
///
/// Principals (`approvers`, `emergency`) are identity names, or `role:<read|write|admin>` for
/// anyone holding at least that role on the namespace/environment. The first matching rule
/// decides. The author of a proposal never counts as its approver.
///
/// ```
/// use mycosynth_subscriber::wire::ApprovalRule;
/// let rule: ApprovalRule = serde_json::from_str(r#"{"namespace": "*", "environment": "production",
///     "approvals": 1, "approvers": ["role:admin", "bob"], "emergency": ["alice"]}"#).unwrap();
/// assert_eq!(rule.approvals, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRule {
    /// Namespace glob.
    pub namespace: String,
    /// Environment glob.
    pub environment: String,
    /// Approvals needed (0: none; the rule then only says who may take the emergency path).
    pub approvals: u32,
    /// Who may approve.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Who may commit at once with `--emergency` (opening a review afterwards).
    #[serde(default)]
    pub emergency: Vec<String>,
}

/// Where a proposal is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Waiting for approvals.
    Open,
    /// Approved; applies with `requests apply`, or at its scheduled time.
    Approved,
    /// Committed (a review: reviewed).
    Applied,
    /// Rejected by an approver.
    Rejected,
    /// Withdrawn by its author.
    Cancelled,
    /// Not applied before its expiry.
    Expired,
    /// Another proposal applied on the keys it touches; rebase it to go on.
    Superseded,
    /// Scheduled, but no validator applied it within the grace period after its time.
    Missed,
    /// Scheduled, and refused at its time (a conflict or a validation failure).
    Failed,
}

impl ProposalState {
    /// The state as written in records, metrics and notices.
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Open => "open",
            ProposalState::Approved => "approved",
            ProposalState::Applied => "applied",
            ProposalState::Rejected => "rejected",
            ProposalState::Cancelled => "cancelled",
            ProposalState::Expired => "expired",
            ProposalState::Superseded => "superseded",
            ProposalState::Missed => "missed",
            ProposalState::Failed => "failed",
        }
    }

    /// No step leads out of this state.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ProposalState::Open | ProposalState::Approved | ProposalState::Superseded
        )
    }
}

/// What a proposal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// A change waiting for review before it applies.
    #[default]
    Change,
    /// The post-hoc review of an emergency change already committed.
    Review,
}

/// One approval, bound to the content it approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The verified identity that approved.
    pub identity: String,
    /// When, RFC 3339.
    pub time: String,
    /// Its comment.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// A rejection, a cancellation or the reason a step failed: who, when, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The identity (or `scheduler` for the validator's own steps).
    pub identity: String,
    /// When, RFC 3339.
    pub time: String,
    /// Why.
    pub reason: String,
}

/// The version a proposal committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The committed version.
    pub version: u64,
    /// Its change set id.
    pub change_id: String,
    /// Who applied it (`scheduler` when its time came).
    pub by: String,
    /// When, RFC 3339.
    pub time: String,
}

/// A proposal as stored: the exact change set and everything its review needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalRecord {
    /// `<namespace>.<env>.<short id>`.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// A change, or the review of an emergency change.
    #[serde(default)]
    pub kind: ProposalKind,
    /// Where it is.
    pub state: ProposalState,
    /// The exact change set, validated (sensitive values sealed).
    pub changes: Vec<KeyChange>,
    /// The version it was validated on.
    pub base_version: u64,
    /// The version each key it touches had at `base_version` (absent: the key was not set).
    pub base_keys: BTreeMap<String, Option<u64>>,
    /// What it changes against its base (sensitive values redacted).
    pub diff: Vec<DiffEntry>,
    /// [`content_hash`] of the namespace, environment, base version and change set: every
    /// approval holds for this content only.
    pub content_hash: String,
    /// Who proposed it (the verified identity in signed mode).
    pub author: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Where it came from.
    pub source: ChangeSource,
    /// The git commit of the files it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// When it was proposed, RFC 3339, and in µs since the Unix epoch.
    pub created: String,
    /// As `created`, µs.
    pub created_us: i64,
    /// After this (µs since the epoch) an unapplied proposal expires.
    pub expires_us: i64,
    /// Approvals it needs.
    pub required: u32,
    /// Approvals it has (of its current content: an amendment drops them all).
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// Applies at this time (µs since the epoch), once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_us: Option<i64>,
    /// How late after `at_us` it may still be applied.
    #[serde(default = "default_grace")]
    pub grace_s: u64,
    /// What it committed (for a review: the emergency change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// Why it is rejected, cancelled, expired, superseded, missed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Verdict>,
}

fn default_grace() -> u64 {
    DEFAULT_GRACE_S
}

impl ProposalRecord {
    /// The identities whose approvals count (never the author), in order.
    pub fn approved_by(&self) -> Vec<String> {
        self.approvals
            .iter()
            .map(|a| a.identity.clone())
            .filter(|i| *i != self.author)
            .collect()
    }

    /// Whether it has the approvals it needs.
    pub fn has_approvals(&self) -> bool {
        self.approved_by().len() >= self.required as usize
    }
}

/// The hash every approval is bound to: SHA-256 (hex) of the namespace, environment, base
/// version and change set, as canonical JSON.
///
/// ```
/// use mycosynth_subscriber::wire::{content_hash, KeyChange};
/// let a = content_hash("payment-service", "production", 7, &[KeyChange::set("a", 1.into())]);
/// let b = content_hash("payment-service", "production", 7, &[KeyChange::set("a", 2.into())]);
/// assert_ne!(a, b);
/// assert_eq!(a.len(), 64);
/// ```
pub fn content_hash(
    namespace: &str,
    environment: &str,
    base: u64,
    changes: &[KeyChange],
) -> String {
    let canonical = serde_json::json!({
        "namespace": namespace,
        "environment": environment,
        "base_version": base,
        "changes": changes,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A proposal's id, `<namespace>.<env>.<12 hex digits>`: it names where the proposal lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposalId {
    namespace: Namespace,
    environment: Environment,
    short: String,
}

impl ProposalId {
    /// A new id in `namespace`/`environment` from 48 random bits.
    pub fn new(namespace: Namespace, environment: Environment, random: u64) -> ProposalId {
        ProposalId {
            namespace,
            environment,
            short: format!("{:012x}", random & 0xffff_ffff_ffff),
        }
    }

    /// Parses an id as a user typed it.
    ///
    /// ```
    /// use mycosynth_subscriber::wire::ProposalId;
    /// let id = ProposalId::parse("payment-service.production.0193f2a7c1d4").unwrap();
    /// assert_eq!(id.namespace().as_str(), "payment-service");
    /// assert!(ProposalId::parse("payment-service.production").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<ProposalId, NameError> {
        let bad = || NameError::BadCharacter {
            what: "change request id",
            name: text.chars().take(80).collect(),
            rule: "use <namespace>.<environment>.<12 hex digits>, as `requests list` shows",
        };
        let mut parts = text.split('.');
        let (Some(ns), Some(env), Some(short), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let hex = short.len() == 12 && short.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex || short.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        Ok(ProposalId {
            namespace: Namespace::new(ns)?,
            environment: Environment::new(env)?,
            short: short.to_owned(),
        })
    }

    /// Its namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Its environment.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// The last part of the id.
    pub fn short(&self) -> &str {
        &self.short
    }
}

impl fmt::Display for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.namespace, self.environment, self.short)
    }
}

/// How a change (or rollback) asks to be proposed or scheduled: the `proposal` field of
/// [`ChangeRequest`](super::ChangeRequest) and [`RollbackRequest`](super::RollbackRequest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposeOptions {
    /// Propose it for review even where no approval is required.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub propose: bool,
    /// Apply it at this time (RFC 3339), once approved: a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Expire it after this many seconds unapplied (default [`DEFAULT_EXPIRY_S`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_s: Option<u64>,
    /// How late after `at` it may still apply (default [`DEFAULT_GRACE_S`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_s: Option<u64>,
}

/// Which proposals `requests list` shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListFilter {
    /// Every proposal not yet final.
    #[default]
    Pending,
    /// The caller's own.
    Mine,
    /// Those the caller may approve and has not.
    ToApprove,
    /// Those with a schedule, by time.
    Scheduled,
    /// Reviews of emergency changes not yet approved.
    Review,
    /// All, final ones too.
    All,
}

/// `request-list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestListRequest {
    /// Only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Which.
    #[serde(default)]
    pub filter: ListFilter,
    /// Who asks (open mode).
    #[serde(default)]
    pub author: String,
}

/// `request-show`, `request-cancel`, `request-apply`, `request-rebase`: one proposal by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestIdRequest {
    /// The proposal's id.
    pub id: String,
    /// Who asks (open mode).
    #[serde(default)]
    pub author: String,
    /// Why (cancel).
    #[serde(default)]
    pub reason: String,
}

/// `request-approve`: approve the content the approver saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproveRequest {
    /// The proposal's id.
    pub id: String,
    /// The content hash the approver reviewed (`requests show` gives it): an approval of
    /// other content is refused as a conflict.
    pub content_hash: String,
    /// A comment.
    #[serde(default)]
    pub comment: String,
    /// Who asks (open mode).
    #[serde(default)]
    pub author: String,
}

/// `request-reject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectRequest {
    /// The proposal's id.
    pub id: String,
    /// Why (required).
    pub reason: String,
    /// Who asks (open mode).
    #[serde(default)]
    pub author: String,
}

/// `request-amend`: replace the change set of an open proposal (which drops its approvals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmendRequest {
    /// The proposal's id.
    pub id: String,
    /// The new change set.
    pub changes: Vec<KeyChange>,
    /// A new reason (empty: keep).
    #[serde(default)]
    pub reason: String,
    /// Who asks (open mode).
    #[serde(default)]
    pub author: String,
}

/// A proposal, as the request endpoints answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalOutcome {
    /// The proposal as stored after the request.
    pub request: ProposalRecord,
    /// `request-show`: what it would change against the current state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diff_now: Vec<DiffEntry>,
    /// `request-show`: the keys it touches that changed since its base (it conflicts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// `request-apply`: the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<ChangeOutcome>,
}

/// `request-list`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalList {
    /// The proposals, newest first (by time for `scheduled`).
    pub requests: Vec<ProposalRecord>,
}

/// What a change answers when it became a proposal instead of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposed {
    /// The proposal's id.
    pub id: String,
    /// Its state.
    pub state: ProposalState,
    /// Approvals it needs.
    pub required: u32,
    /// When it applies, µs since the epoch, if scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_us: Option<i64>,
    /// Its content hash.
    pub content_hash: String,
}

/// Published on [`request_notice_subject`](super::request_notice_subject) at every step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestNotice {
    /// The proposal's id.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// The step: propose, approve, reject, amend, cancel, rebase, apply, fire, miss, fail,
    /// expire, supersede, review.
    pub step: String,
    /// The state after it.
    pub state: ProposalState,
    /// Who took it.
    pub by: String,
    /// The version it committed (apply, fire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_ids_are_refused() {
        let id = ProposalId::new(
            Namespace::new("payment-service").unwrap(),
            Environment::new("production").unwrap(),
            0x0193_f2a7_c1d4,
        );
        assert_eq!(id.to_string(), "payment-service.production.0193f2a7c1d4");
        assert_eq!(ProposalId::parse(&id.to_string()).unwrap(), id);
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "a.b.0193F2A7C1D4",
            "a.b.0193f2a7c1",
            "A.b.0193f2a7c1d4",
        ] {
            assert!(ProposalId::parse(bad).is_err(), "{bad}");
        }
    }
}
