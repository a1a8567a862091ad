//! Identities on the wire: the headers of a signed API request, what is signed, the inbox
//! prefix of an identity, and the access policy the validator stores in NATS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Header carrying the signer's public nkey (`U...`).
pub const HEADER_KEY: &str = "Mycosynth-Key";
/// Header carrying the signing time, milliseconds since the Unix epoch.
pub const HEADER_TIME: &str = "Mycosynth-Time";
/// Header carrying a fresh random id, signed with the request (a replay is refused).
pub const HEADER_NONCE: &str = "Mycosynth-Nonce";
/// Header carrying the ed25519 signature, base64url without padding.
pub const HEADER_SIGNATURE: &str = "Mycosynth-Signature";
/// How far a request's signing time may be from the validator's clock, in milliseconds.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;

/// The KV bucket holding the access policy (written only by the validator).
pub const POLICY_BUCKET: &str = "mycosynth-policy";
/// The key of the policy document in [`POLICY_BUCKET`].
pub const POLICY_KEY: &str = "policy";

/// The bytes an identity signs: a version tag, the request subject, the time, the nonce and
/// the body, separated by newlines.
///
/// ```
/// let bytes = mycosynth_subscriber::wire::signing_payload("mycosynth.api.change", 1700000000000, "n1", b"{}");
/// assert_eq!(bytes, b"mycosynth-request-v1\nmycosynth.api.change\n1700000000000\nn1\n{}");
/// ```
pub fn signing_payload(subject: &str, time_ms: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("mycosynth-request-v1\n{subject}\n{time_ms}\n{nonce}\n").into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The inbox prefix of the connection of the identity whose public nkey is `public_key`: the
/// server lets each identity subscribe only to its own replies.
///
/// ```
/// assert_eq!(mycosynth_subscriber::wire::inbox_prefix("UABC"), "_INBOX_UABC");
/// ```
pub fn inbox_prefix(public_key: &str) -> String {
    format!("_INBOX_{public_key}")
}

/// A role on a namespace x environment. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read values, history, status and schemas.
    Read,
    /// Also change values and roll back.
    Write,
    /// Also push schemas; on namespace `*` and environment `*`, change the policy.
    Admin,
}

impl Role {
    /// The role's name in policy files and denials.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// One grant: `identity` has `role` on every namespace matching `namespace` and environment
/// matching `environment` (globs: `*` any run of characters, `?` one character).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The identity's name.
    pub identity: String,
    /// The role granted.
    pub role: Role,
    /// Namespace glob, e.g. `payment-*`.
    pub namespace: String,
    /// Environment glob, e.g. `staging`.
    pub environment: String,
}

/// A registered identity: its name is the key of [`Policy::identities`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// Its public nkey (`U...`): requests are verified against it.
    pub public_key: String,
}

/// The access policy: who exists (name and public key) and what each may do. Stored as JSON
/// under [`POLICY_KEY`] in [`POLICY_BUCKET`]; `mycosynth policy get|set` reads and replaces it.
///
/// ```
/// use mycosynth_subscriber::wire::{Policy, Role};
/// let policy: Policy = serde_json::from_str(r#"{
///   "identities": {"alice": {"public_key": "UAL..."}},
///   "grants": [{"identity": "alice", "role": "write", "namespace": "payment-*", "environment": "staging"}]
/// }"#).unwrap();
/// assert_eq!(policy.grants[0].role, Role::Write);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Identities by name.
    #[serde(default)]
    pub identities: BTreeMap<String, IdentityRecord>,
    /// Grants.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Approval rules, first match decides (none: every change commits at once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<super::ApprovalRule>,
}

/// Ask the validator for the policy (admins only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyGetRequest {}

/// Replace the policy (admins only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySetRequest {
    /// The new policy.
    pub policy: Policy,
}
