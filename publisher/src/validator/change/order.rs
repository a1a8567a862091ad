//! What a change asks for, as every step of the change path takes it: an [`Order`].

use std::collections::BTreeMap;

use mycosynth_subscriber::wire::{ChangeOutcome, ChangeSource, Environment, KeyChange, Namespace};
use serde_json::Value;

/// How many times a change set without `expected_version` is retried after losing a race.
pub const MAX_COMMIT_ATTEMPTS: usize = 8;

/// What a change asks for.
#[derive(Debug, Clone)]
pub enum Intent {
    /// Set/delete these keys (`replace`: and delete every other key).
    Changes {
        /// The keys to set (a value) or delete (none).
        changes: Vec<KeyChange>,
        /// Keys absent from `changes` are deleted.
        replace: bool,
    },
    /// Make the state equal to this document (a rollback).
    Restore(BTreeMap<String, Value>),
}

/// Who/why/where of a change, before it is committed.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// The recorded author: the verified identity in signed mode.
    pub author: String,
    /// Why.
    pub reason: String,
    /// Where the change comes from.
    pub source: ChangeSource,
    /// The git commit of the files it came from.
    pub git_commit: Option<String>,
    /// The client's idempotency key.
    pub request_id: Option<String>,
    /// Marked as an emergency override.
    pub emergency: bool,
    /// The verified identities that approved the change request it comes from.
    pub approved_by: Vec<String>,
    /// The change request it comes from.
    pub change_request: Option<String>,
}

/// The condition an approved change request applies on: the keys it touches have not changed
/// since the version it was validated (and approved) on.
#[derive(Debug, Clone)]
pub struct Base {
    /// The version it was validated on.
    pub version: u64,
    /// The version of each key it touches at that version (None: the key was not set).
    pub keys: BTreeMap<String, Option<u64>>,
}

/// One change on its way through the steps: where, what, on which condition, by whom.
#[derive(Debug, Clone)]
pub struct Order {
    /// Namespace.
    pub namespace: Namespace,
    /// Environment.
    pub environment: Environment,
    /// What it asks for.
    pub intent: Intent,
    /// Commit only if the namespace/environment is at this version.
    pub expected_version: Option<u64>,
    /// Commit only if the keys it touches are as they were at this base.
    pub base: Option<Base>,
    /// Who, why, from where.
    pub attribution: Attribution,
    /// Validate and diff only; write nothing.
    pub dry_run: bool,
}

/// How one attempt of the driver ended.
pub enum Attempt {
    /// With this answer.
    Done(ChangeOutcome),
    /// Try again (a lost race caught up, or a state to read afresh).
    Again,
}
