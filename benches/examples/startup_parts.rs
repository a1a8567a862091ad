use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, KeyChange};
use mycosynth_subscriber::Subscriber;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let nats = mycosynth_testkit::NatsServer::start();
    let _validator = mycosynth_testkit::Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let api = ApiClient::connect(&url, Duration::from_secs(10))
        .await
        .unwrap();
    for chunk in 0..11 {
        let changes = (0..990)
            .map(|i| {
                KeyChange::set(
                    format!("key.{chunk}.{i}"),
                    json!({"n": i, "text": "some config value"}),
                )
            })
            .collect();
        let _: ChangeOutcome = api
            .call(
                endpoint::CHANGE,
                &ChangeRequest::new("big", "prod", changes, "bench"),
            )
            .await
            .unwrap();
    }
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for _ in 0..5 {
        let t = Instant::now();
        let entries = mycosynth_subscriber::kv_scan::scan(
            &js,
            "mycosynth-config",
            "big.prod.>",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let scan = t.elapsed();
        let t2 = Instant::now();
        let mut n = 0;
        for e in &entries {
            if let Ok(v) =
                serde_json::from_slice::<mycosynth_subscriber::wire::ValueRecord>(&e.payload)
            {
                n += v.version as usize & 1;
            }
        }
        let parse = t2.elapsed();
        let t = Instant::now();
        let config = Subscriber::builder("big", "prod")
            .nats_url(&url)
            .connect()
            .await
            .unwrap();
        let _: Value = config.get("key.10.989").unwrap();
        let total = t.elapsed();
        config.shutdown().await;
        println!("scan {} entries {:.1} ms, parse {:.1} ms; subscriber connect → first read {:.1} ms ({n})", entries.len(), scan.as_secs_f64()*1e3, parse.as_secs_f64()*1e3, total.as_secs_f64()*1e3);
    }
}
