//! Reads while the snapshot keeps changing: one and two threads call `Subscriber::get` in a
//! loop while change events arrive at a steady rate and the updater swaps snapshots under them.
//!
//! The events are published straight on the namespace's event subject (the validator commits
//! about 300 change sets per second on one namespace, fewer than the 1,000 per second this
//! measures under); the subscriber applies them exactly as it applies the validator's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycosynth_subscriber::wire::{
    event_subject, ChangeEvent, Environment, EventChange, Namespace, EVENT_FORMAT,
};
use mycosynth_subscriber::Subscriber;

use crate::{histogram, Summary};

/// Reads per timed batch: a single `get` is tens of nanoseconds, below what a clock read
/// resolves well, so each sample is the mean of this many.
const BATCH: u32 = 1000;

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnderUpdates {
    /// Per-read time of each thread (ns), one summary per thread.
    pub threads: Vec<Summary>,
    /// Change sets the subscriber applied per second during the run.
    pub applied_per_s: f64,
}

/// Runs `threads` reader threads for `run` while events go out at `rate` per second.
/// `config` must hold the integer key `limits.rps` of namespace `ns`, environment `env`.
pub async fn under_updates(
    client: async_nats::Client,
    config: &Subscriber,
    ns: &str,
    env: &str,
    threads: usize,
    rate: u32,
    run: Duration,
) -> UnderUpdates {
    let (ns, env) = (
        Namespace::new(ns).expect("namespace"),
        Environment::new(env).expect("environment"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let first = config.version();
    let t0 = Instant::now();
    let updater = {
        let stop = Arc::clone(&stop);
        let subject = event_subject(&ns, &env);
        let (ns, env) = (ns.to_string(), env.to_string());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut version = first;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let event = ChangeEvent {
                    format: EVENT_FORMAT,
                    namespace: ns.clone(),
                    environment: env.clone(),
                    version: version + 1,
                    previous_version: version,
                    changes: vec![EventChange {
                        key: "limits.rps".into(),
                        value_json: Some((version + 1).to_string()),
                    }],
                    change_id: format!("bench-{version}"),
                    author: "bench".into(),
                    reason: String::new(),
                    source: "bench".into(),
                    committed_at_us: 0,
                    approved_by: Vec::new(),
                    change_request: None,
                };
                if client
                    .publish(subject.clone(), event.encode().into())
                    .await
                    .is_err()
                {
                    break;
                }
                version += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await; // updates flowing before reads start
    let readers: Vec<_> = (0..threads)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut h = histogram();
                let end = Instant::now() + run;
                while Instant::now() < end {
                    let t = Instant::now();
                    for _ in 0..BATCH {
                        let value = config.get::<i64>(std::hint::black_box("limits.rps"));
                        std::hint::black_box(value.ok());
                    }
                    let _ = h.record((t.elapsed().as_nanos() / u128::from(BATCH)).max(1) as u64);
                }
                h
            })
        })
        .collect();
    let mut summaries = Vec::new();
    for reader in readers {
        let h = tokio::task::spawn_blocking(move || reader.join().expect("reader thread"))
            .await
            .expect("join");
        summaries.push(summary_ns(&h));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = updater.await;
    let applied = config.version().saturating_sub(first) as f64;
    UnderUpdates {
        threads: summaries,
        applied_per_s: applied / t0.elapsed().as_secs_f64(),
    }
}

/// [`Summary`] keeps microseconds; per-read times are nanoseconds, so scale back.
fn summary_ns(h: &hdrhistogram::Histogram<u64>) -> Summary {
    let us = Summary::of(h);
    let ns = |v: f64| v * 1000.0;
    Summary {
        n: us.n * u64::from(BATCH),
        p50: ns(us.p50),
        p90: ns(us.p90),
        p99: ns(us.p99),
        p999: ns(us.p999),
        max: ns(us.max),
    }
}
