//! What the event subject's fan-out costs against the KV floor's, without a validator: p50 over
//! many changes with one in flight, three paths sampled in turn, each to the LAST of N receivers
//! with a NATS connection of its own:
//! - the KV floor: a raw KV put until N KV watchers deliver it;
//! - commit, then event: a KV put, its ack, then a core publish (the validator's order, without
//!   its request hop and validation) until N plain subscriptions receive it;
//! - republish: a KV put to a bucket whose stream republishes each stored message (headers only,
//!   with a header the size of a change event) to a core subject, until N subscriptions of it
//!   receive it: the server delivering the commit itself.
//!
//! `cargo run --release -p mycosynth-benches --example commit_fanout` (`FANOUT_N` receivers,
//! default 100; `FANOUT_SAMPLES`, default 500).

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream::Republish};
use futures::future::join_all;
use futures::StreamExt;
use mycosynth_benches::paths::KvFloor;
use mycosynth_benches::{env_or, p50_us as p50};

const WARMUP: u64 = 100;

/// `n` connections, each subscribed to `subject` (the connections are kept alive alongside).
async fn subscriptions(
    url: &str,
    subject: &str,
    n: usize,
) -> Vec<(async_nats::Client, async_nats::Subscriber)> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let client = async_nats::connect(url).await.expect("connect");
        let subscription = client
            .subscribe(subject.to_owned())
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        all.push((client, subscription));
    }
    all
}

/// From `send` starting until every subscription has received a message.
async fn to_last(
    receivers: &mut [(async_nats::Client, async_nats::Subscriber)],
    send: impl std::future::Future<Output = ()>,
) -> Duration {
    let started = Instant::now();
    let received = join_all(receivers.iter_mut().map(|(_, s)| s.next()));
    tokio::join!(send, received);
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let n = usize::try_from(env_or("FANOUT_N", 100)).expect("FANOUT_N");
    let samples = env_or("FANOUT_SAMPLES", 500);
    let nats = mycosynth_testkit::NatsServer::start();
    let url = nats.url();
    let mut floor = KvFloor::start(&url, "commit_fanout_floor", n).await;

    let writer = async_nats::connect(&url).await.expect("connect");
    let js = jetstream::new(writer.clone());
    let committed = js
        .create_key_value(kv::Config {
            bucket: "commit_then_event".into(),
            ..Default::default()
        })
        .await
        .expect("bucket");
    js.create_key_value(kv::Config {
        bucket: "republished".into(),
        republish: Some(Republish {
            source: "$KV.republished.>".into(),
            destination: "commit_fanout.republished.>".into(),
            headers_only: true,
        }),
        ..Default::default()
    })
    .await
    .expect("bucket");
    let mut events = subscriptions(&url, "commit_fanout.event", n).await;
    let mut republished = subscriptions(&url, "commit_fanout.republished.k", n).await;
    // About the size of a one-key change event.
    let event = bytes::Bytes::from(vec![1u8; 220]);
    let event_header = "A".repeat(300);

    let (mut on_floor, mut on_events, mut on_republish) = (vec![], vec![], vec![]);
    for i in 0..WARMUP + samples {
        let a = floor.sample(i).await;
        let b = to_last(&mut events, async {
            committed.put("k", i.to_string().into()).await.expect("put");
            writer
                .publish("commit_fanout.event", event.clone())
                .await
                .expect("publish");
            writer.flush().await.expect("flush");
        })
        .await;
        let c = to_last(&mut republished, async {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Mycosynth-Event", event_header.as_str());
            js.publish_with_headers("$KV.republished.k", headers, i.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        })
        .await;
        if i >= WARMUP {
            on_floor.push(a);
            on_events.push(b);
            on_republish.push(c);
        }
    }
    println!("to the last of {n}, p50 µs over {samples} changes, sampled in turn:");
    println!(
        "  raw KV put → KV watchers (the floor)         {}",
        p50(on_floor)
    );
    println!(
        "  KV put, its ack, core publish → subscribers  {}",
        p50(on_events)
    );
    println!(
        "  KV put → republished to subscribers          {}",
        p50(on_republish)
    );
}
