//! Shared set-up of the benchmarks: a real nats-server (from the test harness) and an
//! in-process validator, a latency summary type, and the paths latencies are taken on
//! ([`paths`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use hdrhistogram::Histogram;
use mycosynth::client::ApiClient;
use mycosynth::validator::{self, ValidatorConfig};
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, KeyChange};
use mycosynth_testkit::NatsServer;
use serde_json::json;
use tokio::sync::oneshot;

pub mod backup;
pub mod callout;
pub mod console;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod keys;
pub mod namespaces;
pub mod paths;
pub mod production;
pub mod reads;
pub mod rollouts;
pub mod schedules;
pub mod sidecar;
pub mod sites;

/// A nats-server and a validator serving it; both stop on drop.
pub struct Stack {
    /// The server (stopped on drop).
    pub nats: NatsServer,
    stop: Option<oneshot::Sender<()>>,
}

impl Stack {
    /// Starts a nats-server and an in-process validator on the current tokio runtime.
    pub async fn start() -> Stack {
        let nats = NatsServer::start();
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let config = ValidatorConfig {
            nats_url: nats.url(),
            http_addr: None,
            require_schema: false,
            replicas: 1,
            fleet: Default::default(),
            security: Default::default(),
            rate_limit: None,
            rate_burst: None,
            sites: Vec::new(),
            cached_states: 0,
        };
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(err) = validator::run(config, shutdown, move |_| {
                let _ = ready_tx.send(());
            })
            .await
            {
                eprintln!("validator failed: {err}");
            }
        });
        ready_rx.await.expect("validator ready");
        Stack {
            nats,
            stop: Some(stop),
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A latency distribution summary, in microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Samples.
    pub n: u64,
    /// Percentiles and max, µs.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarizes a histogram recorded in nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Summary {
        let us = |ns: u64| ns as f64 / 1000.0;
        Summary {
            n: h.len(),
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }

    /// A Markdown table row.
    pub fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            self.p50, self.p90, self.p99, self.p999, self.max, self.n
        )
    }
}

/// Now, µs since the Unix epoch (the validator's clock on this machine).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A histogram for nanosecond latencies up to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, Duration::from_secs(60).as_nanos() as u64, 3)
        .expect("histogram bounds")
}

/// The number in environment variable `name`, else `default` (the examples' knobs).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// The median of `samples` in whole microseconds (0 for none): the examples' one figure.
pub fn p50_us(mut samples: Vec<std::time::Duration>) -> u128 {
    samples.sort_unstable();
    samples
        .get(samples.len() / 2)
        .map_or(0, std::time::Duration::as_micros)
}

/// Resident memory of process `pid`, MB (0 when it cannot be read).
pub fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Accepted change sets per second with 64 requests in flight for `run`, taking namespaces
/// `names(0)`, `names(1)`, ... `names(namespaces - 1)` in turn, over and over.
pub async fn throughput(
    api: &Arc<ApiClient>,
    names: fn(usize) -> String,
    namespaces: usize,
    run: Duration,
) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + run;
    let workers = (0..64u64).map(|w| {
        let (api, next) = (Arc::clone(api), Arc::clone(&next));
        async move {
            let mut accepted = 0u64;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let change = ChangeRequest::new(
                    names(i % namespaces.max(1)),
                    "prod",
                    vec![KeyChange::set(format!("w{w}"), json!(i))],
                    "bench",
                );
                if api
                    .call::<_, ChangeOutcome>(endpoint::CHANGE, &change)
                    .await
                    .is_ok_and(|o| o.committed)
                {
                    accepted += 1;
                }
            }
            accepted
        }
    });
    let accepted: u64 = join_all(workers).await.into_iter().sum();
    accepted as f64 / started.elapsed().as_secs_f64()
}
