//! Backup and restore of a cluster of `namespaces` × `keys` keys × `versions` versions: time
//! of `mycosynth backup` while nothing writes, archive size, time of `mycosynth restore` into a
//! fresh server. The first versions of each namespace set every key (as many change sets of
//! at most `MAX_CHANGES_PER_SET` keys as that takes); each later version changes 10.

use std::time::{Duration, Instant};

use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, ChangeRequest, KeyChange, MAX_CHANGES_PER_SET,
};
use mycosynth_testkit::{NatsServer, Validator};
use serde_json::{json, Value};

/// Fills a cluster, backs it up and restores it; the figures as JSON.
pub async fn run(namespaces: u64, keys: u64, versions: u64) -> Value {
    let source = NatsServer::start();
    let validator = Validator::start(&source.url(), &[]);
    let api = ApiClient::connect(&source.url(), Duration::from_secs(30))
        .await
        .expect("api");
    let filled = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for ns in 0..namespaces {
        let api = api.clone();
        writers.spawn(async move {
            // The first versions set every key, at most `MAX_CHANGES_PER_SET` a change set.
            let all_keys: Vec<u64> = (0..keys).collect();
            let mut sets: Vec<Vec<KeyChange>> = all_keys
                .chunks(MAX_CHANGES_PER_SET)
                .map(|chunk| {
                    chunk
                        .iter()
                        .map(|k| KeyChange::set(format!("key.{k}"), json!(k)))
                        .collect()
                })
                .collect();
            for version in sets.len() as u64 + 1..=versions {
                sets.push(
                    (0..10.min(keys))
                        .map(|i| {
                            let k = (version * 10 + i) % keys;
                            KeyChange::set(format!("key.{k}"), json!(version * 1000 + k))
                        })
                        .collect(),
                );
            }
            for changes in sets {
                let request = ChangeRequest::new(format!("ns-{ns}"), "prod", changes, "bench");
                api.call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
                    .await
                    .expect("change");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer failed");
    }
    let fill_s = filled.elapsed().as_secs_f64();
    drop(validator);

    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("bench.myco");
    let archive_arg = archive.display().to_string();
    let started = Instant::now();
    let out = mycosynth_testkit::cli(&source.url(), &["--json", "backup", &archive_arg]);
    let backup_s = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);

    let target = NatsServer::start();
    let started = Instant::now();
    let out = mycosynth_testkit::cli(&target.url(), &["restore", &archive_arg]);
    let restore_s = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json!({
        "namespaces": namespaces, "keys": keys, "versions": versions,
        "fill_through_the_validator_s": fill_s,
        "backup_s": backup_s,
        "archive_bytes": bytes,
        "archive": summary,
        "restore_s": restore_s,
    })
}
