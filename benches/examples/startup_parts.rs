//! Where a subscriber's startup time goes, for a namespace of 10,890 keys (the bench's): the
//! ordered-consumer scan alone, parsing the scanned value records afterwards, and a whole
//! `connect` → first read (which parses while the scan is still arriving). Five rounds.
//! `cargo run --release -p mycosynth-benches --example startup_parts` (`MYCOSYNTH_BIN` to use
//! an already built validator).

use std::time::{Duration, Instant};

use mycosynth::client::ApiClient;
use mycosynth_benches::paths::seed_keys;
use mycosynth_subscriber::kv_scan::scan;
use mycosynth_subscriber::wire::{ValueRecord, CONFIG_BUCKET};
use mycosynth_subscriber::Subscriber;
use serde_json::Value;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let nats = mycosynth_testkit::NatsServer::start();
    let _validator = mycosynth_testkit::Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let api = ApiClient::connect(&url, Duration::from_secs(10))
        .await
        .expect("api");
    seed_keys(&api, "big", 10_890).await;
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.expect("connect"));
    for _ in 0..5 {
        let started = Instant::now();
        let entries = scan(&js, CONFIG_BUCKET, "big.prod.>", Duration::from_secs(10))
            .await
            .expect("scan");
        let scanned = started.elapsed();
        let started = Instant::now();
        let parsed = entries
            .iter()
            .filter(|e| serde_json::from_slice::<ValueRecord>(&e.payload).is_ok())
            .count();
        let parse = started.elapsed();
        let started = Instant::now();
        let config = Subscriber::builder("big", "prod")
            .nats_url(&url)
            .connect()
            .await
            .expect("subscriber");
        let _: Value = config.get("key.10.989").expect("first read");
        let total = started.elapsed();
        config.shutdown().await;
        println!(
            "scan of {} entries {:.1} ms, parsing {parsed} value records after it {:.1} ms; connect → first read {:.1} ms",
            entries.len(),
            ms(scanned),
            ms(parse),
            ms(total)
        );
    }
}
