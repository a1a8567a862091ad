//! End-to-end benchmarks, in one run, against real servers started here:
//! - change propagation: from the moment a client sends a change request until the LAST of
//!   N subscribers (each with its own NATS connection) holds it, N = 1, 100, 1,000; and to one
//!   subscriber with every write fsynced, on one node and on a three-node cluster; and, for
//!   the same samples at 1 and 100, from the validator's commit on (the fan-out part alone);
//! - the floor: raw KV put to KV watch (1 and 100 watchers), sampled in turn with propagation
//!   to as many subscribers so both see the same moments of the machine, and alone, puts back
//!   to back (as is propagation, once more, to pair with it); and core NATS publish to
//!   subscriber;
//! - the peer: etcd put to watch event (1 and 100 watchers; feature `etcd`);
//! - reads from one and two threads while the snapshot changes 1,000 times a second;
//! - throughput of accepted change sets (one and two validators; one and 100 namespaces);
//! - startup with 10,000 keys, from NATS and from the last-known-good cache (`--only keys`:
//!   1,000 to 100,000 keys; `--only namespaces`: one validator, 10,000 namespaces; issue 27);
//! - resident memory of a subscriber holding 10,000 keys and of a validator under load;
//! - the sidecar (`src/sidecar.rs`): `GET` of one key against a bare axum handler (wrk), a
//!   change request to the SSE event against a Rust subscriber, the Python client's `get`.
//! - the auth callout: connection set-up through it against a static nkey, and the callouts
//!   per second one instance answers when 1,000 clients connect at once (`src/callout.rs`).
//! - production settings (`--only production`, `src/production.rs`; issue 27): signed requests,
//!   the audit log and fsync always against the open baseline and the durable KV floor.
//!
//! Latency figures keep one change in flight. Prints Markdown and writes
//! target/bench/report.json.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mycosynth::client::ApiClient;
use mycosynth_benches::paths::{KvFloor, Propagation};
use mycosynth_benches::{histogram, rss_mb, throughput, Summary};
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, KeyChange};
use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::{NatsCluster, NatsServer, Validator};
use serde_json::{json, Value};

const WARMUP: u64 = 100;

