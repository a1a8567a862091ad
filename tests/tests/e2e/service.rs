use mycosynth_testkit::{http_get, NatsServer, Validator};
use serde_json::json;

use crate::{run_cli, set_keys};

/// The validator exposes Prometheus metrics and health over HTTP, and registers with NATS's
/// service API (what `nats micro ls/info` reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_exposes_metrics_health_and_service_info() {
    let nats = NatsServer::start();
    let validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    set_keys(&api, "payments", "prod", &[("a", json!(1))]).await;
    let refused = run_cli(&nats.url(), &["set", "payments", "prod", "_meta.x", "1"]).await;
    assert!(!refused.status.success());

    let (status, body) = http_get(&validator.http_addr(), "/metrics").unwrap();
    assert_eq!(status, 200);
    for metric in [
        "mycosynth_validator_requests_total",
        "mycosynth_validator_rejections_total{reason=\"reserved_prefix\"}",
        "mycosynth_validator_commit_seconds_bucket",
        "mycosynth_validator_commits_total",
    ] {
        assert!(body.contains(metric), "/metrics lacks {metric}:\n{body}");
    }
    let (status, body) = http_get(&validator.http_addr(), "/health").unwrap();
    assert_eq!(
        (status, body.contains("\"connected\"")),
        (200, true),
        "{body}"
    );

    let client = async_nats::connect(nats.url()).await.unwrap();
    let info = client
        .request("$SRV.INFO.mycosynth-validator", "".into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["name"], "mycosynth-validator");
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    assert!(subjects.contains(&"mycosynth.api.change"), "{subjects:?}");
}

/// With `--cached-states 5`, changes to 20 namespaces keep at most 5 states cached; a namespace
/// whose state was dropped is read again from KV at its next change, at the right version and
/// with every value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cached_states_cold_ones_are_dropped_and_read_again() {
    let nats = NatsServer::start();
    let validator = Validator::start(&nats.url(), &["--cached-states", "5"]);
    let api = crate::api(&nats.url()).await;
    for i in 0..20 {
        let ns = format!("tenant-{i}");
        set_keys(&api, &ns, "prod", &[("a", json!(i)), ("b", json!("x"))]).await;
    }
    assert!(
        validator.metric("mycosynth_validator_states_evicted_total", "") >= 15.0,
        "idle states past the cap were dropped"
    );
    assert!(validator.metric("mycosynth_validator_cached_states", "") <= 5.0);
    // tenant-0 was dropped long ago: its next change starts from KV.
    let again = set_keys(&api, "tenant-0", "prod", &[("a", json!(100))]).await;
    assert_eq!((again.previous_version, again.version), (1, 2));
    let out = run_cli(&nats.url(), &["--json", "get", "tenant-0", "prod"]).await;
    let got: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("get --json prints JSON");
    let values = got["values"].to_string();
    assert!(values.contains("100") && values.contains("\"x\""), "{got}");
}
