//! What each kind of identity may publish and subscribe to on the NATS server: the one
//! definition that both the static server config (`nats/secure/users.conf`, written by
//! `mycosynth auth users-conf`) and the auth callout (`mycosynth auth serve`, which puts the
//! same rules into each connection's user JWT) are computed from, so the two cannot disagree.
//!
//! Every identity reads its replies on its own inbox prefix (`_INBOX_<public nkey>`, see
//! [`inbox_prefix`]), so no identity can read another's replies.
//!
//! A new kind (for example a read-only site leaf) is one more [`IdentityKind`] variant, its
//! name in [`IdentityKind::name`] and [`IdentityKind::parse`], and one function here returning
//! its [`Permissions`].

use serde::Serialize;

use super::auth::{inbox_prefix, POLICY_BUCKET};
use super::layout::{
    kv_stream, kv_subject, AUDIT_STREAM, AUDIT_SUBJECTS, CONFIG_BUCKET, KEYS_BUCKET, RECEIPTS_ALL,
    SCHEMA_BUCKET,
};
use super::names::{NameError, Namespace};

/// The subject on which nats-server in auth-callout mode asks who a new connection is (NATS
/// ADR-26).
pub const AUTH_CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// The header carrying the server's curve public key when it encrypts the request.
pub const AUTH_CALLOUT_XKEY_HEADER: &str = "Nats-Server-Xkey";
/// The queue group every `mycosynth auth serve` instance joins, so each request is answered
/// once.
pub const CALLOUT_QUEUE_GROUP: &str = "mycosynth-callout";

/// What an identity is, which decides its subject permissions.
///
/// ```
/// use mycosynth_subscriber::wire::{IdentityKind, Namespace};
/// let kind = IdentityKind::parse("service", Some("payment-service")).unwrap();
/// assert_eq!(kind, IdentityKind::Service(Namespace::new("payment-service").unwrap()));
/// assert_eq!(kind.name(), "service");
/// assert!(IdentityKind::parse("service", None).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentityKind {
    /// Every right: operations and repair only.
    NatsAdmin,
    /// The validator, the only writer.
    Validator,
    /// People, CI and admins: may only send requests to the validator API (what each may do
    /// there is decided by the validator's policy).
    Operator,
    /// A service: reads one namespace.
    Service(Namespace),
}

/// Why a kind cannot be read.
///
/// ```
/// use mycosynth_subscriber::wire::{IdentityKind, KindError};
/// let err = IdentityKind::parse("robot", None).unwrap_err();
/// assert!(matches!(err, KindError::Unknown(_)));
/// assert!(err.to_string().contains("unknown identity kind \"robot\""));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// Not one of the kinds.
    #[error("unknown identity kind {0:?} (expected nats-admin, validator, operator or service)")]
    Unknown(String),
    /// A service without its namespace, or another kind with one.
    #[error("identity kind {kind:?} {rule}")]
    Namespace {
        /// The kind.
        kind: String,
        /// What was wrong.
        rule: &'static str,
    },
    /// The namespace breaks the naming rules.
    #[error("namespace: {0}")]
    BadNamespace(#[from] NameError),
}

