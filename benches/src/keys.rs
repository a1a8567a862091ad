//! Startup of a subscriber with many keys in one namespace (issue 27, `--only keys`): connect
//! → first read, from NATS (no cache yet) and from the last-known-good cache, for namespaces of
//! 1,000, 10,000 and 100,000 keys. Each size is started a few times, a fresh cache directory
//! each time: the start from NATS writes the cache the start from the cache then reads. And
//! [`startup`], the 10,000-key figures of the full run (with the memory of `mycosynth watch`).

use std::path::Path;
use std::time::{Duration, Instant};

use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{Environment, Namespace};
use mycosynth_subscriber::Subscriber;
use serde_json::Value;

use crate::paths::seed_keys;
use crate::rss_mb;

/// Keys per change set of [`seed_keys`] (the name of key `k` is `key.<k / 990>.<k % 990>`).
const SEED_SET: usize = 990;

/// The startups of one namespace size, in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Startups {
    /// Keys in the namespace.
    pub keys: usize,
    /// Seconds the seeding took (through the validator, change sets of 990 keys).
    pub seed_s: f64,
    /// Connect → first read with no cache, each start.
    pub from_nats_ms: Vec<f64>,
    /// Connect → first read with the cache the start before wrote, each start.
    pub from_cache_ms: Vec<f64>,
    /// Size of the cache file, MB.
    pub cache_mb: f64,
}

impl Startups {
    /// A Markdown row: keys | NATS median (min-max) | cache median (min-max) | cache MB | seed s.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.1} | {:.1} |",
            self.keys,
            spread(&self.from_nats_ms),
            spread(&self.from_cache_ms),
            self.cache_mb,
            self.seed_s
        )
    }
}

/// The table header of [`Startups::row`].
pub const HEADER: &str = "| keys in the namespace | connect → first read from NATS, ms: median (min-max) | connect → first read from the cache, ms: median (min-max) | cache file MB | seeding s |\n|---|---|---|---|---|";

/// "median (min-max)" of `ms`, one decimal.
fn spread(ms: &[f64]) -> String {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    match (sorted.first(), sorted.get(sorted.len() / 2), sorted.last()) {
        (Some(min), Some(median), Some(max)) => format!("{median:.1} ({min:.1}-{max:.1})"),
        _ => "-".into(),
    }
}

/// Seeds a namespace of each size in `sizes` and starts a subscriber of it `starts` times from
/// NATS and as often from the cache.
pub async fn startups(api: &ApiClient, url: &str, sizes: &[usize], starts: usize) -> Vec<Startups> {
    let mut out = Vec::new();
    for &keys in sizes {
        let ns = format!("keys{keys}");
        let seeding = Instant::now();
        seed_keys(api, &ns, keys).await;
        let seed_s = seeding.elapsed().as_secs_f64();
        let last = format!("key.{}.{}", (keys - 1) / SEED_SET, (keys - 1) % SEED_SET);
        let mut figures = Startups {
            keys,
            seed_s,
            from_nats_ms: Vec::new(),
            from_cache_ms: Vec::new(),
            cache_mb: 0.0,
        };
        for start in 0..starts {
            let cache = std::env::temp_dir().join(format!(
                "mycosynth-bench-keys-{}-{keys}-{start}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&cache);
            let (from_nats, config) = start_once(url, &ns, &last, &cache).await;
            figures.cache_mb = wait_for_cache(&cache, &ns, keys).await;
            config.shutdown().await;
            let (from_cache, config) = start_once(url, &ns, &last, &cache).await;
            config.shutdown().await;
            figures.from_nats_ms.push(from_nats);
            figures.from_cache_ms.push(from_cache);
            let _ = std::fs::remove_dir_all(&cache);
        }
        println!("{}", figures.row());
        out.push(figures);
    }
    out
}

/// Connect → the first read of `last`, ms, of a subscriber of `ns`/prod with cache dir `cache`;
/// and the subscriber, to shut down.
async fn start_once(url: &str, ns: &str, last: &str, cache: &Path) -> (f64, Subscriber) {
    let started = Instant::now();
    let config = Subscriber::builder(ns, "prod")
        .nats_url(url)
        .cache_dir(cache)
        .load_timeout(Duration::from_secs(60))
        .receipts(false, Duration::from_secs(10))
        .connect()
        .await
        .expect("subscriber");
    let _: Value = config.get(last).expect("first read");
    (started.elapsed().as_secs_f64() * 1000.0, config)
}

/// Waits (at most 30 s) until the cache of `ns`/prod in `dir` holds `keys` keys; its size, MB.
async fn wait_for_cache(dir: &Path, ns: &str, keys: usize) -> f64 {
    let ns = Namespace::new(ns.to_owned()).expect("namespace name");
    let env = Environment::new("prod".to_owned()).expect("environment name");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = mycosynth_subscriber::cache::read(dir, &ns, &env);
        if read.as_ref().is_ok_and(|s| s.len() >= keys) {
            let path = mycosynth_subscriber::cache::cache_path(dir, &ns, &env);
            let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
            return bytes as f64 / (1024.0 * 1024.0);
        }
        assert!(
            Instant::now() < deadline,
            "no cache of {keys} keys after 30 s: {:?}",
            read.err()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (from NATS ms, from cache ms, RSS delta MB) for a namespace of 10,000 keys.
pub async fn startup(api: &ApiClient, url: &str) -> (f64, f64, f64) {
    seed_keys(api, "big", 10_890).await;
    let cache = std::env::temp_dir().join(format!("mycosynth-bench-cache-{}", std::process::id()));
    // Memory of a real subscribing process (`mycosynth watch`) holding the 10,000 keys.
    let watcher = mycosynth_testkit::CliProcess::spawn(url, &["watch", "big", "prod", "--json"]);
    let loaded = watcher
        .wait_line(0, Duration::from_secs(30), |l| l.contains("\"load\""))
        .is_some();
    let rss = if loaded { rss_mb(watcher.pid()) } else { 0.0 };
    drop(watcher);
    let started = Instant::now();
    let config = Subscriber::builder("big", "prod")
        .nats_url(url)
        .cache_dir(&cache)
        .connect()
        .await
        .expect("subscriber");
    let _: Value = config.get("key.10.989").expect("first read");
    let from_nats = started.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_millis(500)).await; // let the cache writer finish
    config.shutdown().await;
    let started = Instant::now();
    let cached = Subscriber::builder("big", "prod")
        .nats_url(url)
        .cache_dir(&cache)
        .connect()
        .await
        .expect("from cache");
    let _: Value = cached.get("key.10.989").expect("first read");
    let from_cache = started.elapsed().as_secs_f64() * 1000.0;
    let _ = std::fs::remove_dir_all(&cache);
    (from_nats, from_cache, rss)
}
