use std::time::Duration;

use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::{json, CliProcess, NatsServer, Validator};
use serde_json::json;

use crate::{run_cli, set_keys, stderr};

/// Acceptance 1: `set` in one process, a subscriber (`mycosynth watch`) in another holds the
/// value; prints the commit-to-apply time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_set_reaches_a_subscriber_in_another_process() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let watcher = CliProcess::spawn(
        &nats.url(),
        &["watch", "payment-service", "production", "--json"],
    );
    let (_, first) = watcher
        .wait_line(0, Duration::from_secs(20), |l| {
            l.contains("\"cause\":\"load\"")
        })
        .expect("watch loaded");
    assert_eq!(json(&first)["version"], 0);

    let out = run_cli(
        &nats.url(),
        &[
            "set",
            "payment-service",
            "production",
            "database.pool_size",
            "50",
            "--reason",
            "peak",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let (_, line) = watcher
        .wait_line(1, Duration::from_secs(10), |l| {
            json(l)["values"]["database.pool_size"] == 50
        })
        .expect("the watching process holds the new value");
    let event = json(&line);
    assert_eq!(event["version"], 1);
    assert_eq!(event["author"], "test-operator");
    assert_eq!(event["reason"], "peak");
    println!(
        "commit-to-apply in another process: {} µs",
        event["delay_us"]
    );
}

/// Acceptance 3: a 50-key apply becomes visible all at once; a reader looping on the snapshot
/// never sees a mix of old and new values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_of_fifty_keys_is_never_seen_half_done() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let write = |generation: u64| {
        let path = dir.path().join(format!("gen{generation}.yaml"));
        let body: String = (0..50)
            .map(|i| format!("pool.key{i:02}: {generation}\n"))
            .collect();
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    };
    let out = run_cli(
        &nats.url(),
        &[
            "apply",
            &write(0),
            "--namespace",
            "inventory",
            "--env",
            "staging",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let config = Subscriber::builder("inventory", "staging")
        .nats_url(nats.url())
        .connect()
        .await
        .unwrap();
    assert_eq!(config.snapshot().len(), 50);
    let reader = {
        let config = config.clone();
        std::thread::spawn(move || {
            let (mut reads, mut versions) = (0u64, std::collections::BTreeSet::new());
            while versions.len() < 6 && reads < 50_000_000 {
                let snapshot = config.snapshot();
                let values: std::collections::BTreeSet<u64> = snapshot
                    .iter()
                    .map(|(_, v)| v.as_u64().unwrap_or(u64::MAX))
                    .collect();
                assert_eq!(
                    values.len(),
                    1,
                    "version {} mixes generations: {values:?}",
                    snapshot.version()
                );
                assert_eq!(snapshot.len(), 50);
                versions.insert(snapshot.version());
                reads += 1;
            }
            (reads, versions)
        })
    };
    for generation in 1..=5 {
        let out = run_cli(
            &nats.url(),
            &[
                "apply",
                &write(generation),
                "--namespace",
                "inventory",
                "--env",
                "staging",
            ],
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            config
                .wait_for_version(generation + 1, Duration::from_secs(10))
                .await
        );
    }
    let (reads, versions) = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    println!("{reads} snapshot reads saw versions {versions:?}");
    assert_eq!(config.get::<u64>("pool.key49").unwrap(), 5);
}

/// Acceptance 8: a NATS KV client that is not ours (nats-py) reads a stored value as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_kv_client_reads_plain_json() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    set_keys(
        &api,
        "payment-service",
        "production",
        &[("database.pool_size", json!(42))],
    )
    .await;

    let script = r#"
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    kv = await nc.jetstream().key_value("mycosynth-config")
    entry = await kv.get("payment-service.production.database.pool_size")
    print(entry.value.decode())
    await nc.close()
asyncio.run(main())
"#;
    let out = std::process::Command::new(mycosynth_testkit::python_bin())
        .args(["-c", script, &nats.url()])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stored value is JSON");
    assert_eq!(record["value"], 42);
    assert_eq!(record["version"], 1);
    assert_eq!(record["author"], "test");
    assert!(record["time"].as_str().is_some_and(|t| t.ends_with('Z')));
}

/// `apply --dry-run` prints the diff and the verdict and writes nothing; `--prune` deletes the
/// live keys a file does not name; `history --key` lists only the versions that touched it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_dry_run_prune_and_history_by_key() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.yaml");
    std::fs::write(&first, "a: 1\nb: two\nc: [3]\n").unwrap();
    let second = dir.path().join("second.json");
    std::fs::write(&second, r#"{"a": 10, "c": [3]}"#).unwrap();
    let (first, second) = (first.display().to_string(), second.display().to_string());
    let apply = |file: &str, extra: &[&str]| {
        let mut args = vec![
            "apply".to_string(),
            file.to_string(),
            "--namespace".into(),
            "shop".into(),
            "--env".into(),
            "prod".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move { run_cli(&url, &args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };

    let out = run(apply(&first, &["--dry-run"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = crate::stdout(&out);
    assert!(
        text.contains("+ a = 1") && text.contains("dry run: valid; 3 key(s) would change"),
        "{text}"
    );
    let got = run(vec![
        "--json".into(),
        "get".into(),
        "shop".into(),
        "prod".into(),
    ])
    .await;
    assert_eq!(
        json(&crate::stdout(&got))["version"],
        0,
        "dry run wrote nothing"
    );

    assert!(run(apply(&first, &[])).await.status.success());
    let out = run(apply(&second, &["--prune", "--reason", "trim"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = crate::stdout(&out);
    assert!(
        text.contains("~ a: 1 -> 10")
            && text.contains("- b (was \"two\")")
            && !text.lines().any(|l| l.get(2..3) == Some("c")),
        "{text}"
    );
    let got = json(&crate::stdout(
        &run(vec![
            "--json".into(),
            "get".into(),
            "shop".into(),
            "prod".into(),
        ])
        .await,
    ));
    let keys: Vec<&str> = got["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[0].as_str())
        .collect();
    assert_eq!((got["version"].clone(), keys), (json!(2), vec!["a", "c"]));

    let history = json(&crate::stdout(
        &run(vec![
            "--json".into(),
            "history".into(),
            "shop".into(),
            "prod".into(),
            "--key".into(),
            "b".into(),
        ])
        .await,
    ));
    let versions: Vec<u64> = history["change_sets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["version"].as_u64())
        .collect();
    assert_eq!(
        versions,
        [2, 1],
        "both versions touched b (set, then pruned)"
    );
    let history = json(&crate::stdout(
        &run(vec![
            "--json".into(),
            "history".into(),
            "shop".into(),
            "prod".into(),
            "--key".into(),
            "c".into(),
        ])
        .await,
    ));
    assert_eq!(
        history["change_sets"].as_array().unwrap().len(),
        1,
        "c changed only once"
    );
}
