//! Backup and restore: `mycosynth backup` of a live cluster, `mycosynth restore` into a fresh
//! nats-server, the same `get`, `history`, `audit verify`, subscribers and raw stored bytes; a
//! damaged, truncated or foreign archive refused before anything is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mycosynth_subscriber::kv_scan::scan;
use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::{json, NatsServer, Validator};
use serde_json::{json, Value};

use crate::{run_cli, set_keys, stderr, stdout};

const NS: &str = "billing";
const SECRET: &str = "Tr0ub4dor-and-3-horses";
const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "db.password": {"type": "string", "minLength": 8, "x-mycosynth-sensitive": true},
    "db.pool": {"type": "integer", "default": 4},
    "feature.beta": {"type": "boolean"}
  },
  "additionalProperties": false
}"#;

async fn ok(url: &str, args: &[&str]) -> String {
    let out = run_cli(url, args).await;
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `mycosynth restore FILE [--key-file KEY] [extra]` against `url`.
async fn restore(
    url: &str,
    file: &Path,
    key: Option<&Path>,
    extra: &[&str],
) -> std::process::Output {
    let (file, key) = (
        file.display().to_string(),
        key.map(|k| k.display().to_string()),
    );
    let mut args = vec!["restore", file.as_str()];
    if let Some(key) = &key {
        args.extend(["--key-file", key.as_str()]);
    }
    args.extend_from_slice(extra);
    run_cli(url, &args).await
}

fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("backup.key");
    std::fs::write(&path, "q0K1sXl5pQ0sE0dJq2o8m3y7vH8l5bq3G0m4n2z9c1A=\n").unwrap();
    path
}

/// A namespace with a schema and a sensitive value, a child environment inheriting from its
/// parent, several versions and a rollback.
async fn populate(url: &str, dir: &Path) {
    let schema = dir.join("billing.schema.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    ok(url, &["schema", "push", NS, schema.to_str().unwrap()]).await;
    ok(
        url,
        &["set", NS, "prod", "db.password", &format!("{SECRET:?}")],
    )
    .await;
    ok(url, &["set", NS, "prod", "db.pool", "10"]).await;
    ok(
        url,
        &["set", NS, "prod", "db.pool", "20", "--reason", "peak"],
    )
    .await;
    ok(url, &["set", NS, "canary", "feature.beta", "true"]).await;
    ok(url, &["parent", NS, "canary", "prod"]).await;
    ok(url, &["rollback", NS, "prod", "--to", "2"]).await;
}

/// What an operator sees: values (with where they come from), sensitive values in clear,
/// history.
async fn views(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    for env in ["prod", "canary"] {
        out.push(ok(url, &["--json", "get", NS, env]).await);
        out.push(ok(url, &["--json", "get", NS, env, "--reveal"]).await);
        out.push(ok(url, &["--json", "get", NS, env, "--explain"]).await);
        out.push(ok(url, &["--json", "history", NS, env]).await);
    }
    out
}

async fn audit_verify(url: &str) -> Value {
    json(&ok(url, &["--json", "audit", "verify"]).await)
}

/// Every stored record of the buckets a backup holds, by bucket and key.
async fn stored(url: &str) -> BTreeMap<(String, String), Vec<u8>> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut all = BTreeMap::new();
    for bucket in ["mycosynth-config", "mycosynth-schemas", "mycosynth-keys"] {
        let entries = scan(&js, bucket, ">", Duration::from_secs(10))
            .await
            .unwrap();
        for entry in entries.into_iter().filter(|e| !e.deleted) {
            all.insert((bucket.to_owned(), entry.key), entry.payload.to_vec());
        }
    }
    all
}

async fn audit_bytes(url: &str, last: u64) -> Vec<Vec<u8>> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("MYCOSYNTH_AUDIT").await.unwrap();
    let mut records = Vec::new();
    for seq in 1..=last {
        records.push(stream.get_raw_message(seq).await.unwrap().payload.to_vec());
    }
    records
}

