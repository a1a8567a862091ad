//! How far behind the hub each site's replica is, seen from the hub.
//!
//! The validator (`serve --site D`) asks each site's JetStream, through the leaf connection,
//! for its config mirror's stream info (`$JS.<D>.API.STREAM.INFO.KV_mycosynth-config`; the
//! site answers on `mycosynth.site.replies.<D>.*`, the only subject its identity may publish
//! on). From it: the last hub sequence the mirror holds, and how long ago the mirror last
//! heard from the hub (`mirror.active`, as the site measures it). Versions behind are counted
//! at the hub: the heads (one message per committed version) stored after that sequence, the
//! `num_pending` of a short-lived consumer filtered on heads. The mirror's own `lag` field is
//! not used: during an outage it stays 0.
//!
//! A site that does not answer keeps its last known sequence, so `versions_behind` keeps
//! counting what the hub commits meanwhile (the link the answers take is the link the mirror
//! needs), and `mirror_active_seconds` grows by the time since its last answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use futures::StreamExt;
use mycosynth_subscriber::wire::{
    kv_stream, kv_subject, site_reply_subject, site_stream_info_subject, SiteLag, CONFIG_BUCKET,
};

/// How often the validator probes each site.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long a probe waits for the site's answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a site said about its mirror.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MirrorState {
    /// The last hub sequence the mirror holds.
    pub last_seq: u64,
    /// Seconds since the mirror last heard from the hub (None: never).
    pub active_seconds: Option<f64>,
}

