//! Read path: `Subscriber::get` from the in-memory snapshot of a subscriber connected to a
//! real nats-server (reads never touch the network; this measures the snapshot load, the map
//! lookup and serde).

use criterion::{criterion_group, criterion_main, Criterion};
use mycosynth::client::ApiClient;
use mycosynth_benches::Stack;
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, KeyChange};
use mycosynth_subscriber::Subscriber;
use serde_json::json;
use std::hint::black_box;
use std::time::Duration;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Database {
    host: String,
    pool_size: u32,
    timeout_ms: u64,
}

fn reads(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (_stack, config, quiet) = runtime.block_on(async {
        let stack = Stack::start().await;
        let api = ApiClient::connect(&stack.nats.url(), Duration::from_secs(10))
            .await
            .expect("api");
        let mut changes: Vec<KeyChange> = (0..900)
            .map(|i| KeyChange {
                key: format!("filler.k{i}"),
                value: Some(json!(i)),
            })
            .collect();
        for (key, value) in [
            ("limits.rps", json!(5000)),
            ("database.host", json!("db-primary.payments.internal")),
            ("database.pool_size", json!(40)),
            ("database.timeout_ms", json!(250)),
        ] {
            changes.push(KeyChange {
                key: key.into(),
                value: Some(value),
            });
        }
        let request = ChangeRequest::new("bench", "prod", changes, "bench");
        let _: ChangeOutcome = api
            .call(endpoint::CHANGE, &request)
            .await
            .expect("seed config");
        let config = Subscriber::builder("bench", "prod")
            .nats_url(stack.nats.url())
            .connect()
            .await
            .expect("subscriber");
        let quiet = Subscriber::builder("bench", "prod")
            .nats_url(stack.nats.url())
            .receipts(false, Duration::from_secs(10))
            .connect()
            .await
            .expect("subscriber");
        (stack, config, quiet)
    });

    let mut group = c.benchmark_group("read");
    group.bench_function("get_integer", |b| {
        b.iter(|| black_box(config.get::<i64>(black_box("limits.rps"))))
    });
    group.bench_function("get_string", |b| {
        b.iter(|| black_box(config.get::<String>(black_box("database.host"))))
    });
    group.bench_function("get_or_missing", |b| {
        b.iter(|| black_box(config.get_or::<u32>(black_box("no.such.key"), 7)))
    });
    group.bench_function("get_section_struct", |b| {
        b.iter(|| black_box(config.get_section::<Database>(black_box("database"))))
    });
    group.bench_function("get_integer_receipts_off", |b| {
        b.iter(|| black_box(quiet.get::<i64>(black_box("limits.rps"))))
    });
    let snapshot = config.snapshot();
    group.bench_function("held_snapshot_get_integer", |b| {
        b.iter(|| black_box(snapshot.get::<i64>(black_box("limits.rps"))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = reads
}
criterion_main!(benches);
