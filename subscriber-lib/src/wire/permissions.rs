//! What each kind of identity may publish and subscribe to on the NATS server: the one
//! definition that both the static server config (`nats/secure/users.conf`, written by
//! `mycosynth auth users-conf`) and the auth callout (`mycosynth auth serve`, which puts the
//! same rules into each connection's user JWT) are computed from, so the two cannot disagree.
//!
//! Every identity reads its replies on its own inbox prefix (`_INBOX_<public nkey>`, see
//! [`inbox_prefix`]), so no identity can read another's replies.
//!
//! A new kind is one more [`IdentityKind`] variant, its name in [`IdentityKind::name`] and
//! [`IdentityKind::from_fields`], and one function here returning its [`Permissions`].

use serde::Serialize;

use super::auth::{inbox_prefix, POLICY_BUCKET};
use super::layout::{
    kv_stream, kv_subject, AUDIT_STREAM, AUDIT_SUBJECTS, CONFIG_BUCKET, KEYS_BUCKET, RECEIPTS_ALL,
    SCHEMA_BUCKET,
};
use super::names::{NameError, Namespace};
use super::site::{domain_api_prefix, site_stream_info_subject};

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
    /// The leaf node of a read-only site replica (its leaf connection, as the hub sees it): it
    /// may only feed its mirrors of the hub's buckets and answer the hub's lag probes.
    Site(SiteLeaf),
}

/// What a site's leaf connection is: its JetStream domain, the hub's, and whether it mirrors
/// the data keys (its services may read sensitive values).
///
/// ```
/// use mycosynth_subscriber::wire::IdentityKind;
/// let site = IdentityKind::from_fields("site", &["eu", "hub", "data-keys"]).unwrap();
/// let IdentityKind::Site(leaf) = &site else { unreachable!() };
/// assert_eq!((leaf.domain.as_str(), leaf.hub.as_str(), leaf.data_keys), ("eu", "hub", true));
/// assert!(IdentityKind::from_fields("site", &["eu"]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SiteLeaf {
    /// The site's JetStream domain.
    pub domain: String,
    /// The hub's JetStream domain.
    pub hub: String,
    /// It mirrors the data keys bucket too.
    pub data_keys: bool,
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
    #[error(
        "unknown identity kind {0:?} (expected nats-admin, validator, operator, service or site)"
    )]
    Unknown(String),
    /// A service without its namespace, another kind with one, or a site without its domains.
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
    /// A site's JetStream domain is not one token of subject characters.
    #[error("domain {0:?}: a JetStream domain is one token of letters, digits, '-' and '_'")]
    BadDomain(String),
}

impl IdentityKind {
    /// The kind's name in `identities.txt`, tokens files and logs.
    pub fn name(&self) -> &'static str {
        match self {
            IdentityKind::NatsAdmin => "nats-admin",
            IdentityKind::Validator => "validator",
            IdentityKind::Operator => "operator",
            IdentityKind::Service(_) => "service",
            IdentityKind::Site(_) => "site",
        }
    }

    /// A kind from its name, and the namespace (services need one, the others take none). A
    /// site, which needs its domains, is read with [`IdentityKind::from_fields`].
    pub fn parse(kind: &str, namespace: Option<&str>) -> Result<IdentityKind, KindError> {
        IdentityKind::from_fields(kind, namespace.as_slice())
    }

    /// A kind from its name and the fields that follow the key on its `identities.txt` line:
    /// `service <namespace>`, `site <site domain> <hub domain> [data-keys]`, nothing for the
    /// others.
    pub fn from_fields(kind: &str, fields: &[&str]) -> Result<IdentityKind, KindError> {
        let wrong = |rule: &'static str| KindError::Namespace {
            kind: kind.into(),
            rule,
        };
        match (kind, fields) {
            ("service", [ns]) => Ok(IdentityKind::Service(Namespace::new(*ns)?)),
            ("service", []) => Err(wrong("needs a namespace")),
            ("service", _) => Err(wrong("takes only a namespace")),
            ("site", [domain, hub, rest @ ..]) if rest.is_empty() || rest == ["data-keys"] => {
                Ok(IdentityKind::Site(SiteLeaf {
                    domain: jetstream_domain(domain)?,
                    hub: jetstream_domain(hub)?,
                    data_keys: !rest.is_empty(),
                }))
            }
            ("site", _) => Err(wrong("needs <site domain> <hub domain> [data-keys]")),
            ("nats-admin" | "validator" | "operator", [_, ..]) => Err(wrong("takes no namespace")),
            ("nats-admin", []) => Ok(IdentityKind::NatsAdmin),
            ("validator", []) => Ok(IdentityKind::Validator),
            ("operator", []) => Ok(IdentityKind::Operator),
            _ => Err(KindError::Unknown(kind.into())),
        }
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
    /// assert_eq!(ops.subscribe.allow, ["_INBOX_UKEY.>", "mycosynth.requests.>"]);
    /// assert!(IdentityKind::NatsAdmin.permissions("UKEY").is_none());
    /// ```
    pub fn permissions(&self, public_key: &str) -> Option<Permissions> {
        let inbox = format!("{}.>", inbox_prefix(public_key));
        match self {
            IdentityKind::NatsAdmin => None,
            IdentityKind::Validator => Some(validator(inbox)),
            IdentityKind::Operator => Some(operator(inbox)),
            IdentityKind::Service(ns) => Some(service(ns, inbox)),
            IdentityKind::Site(leaf) => Some(site(leaf)),
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
///     r#"{"publish":{"allow":["mycosynth.api.>"]},"subscribe":{"allow":["_INBOX_UKEY.>","mycosynth.requests.>"]}}"#
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

fn jetstream_domain(text: &str) -> Result<String, KindError> {
    let ok = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match ok {
        true => Ok(text.to_owned()),
        false => Err(KindError::BadDomain(text.to_owned())),
    }
}

/// Every change-request notice ([`request_notice_subject`](super::request_notice_subject)): the
/// validator announces each step of a change request; operators (the console, chat bots) follow
/// them.
const REQUEST_NOTICES: &str = "mycosynth.requests.>";

fn validator(inbox: String) -> Permissions {
    let api = super::layout::API_PREFIX;
    let mut publish = allow([
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
        // The notice of each change-request step.
        REQUEST_NOTICES.to_owned(),
        // The notice of each rollout step (its record).
        "mycosynth.rollouts.>".to_owned(),
        // Change requests forwarded to the instance that owns their namespace.
        format!("{api}.direct.>"),
        // Lag probes of the sites' config mirrors (`serve --site`), in any site's domain.
        site_stream_info_subject("*"),
    ]);
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
            // The sites' answers to its lag probes.
            "mycosynth.site.replies.>".to_owned(),
            inbox,
        ]),
        // Replies to the requests it serves.
        allow_responses: true,
    }
}

