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
