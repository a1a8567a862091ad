//! High availability on a three-node JetStream cluster: nodes and validators killed with
//! SIGKILL while a client commits changes at a steady rate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycosynth::cli::exit;
use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, ErrorKind, GetOutcome, GetRequest, HistoryOutcome, HistoryRequest,
};
use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::{NatsCluster, NatsServer, Validator};
use serde_json::json;

use crate::{change_request, run_cli, stderr};

/// What a steady writer saw.
struct Run {
    /// n -> the version its change was acknowledged at.
    acknowledged: BTreeMap<u64, u64>,
    attempts: u64,
    failures: u64,
    /// From the first failed attempt to the last one.
    window: Option<(Instant, Instant)>,
}

/// Commits `count` changes (`n` and `k<n>` = n), one every `every`, each retried with its own
/// idempotency key until acknowledged.
async fn steady_writer(api: Arc<ApiClient>, ns: &'static str, count: u64, every: Duration) -> Run {
    let mut run = Run {
        acknowledged: BTreeMap::new(),
        attempts: 0,
        failures: 0,
        window: None,
    };
    for n in 1..=count {
        let key = format!("k{n}");
        let mut request = change_request(ns, "prod", &[("n", json!(n)), (&key, json!(n))]);
        request.request_id = Some(format!("writer-{n}"));
        loop {
            run.attempts += 1;
            match api
                .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
                .await
            {
                Ok(outcome) => {
                    run.acknowledged.insert(n, outcome.version);
                    break;
                }
                Err(err) => {
                    assert_eq!(
                        err.kind,
                        ErrorKind::Unavailable,
                        "only unavailability is expected: {err:?}"
                    );
                    run.failures += 1;
                    let now = Instant::now();
                    run.window = Some(run.window.map_or((now, now), |(first, _)| (first, now)));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
    run
}

/// Every acknowledged change is in KV and in history exactly once, versions are contiguous, and
/// every subscriber converges to the same state.
async fn check_nothing_lost(api: &ApiClient, ns: &str, run: &Run, subscribers: &[Subscriber]) {
    let budget = Duration::from_secs(30);
    let state: GetOutcome = api
        .call_retrying(
            endpoint::GET,
            &GetRequest {
                namespace: ns.into(),
                environment: "prod".into(),
                key: None,
            },
            budget,
        )
        .await
        .unwrap();
    let history: HistoryOutcome = api
        .call_retrying(
            endpoint::HISTORY,
            &HistoryRequest {
                namespace: ns.into(),
                environment: "prod".into(),
                key: None,
                limit: Some(10_000),
            },
            budget,
        )
        .await
        .unwrap();
    let versions: Vec<u64> = history
        .change_sets
        .iter()
        .rev()
        .map(|s| s.version)
        .collect();
    assert_eq!(
        versions,
        (1..=state.version).collect::<Vec<_>>(),
        "history is contiguous"
    );
    for (n, version) in &run.acknowledged {
        let key = format!("k{n}");
        let value = state
            .values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, r)| r.value.clone());
        assert_eq!(
            value,
            Some(json!(n)),
            "acknowledged change {n} missing from KV"
        );
        let sets: Vec<u64> = history
            .change_sets
            .iter()
            .filter(|s| s.changes.iter().any(|c| c.key == key))
            .map(|s| s.version)
            .collect();
        assert_eq!(
            sets,
            vec![*version],
            "change {n} must be in history exactly once, at its acknowledged version"
        );
    }
    let expected: serde_json::Value = state
        .values
        .iter()
        .map(|(k, r)| (k.clone(), r.value.clone()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    for config in subscribers {
        assert!(
            config
                .wait_for_version(state.version, Duration::from_secs(30))
                .await,
            "subscriber stuck at {}",
            config.version()
        );
        assert_eq!(config.snapshot().to_json(), expected);
    }
}

fn report(what: &str, run: &Run) {
    let window = run
        .window
        .map_or(Duration::ZERO, |(first, last)| last - first);
    println!(
        "{what}: {} changes acknowledged; writes failing for {window:?}; error rate {:.1}% ({} of {} attempts)",
        run.acknowledged.len(),
        100.0 * run.failures as f64 / run.attempts as f64,
        run.failures,
        run.attempts
    );
}

async fn stream_leader(url: &str) -> Option<String> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.ok()?);
    let mut stream = js.get_stream("KV_mycosynth-config").await.ok()?;
    stream.info().await.ok()?.cluster.as_ref()?.leader.clone()
}

/// Acceptance 1 and 3: kill the node leading the config stream during steady writes and later
/// restart it: no acknowledged change is lost; subscribers (one of them on the killed node)
/// fail over and converge without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_node_loses_no_acknowledged_change() {
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let _validator = Validator::start(&urls, &[]);
    let api = Arc::new(
        ApiClient::connect(&urls, Duration::from_secs(2))
            .await
            .unwrap(),
    );
    api.call_retrying::<_, ChangeOutcome>(
        endpoint::CHANGE,
        &change_request("ha", "prod", &[("n", json!(0))]),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let leader = stream_leader(&cluster.nodes[0].url())
        .await
        .expect("stream leader");
    let victim = NatsCluster::node_index(&leader).expect("node name");
    // Every subscriber gets all URLs and picks a server itself; connect until one sits on the
    // node about to be killed (and keep two others).
    let mut subscribers: Vec<Subscriber> = Vec::new();
    let mut on_victim = 0;
    for _ in 0..30 {
        let builder = Subscriber::builder("ha", "prod")
            .nats_url(urls.clone())
            .backoff(Duration::from_millis(50), Duration::from_millis(500));
        let config = builder.connect().await.unwrap();
        let here = config.status().server.as_deref() == Some(leader.as_str());
        if here || subscribers.len() - on_victim < 2 {
            on_victim += usize::from(here);
            subscribers.push(config);
        }
        if on_victim > 0 && subscribers.len() >= 3 {
            break;
        }
    }
    assert!(on_victim > 0, "no subscriber landed on {leader}");
    println!(
        "config stream leader {leader}; {on_victim} of {} subscribers connected to it",
        subscribers.len()
    );

    let writer = tokio::spawn(steady_writer(
        Arc::clone(&api),
        "ha",
        150,
        Duration::from_millis(20),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.nodes[victim].kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.nodes[victim].restart();
    let run = writer.await.unwrap();
    report("node killed", &run);
    assert_eq!(run.acknowledged.len(), 150);
    check_nothing_lost(&api, "ha", &run, &subscribers).await;
    let moved = subscribers
        .iter()
        .filter(|s| s.stats().reconnects >= 2)
        .count();
    assert!(
        moved >= on_victim,
        "the subscribers on {leader} reconnected elsewhere ({moved})"
    );
}

/// Acceptance 2: kill one of two validators during steady writes: nothing acknowledged is
/// lost and nothing is applied twice (the client retries with the same idempotency key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_validator_loses_and_duplicates_nothing() {
    let nats = NatsServer::start_durable();
    let mut first = Validator::start(&nats.url(), &[]);
    let _second = Validator::start(&nats.url(), &[]);
    let api = Arc::new(
        ApiClient::connect(&nats.url(), Duration::from_secs(2))
            .await
            .unwrap(),
    );
    let config = Subscriber::builder("pair", "prod")
        .nats_url(nats.url())
        .connect()
        .await
        .unwrap();

    let writer = tokio::spawn(steady_writer(
        Arc::clone(&api),
        "pair",
        150,
        Duration::from_millis(10),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    first.kill();
    let run = writer.await.unwrap();
    report("validator killed", &run);
    check_nothing_lost(&api, "pair", &run, &[config]).await;
}

/// A retry with the same idempotency key is answered with the first outcome, not applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_is_applied_once() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    let mut request = change_request("idem", "prod", &[("counter", json!(1))]);
    request.request_id = Some("retry-me".into());
    let first: ChangeOutcome = api.call(endpoint::CHANGE, &request).await.unwrap();
    crate::set_keys(&api, "idem", "prod", &[("counter", json!(2))]).await;
    let again: ChangeOutcome = api.call(endpoint::CHANGE, &request).await.unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(
        (again.version, again.change_id.clone()),
        (first.version, first.change_id.clone())
    );
    let now: GetOutcome = api
        .call(
            endpoint::GET,
            &GetRequest {
                namespace: "idem".into(),
                environment: "prod".into(),
                key: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (now.version, now.values[0].1.value.clone()),
        (2, json!(2)),
        "the retry did not overwrite the later change"
    );
    request.request_id = Some("bad.id".into());
    let err = api
        .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Validation);
}

/// Acceptance 4: with two of three nodes down, writes fail with the documented "unavailable"
/// error and subscribers keep serving; with one node back, writes resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_two_nodes_stops_writes_without_losing_reads() {
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let _validator = Validator::start(&urls, &[]);
    let api = ApiClient::connect(&urls, Duration::from_secs(2))
        .await
        .unwrap();
    api.call_retrying::<_, ChangeOutcome>(
        endpoint::CHANGE,
        &change_request("quorum", "prod", &[("limit", json!(5))]),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let config = Subscriber::builder("quorum", "prod")
        .nats_url(urls.clone())
        .connect()
        .await
        .unwrap();

    cluster.nodes[1].kill();
    cluster.nodes[2].kill();
    let started = Instant::now();
    let out = run_cli(
        &urls,
        &["set", "quorum", "prod", "limit", "6", "--timeout", "4"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::UNAVAILABLE)),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("unavailable"), "{}", stderr(&out));
    println!(
        "write refused after {:?}: {}",
        started.elapsed(),
        stderr(&out).trim()
    );
    assert_eq!(
        config.get::<u32>("limit").unwrap(),
        5,
        "reads keep the last good value"
    );

    cluster.nodes[1].restart();
    let out = run_cli(
        &urls,
        &["set", "quorum", "prod", "limit", "7", "--timeout", "30"],
    )
    .await;
    assert!(
        out.status.success(),
        "writes resume with two of three nodes: {}",
        stderr(&out)
    );
    let state: GetOutcome = api
        .call_retrying(
            endpoint::GET,
            &GetRequest {
                namespace: "quorum".into(),
                environment: "prod".into(),
                key: None,
            },
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert!(
        config
            .wait_for_version(state.version, Duration::from_secs(30))
            .await
    );
    assert_eq!(config.get::<u32>("limit").unwrap(), 7);
}
