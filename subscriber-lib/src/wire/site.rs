//! Sites: read-only replicas of the config at a leaf node with its own JetStream domain.
//!
//! A site's server holds mirrors of the hub's buckets under the same names
//! ([`CONFIG_BUCKET`](super::CONFIG_BUCKET), [`SCHEMA_BUCKET`](super::SCHEMA_BUCKET), and
//! [`KEYS_BUCKET`](super::KEYS_BUCKET) when the site may read sensitive values), so a service
//! at the site reads them through its server's own `$JS.API` exactly as at the hub. Each mirror
//! republishes what it stores as local core NATS messages: the config mirror every head
//! (`<ns>.<env>._meta.head`) on [`site_head_subject`], the schema mirror every schema on
//! [`site_schema_subject`]. A subscriber at a site follows those (the
//! `EventSource::SiteMirror` option of its builder) instead of the validator's change events,
//! so its events and its reads come from the same replica, in the replica's order.

use serde::{Deserialize, Serialize};

use super::layout::{kv_subject, CONFIG_BUCKET, SCHEMA_BUCKET};
use super::names::{Environment, Namespace};

/// The subject a site's config mirror republishes the head of `ns`/`env` on:
/// `mycosynth.site.heads.<env>.<ns>` (the order of the change-event subject).
pub fn site_head_subject(ns: &Namespace, env: &Environment) -> String {
    format!("mycosynth.site.heads.{env}.{ns}")
}

/// The subject a site's schema mirror republishes the schema of `ns` on:
/// `mycosynth.site.schemas.<ns>`.
pub fn site_schema_subject(ns: &Namespace) -> String {
    format!("mycosynth.site.schemas.{ns}")
}

/// The republish rule of the config mirror: (source filter, destination mapping).
pub fn site_head_republish() -> (String, String) {
    (
        kv_subject(CONFIG_BUCKET, "*.*._meta.head"),
        "mycosynth.site.heads.{{wildcard(2)}}.{{wildcard(1)}}".to_owned(),
    )
}

/// The republish rule of the schema mirror: (source filter, destination mapping).
pub fn site_schema_republish() -> (String, String) {
    (
        kv_subject(SCHEMA_BUCKET, "*"),
        "mycosynth.site.schemas.{{wildcard(1)}}".to_owned(),
    )
}

/// The JetStream API prefix of a domain: `$JS.<domain>.API`. A site reaches the hub's
/// JetStream through it (the mirrors' `external.api_prefix`), and the hub reaches a site's.
pub fn domain_api_prefix(domain: &str) -> String {
    format!("$JS.{domain}.API")
}

/// The subject the hub asks a site's config mirror for its stream info on.
pub fn site_stream_info_subject(site_domain: &str) -> String {
    format!(
        "{}.STREAM.INFO.{}",
        domain_api_prefix(site_domain),
        super::layout::kv_stream(CONFIG_BUCKET)
    )
}

/// The subjects a site answers lag probes on: `mycosynth.site.replies.<site domain>.<id>`.
/// The site's NATS identity may publish only under its own domain, so a site can misreport
/// nothing but its own lag.
pub fn site_reply_subject(site_domain: &str, id: &str) -> String {
    format!("mycosynth.site.replies.{site_domain}.{id}")
}

/// A site's replica as the hub sees it: `mycosynth status` and the validator's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteLag {
    /// The site's JetStream domain.
    pub site: String,
    /// The site answered the last probe.
    pub reachable: bool,
    /// Versions (change sets of any namespace/environment) committed at the hub that the
    /// site's mirror does not hold yet. `None` when the site did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions_behind: Option<u64>,
    /// Seconds since the mirror last heard from the hub, as the site reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_active_seconds: Option<f64>,
    /// The last stream sequence the mirror holds (the hub's sequence numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_last_seq: Option<u64>,
    /// When the site last answered, µs since the epoch (0: never).
    pub last_answer_us: i64,
    /// Why the last probe failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
