//! Where the time of a change to many subscribers goes: p50 over many changes with one in
//! flight, the four paths sampled in turn, each to the LAST of N receivers with a NATS
//! connection of its own:
//! - a change request until N subscribers (the subscriber crate) hold it;
//! - a change request until N plain subscriptions of the event subject receive the event;
//! - the same, each subscription read by a task of its own that decodes the event and hands its
//!   version on through a watch (the shape of a subscriber, without its work);
//! - the KV floor: a raw KV put until N KV watchers deliver it.
//!
//! The first two say what the event subject's fan-out costs against the floor's, and what the
//! subscriber adds on top of it; the third, how much of that is the task hop alone.
//! `cargo run --release -p mycosynth-benches --example fanout` (`FANOUT_N` receivers, default
//! 100; `FANOUT_SAMPLES`, default 400; `FANOUT_KEYS` other keys in each namespace, default 0, to
//! see how a change's cost grows with the namespace; `MYCOSYNTH_BIN` to use an already built
//! validator).

use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use mycosynth::client::ApiClient;
use mycosynth_benches::paths::{sample_change, seed_keys, time_change, KvFloor, Propagation};
use mycosynth_benches::{env_or, p50_us as p50};
use mycosynth_subscriber::wire::ChangeEvent;
use tokio::sync::watch;

const WARMUP: u64 = 100;

/// From sending change `i` to `ns` until every watch holds a version past the one before it.
async fn to_last_version(
    api: &ApiClient,
    ns: &str,
    i: u64,
    versions: &mut [watch::Receiver<u64>],
) -> Duration {
    let target = *versions[0].borrow() + 1;
    let applied = async {
        join_all(versions.iter_mut().map(|w| async move {
            let _ = w.wait_for(|v| *v >= target).await;
        }))
        .await;
    };
    time_change(api, &sample_change(ns, i), applied).await
}

/// From sending change `i` to `ns` until every subscription has received a message.
async fn to_last_message(
    api: &ApiClient,
    ns: &str,
    i: u64,
    subscriptions: &mut [async_nats::Subscriber],
) -> Duration {
    let received = async {
        join_all(subscriptions.iter_mut().map(|s| s.next())).await;
    };
    time_change(api, &sample_change(ns, i), received).await
}

async fn plain_subscription(url: &str, ns: &str) -> (async_nats::Client, async_nats::Subscriber) {
    let client = async_nats::connect(url).await.expect("connect");
    let subscription = client
        .subscribe(format!("mycosynth.events.prod.{ns}"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    (client, subscription)
}

#[tokio::main]
async fn main() {
    let n = env_or("FANOUT_N", 100);
    let samples = env_or("FANOUT_SAMPLES", 400);
    let nats = mycosynth_testkit::NatsServer::start();
    let url = nats.url();
    let _validator = mycosynth_testkit::Validator::start(&url, &[]);
    let api = ApiClient::connect(&url, Duration::from_secs(10))
        .await
        .expect("api");
    // Keys the samples do not change, to see a change's cost grow with the namespace.
    let keys = usize::try_from(env_or("FANOUT_KEYS", 0)).expect("FANOUT_KEYS");
    for ns in ["fanout", "fanplain", "fantask"] {
        seed_keys(&api, ns, keys).await;
    }
    let count = usize::try_from(n).expect("FANOUT_N");
    let subscribers = Propagation::start(&api, &url, "fanout", count).await;
    let mut kv_floor = KvFloor::start(&url, "fanout_floor", count).await;
    let (mut connections, mut plain, mut tasked) = (vec![], vec![], vec![]);
    for _ in 0..count {
        let (client, subscription) = plain_subscription(&url, "fanplain").await;
        connections.push(client);
        plain.push(subscription);
        let (client, mut subscription) = plain_subscription(&url, "fantask").await;
        let (version, held) = watch::channel(0u64);
        tokio::spawn(async move {
            let _connection = client;
            while let Some(message) = subscription.next().await {
                if let Ok(event) = ChangeEvent::decode(&message.payload) {
                    version.send_replace(event.version);
                }
            }
        });
        tasked.push(held);
    }

    let (mut ours, mut events, mut tasks, mut floor) = (vec![], vec![], vec![], vec![]);
    for i in 0..WARMUP + samples {
        let a = subscribers.sample(&api, i).await;
        let b = to_last_message(&api, "fanplain", i, &mut plain).await;
        let c = to_last_version(&api, "fantask", i, &mut tasked).await;
        let d = kv_floor.sample(i).await;
        if i >= WARMUP {
            ours.push(a);
            events.push(b);
            tasks.push(c);
            floor.push(d);
        }
    }
    println!("to the last of {n}, p50 µs over {samples} changes, sampled in turn:");
    println!("  change → subscribers hold it             {}", p50(ours));
    println!(
        "  change → plain subscriptions get the event {}",
        p50(events)
    );
    println!("  change → a task per subscription, decoded {}", p50(tasks));
    println!("  raw KV put → KV watchers (the floor)      {}", p50(floor));
}