/// Asks site `domain` for its config mirror's state.
pub async fn mirror_state(
    client: &async_nats::Client,
    domain: &str,
    timeout: Duration,
) -> Result<MirrorState, String> {
    let reply = site_reply_subject(domain, &nuid::next().to_string());
    let mut answers = client
        .subscribe(reply.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish_with_reply(site_stream_info_subject(domain), reply, bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(timeout, answers.next()).await;
    let _ = answers.unsubscribe().await;
    let message = match answer {
        Ok(Some(message)) => message,
        Ok(None) => return Err("subscription closed".into()),
        Err(_) => return Err(format!("site {domain} did not answer in {timeout:?}")),
    };
    if message.status.is_some_and(|s| s.as_u16() == 503) {
        return Err(format!("site {domain} is not connected to this hub"));
    }
    parse_stream_info(&message.payload).map_err(|e| format!("site {domain}: {e}"))
}

/// Reads a JetStream stream-info answer of a mirror.
pub fn parse_stream_info(payload: &[u8]) -> Result<MirrorState, String> {
    let info: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("unreadable stream info: {e}"))?;
    if let Some(error) = info.get("error") {
        return Err(format!("JetStream error: {error}"));
    }
    let last_seq = info
        .pointer("/state/last_seq")
        .and_then(serde_json::Value::as_u64)
        .ok_or("stream info without state.last_seq")?;
    let mirror = info
        .get("mirror")
        .ok_or("the site's config bucket is not a mirror")?;
    let active_seconds = mirror
        .get("active")
        .and_then(serde_json::Value::as_i64)
        .filter(|ns| *ns >= 0)
        .map(|ns| ns as f64 / 1e9);
    Ok(MirrorState {
        last_seq,
        active_seconds,
    })
}

/// Versions committed at the hub after stream sequence `after`: the heads stored since.
pub async fn versions_after(js: &jetstream::Context, after: u64) -> Result<u64, String> {
    let mut stream = js
        .get_stream(kv_stream(CONFIG_BUCKET))
        .await
        .map_err(|e| e.to_string())?;
    let last = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .last_sequence;
    if last <= after {
        return Ok(0);
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            name: Some(format!("mycosynth-site-lag-{}", nuid::next())),
            filter_subject: kv_subject(CONFIG_BUCKET, "*.*._meta.head"),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let pending = consumer.cached_info().num_pending;
    let name = consumer.cached_info().name.clone();
    // Ephemeral anyway; deleted now so that probes do not pile up consumers.
    let _ = stream.delete_consumer(&name).await;
    Ok(pending)
}

/// Probes one site; `previous` is what the last probe found.
pub async fn probe(
    client: &async_nats::Client,
    js: &jetstream::Context,
    domain: &str,
    previous: Option<&SiteLag>,
    now_us: i64,
) -> SiteLag {
    match mirror_state(client, domain, PROBE_TIMEOUT).await {
        Ok(state) => SiteLag {
            site: domain.to_owned(),
            reachable: true,
            versions_behind: versions_after(js, state.last_seq).await.ok(),
            mirror_active_seconds: state.active_seconds,
            mirror_last_seq: Some(state.last_seq),
            last_answer_us: now_us,
            error: None,
        },
        Err(error) => {
            let last_seq = previous.and_then(|p| p.mirror_last_seq);
            let last_answer_us = previous.map_or(0, |p| p.last_answer_us);
            let versions_behind = match last_seq {
                Some(seq) => versions_after(js, seq).await.ok(),
                None => None,
            };
            let since_answer = (now_us - last_answer_us).max(0) as f64 / 1e6;
            SiteLag {
                site: domain.to_owned(),
                reachable: false,
                versions_behind,
                mirror_active_seconds: previous
                    .filter(|_| last_answer_us > 0)
                    .and_then(|p| p.mirror_active_seconds)
                    .map(|active| active + since_answer),
                mirror_last_seq: last_seq,
                last_answer_us,
                error: Some(error),
            }
        }
    }
}

/// The lag of every watched site, as last probed (shared by the validator's status replies and
/// its metrics).
#[derive(Debug, Clone, Default)]
pub struct SiteLags {
    sites: Arc<Mutex<BTreeMap<String, SiteLag>>>,
}

impl SiteLags {
    /// Every watched site, by domain.
    pub fn snapshot(&self) -> Vec<SiteLag> {
        self.sites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Probes `domains` every [`PROBE_INTERVAL`] until `stop` turns true, exporting
    /// `mycosynth_site_*` gauges.
    pub async fn run(
        self,
        client: async_nats::Client,
        domains: Vec<String>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let sites = self.sites;
        let js = jetstream::new(client.clone());
        {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tick.tick() => {}
                }
                let probes = domains.iter().map(|domain| {
                    let previous = sites
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(domain)
                        .cloned();
                    let (client, js) = (&client, &js);
                    async move { probe(client, js, domain, previous.as_ref(), now_us()).await }
                });
                for lag in futures::future::join_all(probes).await {
                    export(&lag, now_us());
                    sites
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(lag.site.clone(), lag);
                }
            }
        }
    }
}

/// Now, µs since the Unix epoch.
pub fn now_us() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// Sets the gauges of one site.
fn export(lag: &SiteLag, now_us: i64) {
    let labels = [("site", lag.site.clone())];
    metrics::gauge!("mycosynth_site_reachable", &labels).set(f64::from(u8::from(lag.reachable)));
    if let Some(behind) = lag.versions_behind {
        metrics::gauge!("mycosynth_site_versions_behind", &labels).set(behind as f64);
    }
    if let Some(active) = lag.mirror_active_seconds {
        metrics::gauge!("mycosynth_site_mirror_active_seconds", &labels).set(active);
    }
    if lag.last_answer_us > 0 {
        metrics::gauge!("mycosynth_site_last_answer_age_seconds", &labels)
            .set((now_us - lag.last_answer_us).max(0) as f64 / 1e6);
    }
    if !lag.reachable {
        tracing::warn!(site = %lag.site, error = lag.error.as_deref().unwrap_or(""), versions_behind = ?lag.versions_behind, "site unreachable");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_info_of_a_mirror_is_read() {
        let info = br#"{"config":{},"state":{"messages":7,"last_seq":7},
            "mirror":{"name":"KV_mycosynth-config","lag":0,"active":1500000000}}"#;
        assert_eq!(
            parse_stream_info(info),
            Ok(MirrorState {
                last_seq: 7,
                active_seconds: Some(1.5)
            })
        );
        let never = br#"{"state":{"last_seq":0},"mirror":{"active":-1}}"#;
        assert_eq!(parse_stream_info(never).map(|s| s.active_seconds), Ok(None));
        assert!(parse_stream_info(br#"{"state":{"last_seq":3}}"#)
            .unwrap_err()
            .contains("not a mirror"));
        assert!(parse_stream_info(br#"{"error":{"code":404}}"#).is_err());
        assert!(parse_stream_info(b"garbage").is_err());
    }
}
