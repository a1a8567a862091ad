//! A rollout's external signal against a real Prometheus (issue 24): Prometheus scrapes the
//! example service's `/metrics`; the rollout runs while the query stays under its bound, and
//! aborts by itself once the service's error ratio crosses it. Canaries go back to stable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use mycosynth_subscriber::wire::{
    endpoint, ChangeSource, KeyChange, PrometheusRule, RolloutOutcome, RolloutStartRequest,
    RolloutState,
};
use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::prometheus::Prometheus;
use mycosynth_testkit::{NatsServer, Validator};
use serde_json::json;

use crate::rollouts::status;
use crate::{api, set_keys};

const NS: &str = "shop";
const ENV: &str = "prod";

/// The example service's `/metrics`: its error ratio (in millionths in `errors`), in
/// Prometheus's text format, on a free loopback port.
async fn serve_metrics(errors: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let errors = Arc::clone(&errors);
            async move {
                let ratio = errors.load(Ordering::Relaxed) as f64 / 1e6;
                format!("# TYPE shop_error_ratio gauge\nshop_error_ratio {ratio}\n")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_breach_aborts_the_rollout() {
    let nats = NatsServer::start();
    let url = nats.url();
    let _validator = Validator::start(&url, &["--stale-after", "2", "--instance-expiry", "6"]);
    let api = api(&url).await;
    set_keys(&api, NS, ENV, &[("limit", json!(1))]).await;

    let errors = Arc::new(AtomicU64::new(10_000)); // 0.01
    let target = serve_metrics(Arc::clone(&errors)).await;
    let prometheus = Prometheus::start(&[target]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while prometheus.query("max(shop_error_ratio)").is_none() {
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the service"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut subs = Vec::new();
    for i in 0..10 {
        let sub = Subscriber::builder(NS, ENV)
            .nats_url(&url)
            .instance_id(format!("shop-{i:02}"))
            .receipts(true, Duration::from_millis(200))
            .connect()
            .await
            .expect("subscriber connects");
        subs.push(sub);
    }
    let request = RolloutStartRequest {
        namespace: NS.into(),
        environment: ENV.into(),
        changes: vec![KeyChange::set("limit", json!(2))],
        change_request: None,
        steps: vec![100.0],
        bake_s: 600,
        auto_rollback: true,
        health: Vec::new(),
        target: BTreeMap::new(),
        prometheus: Some(PrometheusRule {
            url: prometheus.url(),
            query: "max(shop_error_ratio)".into(),
            max: 0.05,
        }),
        author: "test".into(),
        reason: "canary".into(),
        source: ChangeSource::Api,
    };
    let _: RolloutOutcome = api
        .call(endpoint::ROLLOUT_START, &request)
        .await
        .expect("rollout started");
    let deadline = Instant::now() + Duration::from_secs(10);
    while subs.iter().any(|s| s.get_or("limit", 0) != 2) {
        assert!(
            Instant::now() < deadline,
            "canaries never served the candidate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Healthy: several evaluations (every 2 s) pass and the rollout keeps running.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let running = status(&api).await;
    let record = running.rollout.expect("record");
    assert_eq!(record.state, RolloutState::Running, "{:?}", record.verdict);
    let rule = running
        .comparison
        .iter()
        .find(|c| c.rule.starts_with("prometheus"))
        .expect("the prometheus rule in status");
    assert_eq!(rule.canary, Some(0.01), "{rule:?}");
    assert!(rule.holds);

    // The service degrades: the next scrape and evaluation abort the rollout.
    errors.store(200_000, Ordering::Relaxed); // 0.2
    let deadline = Instant::now() + Duration::from_secs(20);
    let aborted = loop {
        let now = status(&api).await.rollout.expect("record");
        if now.state == RolloutState::Aborted {
            break now;
        }
        assert!(Instant::now() < deadline, "no abort: {:?}", now.state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let verdict = aborted.verdict.expect("verdict");
    assert!(
        verdict
            .reason
            .contains("prometheus max(shop_error_ratio) <= 0.05"),
        "{}",
        verdict.reason
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while subs.iter().any(|s| s.get_or("limit", 0) != 1) {
        assert!(Instant::now() < deadline, "canaries not back on stable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
