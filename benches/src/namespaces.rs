//! Many namespaces on one validator (issue 27, `--only namespaces`): N namespace/environments
//! of 100 keys each (N from `MYCOSYNTH_BENCH_NAMESPACES`, default 10,000), all written by one
//! validator process. Measured: its resident memory as the namespaces are seeded; the time from
//! starting a new validator process until it answers a change; a one-key change, request →
//! reply, to namespaces the new process has not touched (cold) and to one it just changed
//! (warm), against warm changes to the only namespace of a validator before the seeding; and
//! change sets per second spread over all N namespaces.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, KeyChange};
use mycosynth_testkit::Validator;
use serde_json::json;

use crate::sites::load_average;
use crate::{histogram, rss_mb, throughput, Summary};

/// Keys of each namespace.
const KEYS: usize = 100;
/// Seeding change sets in flight.
const SEED_IN_FLIGHT: usize = 32;
/// Samples of each latency figure.
const SAMPLES: usize = 200;

/// What `--only namespaces` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    /// Namespace/environments seeded.
    pub namespaces: usize,
    /// Seconds the seeding took.
    pub seed_s: f64,
    /// Validator RSS (MB) after every tenth of the seeding: (namespaces seeded, MB, load).
    pub rss_while_seeding: Vec<(usize, f64, String)>,
    /// The new process: spawn → its "ready" log line, ms.
    pub restart_ready_ms: f64,
    /// The new process: spawn → the first committed reply to a change, ms.
    pub restart_serving_ms: f64,
    /// The new process's RSS right after it served that change, MB.
    pub rss_restarted_mb: f64,
    /// Changes to 200 namespaces the new process had not touched, request → reply.
    pub cold: Summary,
    /// 200 changes to the namespace changed last, request → reply.
    pub warm: Summary,
    /// Before the seeding: 200 changes to the validator's only namespace of 100 keys.
    pub warm_one_namespace: Summary,
    /// The new process's RSS after the cold and warm changes, MB.
    pub rss_after_changes_mb: f64,
    /// Before the seeding: change sets/s over 100 namespaces (64 in flight).
    pub throughput_before_seeding: f64,
    /// Change sets/s over all N namespaces (64 in flight), on the new process.
    pub throughput: f64,
    /// The new process's RSS after the throughput run, MB.
    pub rss_after_throughput_mb: f64,
    /// Load average when each part ended: (part, "1 5 15").
    pub load: Vec<(String, String)>,
}

/// The name of namespace `i` of the seeded ones.
fn name(i: usize) -> String {
    format!("many-{i:05}")
}

/// A change of `ns`/prod setting its key `touch` to `value`.
fn touch(ns: &str, value: u64) -> ChangeRequest {
    ChangeRequest::new(
        ns,
        "prod",
        vec![KeyChange::set("touch", json!(value))],
        "bench",
    )
}

/// Sends `request` and fails the bench unless it committed; request → reply.
async fn change(api: &ApiClient, request: &ChangeRequest) -> Duration {
    let started = Instant::now();
    let outcome: ChangeOutcome = api
        .call(endpoint::CHANGE, request)
        .await
        .unwrap_or_else(|e| panic!("change to {}: {e:?}", request.namespace));
    let elapsed = started.elapsed();
    assert!(
        outcome.committed,
        "change to {} committed nothing",
        request.namespace
    );
    elapsed
}

/// Commits the 100 keys of `ns`/prod in one change set.
async fn seed_one(api: &ApiClient, ns: &str) {
    let changes = (0..KEYS)
        .map(|k| {
            KeyChange::set(
                format!("key.{k}"),
                json!({"n": k, "text": "some config value"}),
            )
        })
        .collect();
    change(api, &ChangeRequest::new(ns, "prod", changes, "bench")).await;
}

