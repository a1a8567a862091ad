//! What a namespace's JSON Schema costs a change: p50 of the reply to a one-key change request
//! (one in flight) in a namespace of `SCHEMA_KEYS` other keys (default 10,000), without a
//! schema and under a schema whose rules apply key by key (`SCHEMA_PROPERTIES` keys named one
//! by one, default 1,000, the rest by pattern), with how many change sets the validator checked
//! key by key and on the whole document; then, under the schema, from a change request until a
//! subscriber that checks each snapshot against the schema (`validate_against_schema`) holds it.
//! `cargo run --release -p mycosynth-benches --example schema_cost` (`MYCOSYNTH_BIN` to use an
//! already built validator).

use std::time::{Duration, Instant};

use mycosynth::client::ApiClient;
use mycosynth_benches::paths::{sample_change, seed_keys, time_change};
use mycosynth_benches::{env_or, p50_us as p50};
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, SchemaPushRequest};
use mycosynth_subscriber::Subscriber;
use serde_json::json;

const WARMUP: u64 = 300;
const SAMPLES: u64 = 1200;

#[tokio::main]
async fn main() {
    let nats = mycosynth_testkit::NatsServer::start();
    let url = nats.url();
    let validator = mycosynth_testkit::Validator::start(&url, &[]);
    let api = ApiClient::connect(&url, Duration::from_secs(10))
        .await
        .expect("api");
    let keys = usize::try_from(env_or("SCHEMA_KEYS", 10_000)).expect("SCHEMA_KEYS");
    // The keys `seed_keys` and `sample_change` write, each with its own rule: the first
    // `SCHEMA_PROPERTIES` named one by one, as a large service's schema names its keys.
    let named = env_or("SCHEMA_PROPERTIES", 1_000);
    let entry = json!({
        "type": "object",
        "description": "a seeded key",
        "properties": {"n": {"type": "integer"}, "text": {"type": "string"}}
    });
    let mut properties = serde_json::Map::new();
    properties.insert(
        "http.timeout_ms".into(),
        json!({"type": "integer", "minimum": 0}),
    );
    for k in 0..named {
        properties.insert(format!("key.{}.{}", k / 990, k % 990), entry.clone());
    }
    let schema = json!({
        "type": "object",
        "properties": properties,
        "patternProperties": {"^key\\.": entry},
        "additionalProperties": false
    });
    println!("schema of {} bytes", schema.to_string().len());
    for (ns, with_schema) in [("noschema", false), ("withschema", true)] {
        if with_schema {
            let push = SchemaPushRequest {
                namespace: ns.into(),
                schema: schema.clone(),
                force: false,
                author: "bench".into(),
            };
            let _: serde_json::Value = api.call(endpoint::SCHEMA_PUSH, &push).await.expect("push");
        }
        seed_keys(&api, ns, keys).await;
        let mut replies = Vec::new();
        for i in 0..WARMUP + SAMPLES {
            let started = Instant::now();
            let _: ChangeOutcome = api
                .call(endpoint::CHANGE, &sample_change(ns, i))
                .await
                .expect("change");
            if i >= WARMUP {
                replies.push(started.elapsed());
            }
        }
        println!(
            "{ns}, {keys} other keys: one-key change, reply p50 {} µs",
            p50(replies)
        );
    }
    let checking = Subscriber::builder("withschema", "prod")
        .nats_url(url.clone())
        .validate_against_schema(true)
        .connect()
        .await
        .expect("subscriber");
    let mut applied = Vec::new();
    for i in 0..WARMUP + SAMPLES {
        let target = checking.version() + 1;
        let held = async {
            checking
                .wait_for_version(target, Duration::from_secs(10))
                .await;
        };
        let took = time_change(&api, &sample_change("withschema", i), held).await;
        if i >= WARMUP {
            applied.push(took);
        }
    }
    println!(
        "withschema: one-key change → a validating subscriber holds it, p50 {} µs",
        p50(applied)
    );
    let checks = |scope: &str| {
        validator.metric(
            "mycosynth_validator_schema_checks_total",
            &format!("scope=\"{scope}\""),
        )
    };
    println!(
        "change sets checked key by key: {}, on the whole document: {}",
        checks("keys"),
        checks("document")
    );
}
