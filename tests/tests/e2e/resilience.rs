//! Faults injected into real processes: nats-server and validators killed with SIGKILL,
//! NATS down for long stretches, damaged cache files, lost events.

use std::time::{Duration, Instant};

use mycosynth_subscriber::cache::{self, CacheError};
use mycosynth_subscriber::wire::{Environment, Namespace};
use mycosynth_subscriber::{Error, Origin, StartPolicy, Subscriber};
use mycosynth_testkit::{json, CliProcess, NatsServer, Validator};
use serde_json::json;

use crate::{run_cli, set_keys, stderr};

fn fast(
    builder: mycosynth_subscriber::SubscriberBuilder,
) -> mycosynth_subscriber::SubscriberBuilder {
    builder
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(2))
}

fn percentiles(mut samples: Vec<u64>) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns, n {}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0),
        samples.len()
    )
}

/// Acceptance 1: kill -9 the nats-server in the middle of a stream of changes and restart it on
/// the same store: every subscriber converges to the final version, with no restart of the
/// subscribing process and no acknowledged update lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_mid_stream_every_subscriber_converges() {
    let mut nats = NatsServer::start_durable();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    set_keys(&api, "stream", "prod", &[("n", json!(0))]).await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        subscribers.push(
            fast(Subscriber::builder("stream", "prod"))
                .nats_url(nats.url())
                .connect()
                .await
                .unwrap(),
        );
    }

    let writer = tokio::spawn({
        let api = api.clone();
        async move {
            let mut acknowledged = Vec::new();
            for n in 1..=60u64 {
                loop {
                    let key = format!("k{n}");
                    let request = crate::change_request(
                        "stream",
                        "prod",
                        &[("n", json!(n)), (&key, json!(n))],
                    );
                    match api
                        .call::<_, mycosynth_subscriber::wire::ChangeOutcome>(
                            mycosynth_subscriber::wire::endpoint::CHANGE,
                            &request,
                        )
                        .await
                    {
                        Ok(outcome) => {
                            acknowledged.push((n, outcome.version));
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acknowledged
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed_at = Instant::now();
    nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart();
    println!("nats-server down for {:?}", killed_at.elapsed());
    let acknowledged = writer.await.unwrap();
    assert_eq!(acknowledged.len(), 60);

    let outcome: mycosynth_subscriber::wire::GetOutcome = api
        .call(
            mycosynth_subscriber::wire::endpoint::GET,
            &mycosynth_subscriber::wire::GetRequest {
                namespace: "stream".into(),
                environment: "prod".into(),
                key: None,
            },
        )
        .await
        .unwrap();
    for (n, version) in &acknowledged {
        assert!(*version <= outcome.version);
        let stored = outcome.values.iter().find(|(k, _)| *k == format!("k{n}"));
        assert_eq!(
            stored.map(|(_, r)| r.value.clone()),
            Some(json!(n)),
            "acknowledged change {n} lost"
        );
    }
    for config in &subscribers {
        assert!(
            config
                .wait_for_version(outcome.version, Duration::from_secs(30))
                .await,
            "stuck at {}",
            config.version()
        );
        assert_eq!(config.get::<u64>("n").unwrap(), 60);
        assert_eq!(config.snapshot().len(), 61);
    }
}

/// Acceptance 2: kill the validator in the middle of a large apply: no subscriber ever sees part
/// of that change set, and running the same apply again succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_killed_mid_apply_leaves_nothing_half_done() {
    let nats = NatsServer::start();
    let mut first = Validator::start(&nats.url(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let write = |generation: u64| {
        let path = dir.path().join(format!("gen{generation}.yaml"));
        let body: String = (0..900)
            .map(|i| format!("big.key{i:03}: \"{generation}-{}\"\n", "x".repeat(200)))
            .collect();
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    };
    let (gen0, gen1) = (write(0), write(1));
    let out = run_cli(
        &nats.url(),
        &["apply", &gen0, "--namespace", "bulk", "--env", "prod"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let config = Subscriber::builder("bulk", "prod")
        .nats_url(nats.url())
        .connect()
        .await
        .unwrap();
    let reader = {
        let config = config.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut reads = 0u64;
            while Instant::now() < deadline {
                let snapshot = config.snapshot();
                let generations: std::collections::BTreeSet<String> = snapshot
                    .iter()
                    .map(|(_, v)| {
                        v.as_str()
                            .unwrap_or("?")
                            .split('-')
                            .next()
                            .unwrap_or("?")
                            .to_owned()
                    })
                    .collect();
                assert_eq!(
                    generations.len(),
                    1,
                    "version {} mixes generations {generations:?}",
                    snapshot.version()
                );
                assert_eq!(snapshot.len(), 900);
                reads += 1;
                if generations.contains("1") {
                    break;
                }
            }
            reads
        })
    };

    let apply = {
        let (url, gen1) = (nats.url(), gen1.clone());
        std::thread::spawn(move || {
            mycosynth_testkit::cli(
                &url,
                &[
                    "apply",
                    &gen1,
                    "--namespace",
                    "bulk",
                    "--env",
                    "prod",
                    "--timeout",
                    "3",
                ],
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(40)).await;
    first.kill();
    let interrupted = apply.join().unwrap();
    println!(
        "apply while the validator was killed: exit {:?}",
        interrupted.status.code()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let version_after_kill = config.version();
    assert!(version_after_kill <= 2);

    let _second = Validator::start(&nats.url(), &[]);
    let out = run_cli(
        &nats.url(),
        &["apply", &gen1, "--namespace", "bulk", "--env", "prod"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(config.wait_for_version(2, Duration::from_secs(10)).await);
    let reads = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    println!("{reads} snapshot reads, none mixed; version after kill {version_after_kill}");
    assert!(config
        .get::<String>("big.key899")
        .unwrap()
        .starts_with("1-"));
}

/// Acceptance 3: NATS down for a sustained period while the application keeps reading: every
/// read succeeds with the last-known-good values. Prints read latency during the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_succeed_throughout_a_long_outage() {
    let mut nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    set_keys(
        &api,
        "reader",
        "prod",
        &[("limit", json!(77)), ("name", json!("lkg"))],
    )
    .await;
    let config = fast(Subscriber::builder("reader", "prod"))
        .nats_url(nats.url())
        .connect()
        .await
        .unwrap();
    nats.kill();

    let reader = config.clone();
    let samples = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + Duration::from_secs(3);
        let mut samples = Vec::new();
        let mut reads = 0u64;
        while Instant::now() < until {
            let started = Instant::now();
            let limit: u32 = reader.get("limit").expect("read during outage");
            if reads.is_multiple_of(64) {
                samples.push(started.elapsed().as_nanos() as u64);
            }
            assert_eq!(limit, 77);
            reads += 1;
        }
        assert_eq!(reader.get::<String>("name").unwrap(), "lkg");
        samples
    })
    .await
    .unwrap();
    assert!(!config.status().connected);
    println!("reads during a 3 s outage: {}", percentiles(samples));
}

/// Acceptance 4: a subscribing process restarted while NATS is down starts from its cache with
/// the same values and version; when NATS returns it catches up by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_nats_is_down_starts_from_the_cache() {
    let mut nats = NatsServer::start_durable();
    let _validator = Validator::start(&nats.url(), &[]);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().display().to_string();
    let api = crate::api(&nats.url()).await;
    set_keys(
        &api,
        "cached",
        "prod",
        &[("a", json!(1)), ("b", json!({"deep": [true]}))],
    )
    .await;
    set_keys(&api, "cached", "prod", &[("a", json!(2))]).await;

    let first = CliProcess::spawn(
        &nats.url(),
        &[
            "watch",
            "cached",
            "prod",
            "--json",
            "--cache-dir",
            &cache_dir,
        ],
    );
    let (_, loaded) = first
        .wait_line(0, Duration::from_secs(20), |l| l.contains("\"load\""))
        .unwrap();
    let loaded = json(&loaded);
    assert_eq!(loaded["version"], 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    let path = cache::cache_path(
        cache.path(),
        &Namespace::new("cached").unwrap(),
        &Environment::new("prod").unwrap(),
    );
    while !path.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    nats.kill();

    let started = Instant::now();
    let second = CliProcess::spawn(
        &nats.url(),
        &[
            "watch",
            "cached",
            "prod",
            "--json",
            "--cache-dir",
            &cache_dir,
        ],
    );
    let (_, restarted) = second
        .wait_line(0, Duration::from_secs(20), |l| l.contains("\"load\""))
        .unwrap();
    println!(
        "process start to first snapshot from the cache, NATS down: {:?}",
        started.elapsed()
    );
    let restarted = json(&restarted);
    assert_eq!(restarted["version"], loaded["version"]);
    assert_eq!(restarted["values"], loaded["values"]);
    assert_eq!(restarted["origin"], "cache");

    nats.restart();
    crate::set_keys_retrying(&api, "cached", "prod", &[("a", json!(3))]).await;
    second
        .wait_line(1, Duration::from_secs(20), |l| json(l)["version"] == 3)
        .expect("the restarted process catches up once NATS is back");
}

/// Acceptance 5: no cache and NATS down: each start policy behaves as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_policies_without_nats_or_cache() {
    let mut nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    set_keys(&api, "policy", "prod", &[("database.pool_size", json!(64))]).await;
    nats.kill();
    let url = nats.url();

    let started = Instant::now();
    let err = fast(Subscriber::builder("policy", "prod"))
        .nats_url(url.clone())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    println!("FailFast refused in {:?}: {err}", started.elapsed());

    let started = Instant::now();
    let err = fast(Subscriber::builder("policy", "prod"))
        .nats_url(url.clone())
        .start_policy(StartPolicy::WaitFor(Duration::from_secs(1)))
        .connect()
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "WaitFor gave up early"
    );
    assert!(matches!(err, Error::Connect { .. }), "{err}");

    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(crate::schema_path()).unwrap()).unwrap();
    let defaults = fast(Subscriber::builder("policy", "prod"))
        .nats_url(url.clone())
        .start_policy(StartPolicy::SchemaDefaults(schema))
        .connect()
        .await
        .unwrap();
    assert_eq!(
        (defaults.version(), defaults.status().origin),
        (0, Origin::Defaults)
    );
    assert_eq!(
        defaults.get::<u32>("database.pool_size").unwrap(),
        10,
        "the schema default"
    );

    let waiting = tokio::spawn(
        fast(Subscriber::builder("policy", "prod"))
            .nats_url(url.clone())
            .start_policy(StartPolicy::WaitFor(Duration::from_secs(30)))
            .connect(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart();
    let waited = waiting
        .await
        .unwrap()
        .expect("WaitFor succeeds once NATS is back");
    assert_eq!(waited.get::<u32>("database.pool_size").unwrap(), 64);
    assert!(
        defaults.wait_for_version(1, Duration::from_secs(20)).await,
        "defaults replaced by real config"
    );
    assert_eq!(defaults.get::<u32>("database.pool_size").unwrap(), 64);
}

/// Acceptance 6: each damaged cache file is refused with a clear error, and the subscriber
/// behaves as if there were none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_cache_files_are_refused() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    set_keys(&api, "damage", "prod", &[("a", json!(1))]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = Subscriber::builder("damage", "prod")
        .nats_url(nats.url())
        .cache_dir(dir.path())
        .connect()
        .await
        .unwrap();
    let (ns, env) = (
        Namespace::new("damage").unwrap(),
        Environment::new("prod").unwrap(),
    );
    let path = cache::cache_path(dir.path(), &ns, &env);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache::read(dir.path(), &ns, &env).is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    config.shutdown().await;
    let good = std::fs::read(&path).unwrap();
    assert_eq!(cache::read(dir.path(), &ns, &env).unwrap().version(), 1);

    let mut flipped = good.clone();
    let at = flipped.len() - 3;
    flipped[at] ^= 0x01;
    let foreign = String::from_utf8(good.clone())
        .unwrap()
        .replacen("mycosynth-lkg 1", "mycosynth-lkg 9", 1)
        .into_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("flipped", flipped),
        ("foreign format", foreign),
        ("other namespace", good.clone()),
    ];
    for (what, bytes) in cases {
        let wrong_ns = what == "other namespace";
        // For "other namespace", the file of `damage` is placed where `other-ns` looks.
        let (target_ns, target) = if wrong_ns {
            let ns = Namespace::new("other-ns").unwrap();
            (ns.clone(), cache::cache_path(dir.path(), &ns, &env))
        } else {
            (ns.clone(), path.clone())
        };
        std::fs::write(&target, &bytes).unwrap();
        let err = cache::read(dir.path(), &target_ns, &env).unwrap_err();
        match what {
            "truncated" | "flipped" => {
                assert!(matches!(err, CacheError::Damaged { .. }), "{what}: {err}")
            }
            "foreign format" => assert!(
                matches!(err, CacheError::ForeignFormat { .. }),
                "{what}: {err}"
            ),
            _ => assert!(
                matches!(err, CacheError::WrongNamespace { .. }),
                "{what}: {err}"
            ),
        }
        println!("{what}: {err}");
        // NATS unreachable: a refused cache means no cache, so FailFast fails.
        let refused = fast(Subscriber::builder(target_ns.as_str(), "prod"))
            .nats_url("nats://127.0.0.1:1")
            .cache_dir(dir.path())
            .connect()
            .await;
        assert!(
            matches!(refused, Err(Error::Connect { .. })),
            "{what}: started from a damaged cache"
        );
    }
}

/// Acceptance 7: during a long outage the number of connection attempts stays within what the
/// backoff allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_attempts_follow_the_backoff() {
    let mut nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let (initial, max) = (Duration::from_millis(100), Duration::from_millis(800));
    let config = Subscriber::builder("backoff", "prod")
        .nats_url(nats.url())
        .backoff(initial, max)
        .connect()
        .await
        .unwrap();
    let before = config.stats().connect_attempts;
    nats.kill();
    let outage = Duration::from_secs(6);
    tokio::time::sleep(outage).await;
    let attempts = config.stats().connect_attempts - before;

    // Attempt 1 is immediate; attempt k waits at least half of min(initial * 2^(k-2), max).
    let backoff = mycosynth_subscriber::Backoff::new(initial, max);
    let (mut bound, mut elapsed) = (1u64, Duration::ZERO);
    while elapsed <= outage {
        bound += 1;
        elapsed += backoff.nominal(bound as u32 - 1) / 2;
    }
    println!("{attempts} connection attempts in a {outage:?} outage (bound {bound})");
    assert!(attempts >= 4, "it must keep trying: {attempts}");
    assert!(
        attempts <= bound,
        "{attempts} attempts exceed the backoff bound {bound}"
    );
    nats.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !config.status().connected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        config.status().connected,
        "did not reconnect once the server was back"
    );
}

/// Acceptance 9: a subscriber that missed the last event of a burst (the validator committed
/// but never published it, as when it dies between the two) reaches the latest version within
/// one anti-entropy interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_catches_a_lost_final_event() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    for i in 0..5 {
        set_keys(&api, "entropy", "prod", &[("i", json!(i))]).await;
    }
    let interval = Duration::from_secs(1);
    let config = Subscriber::builder("entropy", "prod")
        .nats_url(nats.url())
        .anti_entropy_interval(interval)
        .connect()
        .await
        .unwrap();
    assert_eq!(config.version(), 5);

    // Commit version 6 exactly as the validator does, and publish no event.
    let version =
        crate::commit_bypassing_validator(&nats.url(), "entropy", "prod", "i", json!(99), false)
            .await;
    assert_eq!(version, 6);
    let started = Instant::now();
    assert!(
        config.wait_for_version(6, interval * 3).await,
        "not repaired within the anti-entropy interval"
    );
    println!(
        "lost event repaired after {:?} (interval {interval:?})",
        started.elapsed()
    );
    assert_eq!(config.get::<i64>("i").unwrap(), 99);
}