fn request(ns: &str, pairs: Vec<(String, Value)>) -> ChangeRequest {
    let changes = pairs
        .into_iter()
        .map(|(key, value)| KeyChange::set(key, value))
        .collect();
    ChangeRequest::new(ns, "prod", changes, "bench")
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks harness=false benches to list; nothing to list.
    }
    if std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .as_deref()
        == Some("callout")
    {
        mycosynth_benches::callout::run().await.print();
        return;
    }
    let nats = NatsServer::start();
    let url = nats.url();
    let validator = Validator::start(&url, &[]);
    let api = Arc::new(
        ApiClient::connect(&url, Duration::from_secs(10))
            .await
            .expect("api"),
    );

    // `cargo bench -p mycosynth-benches --bench propagation -- --only latency|throughput|startup|sidecar|schedules|sites|backup|rollouts|console|keys|namespaces|production`
    // (`--only callout`, above, needs no server of these)
    // runs one part, to look at (or `perf record -p <validator pid>`) while working; no report.
    let only = std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .unwrap_or_default();
    match only.as_str() {
        "throughput" => {
            println!("validator pid {}", validator.pid().unwrap_or(0));
            for namespaces in [1, 100] {
                let per_s = tput(&api, namespaces, Duration::from_secs(10)).await;
                println!("{namespaces} namespace(s): {per_s:.0} change sets/s");
            }
            let second = Validator::start(&url, &[]);
            found_each_other(&[&validator, &second]).await;
            for namespaces in [1, 100] {
                let per_s = tput(&api, namespaces, Duration::from_secs(10)).await;
                println!("two validators, {namespaces} namespace(s): {per_s:.0} change sets/s");
            }
            let routed = routing_client(&url).await;
            for namespaces in [1, 100] {
                let per_s = tput(&routed, namespaces, Duration::from_secs(10)).await;
                println!("two validators, routing client, {namespaces} namespace(s): {per_s:.0} change sets/s");
            }
            return;
        }
        "sidecar" => {
            let figures = mycosynth_benches::sidecar::run(&api, &url, 1000).await;
            println!();
            figures.rows().iter().for_each(|row| println!("{row}"));
            println!("load average {}", mycosynth_benches::sites::load_average());
            return;
        }
        "schedules" => {
            let late =
                mycosynth_benches::schedules::lateness(&api, 200, Duration::from_millis(50)).await;
            println!(
                "{}",
                late.row("scheduled change request: its time → its commit (200 over 10 s)")
            );
            return;
        }
        // Sites: latency at the hub and at a leaf-node site, catch-up after hub outages of
        // 10 s and 60 s; `sites-long`: after 5 minutes (about 7 minutes in all).
        "sites" | "sites-long" => {
            let outages: &[u64] = if only == "sites" { &[10, 60] } else { &[300] };
            let outages: Vec<Duration> = outages.iter().map(|s| Duration::from_secs(*s)).collect();
            mycosynth_benches::sites::report(1000, &outages).await;
            return;
        }
        // Backup and restore of 100 namespaces x 1,000 keys x 100 versions (sizes from
        // MYCOSYNTH_BACKUP_NAMESPACES, _KEYS, _VERSIONS).
        "backup" => {
            let size = |name: &str, default| mycosynth_benches::env_or(name, default);
            let figures = mycosynth_benches::backup::run(
                size("MYCOSYNTH_BACKUP_NAMESPACES", 100),
                size("MYCOSYNTH_BACKUP_KEYS", 1000),
                size("MYCOSYNTH_BACKUP_VERSIONS", 100),
            )
            .await;
            println!(
                "{figures}\nload average {}",
                mycosynth_benches::sites::load_average()
            );
            return;
        }
        // The console's namespace page of 1,000 keys, rendered 200 times.
        "console" => {
            let render = mycosynth_benches::console::namespace_page(&api, &url, 1000, 200).await;
            println!(
                "{}\nload average {}",
                render.row("console: namespace page of 1,000 keys, request → whole page (µs)"),
                mycosynth_benches::sites::load_average()
            );
            return;
        }
        // Abort decision → the last of 100 subscribers back on stable, 20 rollouts.
        "rollouts" => {
            let back = mycosynth_benches::rollouts::abort_to_stable(&api, &url, 100, 20).await;
            println!(
                "{}\nload average {}",
                back.row(
                    "rollout abort: its decision → the last of 100 subscribers on stable (µs)"
                ),
                mycosynth_benches::sites::load_average()
            );
            return;
        }
        // Issue 27 §5: signed requests, the audit log and fsync always, against the open
        // default-sync baseline and the durable KV floor (servers of its own).
        "production" => {
            drop(api);
            drop(validator);
            drop(nats);
            let run = Duration::from_secs(10);
            mycosynth_benches::production::run(500, run).await.print();
            return;
        }
        // Issue 27: startup with 1,000, 10,000 and 100,000 keys in one namespace.
        "keys" => {
            let sizes = [1_000, 10_000, 100_000];
            println!("{}", mycosynth_benches::keys::HEADER);
            mycosynth_benches::keys::startups(&api, &url, &sizes, 5).await;
            println!("load average {}", mycosynth_benches::sites::load_average());
            return;
        }
        // Issue 27: one validator, MYCOSYNTH_BENCH_NAMESPACES (10,000) namespaces of 100 keys.
        "namespaces" => {
            let n = mycosynth_benches::env_or("MYCOSYNTH_BENCH_NAMESPACES", 10_000);
            let n = usize::try_from(n).expect("MYCOSYNTH_BENCH_NAMESPACES");
            mycosynth_benches::namespaces::run(&api, &url, validator, n)
                .await
                .print();
            return;
        }
        "startup" => {
            let (from_nats, from_cache, rss) = mycosynth_benches::keys::startup(&api, &url).await;
            println!("startup 10,000 keys: from NATS {from_nats:.1} ms, from the cache {from_cache:.1} ms; subscriber RSS {rss:.1} MB");
            return;
        }
        _ => {}
    }
    let mut rows = Vec::new();
    let mut propagation = serde_json::Map::new();
    let mut floor = serde_json::Map::new();
    let mut floor_rows = Vec::new();
    let mut from_commit_rows = Vec::new();
    let mut from_commit = serde_json::Map::new();
    for (count, samples) in [(1usize, 2000u64), (100, 500)] {
        let (ours, committed, kv) = side_by_side(&api, &url, count, samples).await;
        rows.push(ours.row(&format!("mycosynth: request → last of {count} subscribers")));
        from_commit_rows.push(committed.row(&format!(
            "mycosynth, the same samples, from the validator's commit → last of {count} subscribers"
        )));
        from_commit.insert(count.to_string(), json!(committed));
        floor_rows.push(kv.row(&format!(
            "floor, in turn with the row above: raw KV put → last of {count} KV watchers"
        )));
        propagation.insert(count.to_string(), json!(ours));
        floor.insert(count.to_string(), json!(kv));
    }
    let thousand = mycosynth_propagation(&api, &url, "prop1000", 1000, 200).await;
    rows.push(thousand.row("mycosynth: request → last of 1000 subscribers"));
    propagation.insert("1000".into(), json!(thousand));
    rows.append(&mut floor_rows);
    rows.append(&mut from_commit_rows);
    let mut floor_alone = serde_json::Map::new();
    for watchers in [1usize, 100] {
        let summary = kv_floor_alone(&url, watchers, 1000).await;
        rows.push(summary.row(&format!(
            "floor alone, puts back to back: raw KV put → last of {watchers} KV watchers"
        )));
        floor_alone.insert(watchers.to_string(), json!(summary));
    }
    // The same pairing for propagation: alone, changes back to back, so that the ratio to the
    // floor alone compares like with like (in turn, the validator idles through every floor
    // sample, and a change then finds it and the subscribers cold).
    let mut propagation_alone = serde_json::Map::new();
    for count in [1usize, 100] {
        let summary =
            mycosynth_propagation(&api, &url, &format!("alone{count}"), count, 1000).await;
        rows.push(summary.row(&format!(
            "mycosynth alone, changes back to back: request → last of {count} subscribers"
        )));
        propagation_alone.insert(count.to_string(), json!(summary));
    }
    let core = core_floor(&url, 2000).await;
    rows.push(core.row("floor: core NATS publish → subscriber"));
    if only == "latency" {
        println!(
            "\n| path (µs) | p50 | p90 | p99 | p99.9 | max | n |\n|---|---|---|---|---|---|---|"
        );
        rows.iter().for_each(|row| println!("{row}"));
        return;
    }
    let etcd = etcd_peer(&mut rows).await;
    let durable = durable_propagation(&mut rows).await;

    let reads = reads_under_updates(&url, &api).await;
    // Short by default: 300 samples and one 10 s outage; a small backup (`--only sites|backup`
    // for the full ones).
    let sites = mycosynth_benches::sites::report(300, &[Duration::from_secs(10)]).await;
    let backup = mycosynth_benches::backup::run(10, 1000, 10).await;
    println!("backup and restore, 10 namespaces x 1,000 keys x 10 versions: {backup}");

    println!("\n| path (µs) | p50 | p90 | p99 | p99.9 | max | n |\n|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }
    println!("\n| `get` of an integer (ns per read) while 1,000 change sets/s are applied | p50 | p99 | applied/s |\n|---|---|---|---|");
    for (label, run) in [("one thread", &reads.0), ("two threads, each", &reads.1)] {
        for t in &run.threads {
            println!(
                "| {label} | {:.1} | {:.1} | {:.0} |",
                t.p50, t.p99, run.applied_per_s
            );
        }
    }

    let throughput_one = tput(&api, 1, Duration::from_secs(5)).await;
    let throughput_many = tput(&api, 100, Duration::from_secs(5)).await;
    let validator_rss = rss_mb(validator.pid().unwrap_or(0));
    let second = Validator::start(&url, &[]);
    found_each_other(&[&validator, &second]).await;
    let throughput_two_one = tput(&api, 1, Duration::from_secs(5)).await;
    let throughput_two_many = tput(&api, 100, Duration::from_secs(5)).await;
    let routed = routing_client(&url).await;
    let routed_two_one = tput(&routed, 1, Duration::from_secs(5)).await;
    let routed_two_many = tput(&routed, 100, Duration::from_secs(5)).await;
    drop(second);
    println!("\n| change sets per second | 1 namespace | 100 namespaces |\n|---|---|---|");
    println!("| one validator | {throughput_one:.0} | {throughput_many:.0} |");
    println!("| two validators | {throughput_two_one:.0} | {throughput_two_many:.0} |");
    println!("| two validators, client sending to the owner (`route_to_owners`) | {routed_two_one:.0} | {routed_two_many:.0} |");

    let schedules =
        mycosynth_benches::schedules::lateness(&api, 200, Duration::from_millis(50)).await;
    println!("\n| how late schedules fire (µs) | p50 | p90 | p99 | p99.9 | max | n |\n|---|---|---|---|---|---|---|");
    println!(
        "{}",
        schedules.row("scheduled change request: its time → its commit (200 over 10 s)")
    );

    let (from_nats_ms, from_cache_ms, subscriber_rss) =
        mycosynth_benches::keys::startup(&api, &url).await;
    println!("\n| startup with 10,000 keys | ms |\n|---|---|");
    println!("| connect → first read, from NATS | {from_nats_ms:.1} |\n| connect → first read, from the cache | {from_cache_ms:.1} |");
    println!("\n| resident memory | MB |\n|---|---|");
    println!(
        "| subscribing process (`mycosynth watch`) holding 10,000 keys | {subscriber_rss:.1} |"
    );
    println!("| validator process after the throughput runs | {validator_rss:.1} |");

    // Last: the sidecar installs a metrics recorder in this process, which the runs above
    // (in-process subscribers) should not pay for.
    let sidecar = mycosynth_benches::sidecar::run(&api, &url, 1000).await;
    println!();
    sidecar.rows().iter().for_each(|row| println!("{row}"));
    let callout = mycosynth_benches::callout::run().await;
    callout.print();
    let console_page = mycosynth_benches::console::namespace_page(&api, &url, 1000, 200).await;
    println!(
        "\n{}",
        console_page.row("console: namespace page of 1,000 keys, request → whole page")
    );

    let one = &propagation["1"];
    let hundred = &propagation["100"];
    // Null where a side was not measured (no etcd): a ratio of nothing is no figure.
    let ratio = |a: &Value, b: &Value, q: &str| match (a[q].as_f64(), b[q].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    };
    let report = json!({
        "propagation_us": propagation,
        "propagation_from_commit_us": from_commit,
        "floor_kv_watch_us": floor,
        "floor_kv_watch_alone_us": floor_alone,
        "propagation_alone_us": propagation_alone,
        "floor_core_pubsub_us": core,
        "changes_per_s": {
            "one_validator": {"one_namespace": throughput_one, "hundred_namespaces": throughput_many},
            "two_validators": {"one_namespace": throughput_two_one, "hundred_namespaces": throughput_two_many},
            "two_validators_routing_client": {"one_namespace": routed_two_one, "hundred_namespaces": routed_two_many},
        },
        "startup_ms": {"from_nats_10k_keys": from_nats_ms, "from_cache_10k_keys": from_cache_ms},
        "rss_mb": {"subscriber_process_10k_keys": subscriber_rss, "validator_under_load": validator_rss},
        "ratios": {
            "1": {
                "p50_vs_kv_floor": ratio(one, &floor["1"], "p50"), "p99_vs_kv_floor": ratio(one, &floor["1"], "p99"),
                "alone_p50_vs_kv_floor_alone": ratio(&propagation_alone["1"], &floor_alone["1"], "p50"),
                "p50_vs_etcd": ratio(one, &etcd["1"], "p50"), "p99_vs_etcd": ratio(one, &etcd["1"], "p99"),
                "durable_p50_vs_etcd": ratio(&durable["single_node_fsync_always"], &etcd["1"], "p50"),
            },
            "100": {
                "p50_vs_kv_floor": ratio(hundred, &floor["100"], "p50"), "p99_vs_kv_floor": ratio(hundred, &floor["100"], "p99"),
                "alone_p50_vs_kv_floor_alone": ratio(&propagation_alone["100"], &floor_alone["100"], "p50"),
                "from_commit_p50_vs_kv_floor": ratio(&from_commit["100"], &floor["100"], "p50"),
                "p50_vs_etcd": ratio(hundred, &etcd["100"], "p50"), "p99_vs_etcd": ratio(hundred, &etcd["100"], "p99"),
            },
        },
        "sites": sites,
        "backup_10ns_1000keys_10versions": backup,
        "etcd_watch_us": etcd,
        "sidecar": sidecar,
        "auth_callout": callout,
        "console_namespace_page_1000_keys_us": console_page,
        "propagation_durable_us": durable,
        "schedule_lateness_us": schedules,
        "read_ns": {
            "under_1000_updates_per_s": {"one_thread": reads.0, "two_threads": reads.1},
            "single_thread_idle": "criterion: target/criterion/read/*",
        },
        "note": "one change in flight for latencies; propagation_us (1 and 100) and floor_kv_watch_us are sampled in turn, one of each; propagation_us and the floors run on one nats-server with the default sync_interval; propagation_durable_us fsyncs every write, like etcd; receipts off in the propagation subscribers; change requests carry no idempotency key (one that does adds a KV read before the commit); propagation_from_commit_us times the same samples as propagation_us from the validator's commit stamp, both ends on this machine's wall clock; propagation_alone_us, like floor_kv_watch_alone_us, is sampled back to back, one change after another, and alone_p50_vs_kv_floor_alone compares these two",
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("report.json");
    match std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    ) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(err) => eprintln!("could not write {}: {err}", path.display()),
    }
}

