//! Who a request is recorded as: the one place the validator decides the identity the audit log
//! and the rate limits know a request by ([`Requester`]), and the [`Envelope`] of fields they
//! read from any request body.
//!
//! A signed request (validator in `--auth signed` mode) is known by the identity its signature
//! proved; otherwise by the `author` it declares (open mode), refused requests included.

use serde::Deserialize;

/// The identity recorded for a request that names none.
pub const ANONYMOUS: &str = "anonymous";

/// The party one request is recorded as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// Who: recorded in audit records, and the key of per-identity rate limits.
    pub identity: String,
    /// Whether the identity was proven (signature, server attestation) or only declared.
    pub verified: bool,
    /// The identity that relayed the request with the requester's session token (a console).
    pub via: Option<String>,
}

impl Requester {
    /// The same requester, its request relayed by `via`.
    pub fn relayed_by(self, via: Option<&str>) -> Requester {
        Requester {
            via: via.map(|v| v.chars().take(256).collect()),
            ..self
        }
    }
}

/// The fields every request body may carry that the audit log and the limits need. Unknown
/// fields (and values, which may be sensitive) are skipped without being kept.
#[derive(Debug, Default, Deserialize)]
pub struct Envelope {
    /// The self-declared author.
    #[serde(default)]
    pub author: Option<String>,
    /// Target namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Target environment.
    #[serde(default)]
    pub environment: Option<String>,
    /// One key (get, history).
    #[serde(default)]
    pub key: Option<String>,
    /// Changed keys (change requests): only their names are read.
    #[serde(default)]
    pub changes: Vec<ChangedKey>,
    /// Why, as the caller says.
    #[serde(default)]
    pub reason: Option<String>,
    /// The change request a request is about (`<namespace>.<env>.<short id>`).
    #[serde(default)]
    pub id: Option<String>,
}

/// A change's key name; its value is skipped.
#[derive(Debug, Deserialize)]
pub struct ChangedKey {
    /// The key.
    pub key: String,
}

impl Envelope {
    /// Reads what it can from a request body; an unreadable body gives an empty envelope (the
    /// request itself is then refused as malformed, and audited as such).
    pub fn read(body: &[u8]) -> Envelope {
        if body.len() > mycosynth_subscriber::wire::MAX_REQUEST_BYTES {
            return Envelope::default();
        }
        let mut envelope: Envelope = serde_json::from_slice(body).unwrap_or_default();
        // A change request's id names its namespace and environment.
        if let Some(id) = envelope
            .id
            .as_deref()
            .and_then(|id| mycosynth_subscriber::wire::ProposalId::parse(id).ok())
        {
            envelope.namespace = Some(id.namespace().to_string());
            envelope.environment = Some(id.environment().to_string());
        }
        envelope
    }
}

/// The requester of a request: the identity its signature proved (`verified`, from
/// [`super::signing::authenticate`]), else the name the request declares.
pub fn requester(verified: Option<&str>, envelope: &Envelope) -> Requester {
    let declared = envelope
        .author
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    let identity = verified.or(declared).unwrap_or(ANONYMOUS);
    Requester {
        identity: identity.chars().take(256).collect(),
        verified: verified.is_some(),
        via: None,
    }
}
