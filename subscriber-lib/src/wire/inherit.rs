//! Environment inheritance on the wire: an environment may name a parent environment of the
//! same namespace (`production-eu` -> `production` -> `base`). The declaration is stored under
//! the child's own key prefix ([`parent_key`](super::parent_key)), so everything a subscriber
//! needs to resolve inherited values stays inside its namespace's permissions.

use serde::{Deserialize, Serialize};

/// KV value of `<namespace>.<env>._meta.parent`: the environment this one inherits from.
///
/// ```
/// use mycosynth_subscriber::wire::{parent_key, Environment, Namespace, ParentRecord};
/// let ns = Namespace::new("payment-service").unwrap();
/// let env = Environment::new("production-eu").unwrap();
/// assert_eq!(parent_key(&ns, &env), "payment-service.production-eu._meta.parent");
/// let record: ParentRecord = serde_json::from_str(
///     r#"{"parent":"production","author":"alice","time":"2026-01-01T00:00:00Z"}"#,
/// ).unwrap();
/// assert_eq!(record.parent, "production");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRecord {
    /// The parent environment (same namespace).
    pub parent: String,
    /// Who declared it.
    pub author: String,
    /// When, RFC 3339 UTC.
    pub time: String,
}

/// Declare the parent of an environment (`parent: None` removes the declaration). Refused when
/// the parent is unknown (neither config nor a parent of its own) or would close a cycle.
///
/// ```
/// use mycosynth_subscriber::wire::ParentRequest;
/// let request = ParentRequest {
///     namespace: "payment-service".into(),
///     environment: "production-eu".into(),
///     parent: Some("production".into()),
///     author: "alice".into(),
/// };
/// assert!(serde_json::to_string(&request).unwrap().contains("\"parent\":\"production\""));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRequest {
    /// Namespace.
    pub namespace: String,
    /// The child environment.
    pub environment: String,
    /// The parent environment, or `None` to stop inheriting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Who asks.
    pub author: String,
}

/// Outcome of a [`ParentRequest`].
///
/// ```
/// use mycosynth_subscriber::wire::ParentOutcome;
/// let outcome: ParentOutcome = serde_json::from_str(r#"{"parent":"production","changed":true}"#).unwrap();
/// assert!(outcome.changed && outcome.previous.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentOutcome {
    /// The declared parent now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The declared parent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Whether the declaration changed.
    pub changed: bool,
}