/// Seeds namespaces `0..count` with [`SEED_IN_FLIGHT`] change sets in flight, printing the
/// validator's RSS after every tenth; seconds taken and the RSS readings.
async fn seed(api: &ApiClient, pid: u32, count: usize) -> (f64, Vec<(usize, f64, String)>) {
    let started = Instant::now();
    let tenth = count.div_ceil(10).max(1);
    let mut readings = Vec::new();
    for first in (0..count).step_by(tenth) {
        let last = (first + tenth).min(count);
        futures::stream::iter(first..last)
            .map(|i| async move { seed_one(api, &name(i)).await })
            .buffer_unordered(SEED_IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
        let (rss, load) = (rss_mb(pid), load_average());
        println!(
            "seeded {last} namespaces x {KEYS} keys in {:.1} s; validator RSS {rss:.1} MB; load average {load}",
            started.elapsed().as_secs_f64()
        );
        readings.push((last, rss, load));
    }
    (started.elapsed().as_secs_f64(), readings)
}

/// `samples` one-key changes to `ns`, one after another.
async fn warm(api: &ApiClient, ns: &str, samples: usize) -> Summary {
    let mut h = histogram();
    for i in 0..samples {
        let elapsed = change(api, &touch(ns, 1_000_000 + i as u64)).await;
        let _ = h.record(elapsed.as_nanos() as u64);
    }
    Summary::of(&h)
}

/// One one-key change to each of `count` namespaces spread over `1..namespaces` (0 is the
/// one the restart was timed with); the summary and the name of the last one changed.
async fn cold(api: &ApiClient, namespaces: usize, count: usize) -> (Summary, String) {
    let count = count.min(namespaces.saturating_sub(1)).max(1);
    let mut h = histogram();
    let mut last = name(0);
    for j in 0..count {
        last = name(1 + j * (namespaces - 1).max(1) / count);
        let elapsed = change(api, &touch(&last, 1)).await;
        let _ = h.record(elapsed.as_nanos() as u64);
    }
    (Summary::of(&h), last)
}

/// SIGKILLs `old`, then starts a new validator process while sending a change to `ns` until
/// one commits: the new process, spawn → "ready" and spawn → that commit (ms).
async fn restart(
    api: &ApiClient,
    url: &str,
    old: &mut Validator,
    ns: &str,
) -> (Validator, f64, f64) {
    old.kill();
    let started = Instant::now();
    let url = url.to_owned();
    let spawned = tokio::task::spawn_blocking(move || {
        let validator = Validator::start(&url, &[]);
        (validator, started.elapsed())
    });
    let serving = loop {
        let reply = api
            .call::<_, ChangeOutcome>(endpoint::CHANGE, &touch(ns, 1))
            .await;
        if reply.as_ref().is_ok_and(|o| o.committed) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the new validator served no change within 60 s: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (validator, ready) = spawned.await.expect("validator start");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (validator, ms(ready), ms(serving))
}

/// The whole part, on the validator `validator` (killed and replaced half-way) of `url`.
pub async fn run(
    api: &Arc<ApiClient>,
    url: &str,
    mut validator: Validator,
    namespaces: usize,
) -> Figures {
    let mut load = Vec::new();
    let mut mark = |part: &str| load.push((part.to_owned(), load_average()));
    seed_one(api, "solo").await;
    change(api, &touch("solo", 0)).await;
    let warm_one_namespace = warm(api, "solo", SAMPLES).await;
    let throughput_before_seeding =
        throughput(api, |i| format!("base-{i}"), 100, Duration::from_secs(10)).await;
    mark("before seeding (warm, one namespace; throughput, 100 namespaces)");
    let pid = validator.pid().unwrap_or(0);
    let (seed_s, rss_while_seeding) = seed(api, pid, namespaces).await;
    mark("seeding");
    let (validator, restart_ready_ms, restart_serving_ms) =
        restart(api, url, &mut validator, &name(0)).await;
    let pid = validator.pid().unwrap_or(0);
    let rss_restarted_mb = rss_mb(pid);
    mark("restart");
    let (cold, last) = cold(api, namespaces, SAMPLES).await;
    let warm = warm(api, &last, SAMPLES).await;
    let rss_after_changes_mb = rss_mb(pid);
    mark("cold and warm changes");
    let throughput = throughput(api, name, namespaces, Duration::from_secs(10)).await;
    let rss_after_throughput_mb = rss_mb(pid);
    mark("throughput over all namespaces");
    Figures {
        namespaces,
        seed_s,
        rss_while_seeding,
        restart_ready_ms,
        restart_serving_ms,
        rss_restarted_mb,
        cold,
        warm,
        warm_one_namespace,
        rss_after_changes_mb,
        throughput_before_seeding,
        throughput,
        rss_after_throughput_mb,
        load,
    }
}

impl Figures {
    /// The tables, Markdown.
    pub fn print(&self) {
        let n = self.namespaces;
        println!("\n| {n} namespaces x {KEYS} keys, one validator: one-key change, request → reply (µs) | p50 | p90 | p99 | p99.9 | max | n |\n|---|---|---|---|---|---|---|");
        println!(
            "{}",
            self.cold.row(
                "cold: a namespace the new validator process had not touched (200 different ones)"
            )
        );
        println!(
            "{}",
            self.warm
                .row("warm: the namespace just changed, 200 changes")
        );
        println!(
            "{}",
            self.warm_one_namespace
                .row("before the seeding, the validator's only namespace (100 keys), 200 changes")
        );
        println!("\n| {n} namespaces x {KEYS} keys, one validator | figure |\n|---|---|");
        println!("| seeding, one change set of {KEYS} keys per namespace, {SEED_IN_FLIGHT} in flight | {:.1} s ({:.0} namespaces/s) |", self.seed_s, n as f64 / self.seed_s.max(1e-9));
        if let Some((_, rss, _)) = self.rss_while_seeding.last() {
            println!("| validator RSS after the seeding (all {n} touched) | {rss:.1} MB |");
        }
        println!(
            "| new validator process: spawn → \"ready\" log line | {:.1} ms |",
            self.restart_ready_ms
        );
        println!(
            "| new validator process: spawn → first committed change reply | {:.1} ms |",
            self.restart_serving_ms
        );
        println!(
            "| new process RSS right after its first change | {:.1} MB |",
            self.rss_restarted_mb
        );
        println!(
            "| new process RSS after the 201 cold + 200 warm changes | {:.1} MB |",
            self.rss_after_changes_mb
        );
        println!(
            "| change sets/s over all {n} namespaces, 64 in flight, 10 s (new process) | {:.0} |",
            self.throughput
        );
        println!("| change sets/s over 100 namespaces, 64 in flight, 10 s (before the seeding) | {:.0} |", self.throughput_before_seeding);
        println!(
            "| new process RSS after the throughput run | {:.1} MB |",
            self.rss_after_throughput_mb
        );
        println!("\n| namespaces seeded | validator RSS MB | load average |\n|---|---|---|");
        for (seeded, rss, load) in &self.rss_while_seeding {
            println!("| {seeded} | {rss:.1} | {load} |");
        }
        println!("\n| part | load average when it ended |\n|---|---|");
        for (part, load) in &self.load {
            println!("| {part} | {load} |");
        }
    }
}
