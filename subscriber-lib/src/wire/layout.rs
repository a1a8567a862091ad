//! Where things live in NATS: bucket names, KV keys and subjects. Nothing else in the project
//! spells these strings.
//!
//! Config bucket `mycosynth-config` (one JetStream KV bucket, atomic batch publish enabled):
//!
//! | KV key                               | value (JSON)                       |
//! |--------------------------------------|------------------------------------|
//! | `<namespace>.<env>.<key>`            | [`ValueRecord`](super::ValueRecord): value + who/when/why |
//! | `<namespace>.<env>._meta.head`       | [`HeadRecord`](super::HeadRecord): the current version  |
//! | `_history.<namespace>.<env>.<version>` | [`ChangeSetRecord`](super::ChangeSetRecord): one accepted change set |
//! | `_requests.<namespace>.<env>.<request id>` | [`RequestRecord`](super::RequestRecord): an applied idempotency key |
//! | `_proposals.<namespace>.<env>.<short id>` | [`ProposalRecord`](super::ProposalRecord): a change request |
//!
//! Schema bucket `mycosynth-schemas`: key `<namespace>` holds a
//! [`SchemaRecord`](super::SchemaRecord).
//!
//! Everything a service of namespace N in environment E needs to read sits under the subject
//! prefix `$KV.mycosynth-config.N.E.`, so the NATS server can enforce per-namespace reads.

use super::names::{Environment, Namespace};

/// The KV bucket holding config values, version heads and change-set history.
pub const CONFIG_BUCKET: &str = "mycosynth-config";
/// The KV bucket holding one JSON Schema per namespace.
pub const SCHEMA_BUCKET: &str = "mycosynth-schemas";
/// Subject prefix of the validator's request/reply API (`<prefix>.<endpoint>`).
pub const API_PREFIX: &str = "mycosynth.api";
/// Name the validator registers under NATS's service API (`nats micro ls`).
pub const SERVICE_NAME: &str = "mycosynth-validator";
/// Queue group shared by all validator instances, so each request is served once.
pub const SERVICE_QUEUE_GROUP: &str = "mycosynth-validator";

/// The validator's endpoints; the request subject is `mycosynth.api.<endpoint>`.
pub mod endpoint {
    /// Commit a change set.
    pub const CHANGE: &str = "change";
    /// Restore the state of an earlier version as a new version.
    pub const ROLLBACK: &str = "rollback";
    /// Read the current values of a namespace/environment.
    pub const GET: &str = "get";
    /// Read the change-set history of a namespace/environment.
    pub const HISTORY: &str = "history";
    /// Store a namespace's schema.
    pub const SCHEMA_PUSH: &str = "schema-push";
    /// Read a namespace's schema.
    pub const SCHEMA_GET: &str = "schema-get";
    /// Which instances hold which version.
    pub const STATUS: &str = "status";
    /// The fleet's health signals before and after a version.
    pub const IMPACT: &str = "impact";
    /// List the namespaces/environments the caller may read, with their versions.
    pub const NAMESPACES: &str = "namespaces";
    /// Declare (or remove) the parent of an environment.
    pub const PARENT: &str = "parent";
    /// Read the access policy (admins).
    pub const POLICY_GET: &str = "policy-get";
    /// Replace the access policy (admins).
    pub const POLICY_SET: &str = "policy-set";
    /// Query the audit log.
    pub const AUDIT: &str = "audit";
    /// Check the audit log's hash chain.
    pub const AUDIT_VERIFY: &str = "audit-verify";
    /// Like [`GET`], with sensitive values in clear (for callers allowed to see them).
    pub const REVEAL: &str = "reveal";
    /// List change requests.
    pub const REQUEST_LIST: &str = "request-list";
    /// Show one change request with its diff against the current state.
    pub const REQUEST_SHOW: &str = "request-show";
    /// Approve a change request's content.
    pub const REQUEST_APPROVE: &str = "request-approve";
    /// Reject a change request.
    pub const REQUEST_REJECT: &str = "request-reject";
    /// Withdraw one's change request.
    pub const REQUEST_CANCEL: &str = "request-cancel";
    /// Replace a change request's change set (dropping its approvals).
    pub const REQUEST_AMEND: &str = "request-amend";
    /// Validate a change request again on the current state (dropping its approvals).
    pub const REQUEST_REBASE: &str = "request-rebase";
    /// Apply an approved change request.
    pub const REQUEST_APPLY: &str = "request-apply";
    /// Start a rollout.
    pub const ROLLOUT_START: &str = "rollout-start";
    /// Show a rollout and its cohorts.
    pub const ROLLOUT_STATUS: &str = "rollout-status";
    /// Pause a rollout.
    pub const ROLLOUT_PAUSE: &str = "rollout-pause";
    /// Resume a paused rollout.
    pub const ROLLOUT_RESUME: &str = "rollout-resume";
    /// Commit a rollout's candidate now.
    pub const ROLLOUT_PROMOTE: &str = "rollout-promote";
    /// Send a rollout's members back to stable.
    pub const ROLLOUT_ABORT: &str = "rollout-abort";
}

