//! The two paths every latency figure is taken on, set up once and sampled many times: a
//! change to N subscribers ([`Propagation`]) and the KV floor to N watchers ([`KvFloor`]).

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::StreamExt;
use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{endpoint, ApiError, ChangeOutcome, ChangeRequest, KeyChange};
use mycosynth_subscriber::Subscriber;
use serde_json::json;

/// How long a change the validator committed may take to arrive before the bench gives up.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `request` to the validator and times it until `arrived` completes (the change reaching
/// whatever the caller waits on). The reply is awaited alongside and must commit a version: one
/// that does not (an error, a timeout, a change request, an empty diff) means nothing will
/// arrive, so it fails the bench at once with the reply instead of leaving it waiting forever.
pub async fn time_change(
    api: &ApiClient,
    request: &ChangeRequest,
    arrived: impl Future<Output = ()>,
) -> Duration {
    let started = Instant::now();
    let mut arrived = pin!(async {
        arrived.await;
        started.elapsed()
    });
    let mut reply = pin!(api.call::<_, ChangeOutcome>(endpoint::CHANGE, request));
    tokio::select! {
        elapsed = &mut arrived => {
            committed(request, reply.await);
            elapsed
        }
        outcome = &mut reply => {
            committed(request, outcome);
            tokio::time::timeout(ARRIVAL_TIMEOUT, arrived).await.unwrap_or_else(|_| {
                panic!(
                    "change to {}/{} committed but not arrived after {ARRIVAL_TIMEOUT:?}",
                    request.namespace, request.environment
                )
            })
        }
    }
}

/// Fails the bench unless `reply` committed a version.
fn committed(request: &ChangeRequest, reply: Result<ChangeOutcome, ApiError>) {
    match reply {
        Ok(outcome) if outcome.committed => {}
        other => panic!(
            "change to {}/{} committed nothing, so it cannot arrive: {other:?}",
            request.namespace, request.environment
        ),
    }
}

/// Fills `ns`/prod with `keys` keys, `key.<c>.<i>` (change set `c`, key `i` of it), in change
/// sets of 990 keys: the bench's large namespace is 11 of them, 10,890 keys up to `key.10.989`.
pub async fn seed_keys(api: &ApiClient, ns: &str, keys: usize) {
    let names: Vec<String> = (0..keys)
        .map(|k| format!("key.{}.{}", k / SEED_SET, k % SEED_SET))
        .collect();
    for names in names.chunks(SEED_SET) {
        let changes = names
            .iter()
            .map(|name| KeyChange::set(name.as_str(), json!({"n": 1, "text": "some config value"})))
            .collect();
        let request = ChangeRequest::new(ns, "prod", changes, "bench");
        let _: ChangeOutcome = api.call(endpoint::CHANGE, &request).await.expect("seed");
    }
}

/// Keys per change set of [`seed_keys`].
const SEED_SET: usize = 990;

/// Change `i` of a sample: `http.timeout_ms` set to `i` in `ns`/prod.
pub fn sample_change(ns: &str, i: u64) -> ChangeRequest {
    let changes = vec![KeyChange::set("http.timeout_ms", json!(i))];
    ChangeRequest::new(ns, "prod", changes, "bench")
}

/// N subscribers (each with its own connection) of one namespace, ready to time changes.
pub struct Propagation {
    ns: String,
    subscribers: Vec<Subscriber>,
}

impl Propagation {
    /// Commits a first version of `ns`/prod (key `seed`), then connects `count` subscribers.
    pub async fn start(api: &ApiClient, url: &str, ns: &str, count: usize) -> Propagation {
        let seed = ChangeRequest::new(ns, "prod", vec![KeyChange::set("seed", json!(0))], "b");
        let _: ChangeOutcome = api.call(endpoint::CHANGE, &seed).await.expect("seed");
        let mut subscribers = Vec::with_capacity(count);
        for _ in 0..count {
            let builder = Subscriber::builder(ns, "prod")
                .nats_url(url)
                .receipts(false, Duration::from_secs(10));
            subscribers.push(builder.connect().await.expect("subscriber"));
        }
        Propagation {
            ns: ns.to_owned(),
            subscribers,
        }
    }

    /// From sending change `i` until the last subscriber holds it.
    pub async fn sample(&self, api: &ApiClient, i: u64) -> Duration {
        let target = self.subscribers[0].version() + 1;
        let mut watches: Vec<_> = self
            .subscribers
            .iter()
            .map(Subscriber::version_watch)
            .collect();
        let all_applied = async {
            join_all(watches.iter_mut().map(|w| async move {
                // Not the `Ref` it returns: that read guard is nothing to hold on to.
                let _ = w.wait_for(|v| *v >= target).await;
            }))
            .await;
        };
        time_change(api, &sample_change(&self.ns, i), all_applied).await
    }

    /// From the validator's commit stamp of the version held (taken just before it writes the
    /// head) until the last subscriber made that version visible (`Status::last_update`): the
    /// commit and fan-out part of a sample, without the request's hop to the validator. Both
    /// instants are this machine's wall clock, read in two processes. None before any change.
    pub fn commit_to_last_apply(&self) -> Option<Duration> {
        let committed_us = self.subscribers.first()?.snapshot().committed_at_us();
        let last_apply_us = self
            .subscribers
            .iter()
            .filter_map(|s| s.status().last_update)
            .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .max()?;
        let micros = u64::try_from(last_apply_us.checked_sub(committed_us)?).ok()?;
        (committed_us > 0).then(|| Duration::from_micros(micros))
    }
}

/// The floor: a raw KV put on one connection, watched by N raw KV watches on connections of
/// their own.
pub struct KvFloor {
    kv: async_nats::jetstream::kv::Store,
    watches: Vec<async_nats::jetstream::kv::Watch>,
}

impl KvFloor {
    /// Creates `bucket` and starts `watchers` watches of its key `k`.
    pub async fn start(url: &str, bucket: &str, watchers: usize) -> KvFloor {
        KvFloor::start_with(url, bucket, watchers, 1, async_nats::ConnectOptions::new).await
    }

    /// [`KvFloor::start`] with a bucket of `replicas` replicas and every connection made from
    /// `options()` (e.g. credentials).
    pub async fn start_with(
        url: &str,
        bucket: &str,
        watchers: usize,
        replicas: usize,
        options: impl Fn() -> async_nats::ConnectOptions,
    ) -> KvFloor {
        // `url` may list several servers, comma-separated (a cluster).
        let servers: Vec<async_nats::ServerAddr> = url
            .split(',')
            .map(|u| u.trim().parse().expect("server url"))
            .collect();
        let connect = || options().connect(servers.clone());
        let writer = async_nats::jetstream::new(connect().await.expect("connect"));
        let kv = writer
            .create_key_value(async_nats::jetstream::kv::Config {
                bucket: bucket.to_owned(),
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .expect("bucket");
        let mut watches = Vec::new();
        for _ in 0..watchers {
            let reader = async_nats::jetstream::new(connect().await.expect("connect"));
            let store = reader.get_key_value(bucket).await.expect("bucket");
            watches.push(store.watch("k").await.expect("watch"));
        }
        KvFloor { kv, watches }
    }

    /// From the put of value `i` until the last watch delivers it.
    pub async fn sample(&mut self, i: u64) -> Duration {
        let started = Instant::now();
        let put = self.kv.put("k", i.to_string().into());
        let delivered = join_all(self.watches.iter_mut().map(|w| w.next()));
        let (put, _) = tokio::join!(put, delivered);
        put.expect("put");
        started.elapsed()
    }
}