/// Propagation to `count` subscribers of `ns`, one change after another.
async fn mycosynth_propagation(
    api: &ApiClient,
    url: &str,
    ns: &str,
    count: usize,
    samples: u64,
) -> Summary {
    let run = Propagation::start(api, url, ns, count).await;
    let mut h = histogram();
    for i in 0..WARMUP + samples {
        let elapsed = run.sample(api, i).await;
        if i >= WARMUP {
            let _ = h.record(elapsed.as_nanos() as u64);
        }
    }
    Summary::of(&h)
}

/// The KV floor alone, one put after another: every thread on its path stays awake, which
/// makes it faster than the same floor sampled in turn with propagation ([`side_by_side`]).
async fn kv_floor_alone(url: &str, watchers: usize, samples: u64) -> Summary {
    let mut floor = KvFloor::start(url, &format!("alone{watchers}"), watchers).await;
    let mut h = histogram();
    for i in 0..WARMUP + samples {
        let elapsed = floor.sample(i).await;
        if i >= WARMUP {
            let _ = h.record(elapsed.as_nanos() as u64);
        }
    }
    Summary::of(&h)
}

/// Propagation to N subscribers and the KV floor to N watchers, one sample of each in turn, so
/// that both see the same moments of the machine and their ratio does not move with it.
/// Returns propagation from the request, the same samples from the validator's commit, and
/// the floor.
async fn side_by_side(
    api: &ApiClient,
    url: &str,
    count: usize,
    samples: u64,
) -> (Summary, Summary, Summary) {
    let ours = Propagation::start(api, url, &format!("prop{count}"), count).await;
    let mut floor = KvFloor::start(url, &format!("floor{count}"), count).await;
    let (mut h_ours, mut h_committed, mut h_floor) = (histogram(), histogram(), histogram());
    for i in 0..WARMUP + samples {
        let a = ours.sample(api, i).await;
        let committed = ours.commit_to_last_apply();
        let b = floor.sample(i).await;
        if i >= WARMUP {
            let _ = h_ours.record(a.as_nanos() as u64);
            if let Some(committed) = committed {
                let _ = h_committed.record(committed.as_nanos() as u64);
            }
            let _ = h_floor.record(b.as_nanos() as u64);
        }
    }
    (
        Summary::of(&h_ours),
        Summary::of(&h_committed),
        Summary::of(&h_floor),
    )
}