/// The reserved segment under which per-(namespace, environment) metadata is kept.
pub const META_SEGMENT: &str = "_meta";
const HEAD_SUFFIX: &str = "_meta.head";
const HISTORY_PREFIX: &str = "_history";
const REQUESTS_PREFIX: &str = "_requests";
const PROPOSALS_PREFIX: &str = "_proposals";
const PARENT_SUFFIX: &str = "_meta.parent";
const ROLLOUT_SUFFIX: &str = "_meta.rollout";

/// KV key of a config value: `<namespace>.<env>.<key>`.
pub fn value_key(ns: &Namespace, env: &Environment, key: &str) -> String {
    format!("{ns}.{env}.{key}")
}

/// KV key of the version head of a namespace/environment.
pub fn head_key(ns: &Namespace, env: &Environment) -> String {
    format!("{ns}.{env}.{HEAD_SUFFIX}")
}

/// KV key of the history record of one version.
pub fn history_key(ns: &Namespace, env: &Environment, version: u64) -> String {
    format!("{HISTORY_PREFIX}.{ns}.{env}.{version}")
}

/// KV key recording that the change request with this idempotency key was applied (a retry
/// with the same key is answered from it instead of being applied again).
pub fn request_key(ns: &Namespace, env: &Environment, request_id: &str) -> String {
    format!("{REQUESTS_PREFIX}.{ns}.{env}.{request_id}")
}

/// KV key of a change request (a [`ProposalRecord`](super::ProposalRecord)):
/// `_proposals.<namespace>.<env>.<short id>`.
pub fn proposal_key(id: &super::ProposalId) -> String {
    format!(
        "{PROPOSALS_PREFIX}.{}.{}.{}",
        id.namespace(),
        id.environment(),
        id.short()
    )
}

/// KV key filter matching every change request (`Some`: of one namespace/environment).
pub fn proposals_filter(at: Option<(&Namespace, &Environment)>) -> String {
    match at {
        Some((ns, env)) => format!("{PROPOSALS_PREFIX}.{ns}.{env}.*"),
        None => format!("{PROPOSALS_PREFIX}.>"),
    }
}

/// Core NATS subject on which the validator announces each step of the change requests of a
/// namespace/environment (a [`RequestNotice`](super::RequestNotice)):
/// `mycosynth.requests.<env>.<namespace>`.
pub fn request_notice_subject(ns: &Namespace, env: &Environment) -> String {
    format!("mycosynth.requests.{env}.{ns}")
}

/// KV key of the parent declaration of an environment (a [`ParentRecord`](super::ParentRecord)):
/// `<namespace>.<env>._meta.parent`. It sits under the environment's own prefix, so a service
/// allowed to read its namespace can read the whole parent chain.
pub fn parent_key(ns: &Namespace, env: &Environment) -> String {
    format!("{ns}.{env}.{PARENT_SUFFIX}")
}

/// KV key of the rollout of a namespace/environment (a
/// [`RolloutRecord`](super::RolloutRecord)): `<namespace>.<env>._meta.rollout`, under the
/// environment's own prefix so a service allowed to read its namespace can read it.
pub fn rollout_key(ns: &Namespace, env: &Environment) -> String {
    format!("{ns}.{env}.{ROLLOUT_SUFFIX}")
}

/// KV key filter matching the rollout of every namespace/environment.
pub fn rollouts_filter() -> String {
    format!("*.*.{ROLLOUT_SUFFIX}")
}

/// Core NATS subject on which the validator announces every write of a rollout record (the
/// record, JSON): `mycosynth.rollouts.<env>.<namespace>`.
pub fn rollout_notice_subject(ns: &Namespace, env: &Environment) -> String {
    format!("mycosynth.rollouts.{env}.{ns}")
}

/// KV key filter matching every value and the head of a namespace/environment.
pub fn state_filter(ns: &Namespace, env: &Environment) -> String {
    format!("{ns}.{env}.>")
}

