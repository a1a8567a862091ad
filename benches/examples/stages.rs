//! Where the time of one change goes, p50 over many changes with one in flight: from sending a
//! change request until the validator stamps its commit time (request hop and validation), from
//! that stamp until the change event arrives (commit point and event hop), the event and the
//! reply from the send, and a raw core NATS request/reply for scale.
//! `cargo run --release -p mycosynth-benches --example stages` (`STAGES_N` changes, default
//! 1,500; `MYCOSYNTH_BIN` to use an already built validator).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{endpoint, ChangeEvent, ChangeOutcome, ChangeRequest, KeyChange};
use serde_json::json;

const WARMUP: usize = 300;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn p50(mut samples: Vec<i64>) -> i64 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let nats = mycosynth_testkit::NatsServer::start();
    let _validator = mycosynth_testkit::Validator::start(&nats.url(), &[]);
    let api = ApiClient::connect(&nats.url(), Duration::from_secs(10))
        .await
        .expect("api");

    let responder = async_nats::connect(nats.url()).await.expect("connect");
    let mut echo = responder.subscribe("stages.echo").await.expect("subscribe");
    responder.flush().await.expect("flush");
    tokio::spawn(async move {
        while let Some(m) = echo.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    let asker = async_nats::connect(nats.url()).await.expect("connect");
    let mut raw = Vec::new();
    for _ in 0..1500 {
        let started = Instant::now();
        let _ = asker.request("stages.echo", "x".into()).await;
        raw.push(started.elapsed().as_micros() as i64);
    }
    println!("raw core NATS request/reply p50 {} µs", p50(raw));

    let watcher = async_nats::connect(nats.url()).await.expect("connect");
    let mut events = watcher
        .subscribe("mycosynth.events.prod.stages")
        .await
        .expect("subscribe");
    watcher.flush().await.expect("flush");
    let n: usize = std::env::var("STAGES_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1500);
    let (mut to_stamp, mut to_event, mut event_t, mut reply_t) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let change = ChangeRequest::new(
            "stages",
            "prod",
            vec![KeyChange::set("http.timeout_ms", json!(i))],
            "bench",
        );
        let sent_us = now_us();
        let started = Instant::now();
        let event = async {
            let message = events.next().await.expect("event");
            let event = ChangeEvent::decode(&message.payload).expect("event decodes");
            (event.committed_at_us, now_us(), started.elapsed())
        };
        let reply = async {
            let _: ChangeOutcome = api.call(endpoint::CHANGE, &change).await.expect("change");
            started.elapsed()
        };
        let ((stamped_us, received_us, e), r) = tokio::join!(event, reply);
        if i >= WARMUP {
            to_stamp.push(stamped_us - sent_us);
            to_event.push(received_us - stamped_us);
            event_t.push(e.as_micros() as i64);
            reply_t.push(r.as_micros() as i64);
        }
    }
    println!(
        "p50 µs: send → commit time stamped {}, stamped → event received {}; event {}, reply {}",
        p50(to_stamp),
        p50(to_event),
        p50(event_t),
        p50(reply_t)
    );
}