async fn core_floor(url: &str, samples: u64) -> Summary {
    let publisher = async_nats::connect(url).await.expect("connect");
    let subscriber = async_nats::connect(url).await.expect("connect");
    let mut sub = subscriber
        .subscribe("bench.floor")
        .await
        .expect("subscribe");
    subscriber.flush().await.expect("flush");
    let mut h = histogram();
    for i in 0..WARMUP + samples {
        let started = Instant::now();
        publisher
            .publish("bench.floor", "x".into())
            .await
            .expect("publish");
        let _ = sub.next().await;
        if i >= WARMUP {
            let _ = h.record(started.elapsed().as_nanos() as u64);
        }
    }
    Summary::of(&h)
}

/// An API client that sends each change to the validator instance owning its namespace, once
/// it has found the instances (its first discovery ping answers within milliseconds).
async fn routing_client(url: &str) -> Arc<ApiClient> {
    let client = ApiClient::connect(url, Duration::from_secs(10))
        .await
        .expect("api")
        .route_to_owners();
    tokio::time::sleep(Duration::from_millis(300)).await;
    Arc::new(client)
}

/// Waits (at most 10 s) until every validator sees all of them, so that the two-validator
/// throughput is measured once they split the namespaces, not while they discover each other.
async fn found_each_other(validators: &[&Validator]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let sees_all =
        |v: &Validator| v.metric("mycosynth_validator_instances", "") >= validators.len() as f64;
    while !validators.iter().all(|v| sees_all(v)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Accepted change sets per second over `namespaces` namespaces `tput0`, `tput1`, ...
async fn tput(api: &Arc<ApiClient>, namespaces: usize, run: Duration) -> f64 {
    throughput(api, |i| format!("tput{i}"), namespaces, run).await
}

/// etcd put → watch event at the last of 1 and 100 watchers (null without the `etcd` feature).
async fn etcd_peer(rows: &mut Vec<String>) -> Value {
    #[cfg(feature = "etcd")]
    {
        use mycosynth_benches::etcd::Etcd;
        match Etcd::start().await {
            Ok(etcd) => {
                let mut out = serde_json::Map::new();
                for (watchers, samples) in [(1usize, 1000u64), (100, 1000)] {
                    let summary = etcd.put_to_watch(watchers, WARMUP, samples).await;
                    rows.push(summary.row(&format!(
                        "peer: etcd put → last of {watchers} watchers (fsync per write)"
                    )));
                    out.insert(watchers.to_string(), json!(summary));
                }
                out.insert("server".into(), json!(Etcd::version()));
                return Value::Object(out);
            }
            Err(err) => eprintln!("etcd peer not measured: {err}"),
        }
    }
    #[cfg(not(feature = "etcd"))]
    eprintln!("etcd peer not measured: build with --features etcd (make bench does)");
    let _ = rows;
    Value::Null
}

/// Propagation to one subscriber with every write fsynced before it is acknowledged: one node
/// with `sync_interval: always`, and the production layout (three nodes, three replicas).
async fn durable_propagation(rows: &mut Vec<String>) -> Value {
    let mut out = serde_json::Map::new();
    {
        let nats = NatsServer::start_durable();
        let _validator = Validator::start(&nats.url(), &[]);
        let api = ApiClient::connect(&nats.url(), Duration::from_secs(10))
            .await
            .expect("api");
        let summary = mycosynth_propagation(&api, &nats.url(), "prop1", 1, 500).await;
        rows.push(summary.row("mycosynth, one node, fsync per write: request → 1 subscriber"));
        out.insert("single_node_fsync_always".into(), json!(summary));
    }
    {
        let cluster = NatsCluster::start(3);
        let urls = cluster.urls();
        let _validator = Validator::start(&urls, &[]);
        let api = ApiClient::connect(&urls, Duration::from_secs(10))
            .await
            .expect("api");
        let summary = mycosynth_propagation(&api, &urls, "prop1", 1, 500).await;
        rows.push(
            summary.row(
                "mycosynth, 3-node cluster, 3 replicas, fsync per write: request → 1 subscriber",
            ),
        );
        out.insert("cluster_3_replicas_fsync_always".into(), json!(summary));
    }
    Value::Object(out)
}

/// `get` from one thread, then from two at once, while 1,000 change sets per second arrive.
async fn reads_under_updates(
    url: &str,
    api: &ApiClient,
) -> (
    mycosynth_benches::reads::UnderUpdates,
    mycosynth_benches::reads::UnderUpdates,
) {
    let _: ChangeOutcome = api
        .call(
            endpoint::CHANGE,
            &request("reads", vec![("limits.rps".into(), json!(5000))]),
        )
        .await
        .expect("seed");
    let config = Subscriber::builder("reads", "prod")
        .nats_url(url)
        .receipts(false, Duration::from_secs(10))
        .anti_entropy_interval(Duration::from_secs(3600))
        .connect()
        .await
        .expect("subscriber");
    let client = async_nats::connect(url).await.expect("connect");
    let run = Duration::from_secs(3);
    let one = mycosynth_benches::reads::under_updates(
        client.clone(),
        &config,
        "reads",
        "prod",
        1,
        1000,
        run,
    )
    .await;
    let two =
        mycosynth_benches::reads::under_updates(client, &config, "reads", "prod", 2, 1000, run)
            .await;
    config.shutdown().await;
    (one, two)
}