/// KV key filter matching every history record of a namespace/environment.
pub fn history_filter(ns: &Namespace, env: &Environment) -> String {
    format!("{HISTORY_PREFIX}.{ns}.{env}.*")
}

/// KV key filter matching the heads of every environment of a namespace.
pub fn heads_filter(ns: &Namespace) -> String {
    format!("{ns}.*.{HEAD_SUFFIX}")
}

/// KV key filter matching the head of every namespace/environment.
pub fn all_heads_filter() -> String {
    format!("*.*.{HEAD_SUFFIX}")
}

/// KV key filter matching the parent declaration of every namespace/environment.
pub fn parents_filter() -> String {
    format!("*.*.{PARENT_SUFFIX}")
}

/// The stream subject under which a KV key is stored.
pub fn kv_subject(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// The name of the JetStream stream behind a KV bucket.
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// What a KV key under [`state_filter`] holds, once its `<namespace>.<env>.` prefix is removed.
#[derive(Debug, PartialEq, Eq)]
pub enum StateEntry<'a> {
    /// A config value under this key.
    Value(&'a str),
    /// The version head.
    Head,
    /// Some other reserved metadata: ignored by readers of this version.
    OtherMeta,
}

/// Classifies a KV key (not subject) found under [`state_filter`]`(ns, env)`.
/// Returns `None` when the key is not under that prefix.
pub fn classify_state_key<'a>(
    ns: &Namespace,
    env: &Environment,
    kv_key: &'a str,
) -> Option<StateEntry<'a>> {
    let rest = kv_key.strip_prefix(ns.as_str())?.strip_prefix('.')?;
    let rest = rest.strip_prefix(env.as_str())?.strip_prefix('.')?;
    Some(if rest == HEAD_SUFFIX {
        StateEntry::Head
    } else if rest == META_SEGMENT || rest.starts_with("_meta.") {
        StateEntry::OtherMeta
    } else {
        StateEntry::Value(rest)
    })
}

/// Core NATS subject on which the validator publishes one [`ChangeEvent`](super::ChangeEvent)
/// per accepted change set: `mycosynth.events.<env>.<namespace>`.
pub fn event_subject(ns: &Namespace, env: &Environment) -> String {
    format!("mycosynth.events.{env}.{ns}")
}

/// Core NATS subject on which subscriber instances publish their
/// [`Receipt`](super::Receipt)s: `mycosynth.receipts.<env>.<namespace>`.
pub fn receipt_subject(ns: &Namespace, env: &Environment) -> String {
    format!("mycosynth.receipts.{env}.{ns}")
}

/// Subject filter matching every receipt.
pub const RECEIPTS_ALL: &str = "mycosynth.receipts.>";

/// Core NATS subject on which the validator announces that a namespace's schema changed.
pub fn schema_subject(ns: &Namespace) -> String {
    format!("mycosynth.schema.{ns}")
}

/// The request subject of a validator endpoint.
pub fn api_subject(endpoint: &str) -> String {
    format!("{API_PREFIX}.{endpoint}")
}

/// One validator instance's own subject for `endpoint`, where another instance forwards the
/// change requests of a namespace this one owns (no queue group: only that instance hears it).
/// `instance` is the id the instance has under NATS's service API.
pub fn direct_subject(instance: &str, endpoint: &str) -> String {
    format!("{API_PREFIX}.direct.{instance}.{endpoint}")
}

/// NATS's service-API discovery subject for the validator: every running instance answers a
/// request here with its id.
pub fn validator_ping_subject() -> String {
    format!("$SRV.PING.{SERVICE_NAME}")
}

/// The JetStream stream holding the audit log (created by the validator, which alone appends;
/// `deny_delete` and `deny_purge` set).
pub const AUDIT_STREAM: &str = "MYCOSYNTH_AUDIT";
/// The subjects of [`AUDIT_STREAM`].
pub const AUDIT_SUBJECTS: &str = "mycosynth.audit.>";

/// The subject an audit record of a request to `action` (an endpoint name) is stored under:
/// `mycosynth.audit.<action>`.
pub fn audit_subject(action: &str) -> String {
    format!("mycosynth.audit.{action}")
}

/// The KV bucket holding each namespace's data key for sensitive values
/// ([`DataKeyRecord`](super::DataKeyRecord)). Created by the validator; a service of
/// namespace N may read only key N.
pub const KEYS_BUCKET: &str = "mycosynth-keys";

/// The key of a namespace's data key in [`KEYS_BUCKET`]: the namespace's name.
pub fn data_key_key(ns: &Namespace) -> String {
    ns.to_string()
}
