//! Request and reply messages of the validator's NATS API (JSON bodies on
//! [`api_subject`](super::api_subject)). The CLI and any program that changes config use these.

use serde::{Deserialize, Serialize};

use super::proposals::{ProposeOptions, Proposed};
use super::records::{ChangeSetRecord, ChangeSource, KeyChange, ValueRecord};

/// Largest request the validator reads, in bytes; larger ones are refused with `too_large`.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// Most keys in one change set (a JetStream atomic batch holds at most 1,000 messages, and
/// each commit adds a history record and the head).
pub const MAX_CHANGES_PER_SET: usize = 990;

/// Ask the validator to commit a change set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRequest {
    /// Target namespace.
    pub namespace: String,
    /// Target environment.
    pub environment: String,
    /// The keys to set or delete.
    pub changes: Vec<KeyChange>,
    /// Commit only if the namespace/environment is at this version (optimistic concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// Who asks.
    pub author: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Where the change comes from.
    #[serde(default)]
    pub source: ChangeSource,
    /// Git commit of the files the change came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// Validate and compute the diff, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Keys absent from `changes` are deleted (the change set replaces the whole state).
    #[serde(default)]
    pub replace: bool,
    /// Idempotency key: a retry with the same key (after a lost reply) is answered with the
    /// first outcome and never applied twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Mark the change as an emergency override (recorded in its metadata; needs a reason).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emergency: bool,
    /// Propose it for review or schedule it, instead of committing it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<ProposeOptions>,
}

impl ChangeRequest {
    /// A request to apply `changes` to `namespace`/`environment` on behalf of `author`; every
    /// other field at its default (no expected version, source `api`, no idempotency key).
    ///
    /// ```
    /// use mycosynth_subscriber::wire::{ChangeRequest, KeyChange};
    /// let mut request = ChangeRequest::new("payment-service", "production", vec![KeyChange::set("database.pool_size", 50.into())], "alice");
    /// request.request_id = Some("deploy-1234".into());
    /// assert!(!request.dry_run);
    /// ```
    pub fn new(
        namespace: impl Into<String>,
        environment: impl Into<String>,
        changes: Vec<KeyChange>,
        author: impl Into<String>,
    ) -> ChangeRequest {
        ChangeRequest {
            namespace: namespace.into(),
            environment: environment.into(),
            changes,
            expected_version: None,
            author: author.into(),
            reason: String::new(),
            source: ChangeSource::Api,
            git_commit: None,
            dry_run: false,
            replace: false,
            request_id: None,
            emergency: false,
            proposal: None,
        }
    }
}

/// Ask the validator to restore the state of an earlier version as a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// Target namespace.
    pub namespace: String,
    /// Target environment.
    pub environment: String,
    /// The version whose state to restore.
    pub to_version: u64,
    /// Commit only if the namespace/environment is at this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// Who asks.
    pub author: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Compute the diff only.
    #[serde(default)]
    pub dry_run: bool,
    /// Idempotency key, as for [`ChangeRequest::request_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Propose it for review or schedule it, instead of committing it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<ProposeOptions>,
}

/// Read current values (`key: None` for all of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetRequest {
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// One key, or all keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Read change-set history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// Only change sets that touched this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// At most this many change sets (newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Store a namespace's JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaPushRequest {
    /// Namespace.
    pub namespace: String,
    /// The JSON Schema.
    pub schema: serde_json::Value,
    /// Store it even if live config violates it.
    #[serde(default)]
    pub force: bool,
    /// Who asks.
    pub author: String,
}

/// Read a namespace's JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaGetRequest {
    /// Namespace.
    pub namespace: String,
}

/// What kind of failure a reply reports. Callers match on this; the CLI maps it to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The change breaks a naming, size or schema rule; nothing was written.
    Validation,
    /// `expected_version` is not the current version; nothing was written.
    Conflict,
    /// The caller may not do this.
    AccessDenied,
    /// The namespace, environment, key, version or schema does not exist.
    NotFound,
    /// The request itself is malformed or too large.
    BadRequest,
    /// The validator could not reach its store; nothing is known to be written.
    Unavailable,
    /// A fault inside the validator.
    Internal,
    /// The caller sent more change requests than its rate limit allows; nothing was written.
    RateLimited,
}

impl ErrorKind {
    /// The kind as written on the wire and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Validation => "validation",
            ErrorKind::Conflict => "conflict",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
            ErrorKind::RateLimited => "rate_limited",
        }
    }
}

/// One broken rule: which key, which rule, and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The offending key (or name, for namespace/environment rules).
    pub key: String,
    /// The rule's short name: `type`, `minimum`, `pattern`, `required`, `max_length`, ...
    pub rule: String,
    /// What is wrong, in one line.
    pub message: String,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// One line for people.
    pub message: String,
    /// For validation failures, every broken rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// For conflicts, the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

/// One key's difference between two states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffEntry {
    /// The key.
    pub key: String,
    /// Value before (absent: the key did not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<serde_json::Value>,
    /// Value after (absent: the key is deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<serde_json::Value>,
}

/// Outcome of a change or rollback request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeOutcome {
    /// The version after the request (unchanged for a dry run or an empty diff).
    pub version: u64,
    /// The version before.
    pub previous_version: u64,
    /// Whether a new version was committed.
    pub committed: bool,
    /// Id of the committed change set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    /// What changed (or would change, for a dry run).
    pub diff: Vec<DiffEntry>,
    /// This request's idempotency key had already been applied: the outcome is the first one's
    /// (its version and change id; the diff is not repeated).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// The change became a change request (nothing was committed), or, for an emergency
    /// change where approval is required, the review it opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed: Option<Proposed>,
}

/// Current values of a namespace/environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetOutcome {
    /// The version these values belong to.
    pub version: u64,
    /// The values with their metadata, sorted by key.
    pub values: Vec<(String, ValueRecord)>,
    /// The environment this one inherits from, if it declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// Change-set history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryOutcome {
    /// The change sets.
    pub change_sets: Vec<ChangeSetRecord>,
}

/// List the namespaces/environments the caller may read (every one that has a version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacesRequest {}

/// One namespace/environment of a [`NamespacesOutcome`]: its version and its last change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentSummary {
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// Current version.
    pub version: u64,
    /// Number of config keys at that version.
    pub keys: u64,
    /// Who made the current version, when and why.
    pub last: super::records::ChangeMeta,
}

/// The namespaces/environments the caller may read, sorted by namespace, then environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamespacesOutcome {
    /// One row per namespace/environment.
    pub environments: Vec<EnvironmentSummary>,
}

/// Outcome of a schema push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaPushOutcome {
    /// Violations of the new schema by live config that `force` let through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forced_violations: Vec<Violation>,
    /// Keys the new schema defines that the previous one did not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_keys: Vec<String>,
    /// Keys the previous schema defined that the new one does not (none of them set live).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_keys: Vec<String>,
}

/// The body of every reply: `{"ok": ...}` or `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    /// Success.
    Ok(T),
    /// Failure.
    Error(ApiError),
}