impl IdentityKind {
    /// The kind's name in `identities.txt`, tokens files and logs.
    pub fn name(&self) -> &'static str {
        match self {
            IdentityKind::NatsAdmin => "nats-admin",
            IdentityKind::Validator => "validator",
            IdentityKind::Operator => "operator",
            IdentityKind::Service(_) => "service",
        }
    }

    /// A kind from its name, and the namespace (services need one, the others take none).
    pub fn parse(kind: &str, namespace: Option<&str>) -> Result<IdentityKind, KindError> {
        let parsed = match (kind, namespace) {
            ("service", Some(ns)) => return Ok(IdentityKind::Service(Namespace::new(ns)?)),
            ("service", None) => {
                return Err(KindError::Namespace {
                    kind: kind.into(),
                    rule: "needs a namespace",
                })
            }
            ("nats-admin", _) => IdentityKind::NatsAdmin,
            ("validator", _) => IdentityKind::Validator,
            ("operator", _) => IdentityKind::Operator,
            _ => return Err(KindError::Unknown(kind.into())),
        };
        if namespace.is_some() {
            return Err(KindError::Namespace {
                kind: kind.into(),
                rule: "takes no namespace",
            });
        }
        Ok(parsed)
    }

    /// The namespace of a service.
    ///
    /// ```
    /// use mycosynth_subscriber::wire::IdentityKind;
    /// let kind = IdentityKind::parse("service", Some("orders")).unwrap();
    /// assert_eq!(kind.namespace().map(|n| n.as_str()), Some("orders"));
    /// assert!(IdentityKind::Operator.namespace().is_none());
    /// ```
    pub fn namespace(&self) -> Option<&Namespace> {
        match self {
            IdentityKind::Service(ns) => Some(ns),
            _ => None,
        }
    }

    /// The subject permissions of this kind for the connection whose replies arrive on the
    /// inbox of `public_key` (a public user nkey). `None`: no restriction at all (nats-admin).
    ///
    /// ```
    /// use mycosynth_subscriber::wire::IdentityKind;
    /// let ops = IdentityKind::Operator.permissions("UKEY").unwrap();
    /// assert_eq!(ops.publish.allow, ["mycosynth.api.>"]);
    /// assert_eq!(ops.subscribe.allow, ["_INBOX_UKEY.>"]);
    /// assert!(IdentityKind::NatsAdmin.permissions("UKEY").is_none());
    /// ```
    pub fn permissions(&self, public_key: &str) -> Option<Permissions> {
        let inbox = format!("{}.>", inbox_prefix(public_key));
        match self {
            IdentityKind::NatsAdmin => None,
            IdentityKind::Validator => Some(validator(inbox)),
            IdentityKind::Operator => Some(operator(inbox)),
            IdentityKind::Service(ns) => Some(service(ns, inbox)),
        }
    }
}

/// Subjects allowed and denied for one direction (publish or subscribe).
///
/// ```
/// use mycosynth_subscriber::wire::IdentityKind;
/// let validator = IdentityKind::Validator.permissions("UKEY").unwrap();
/// assert!(validator.publish.deny.contains(&"$JS.API.STREAM.PURGE.MYCOSYNTH_AUDIT".to_owned()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubjectRules {
    /// Subjects (with wildcards) allowed.
    pub allow: Vec<String>,
    /// Subjects denied even where `allow` matches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// The subject permissions of one connection, serialized as the `permissions` block of a
/// nats-server user.
///
/// ```
/// use mycosynth_subscriber::wire::IdentityKind;
/// let ops = IdentityKind::Operator.permissions("UKEY").unwrap();
/// assert_eq!(
///     serde_json::to_string(&ops).unwrap(),
///     r#"{"publish":{"allow":["mycosynth.api.>"]},"subscribe":{"allow":["_INBOX_UKEY.>"]}}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// What it may publish.
    pub publish: SubjectRules,
    /// What it may subscribe to.
    pub subscribe: SubjectRules,
    /// May reply to the requests it receives (on their reply subjects, whatever they are).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_responses: bool,
}

fn allow(subjects: impl IntoIterator<Item = String>) -> SubjectRules {
    SubjectRules {
        allow: subjects.into_iter().collect(),
        deny: Vec::new(),
    }
}

fn kv_all(bucket: &str) -> String {
    kv_subject(bucket, ">")
}

