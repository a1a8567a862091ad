//! `mycosynth impact` (issue 24): four subscribers report a health signal; a change makes it
//! worse; the impact of that version shows the signal before and after its commit, from the
//! instances on each version. Bad input (a window over an hour, a version that does not exist)
//! is refused with its exit code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycosynth::cli::exit;
use mycosynth_subscriber::wire::ImpactOutcome;
use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::{NatsServer, Validator};
use serde_json::json;

use crate::{api, run_cli, set_keys, stderr, stdout};

const NS: &str = "shop";
const ENV: &str = "prod";

async fn wait_all_hold(subs: &[Subscriber], version: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while subs.iter().any(|s| s.version() < version) {
        assert!(
            Instant::now() < deadline,
            "subscribers did not reach v{version}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impact_shows_the_signal_before_and_after_a_version() {
    let nats = NatsServer::start();
    let url = nats.url();
    let _validator = Validator::start(&url, &[]);
    let api = api(&url).await;
    set_keys(&api, NS, ENV, &[("mode", json!("fast"))]).await;

    // The service's error ratio, in millionths: 0.01 until the change, then 0.05.
    let errors = Arc::new(AtomicU64::new(10_000));
    let mut subs = Vec::new();
    for i in 0..4 {
        let sub = Subscriber::builder(NS, ENV)
            .nats_url(&url)
            .instance_id(format!("shop-{i}"))
            .receipts(true, Duration::from_millis(200))
            .connect()
            .await
            .expect("subscriber connects");
        let seen = Arc::clone(&errors);
        sub.health_signal("errors", move || seen.load(Ordering::Relaxed) as f64 / 1e6);
        subs.push(sub);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let changed = set_keys(&api, NS, ENV, &[("mode", json!("reckless"))]).await;
    wait_all_hold(&subs, changed.version).await;
    errors.store(50_000, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let version = changed.version.to_string();
    let out = run_cli(
        &url,
        &[
            "--json",
            "impact",
            NS,
            ENV,
            "--version",
            &version,
            "--window",
            "30s",
        ],
    )
    .await;
    assert!(out.status.success(), "impact: {}", stderr(&out));
    let impact: ImpactOutcome = serde_json::from_str(&stdout(&out)).expect("impact json");
    assert_eq!(impact.version, changed.version);
    assert_eq!(impact.signals.len(), 1, "{impact:?}");
    let errors_impact = &impact.signals[0];
    assert_eq!(errors_impact.signal, "errors");
    let before = errors_impact.before.expect("samples before the commit");
    let after = errors_impact.after.expect("samples after the commit");
    assert_eq!(before.instances, 4, "{before:?}");
    assert_eq!(after.instances, 4, "{after:?}");
    // Every sample before the commit said 0.01; after it, all but the first on the new
    // version say 0.05.
    assert!((before.mean - 0.01).abs() < 1e-9, "{before:?}");
    assert!(after.mean > 0.03 && after.max <= 0.05 + 1e-9, "{after:?}");
    assert!(impact.rollout.is_none());

    let table = run_cli(&url, &["impact", NS, ENV, "--version", &version]).await;
    assert!(table.status.success(), "impact table: {}", stderr(&table));
    assert!(stdout(&table).contains("errors"), "{}", stdout(&table));

    let too_long = run_cli(&url, &["impact", NS, ENV, "--window", "2h"]).await;
    assert_eq!(too_long.status.code(), Some(i32::from(exit::VALIDATION)));
    assert!(
        stderr(&too_long).contains("window"),
        "{}",
        stderr(&too_long)
    );
    let missing = run_cli(&url, &["impact", NS, ENV, "--version", "99"]).await;
    assert_eq!(missing.status.code(), Some(i32::from(exit::NOT_FOUND)));
    assert!(
        stderr(&missing).contains("no version 99"),
        "{}",
        stderr(&missing)
    );
}
