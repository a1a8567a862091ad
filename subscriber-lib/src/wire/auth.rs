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

/// Header carrying a person's [`SessionToken`] on a request a console signs on their behalf.
pub const HEADER_SESSION: &str = "Mycosynth-Session";
/// A session token's lifetime when none is asked for: 8 hours.
pub const DEFAULT_SESSION_TTL_MS: i64 = 8 * 3_600_000;
/// The longest lifetime a session token may have: 24 hours (a longer one is refused).
pub const MAX_SESSION_TTL_MS: i64 = 24 * 3_600_000;
/// Where a console says which key it signs with (JSON [`ConsoleInfo`]), for `console login`.
pub const CONSOLE_INFO_PATH: &str = "/.well-known/mycosynth-console";

/// What a console serves at [`CONSOLE_INFO_PATH`]: the public nkey it signs requests with,
/// which is the audience of the session tokens made for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleInfo {
    /// The console's public nkey (`U...`).
    pub public_key: String,
}

/// What a person's session token says: "requests signed by `audience` act for me until
/// `expires_at_ms`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The person's public nkey: the token is signed by it, and the policy names its identity.
    pub identity_key: String,
    /// The public nkey of the console the token is for: only requests it signs may carry it.
    pub audience: String,
    /// When it was signed, milliseconds since the Unix epoch.
    pub issued_at_ms: i64,
    /// When it stops being accepted, milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
    /// A fresh random id: two tokens are never the same (a token is used for many requests).
    pub nonce: String,
}

/// Why a session token string cannot be read (its signature is checked by the validator).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionTokenError {
    /// Not `<claims>.<signature>`, or a part is not base64url.
    #[error("the session token is malformed: {0}")]
    Malformed(String),
    /// The claims are not the JSON of [`SessionClaims`].
    #[error("the session token's claims are not readable: {0}")]
    Claims(String),
}

/// A signed session token: `base64url(JSON claims) + "." + base64url(ed25519 signature)`
/// (both without padding), where the signature is by the person's nkey over
/// [`session_signing_payload`] of the claims' JSON bytes as they appear in the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// What it says.
    pub claims: SessionClaims,
    /// The JSON bytes the signature covers (decoded from the token, not re-serialized).
    pub claims_json: Vec<u8>,
    /// The ed25519 signature.
    pub signature: Vec<u8>,
}

/// The bytes a person signs to make a session token: a version tag, a newline, the claims' JSON.
/// (A signed request's bytes start with `mycosynth-request-v1`: one can never pass for the other.)
///
/// ```
/// let bytes = mycosynth_subscriber::wire::session_signing_payload(b"{}");
/// assert_eq!(bytes, b"mycosynth-session-v1\n{}");
/// ```
pub fn session_signing_payload(claims_json: &[u8]) -> Vec<u8> {
    let mut bytes = b"mycosynth-session-v1\n".to_vec();
    bytes.extend_from_slice(claims_json);
    bytes
}

/// The bytes a console signs for a request that carries `session`: like [`signing_payload`] with
/// another tag and the token before the body, so the token cannot be swapped on the way.
///
/// ```
/// let bytes = mycosynth_subscriber::wire::session_request_payload("s", 1, "n", "t.k", b"{}");
/// assert_eq!(bytes, b"mycosynth-session-request-v1\ns\n1\nn\nt.k\n{}");
/// ```
pub fn session_request_payload(
    subject: &str,
    time_ms: i64,
    nonce: &str,
    session: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut bytes =
        format!("mycosynth-session-request-v1\n{subject}\n{time_ms}\n{nonce}\n{session}\n")
            .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

impl SessionToken {
    /// The token's text from claims and a signature over their JSON `claims_json`.
    pub fn encode(claims_json: &[u8], signature: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}", b64.encode(claims_json), b64.encode(signature))
    }

    /// Reads a token's text (does not check the signature or the times).
    pub fn parse(token: &str) -> Result<SessionToken, SessionTokenError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (claims, signature) = token
            .trim()
            .split_once('.')
            .ok_or_else(|| SessionTokenError::Malformed("expected <claims>.<signature>".into()))?;
        let claims_json = b64
            .decode(claims)
            .map_err(|_| SessionTokenError::Malformed("the claims are not base64url".into()))?;
        let signature = b64
            .decode(signature)
            .map_err(|_| SessionTokenError::Malformed("the signature is not base64url".into()))?;
        let claims = serde_json::from_slice(&claims_json)
            .map_err(|e| SessionTokenError::Claims(e.to_string()))?;
        Ok(SessionToken {
            claims,
            claims_json,
            signature,
        })
    }
}
