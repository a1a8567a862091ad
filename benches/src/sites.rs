//! Sites: a hub change to a subscriber at a leaf-node site (following the mirror's republished
//! heads) against the same subscriber at the hub, and how long a site takes to catch up once
//! the hub is back after an outage. Real nats-servers from `nats/site/` (the test harness's
//! [`SitePair`]), a validator process at the hub.

use std::time::{Duration, Instant};

use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, KeyChange};
use mycosynth_subscriber::{EventSource, Subscriber};
use mycosynth_testkit::site::{Auth, SitePair, HUB_DOMAIN};
use mycosynth_testkit::Validator;
use serde_json::{json, Value};

use crate::{histogram, Summary};

/// A hub and a site with the mirrors set up, a validator at the hub, and its API client.
pub struct Sites {
    /// The two servers.
    pub pair: SitePair,
    _validator: Validator,
    api: ApiClient,
}

impl Sites {
    /// Starts the hub, the site and a validator, and runs `mycosynth site init` at the site.
    pub async fn start() -> Sites {
        let pair = SitePair::start(Auth::Open);
        let validator = Validator::start(&pair.hub_url(), &[]);
        let api = ApiClient::connect(&pair.hub_url(), Duration::from_secs(10))
            .await
            .expect("api");
        let init = mycosynth_testkit::cli(
            &pair.site_url(),
            &["site", "init", "--hub-domain", HUB_DOMAIN],
        );
        assert!(init.status.success(), "site init failed");
        Sites {
            pair,
            _validator: validator,
            api,
        }
    }

    async fn set(&self, ns: &str, n: u64) -> Result<u64, String> {
        let request = ChangeRequest::new(ns, "prod", vec![KeyChange::set("n", json!(n))], "bench");
        self.api
            .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
            .await
            .map(|o| o.version)
            .map_err(|e| format!("{e:?}"))
    }

    async fn subscriber(&self, ns: &str, url: String, source: EventSource) -> Subscriber {
        Subscriber::builder(ns, "prod")
            .nats_url(url)
            .events_from(source)
            .receipts(false, Duration::from_secs(10))
            .backoff(Duration::from_millis(50), Duration::from_millis(500))
            .connect()
            .await
            .expect("subscriber")
    }
}

/// Request → the subscriber at the hub and → the subscriber at the site, for the same changes
/// (one in flight). Returns (hub, site).
pub async fn latency(sites: &Sites, samples: u64) -> (Summary, Summary) {
    let ns = "site-latency";
    let first = sites.set(ns, 0).await.expect("first change");
    let at_hub = sites
        .subscriber(ns, sites.pair.hub_url(), EventSource::Validator)
        .await;
    let at_site = sites
        .subscriber(ns, sites.pair.site_url(), EventSource::SiteMirror)
        .await;
    assert!(
        at_site
            .wait_for_version(first, Duration::from_secs(10))
            .await
    );
    let (mut hub, mut site) = (histogram(), histogram());
    let mut version = first;
    for n in 1..=samples {
        // Waited for alongside the request, not after its reply: the change usually reaches
        // both subscribers before the reply reaches the client.
        let expected = version + 1;
        let start = Instant::now();
        let hub_wait = async {
            at_hub
                .wait_for_version(expected, Duration::from_secs(10))
                .await;
            start.elapsed()
        };
        let site_wait = async {
            at_site
                .wait_for_version(expected, Duration::from_secs(10))
                .await;
            start.elapsed()
        };
        let (committed, to_hub, to_site) = tokio::join!(sites.set(ns, n), hub_wait, site_wait);
        match committed {
            Ok(v) if v == expected => {
                let _ = hub.record(to_hub.as_nanos() as u64);
                let _ = site.record(to_site.as_nanos() as u64);
                version = v;
            }
            Ok(v) => version = v,
            Err(_) => {}
        }
    }
    (Summary::of(&hub), Summary::of(&site))
}

/// The hub killed for `outage`, restarted, one change committed as soon as the validator takes
/// it: seconds from the restart until the leaf link is back, and until the site's subscriber
/// holds that change.
pub async fn catch_up(sites: &mut Sites, outage: Duration) -> Value {
    let ns = "site-catch-up";
    let before = sites.set(ns, 0).await.expect("change before");
    let at_site = sites
        .subscriber(ns, sites.pair.site_url(), EventSource::SiteMirror)
        .await;
    assert!(
        at_site
            .wait_for_version(before, Duration::from_secs(10))
            .await
    );
    let links = sites.pair.links();
    sites.pair.hub.kill();
    tokio::time::sleep(outage).await;
    sites.pair.hub.restart();
    let back = Instant::now();
    let version = loop {
        match sites.set(ns, 1).await {
            Ok(version) => break version,
            Err(_) if back.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("no change after the hub came back: {err}"),
        }
    };
    let committed = back.elapsed().as_secs_f64();
    let linked = {
        let pair = &sites.pair;
        let deadline = Instant::now() + Duration::from_secs(60);
        while pair.links() <= links && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        back.elapsed().as_secs_f64()
    };
    let converged = at_site
        .wait_for_version(version, Duration::from_secs(600))
        .await;
    json!({
        "outage_s": outage.as_secs_f64(),
        "commit_after_restart_s": committed,
        "leaf_linked_after_restart_s": linked,
        "site_subscriber_converged_after_restart_s": converged.then(|| back.elapsed().as_secs_f64()),
    })
}

/// This machine's load averages (1, 5, 15 min), as `/proc/loadavg` has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The sites part of the bench: latency at the hub and at the site, then a catch-up after
/// each outage; printed as it goes and returned as JSON.
pub async fn report(samples: u64, outages: &[Duration]) -> Value {
    let mut sites = Sites::start().await;
    let (hub, site) = latency(&sites, samples).await;
    println!("\n| hub change → subscriber (µs) | p50 | p90 | p99 | p99.9 | max | n |\n|---|---|---|---|---|---|---|");
    println!("{}", hub.row("request → subscriber at the hub"));
    println!(
        "{}",
        site.row("request → subscriber at the site (mirror republish)")
    );
    println!("load average {}", load_average());
    let mut catch_ups = Vec::new();
    for outage in outages {
        let figures = catch_up(&mut sites, *outage).await;
        println!(
            "catch-up after a {outage:?} hub outage: {figures} (load average {})",
            load_average()
        );
        catch_ups.push(figures);
    }
    json!({
        "latency_us": {"at_hub": hub, "at_site": site},
        "catch_up": catch_ups,
        "load_average": load_average(),
    })
}