async fn subscriber_view(url: &str, env: &str) -> (u64, Vec<Value>) {
    let sub = Subscriber::builder(NS, env)
        .nats_url(url)
        .receipts(false, Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let values = ["db.password", "db.pool", "feature.beta"]
        .iter()
        .map(|k| sub.get::<Value>(k).unwrap_or(Value::Null))
        .collect();
    (sub.version(), values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_into_a_fresh_server_gives_identical_get_history_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let archive = dir.path().join("cluster.myco");
    let source = NatsServer::start();
    let mut validator = Validator::start(&source.url(), &[]);
    populate(&source.url(), dir.path()).await;

    let out = run_cli(
        &source.url(),
        &[
            "--json",
            "backup",
            archive.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "backup: {}", stderr(&out));
    let summary = json(&stdout(&out));
    assert_eq!(summary["environments"], 2, "{summary}");
    assert_eq!(summary["data_keys"], 1, "{summary}");
    validator.kill();
    let (source_stored, source_audit) = (
        stored(&source.url()).await,
        audit_verify_raw(&source.url()).await,
    );

    let target = NatsServer::start();
    let out = restore(&target.url(), &archive, Some(&key), &[]).await;
    assert!(out.status.success(), "restore: {}", stderr(&out));
    assert!(stdout(&out).contains("restored"), "{}", stdout(&out));
    // Byte for byte what the source's validator wrote, before any validator runs on the target.
    assert_eq!(stored(&target.url()).await, source_stored);
    assert_eq!(audit_verify_raw(&target.url()).await, source_audit);

    let _source_validator = Validator::start(&source.url(), &[]);
    let _target_validator = Validator::start(&target.url(), &[]);
    assert_eq!(views(&target.url()).await, views(&source.url()).await);
    let (source_chain, target_chain) = (
        audit_verify(&source.url()).await,
        audit_verify(&target.url()).await,
    );
    assert_eq!(target_chain["problems"], json!([]), "{target_chain}");
    assert_eq!(
        target_chain["records"], source_chain["records"],
        "{target_chain} vs {source_chain}"
    );
    for env in ["prod", "canary"] {
        let (at_target, at_source) = (
            subscriber_view(&target.url(), env).await,
            subscriber_view(&source.url(), env).await,
        );
        assert_eq!(at_target, at_source, "{env}");
    }
    assert_eq!(
        subscriber_view(&target.url(), "prod").await.1[0],
        json!(SECRET)
    );
    assert_eq!(
        subscriber_view(&target.url(), "canary").await.1[1],
        json!(10),
        "inherited from prod"
    );

    // The restored cluster goes on: rollback across the restore, new changes, the chain continues.
    ok(&target.url(), &["rollback", NS, "prod", "--to", "3"]).await;
    let api = crate::api(&target.url()).await;
    let outcome = set_keys(&api, NS, "prod", &[("db.pool", json!(30))]).await;
    assert_eq!(outcome.version, 6);
    let chain = audit_verify(&target.url()).await;
    assert_eq!(chain["problems"], json!([]), "{chain}");
    assert!(
        chain["records"].as_u64() > target_chain["records"].as_u64(),
        "{chain}"
    );
    let history = json(&ok(&target.url(), &["--json", "history", NS, "prod"]).await);
    assert_eq!(
        history["change_sets"].as_array().map(Vec::len),
        Some(6),
        "{history}"
    );
}

/// The audit stream's raw records (bytes), up to its last sequence.
async fn audit_verify_raw(url: &str) -> Vec<Vec<u8>> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("MYCOSYNTH_AUDIT").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    audit_bytes(url, last).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writes_continue_holds_one_whole_version_per_environment() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busy.myco");
    let source = NatsServer::start();
    let _validator = Validator::start(&source.url(), &[]);
    let api = crate::api(&source.url()).await;
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = tokio::spawn({
        let (api, writing) = (api.clone(), std::sync::Arc::clone(&writing));
        async move {
            let mut n = 0u64;
            while writing.load(std::sync::atomic::Ordering::Relaxed) || n < 30 {
                n += 1;
                for env in ["e1", "e2", "e3"] {
                    // Two keys in one change set: a backup must never hold one without the other.
                    set_keys(&api, "busy", env, &[("a", json!(n)), ("b", json!(n))]).await;
                }
            }
            n
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = run_cli(
        &source.url(),
        &["--json", "backup", archive.to_str().unwrap()],
    )
    .await;
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(out.status.success(), "backup: {}", stderr(&out));

    let target = NatsServer::start();
    let restore = restore(&target.url(), &archive, None, &[]).await;
    assert!(restore.status.success(), "{}", stderr(&restore));
    let _target_validator = Validator::start(&target.url(), &[]);
    for env in ["e1", "e2", "e3"] {
        let get = json(&ok(&target.url(), &["--json", "get", "busy", env]).await);
        let version = get["version"].as_u64().unwrap();
        let (a, b) = (&get["values"][0][1], &get["values"][1][1]);
        assert_eq!(
            (a["value"].clone(), b["value"].clone()),
            (json!(version), json!(version)),
            "{env}: {get}"
        );
        assert!(
            version < written,
            "{env}: the backup was taken while writes continued"
        );
        let history = json(
            &ok(
                &target.url(),
                &["--json", "history", "busy", env, "--limit", "1000"],
            )
            .await,
        );
        let versions: Vec<u64> = history["change_sets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["version"].as_u64().unwrap())
            .collect();
        assert_eq!(versions, (1..=version).rev().collect::<Vec<_>>(), "{env}");
    }
}

fn flipped(archive: &Path, at: usize, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(archive).unwrap();
    bytes[at] ^= 0x10;
    let path = dir.join(format!("flipped-{at}.myco"));
    std::fs::write(&path, bytes).unwrap();
    path
}

async fn streams(url: &str) -> usize {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names: Vec<_> = futures::StreamExt::collect(js.stream_names()).await;
    names.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flipped_anywhere_in_the_archive_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let key_arg = key.to_str().unwrap();
    let archive = dir.path().join("cluster.myco");
    let source = NatsServer::start();
    let _validator = Validator::start(&source.url(), &[]);
    populate(&source.url(), dir.path()).await;
    ok(
        &source.url(),
        &["backup", archive.to_str().unwrap(), "--key-file", key_arg],
    )
    .await;
    let len = std::fs::metadata(&archive).unwrap().len() as usize;

    let target = NatsServer::start();
    // The magic, the format, the manifest, every 1/40 of the file, the last byte (trailer).
    let mut positions: Vec<usize> = vec![0, 17, 24, 40, len - 1];
    positions.extend((1..40).map(|i| i * len / 40));
    for at in positions {
        let damaged = flipped(&archive, at, dir.path());
        let out = restore(&target.url(), &damaged, Some(&key), &[]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(13), "byte {at}: {err}");
        assert!(
            err.contains("damaged")
                || err.contains("not a Mycosynth backup")
                || err.contains("format")
                || err.contains("truncated"),
            "byte {at}: {err}"
        );
        assert!(
            err.contains(damaged.to_str().unwrap()),
            "names the file: {err}"
        );
    }
    let cut = dir.path().join("cut.myco");
    std::fs::write(&cut, &std::fs::read(&archive).unwrap()[..len / 2]).unwrap();
    let out = restore(&target.url(), &cut, Some(&key), &[]).await;
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    // Without the key, or with another, the data keys cannot be opened: refused too.
    let out = restore(&target.url(), &archive, None, &[]).await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("--key-file"), "{}", stderr(&out));
    let other = dir.path().join("other.key");
    std::fs::write(&other, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    let out = restore(&target.url(), &archive, Some(&other), &[]).await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not the key it was made with"),
        "{}",
        stderr(&out)
    );
    // Nothing was written by any of them.
    assert_eq!(streams(&target.url()).await, 0);

    // The intact archive restores; a second restore into the now non-empty cluster is refused
    // unless --force; never while a validator runs.
    let restored = restore(&target.url(), &archive, Some(&key), &[]).await;
    assert!(restored.status.success(), "{}", stderr(&restored));
    let again = restore(&target.url(), &archive, Some(&key), &[]).await;
    assert_eq!(again.status.code(), Some(14), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("not empty") && stderr(&again).contains("KV_mycosynth-config"),
        "{}",
        stderr(&again)
    );
    let mut running = Validator::start(&target.url(), &[]);
    let busy = restore(&target.url(), &archive, Some(&key), &["--force"]).await;
    assert_eq!(busy.status.code(), Some(14), "{}", stderr(&busy));
    assert!(
        stderr(&busy).contains("validator is running"),
        "{}",
        stderr(&busy)
    );
    running.kill();
    let forced = restore(&target.url(), &archive, Some(&key), &["--force"]).await;
    assert!(forced.status.success(), "{}", stderr(&forced));
    let _validator = Validator::start(&target.url(), &[]);
    assert_eq!(audit_verify(&target.url()).await["problems"], json!([]));
}
