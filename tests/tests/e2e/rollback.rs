use std::time::Duration;

use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::{NatsServer, Validator};
use serde_json::json;

use crate::{run_cli, set_keys, stderr, stdout};

fn values_of(get_json: &str) -> serde_json::Value {
    let outcome: serde_json::Value = serde_json::from_str(get_json).expect("get --json");
    let pairs = outcome["values"].as_array().cloned().unwrap_or_default();
    pairs
        .into_iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or_default().to_owned(),
                pair[1]["value"].clone(),
            )
        })
        .collect()
}

/// Acceptance 5: `rollback --to N` yields the snapshot of version N, even after the same key
/// changed more than 100 times (beyond KV's 64 revisions per key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_a_version_after_many_changes() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let api = crate::api(&url).await;
    set_keys(
        &api,
        "search",
        "prod",
        &[("a", json!(1)), ("b", json!("two"))],
    )
    .await;
    let at_n = set_keys(&api, "search", "prod", &[("c", json!({"nested": [1, 2]}))]).await;
    let n = at_n.version;
    let snapshot_n = values_of(&stdout(
        &run_cli(&url, &["--json", "get", "search", "prod"]).await,
    ));

    for i in 0..120 {
        set_keys(&api, "search", "prod", &[("a", json!(100 + i))]).await;
    }
    let out = run_cli(&url, &["delete", "search", "prod", "b"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    set_keys(&api, "search", "prod", &[("d", json!(true))]).await;

    let config = Subscriber::builder("search", "prod")
        .nats_url(url.clone())
        .connect()
        .await
        .unwrap();
    let before = config.version();
    let out = run_cli(
        &url,
        &[
            "rollback",
            "search",
            "prod",
            "--to",
            &n.to_string(),
            "--reason",
            "bad deploy",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("committed version {}", before + 1)),
        "{}",
        stdout(&out)
    );

    let restored = values_of(&stdout(
        &run_cli(&url, &["--json", "get", "search", "prod"]).await,
    ));
    assert_eq!(restored, snapshot_n);
    assert!(
        config
            .wait_for_version(before + 1, Duration::from_secs(10))
            .await
    );
    assert_eq!(
        config.snapshot().to_json(),
        snapshot_n,
        "subscriber holds the restored state"
    );

    let history = stdout(&run_cli(&url, &["history", "search", "prod", "--limit", "1"]).await);
    assert!(
        history.contains("[rollback]") && history.contains("bad deploy"),
        "{history}"
    );
}
