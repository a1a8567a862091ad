//! Sites: read-only replicas of the config on a leaf node with its own JetStream domain
//! (`nats/site/`), and how far behind the hub each one is ([`lag`]).
//!
//! `mycosynth site init --hub-domain D`, run against the site's own server, creates there a
//! mirror of each of the hub's buckets under the same name, reading the hub's JetStream through
//! `$JS.<D>.API` (`external.api_prefix`; the mirror's `domain` field is not used: async-nats
//! 0.51 sends it in a form nats-server 2.15 refuses, nats.rs#1541). The config mirror
//! republishes every head it stores, the schema mirror every schema
//! ([`wire::site_head_republish`]), for the subscribers at the site
//! (`EventSource::SiteMirror`). The data keys are mirrored only with `--data-keys`: a site
//! whose services may not read sensitive values never holds their keys.

pub mod lag;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use mycosynth_subscriber::wire::{
    self, domain_api_prefix, kv_stream, CONFIG_BUCKET, KEYS_BUCKET, SCHEMA_BUCKET,
};

/// Why a site could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// The site's server (or its JetStream) did not answer or refused.
    #[error("{0}")]
    Unavailable(String),
    /// A stream of that name exists at the site and is not a mirror of the hub's bucket.
    #[error("{0}")]
    Conflict(String),
    /// A domain name that cannot be a subject token.
    #[error("{0}")]
    Invalid(String),
}

/// What `site init` sets up.
#[derive(Debug, Clone)]
pub struct SiteInit {
    /// The hub's JetStream domain.
    pub hub_domain: String,
    /// Mirror the data keys too (the site's services may read sensitive values).
    pub data_keys: bool,
    /// Replicas of each mirror (a site may be a cluster of its own).
    pub replicas: usize,
    /// How long to wait for the mirrors' first contact with the hub (0: do not wait).
    pub wait: Duration,
}

/// One mirror after `site init`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MirrorReport {
    /// The bucket mirrored.
    pub bucket: String,
    /// Created now (false: it existed already, as a mirror of the same bucket).
    pub created: bool,
    /// Messages it holds.
    pub messages: u64,
    /// It has heard from the hub.
    pub connected: bool,
}

/// A republish rule: (source filter, destination mapping).
type Republish = Option<(String, String)>;

/// The buckets a site mirrors: (bucket, history kept per key, republish rule).
fn mirrored(data_keys: bool) -> Vec<(&'static str, i64, Republish)> {
    let mut buckets = vec![
        (
            CONFIG_BUCKET,
            crate::store::KV_HISTORY,
            Some(wire::site_head_republish()),
        ),
        (SCHEMA_BUCKET, 1, Some(wire::site_schema_republish())),
    ];
    if data_keys {
        buckets.push((KEYS_BUCKET, 5, None));
    }
    buckets
}

/// Whether `domain` can be a JetStream domain (one subject token).
pub fn check_domain(domain: &str) -> Result<(), SiteError> {
    let ok = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SiteError::Invalid(format!(
            "domain {domain:?} broke rule \"letters, digits, - and _ only\""
        )))
    }
}

/// Creates the site's mirrors on the server `client` is connected to (idempotent).
pub async fn init(
    client: &async_nats::Client,
    options: &SiteInit,
) -> Result<Vec<MirrorReport>, SiteError> {
    check_domain(&options.hub_domain)?;
    let js = jetstream::new(client.clone());
    let mut reports = Vec::new();
    for (bucket, history, republish) in mirrored(options.data_keys) {
        let created = ensure_mirror(&js, bucket, history, republish, options).await?;
        reports.push(MirrorReport {
            bucket: bucket.to_owned(),
            created,
            messages: 0,
            connected: false,
        });
    }
    let deadline = Instant::now() + options.wait;
    for report in &mut reports {
        loop {
            let info = mirror_info(&js, &report.bucket).await?;
            report.messages = info.state.messages;
            report.connected = info.mirror.as_ref().is_some_and(|m| m.active.is_some());
            if report.connected || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(reports)
}

async fn mirror_info(js: &jetstream::Context, bucket: &str) -> Result<stream::Info, SiteError> {
    let mut stream = js
        .get_stream(kv_stream(bucket))
        .await
        .map_err(|e| SiteError::Unavailable(format!("mirror of {bucket}: {e}")))?;
    stream
        .info()
        .await
        .cloned()
        .map_err(|e| SiteError::Unavailable(format!("mirror of {bucket}: {e}")))
}

/// Creates the mirror of `bucket` unless it exists; true when created now.
async fn ensure_mirror(
    js: &jetstream::Context,
    bucket: &str,
    history: i64,
    republish: Republish,
    options: &SiteInit,
) -> Result<bool, SiteError> {
    let api = domain_api_prefix(&options.hub_domain);
    if let Ok(mut existing) = js.get_stream(kv_stream(bucket)).await {
        let info = existing
            .info()
            .await
            .map_err(|e| SiteError::Unavailable(format!("stream {}: {e}", kv_stream(bucket))))?;
        let same = info.config.mirror.as_ref().is_some_and(|m| {
            m.name == kv_stream(bucket) && m.external.as_ref().is_some_and(|x| x.api_prefix == api)
        });
        return if same {
            Ok(false)
        } else {
            Err(SiteError::Conflict(format!(
                "stream {} exists at this server and is not a mirror of the hub's {bucket} through {api}: \
                 is this the hub, or a site set up for another hub?",
                kv_stream(bucket)
            )))
        };
    }
    js.create_key_value(kv::Config {
        bucket: bucket.to_owned(),
        description: format!("Mycosynth site mirror of {bucket} (read-only)"),
        history,
        max_value_size: crate::store::MAX_MESSAGE_BYTES,
        num_replicas: options.replicas.max(1),
        storage: stream::StorageType::File,
        republish: republish.map(|(source, destination)| stream::Republish {
            source,
            destination,
            headers_only: false,
        }),
        mirror: Some(stream::Source {
            name: bucket.to_owned(),
            external: Some(stream::External {
                api_prefix: api,
                delivery_prefix: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .map_err(|e| SiteError::Unavailable(format!("creating the mirror of {bucket}: {e}")))?;
    tracing::info!(bucket, hub_domain = %options.hub_domain, "created a site mirror");
    Ok(true)
}