fn validator(inbox: String) -> Permissions {
    let api = super::layout::API_PREFIX;
    let mut publish = allow(
        [
            "$JS.API.>".to_owned(),
            "$JS.ACK.>".to_owned(),
            "$JS.FC.>".to_owned(),
            kv_all(CONFIG_BUCKET),
            kv_all(SCHEMA_BUCKET),
            kv_all(POLICY_BUCKET),
            kv_all(KEYS_BUCKET),
            "mycosynth.events.>".to_owned(),
            "mycosynth.schema.>".to_owned(),
            AUDIT_SUBJECTS.to_owned(),
            "$SRV.>".to_owned(),
        ]
        .into_iter()
        // Change requests forwarded to the instance that owns their namespace.
        .chain([format!("{api}.direct.>")]),
    );
    // The audit stream is append-only for the validator: only nats-admin may purge, delete or
    // rewrite it.
    publish.deny = ["PURGE", "DELETE", "UPDATE", "MSG.DELETE"]
        .iter()
        .map(|op| format!("$JS.API.STREAM.{op}.{AUDIT_STREAM}"))
        .collect();
    Permissions {
        publish,
        subscribe: allow([
            format!("{api}.>"),
            RECEIPTS_ALL.to_owned(),
            "$SRV.>".to_owned(),
            inbox,
        ]),
        // Replies to the requests it serves.
        allow_responses: true,
    }
}

fn operator(inbox: String) -> Permissions {
    Permissions {
        publish: allow([format!("{}.>", super::layout::API_PREFIX)]),
        subscribe: allow([inbox]),
        allow_responses: false,
    }
}

fn service(ns: &Namespace, inbox: String) -> Permissions {
    let (cfg, sch, keys) = (
        kv_stream(CONFIG_BUCKET),
        kv_stream(SCHEMA_BUCKET),
        kv_stream(KEYS_BUCKET),
    );
    let own_config = kv_subject(CONFIG_BUCKET, &format!("{ns}.>"));
    let own_schema = kv_subject(SCHEMA_BUCKET, ns.as_str());
    let own_key = kv_subject(KEYS_BUCKET, ns.as_str());
    Permissions {
        publish: allow([
            format!("$JS.API.STREAM.INFO.{cfg}"),
            format!("$JS.API.STREAM.INFO.{sch}"),
            format!("$JS.API.STREAM.INFO.{keys}"),
            // Reads of its own namespace only: direct gets of its keys, and named consumers
            // whose filter (part of the API subject) is inside its namespace.
            format!("$JS.API.DIRECT.GET.{cfg}.{own_config}"),
            format!("$JS.API.DIRECT.GET.{sch}.{own_schema}"),
            format!("$JS.API.DIRECT.GET.{keys}.{own_key}"),
            format!("$JS.API.CONSUMER.CREATE.{cfg}.*.{own_config}"),
            format!("$JS.API.CONSUMER.CREATE.{sch}.*.{own_schema}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{cfg}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{sch}.*"),
            format!("$JS.API.CONSUMER.DELETE.{cfg}.*"),
            format!("$JS.API.CONSUMER.DELETE.{sch}.*"),
            format!("$JS.FC.{cfg}.>"),
            format!("$JS.FC.{sch}.>"),
            format!("mycosynth.receipts.*.{ns}"),
        ]),
        subscribe: allow([
            format!("mycosynth.events.*.{ns}"),
            format!("mycosynth.schema.{ns}"),
            inbox,
        ]),
        allow_responses: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_confined_to_its_namespace() {
        let kind = IdentityKind::parse("service", Some("payment-service")).unwrap();
        let p = kind.permissions("UKEY").unwrap();
        assert!(p
            .publish
            .allow
            .iter()
            .filter(|s| s.contains("$KV."))
            .all(|s| s.contains("payment-service")));
        assert!(p.subscribe.allow.contains(&"_INBOX_UKEY.>".to_owned()));
        assert!(!p.allow_responses);
        assert_eq!(
            IdentityKind::parse("operator", Some("x")).unwrap_err(),
            KindError::Namespace {
                kind: "operator".into(),
                rule: "takes no namespace"
            }
        );
        assert!(matches!(
            IdentityKind::parse("service", Some("Bad Name")),
            Err(KindError::BadNamespace(_))
        ));
    }
}