fn operator(inbox: String) -> Permissions {
    Permissions {
        publish: allow([format!("{}.>", super::layout::API_PREFIX)]),
        // Its replies, and the change-request notices (for the console and chat bots).
        subscribe: allow([inbox, REQUEST_NOTICES.to_owned()]),
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
            // Rollout notices of its namespace (the candidate a canary serves).
            format!("mycosynth.rollouts.*.{ns}"),
            // At a site: the heads and schemas its mirrors republish.
            format!("mycosynth.site.heads.*.{ns}"),
            format!("mycosynth.site.schemas.{ns}"),
            inbox,
        ]),
        allow_responses: false,
    }
}

/// A site's leaf connection, as the hub sees it: `publish` is what the site may send into the
/// hub, `subscribe` what the hub may send to the site. Read-only: it may only create the
/// consumers of its mirrors (and answer their flow control), and answer the hub's lag probe of
/// its own config mirror on its own reply subjects. No KV subject, no validator API, no event
/// subject: a site can never write.
fn site(leaf: &SiteLeaf) -> Permissions {
    let mut streams = vec![kv_stream(CONFIG_BUCKET), kv_stream(SCHEMA_BUCKET)];
    if leaf.data_keys {
        streams.push(kv_stream(KEYS_BUCKET));
    }
    let hub_api = domain_api_prefix(&leaf.hub);
    let mut publish: Vec<String> = streams
        .iter()
        .flat_map(|stream| {
            [
                format!("{hub_api}.CONSUMER.CREATE.{stream}"),
                format!("{hub_api}.CONSUMER.CREATE.{stream}.>"),
                format!("$JS.FC.{stream}.>"),
                format!("$JS.FC.{}.*.{stream}.>", leaf.hub),
            ]
        })
        .collect();
    // Its answers to lag probes, on its own domain's reply subjects (`site_reply_subject`).
    publish.push(format!("mycosynth.site.replies.{}.>", leaf.domain));
    Permissions {
        publish: allow(publish),
        // Mirror deliveries, the replies to its consumer creations, the hub's lag probe.
        subscribe: allow([
            "$JS.M.>".to_owned(),
            "$JSC.R.>".to_owned(),
            site_stream_info_subject(&leaf.domain),
        ]),
        allow_responses: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A site's leaf connection can feed its mirrors and answer probes of its own domain, and
    /// nothing else: no KV subject, no validator API, no event.
    #[test]
    fn a_site_is_read_only_and_confined_to_its_domain() {
        let kind = IdentityKind::from_fields("site", &["eu", "hub"]).unwrap();
        let p = kind.permissions("UKEY").unwrap();
        let all: Vec<&String> = p.publish.allow.iter().chain(&p.subscribe.allow).collect();
        assert!(all
            .iter()
            .all(|s| !s.starts_with("$KV.") && !s.starts_with("mycosynth.api")));
        assert!(p
            .publish
            .allow
            .iter()
            .all(|s| !s.contains("mycosynth-keys")));
        assert!(p
            .publish
            .allow
            .contains(&"mycosynth.site.replies.eu.>".to_owned()));
        assert!(p
            .publish
            .allow
            .contains(&"$JS.hub.API.CONSUMER.CREATE.KV_mycosynth-config".to_owned()));
        let keys = IdentityKind::from_fields("site", &["eu", "hub", "data-keys"]).unwrap();
        let keys = keys.permissions("UKEY").unwrap();
        assert!(keys
            .publish
            .allow
            .contains(&"$JS.hub.API.CONSUMER.CREATE.KV_mycosynth-keys".to_owned()));
        for bad in [
            &["eu"][..],
            &["eu", "hub", "all"],
            &["e.u", "hub"],
            &["eu", ">"],
        ] {
            assert!(IdentityKind::from_fields("site", bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            IdentityKind::parse("site", Some("eu")),
            Err(KindError::Namespace { .. })
        ));
    }

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
