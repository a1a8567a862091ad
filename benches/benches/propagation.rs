//! Change propagation, end to end: from the moment a client sends a change request to the
//! validator until a subscriber's snapshot holds the new version, one change in flight at a
//! time; beside it, in the same run, the floor: a raw KV put to a raw KV watch, and a core NATS
//! publish to a subscriber. Prints a Markdown table and writes target/bench/report.json.

use std::time::{Duration, Instant};

use futures::StreamExt;
use mycosynth::client::ApiClient;
use mycosynth_benches::{histogram, Stack, Summary};
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, ChangeSource, KeyChange};
use mycosynth_subscriber::Subscriber;
use serde_json::json;

const WARMUP: u64 = 200;
const SAMPLES: u64 = 2000;

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks harness=false benches to list; nothing to list.
    }
    let stack = Stack::start().await;
    let url = stack.nats.url();
    let propagation = mycosynth_propagation(&url).await;
    let kv = kv_floor(&url).await;
    let core = core_floor(&url).await;

    println!("\n| path (µs) | p50 | p90 | p99 | p99.9 | max | n |\n|---|---|---|---|---|---|---|");
    println!(
        "{}",
        propagation.row("mycosynth: request → subscriber holds it")
    );
    println!("{}", kv.row("floor: raw KV put → KV watch"));
    println!("{}", core.row("floor: core NATS publish → subscriber"));
    let report = json!({
        "propagation_us": {"1": propagation},
        "floor_kv_watch_us": {"1": kv},
        "floor_core_pubsub_us": core,
        "ratios": {"p50_vs_kv_floor": propagation.p50 / kv.p50, "p99_vs_kv_floor": propagation.p99 / kv.p99},
        "note": "one change in flight; nats-server with default JetStream sync_interval",
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("report.json");
    match std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    ) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(err) => eprintln!("could not write {}: {err}", path.display()),
    }
}

async fn mycosynth_propagation(url: &str) -> Summary {
    let api = ApiClient::connect(url, Duration::from_secs(10))
        .await
        .expect("api");
    let config = Subscriber::builder("bench", "prod")
        .nats_url(url)
        .connect()
        .await
        .expect("subscriber");
    let mut h = histogram();
    for i in 0..WARMUP + SAMPLES {
        let mut version = config.version_watch();
        let target = config.version() + 1;
        let request = ChangeRequest {
            namespace: "bench".into(),
            environment: "prod".into(),
            changes: vec![KeyChange {
                key: "http.timeout_ms".into(),
                value: Some(json!(i)),
            }],
            expected_version: None,
            author: "bench".into(),
            reason: String::new(),
            source: ChangeSource::Api,
            git_commit: None,
            dry_run: false,
            replace: false,
            request_id: None,
        };
        let started = Instant::now();
        let applied = async {
            let _ = version.wait_for(|v| *v >= target).await;
            started.elapsed()
        };
        let (reply, elapsed) = tokio::join!(
            api.call::<_, ChangeOutcome>(endpoint::CHANGE, &request),
            applied
        );
        reply.expect("change accepted");
        if i >= WARMUP {
            let _ = h.record(elapsed.as_nanos() as u64);
        }
    }
    Summary::of(&h)
}

async fn kv_floor(url: &str) -> Summary {
    let writer = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    let reader = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    let kv = writer
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "bench-floor".into(),
            ..Default::default()
        })
        .await
        .expect("bucket");
    let watched = reader.get_key_value("bench-floor").await.expect("bucket");
    let mut watch = watched.watch("k").await.expect("watch");
    let mut h = histogram();
    for i in 0..WARMUP + SAMPLES {
        let started = Instant::now();
        kv.put("k", i.to_string().into()).await.expect("put");
        let _ = watch.next().await;
        if i >= WARMUP {
            let _ = h.record(started.elapsed().as_nanos() as u64);
        }
    }
    Summary::of(&h)
}

async fn core_floor(url: &str) -> Summary {
    let publisher = async_nats::connect(url).await.expect("connect");
    let subscriber = async_nats::connect(url).await.expect("connect");
    let mut sub = subscriber
        .subscribe("bench.floor")
        .await
        .expect("subscribe");
    subscriber.flush().await.expect("flush");
    let mut h = histogram();
    for i in 0..WARMUP + SAMPLES {
        let started = Instant::now();
        publisher
            .publish("bench.floor", "x".into())
            .await
            .expect("publish");
        let _ = sub.next().await;
        if i >= WARMUP {
            let _ = h.record(started.elapsed().as_nanos() as u64);
        }
    }
    Summary::of(&h)
}
