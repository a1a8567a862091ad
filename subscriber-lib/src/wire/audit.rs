//! The audit log's records: one [`AuditRecord`] per request the validator handled, accepted or
//! refused, in the JetStream stream [`AUDIT_STREAM`](super::AUDIT_STREAM), hash-chained so that a
//! removed or edited record is detected, and the request/reply bodies of the `audit` and
//! `audit-verify` endpoints.
//!
//! The chain: record `n` (stream sequence `n`, starting at 1) carries `seq = n`, the `hash` of
//! record `n - 1` as `prev_hash` ([`GENESIS_HASH`] for the first) and its own
//! `hash = hex(SHA-256(prev_hash || canonical bytes))`, where the canonical bytes are the JSON of
//! the record with `hash` set to the empty string ([`AuditRecord::compute_hash`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record of the chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most key names one audit record lists (further names are only counted).
pub const MAX_AUDITED_KEYS: usize = 100;

/// One request handled by the validator. Never holds a config value: only key names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its stream sequence (1 for the first record).
    pub seq: u64,
    /// Who asked (see the validator's `caller` module).
    pub identity: String,
    /// The identity that relayed the request for `identity` (a console signing with the
    /// person's session token), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// When the validator handled it (RFC 3339, UTC).
    pub time: String,
    /// The same instant in microseconds since the Unix epoch.
    pub time_us: i64,
    /// The endpoint: `change`, `rollback`, `get`, `schema-push`, ...
    pub action: String,
    /// The namespace named by the request (empty when it named none or was unreadable).
    #[serde(default)]
    pub namespace: String,
    /// The environment named by the request (empty when none).
    #[serde(default)]
    pub environment: String,
    /// Key names the request touched or read (at most [`MAX_AUDITED_KEYS`]).
    #[serde(default)]
    pub keys: Vec<String>,
    /// How many further key names were left out.
    #[serde(default)]
    pub more_keys: u64,
    /// `ok`, or the error kind of the reply (`validation`, `conflict`, `rate_limited`, ...).
    pub outcome: String,
    /// The error message of a refusal, or the reason the caller gave for a change.
    #[serde(default)]
    pub reason: String,
    /// The version committed or read, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The id of the committed change set, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    /// The change request the request was about or opened, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_request: Option<String>,
    /// `hash` of the previous record ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// `hex(SHA-256(prev_hash || canonical bytes))`.
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record must carry: SHA-256 over `prev_hash` and the record's JSON with an
    /// empty `hash` field, as lower-case hex.
    ///
    /// ```
    /// use mycosynth_subscriber::wire::{AuditRecord, GENESIS_HASH};
    /// let mut record = AuditRecord {
    ///     seq: 1, identity: "alice".into(), via: None, time: "2026-01-01T00:00:00Z".into(), time_us: 0,
    ///     action: "change".into(), namespace: "ns".into(), environment: "prod".into(),
    ///     keys: vec!["a".into()], more_keys: 0, outcome: "ok".into(), reason: String::new(),
    ///     version: Some(1), change_id: None, change_request: None, prev_hash: GENESIS_HASH.into(), hash: String::new(),
    /// };
    /// record.hash = record.compute_hash();
    /// assert!(record.hash_is_valid());
    /// record.identity = "mallory".into();
    /// assert!(!record.hash_is_valid());
    /// ```
    pub fn compute_hash(&self) -> String {
        let unsealed = AuditRecord {
            hash: String::new(),
            ..self.clone()
        };
        // Serializing a struct of strings and numbers cannot fail.
        let canonical = serde_json::to_vec(&unsealed).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(&canonical);
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `hash` matches the record's content and `prev_hash`.
    ///
    /// ```
    /// # use mycosynth_subscriber::wire::AuditRecord;
    /// let record: AuditRecord = serde_json::from_str(r#"{"seq":1,"identity":"a","time":"","time_us":0,"action":"get","outcome":"ok","prev_hash":"","hash":"bad"}"#).unwrap();
    /// assert!(!record.hash_is_valid());
    /// ```
    pub fn hash_is_valid(&self) -> bool {
        self.compute_hash() == self.hash
    }
}

/// Query the audit log (every filter optional; records are returned oldest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRequest {
    /// Only records of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only records of this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Only records of this identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Only records at or after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// At most this many records (the newest ones that match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Who asks.
    #[serde(default)]
    pub author: String,
}

/// The matching audit records, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditOutcome {
    /// The records.
    pub records: Vec<AuditRecord>,
}

/// Check the whole chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditVerifyRequest {
    /// Who asks.
    #[serde(default)]
    pub author: String,
}

/// What is wrong at one point of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainBreak {
    /// Stream sequences are missing: records were removed.
    Missing,
    /// The stored bytes are not an audit record.
    Unreadable,
    /// The record's `seq` is not its stream sequence (copied or moved).
    WrongSequence,
    /// `prev_hash` is not the previous record's `hash`.
    BrokenLink,
    /// `hash` does not match the record's content: the record was edited or forged.
    WrongHash,
}

/// One problem found by `audit verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainProblem {
    /// The stream sequence of the first bad (or first missing) record.
    pub seq: u64,
    /// What is wrong.
    pub kind: ChainBreak,
    /// One line for people.
    pub message: String,
}

/// The result of checking the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditVerifyOutcome {
    /// Records checked.
    pub records: u64,
    /// The stream's last sequence.
    pub last_seq: u64,
    /// Every problem found, in stream order (empty: the chain is intact).
    pub problems: Vec<ChainProblem>,
}
