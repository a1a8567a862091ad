//! Rollouts (issue 24): 20 subscribers with fixed instance ids in this process, a real
//! nats-server and validator processes. Cohorts, whole reads, promotion as one version, the
//! automatic rollback on a rejection and on a health regression, a validator killed
//! mid-rollout, a restarted canary, `--target`, and the bad input of the table.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycosynth::cli::exit;
use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{
    endpoint, ChangeSource, KeyChange, RolloutActionRequest, RolloutOutcome, RolloutRecord,
    RolloutStartRequest, RolloutState,
};
use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::{NatsServer, Validator};
use serde_json::{json, Value};

use crate::{run_cli, set_keys, stderr, stdout};

const NS: &str = "shop";
const ENV: &str = "prod";
/// Receipts often, so the fleet view follows within a fraction of a second.
const HEARTBEAT: Duration = Duration::from_millis(200);
const VALIDATOR_ARGS: &[&str] = &["--stale-after", "2", "--instance-expiry", "6"];

fn id(i: usize) -> String {
    format!("shop-{i:02}")
}

async fn subscriber(url: &str, id: &str, labels: &[(&str, &str)]) -> Subscriber {
    Subscriber::builder(NS, ENV)
        .nats_url(url)
        .instance_id(id)
        .labels(labels.iter().copied())
        .receipts(true, HEARTBEAT)
        .connect()
        .await
        .expect("subscriber connects")
}

async fn fleet(url: &str, count: usize) -> Vec<Subscriber> {
    let mut subs = Vec::new();
    for i in 0..count {
        subs.push(subscriber(url, &id(i), &[]).await);
    }
    subs
}

fn start_request(changes: Vec<KeyChange>, steps: &[f64], bake_s: u64) -> RolloutStartRequest {
    RolloutStartRequest {
        prometheus: None,
        namespace: NS.into(),
        environment: ENV.into(),
        changes,
        change_request: None,
        steps: steps.to_vec(),
        bake_s,
        auto_rollback: true,
        health: Vec::new(),
        target: BTreeMap::new(),
        author: "test".into(),
        reason: "canary".into(),
        source: ChangeSource::Api,
    }
}

pub(crate) fn action() -> RolloutActionRequest {
    RolloutActionRequest {
        namespace: NS.into(),
        environment: ENV.into(),
        author: "test".into(),
        reason: String::new(),
    }
}

pub(crate) async fn status(api: &ApiClient) -> RolloutOutcome {
    api.call(endpoint::ROLLOUT_STATUS, &action())
        .await
        .expect("rollout status")
}

fn members(record: &RolloutRecord, count: usize) -> Vec<usize> {
    (0..count)
        .filter(|i| record.holds_candidate(&id(*i), &BTreeMap::new()))
        .collect()
}

/// Starts `request`, aborting and starting again until the first step's cohort holds between
/// `min` and `max` of `count` instances (the cohort is a hash of the rollout's random id: this
/// makes "10 % of 20" a cohort the test can tell from nobody or everybody).
async fn start_with_cohort(
    api: &ApiClient,
    request: &RolloutStartRequest,
    count: usize,
    (min, max): (usize, usize),
) -> RolloutRecord {
    loop {
        let started: RolloutOutcome = api
            .call(endpoint::ROLLOUT_START, request)
            .await
            .expect("rollout started");
        let record = started.rollout.expect("record");
        let n = members(&record, count).len();
        if (min..=max).contains(&n) {
            return record;
        }
        let _: RolloutOutcome = api
            .call(endpoint::ROLLOUT_ABORT, &action())
            .await
            .expect("abort");
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_state(api: &ApiClient, state: RolloutState, timeout: Duration) -> RolloutRecord {
    let deadline = Instant::now() + timeout;
    loop {
        let now = status(api).await.rollout.expect("record");
        if now.state == state {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "rollout is {:?}, not {state:?}: {:?}",
            now.state,
            now.verdict
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Readers on every subscriber check that `limit` and `mode` always come from one change set:
/// (1, "a") stable, (2, "b") candidate. Returns the flag a torn read raises.
fn whole_readers(subs: &[Subscriber], stop: Arc<AtomicBool>) -> Arc<AtomicU64> {
    let torn = Arc::new(AtomicU64::new(0));
    for sub in subs {
        let (sub, stop, torn) = (sub.clone(), Arc::clone(&stop), Arc::clone(&torn));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let snapshot = sub.snapshot();
                let pair = (
                    snapshot.get::<u64>("limit").unwrap_or(0),
                    snapshot.get::<String>("mode").unwrap_or_default(),
                );
                if !matches!((pair.0, pair.1.as_str()), (1, "a") | (2, "b")) {
                    torn.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        });
    }
    torn
}

fn candidate() -> Vec<KeyChange> {
    vec![
        KeyChange::set("limit", json!(2)),
        KeyChange::set("mode", json!("b")),
    ]
}

/// 10 % hold the candidate, the others do not, reads stay whole; a restarted canary (same id)
/// rejoins its cohort; promote reaches all as one version in history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_hold_the_candidate_then_promote_is_one_version() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), VALIDATOR_ARGS);
    let url = nats.url();
    let api = crate::api(&url).await;
    let base = set_keys(&api, NS, ENV, &[("limit", json!(1)), ("mode", json!("a"))]).await;
    let mut subs = fleet(&url, 20).await;
    let stop = Arc::new(AtomicBool::new(false));
    let torn = whole_readers(&subs, Arc::clone(&stop));

    let request = start_request(candidate(), &[10.0, 100.0], 3600);
    let record = start_with_cohort(&api, &request, 20, (1, 4)).await;
    let cohort = members(&record, 20);
    println!("rollout {}: cohort {cohort:?} of 20", record.id);
    wait_until(
        "the cohort serves the candidate",
        Duration::from_secs(10),
        || {
            subs.iter().enumerate().all(|(i, s)| {
                let expected = cohort.contains(&i);
                (s.rollout().as_deref() == Some(record.id.as_str())) == expected
                    && s.get::<u64>("limit").unwrap() == if expected { 2 } else { 1 }
            })
        },
    )
    .await;
    assert!(
        subs.iter().all(|s| s.version() == base.version),
        "candidate is not a version"
    );
    let get = run_cli(&url, &["--json", "get", NS, ENV, "limit"]).await;
    assert!(
        stdout(&get).contains("1"),
        "get shows stable: {}",
        stdout(&get)
    );

    // The status shows who holds which.
    let shown = status(&api).await;
    assert_eq!(shown.canaries.len() + shown.control.len(), 20);
    assert!(
        shown.canaries.iter().all(|m| m.candidate),
        "{:?}",
        shown.canaries
    );
    let shown_ids: Vec<String> = shown
        .canaries
        .iter()
        .map(|m| m.instance_id.clone())
        .collect();
    assert_eq!(shown_ids.len(), cohort.len(), "{shown_ids:?}");

    // A canary restarted with the same id comes back into the cohort.
    let canary = cohort[0];
    subs[canary].shutdown().await;
    subs[canary] = subscriber(&url, &id(canary), &[]).await;
    let again = subs[canary].clone();
    wait_until(
        "the restarted canary rejoins",
        Duration::from_secs(10),
        || {
            again.rollout().as_deref() == Some(record.id.as_str())
                && again.get::<u64>("limit").unwrap() == 2
        },
    )
    .await;

    let out = run_cli(&url, &["rollout", "promote", NS, ENV]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let promoted = status(&api).await.rollout.expect("record");
    assert_eq!(promoted.state, RolloutState::Promoted);
    let version = promoted.promoted_version.expect("promoted version");
    assert_eq!(version, base.version + 1, "one version");
    wait_until(
        "every instance holds the promoted version",
        Duration::from_secs(10),
        || {
            subs.iter().all(|s| {
                s.version() == version
                    && s.rollout().is_none()
                    && s.get::<u64>("limit").unwrap() == 2
            })
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        torn.load(Ordering::Relaxed),
        0,
        "a read mixed stable and candidate"
    );
    let history: Value = api
        .call(
            endpoint::HISTORY,
            &json!({"namespace": NS, "environment": ENV}),
        )
        .await
        .expect("history");
    let sets = history["change_sets"].as_array().expect("change sets");
    assert_eq!(sets.len(), 2, "base + the promotion: {history}");
    let promotion = sets
        .iter()
        .find(|s| s["version"] == json!(version))
        .expect("promoted");
    assert!(
        promotion["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&record.id),
        "{promotion}"
    );
    assert_eq!(promotion["request_id"], json!(record.id), "{promotion}");
}

/// A canary whose own check refuses the candidate aborts the rollout by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_rejecting_the_candidate_rolls_back() {
    let nats = NatsServer::start();
    let validator = Validator::start(&nats.url(), VALIDATOR_ARGS);
    let url = nats.url();
    let api = crate::api(&url).await;
    set_keys(&api, NS, ENV, &[("limit", json!(1)), ("mode", json!("a"))]).await;
    let subs = fleet(&url, 20).await;
    for sub in &subs {
        sub.check_candidate(|c| match c.get::<u64>("limit") {
            Ok(n) if n > 1 => Err(format!("limit {n} is more than this host holds")),
            _ => Ok(()),
        });
    }
    let request = start_request(candidate(), &[10.0, 100.0], 3600);
    let record = start_with_cohort(&api, &request, 20, (1, 6)).await;
    let aborted = wait_state(&api, RolloutState::Aborted, Duration::from_secs(10)).await;
    let verdict = aborted.verdict.expect("verdict");
    println!("aborted by {}: {}", verdict.by, verdict.reason);
    assert_eq!(verdict.by, "driver");
    assert!(
        verdict.reason.contains("rejected the candidate"),
        "{}",
        verdict.reason
    );
    assert!(subs
        .iter()
        .all(|s| s.get::<u64>("limit").unwrap() == 1 && s.rollout().is_none()));
    assert_eq!(aborted.id, record.id);
    assert!(validator.metric("mycosynth_rollouts_aborted_total", "reason=\"rejection\"") >= 1.0);
}

/// A health regression injected in the canaries aborts the rollout; control never serves the
/// candidate; the time from the decision to the last canary on stable is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_regression_in_canaries_rolls_back_and_control_is_untouched() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), VALIDATOR_ARGS);
    let url = nats.url();
    let api = crate::api(&url).await;
    set_keys(&api, NS, ENV, &[("limit", json!(1)), ("mode", json!("a"))]).await;
    let subs = fleet(&url, 20).await;
    let touched: Vec<Arc<AtomicBool>> = subs.iter().map(|_| Arc::default()).collect();
    for (sub, touched) in subs.iter().zip(&touched) {
        let (me, touched) = (sub.clone(), Arc::clone(touched));
        // The candidate makes this service fail 50 % of its requests; stable 10 %.
        sub.health_signal("http_5xx_ratio", move || {
            if me.get::<u64>("limit").unwrap_or(1) == 2 {
                touched.store(true, Ordering::Relaxed);
                0.5
            } else {
                0.1
            }
        });
    }
    let mut request = start_request(candidate(), &[10.0, 100.0], 3600);
    request.health = vec!["http_5xx_ratio<=control*1.1+0.01".into()];
    let record = start_with_cohort(&api, &request, 20, (1, 6)).await;
    let cohort = members(&record, 20);
    let aborted = wait_state(&api, RolloutState::Aborted, Duration::from_secs(15)).await;
    let verdict = aborted.verdict.expect("verdict");
    assert!(
        verdict.reason.contains("http_5xx_ratio"),
        "{}",
        verdict.reason
    );
    // How fast they are back is a figure (printed below), not asserted: the deadline only
    // bounds the wait.
    wait_until("canaries back on stable", Duration::from_secs(10), || {
        subs.iter()
            .all(|s| s.rollout().is_none() && s.get::<u64>("limit").unwrap() == 1)
    })
    .await;
    let back_ms = (mycosynth::clock::now_us() - verdict.at_us) as f64 / 1e3;
    println!(
        "abort: {}; all canaries on stable at most {back_ms:.1} ms after the decision",
        verdict.reason
    );
    for (i, touched) in touched.iter().enumerate() {
        assert_eq!(
            touched.load(Ordering::Relaxed),
            cohort.contains(&i),
            "instance {i}"
        );
    }
}

/// The validator killed mid-rollout: a new one reloads the record and carries on to the
/// promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_killed_mid_rollout_resumes() {
    let nats = NatsServer::start();
    let mut validator = Validator::start(&nats.url(), VALIDATOR_ARGS);
    let url = nats.url();
    let api = crate::api(&url).await;
    let base = set_keys(&api, NS, ENV, &[("limit", json!(1)), ("mode", json!("a"))]).await;
    let subs = fleet(&url, 20).await;
    let mut request = start_request(candidate(), &[10.0, 50.0, 100.0], 2);
    request.auto_rollback = false;
    let record = start_with_cohort(&api, &request, 20, (1, 6)).await;
    validator.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Canaries keep serving the candidate while no validator runs.
    let cohort = members(&record, 20);
    assert!(cohort
        .iter()
        .all(|i| subs[*i].get::<u64>("limit").unwrap() == 2));
    let _validator = Validator::start(&nats.url(), VALIDATOR_ARGS);
    let promoted = wait_state(&api, RolloutState::Promoted, Duration::from_secs(30)).await;
    assert_eq!(promoted.id, record.id);
    assert_eq!(promoted.step, 2, "every step was taken");
    let version = promoted.promoted_version.expect("version");
    assert_eq!(version, base.version + 1);
    wait_until("all hold the promotion", Duration::from_secs(10), || {
        subs.iter()
            .all(|s| s.version() == version && s.get::<u64>("limit").unwrap() == 2)
    })
    .await;
}

/// `--target zone=eu-1`: only instances with the label take part, at 100 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_labels_limit_the_rollout() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), VALIDATOR_ARGS);
    let url = nats.url();
    let api = crate::api(&url).await;
    set_keys(&api, NS, ENV, &[("limit", json!(1)), ("mode", json!("a"))]).await;
    let mut subs = Vec::new();
    for i in 0..20 {
        let zone = if i % 2 == 0 { "eu-1" } else { "us-1" };
        subs.push(subscriber(&url, &id(i), &[("zone", zone)]).await);
    }
    let out = run_cli(
        &url,
        &[
            "rollout",
            "start",
            NS,
            ENV,
            "--set",
            "limit=2",
            "--set",
            "mode=\"b\"",
            "--steps",
            "100%",
            "--bake",
            "1h",
            "--target",
            "zone=eu-1",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(
        "eu-1 serves the candidate, us-1 stable",
        Duration::from_secs(10),
        || {
            subs.iter()
                .enumerate()
                .all(|(i, s)| s.get::<u64>("limit").unwrap() == if i % 2 == 0 { 2 } else { 1 })
        },
    )
    .await;
    let shown = status(&api).await;
    assert_eq!(shown.canaries.len(), 10);
    assert!(
        shown.control.is_empty(),
        "untargeted instances are not control"
    );
}

/// The bad-input table: each refused with its exit code, nothing stored or served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), VALIDATOR_ARGS);
    let url = nats.url();
    let api = crate::api(&url).await;
    set_keys(&api, NS, ENV, &[("limit", json!(1)), ("mode", json!("a"))]).await;
    let schema =
        json!({"type": "object", "properties": {"limit": {"type": "integer", "maximum": 10}}});
    let _: Value = api
        .call(
            endpoint::SCHEMA_PUSH,
            &json!({"namespace": NS, "schema": schema, "force": false, "author": "t"}),
        )
        .await
        .expect("schema pushed");
    let sub = subscriber(&url, "shop-00", &[]).await;
    let cli = |args: &'static [&'static str]| run_cli(&url, args);

    let bad_steps = cli(&[
        "rollout", "start", NS, ENV, "--set", "limit=2", "--steps", "10%,5%",
    ])
    .await;
    assert_eq!(
        bad_steps.status.code(),
        Some(i32::from(exit::VALIDATION)),
        "{}",
        stderr(&bad_steps)
    );
    assert!(
        stderr(&bad_steps).contains("does not increase"),
        "{}",
        stderr(&bad_steps)
    );
    let over = cli(&[
        "rollout", "start", NS, ENV, "--set", "limit=2", "--steps", "50%,150%",
    ])
    .await;
    assert_eq!(
        over.status.code(),
        Some(i32::from(exit::VALIDATION)),
        "{}",
        stderr(&over)
    );
    let rule = cli(&[
        "rollout",
        "start",
        NS,
        ENV,
        "--set",
        "limit=2",
        "--health",
        "errors>>2",
    ])
    .await;
    assert_eq!(rule.status.code(), Some(i32::from(exit::VALIDATION)));
    assert!(
        stderr(&rule).contains("errors>>2"),
        "names the rule: {}",
        stderr(&rule)
    );
    // Sent past the CLI's checks, the validator refuses them too.
    let mut raw = start_request(candidate(), &[10.0, 5.0], 60);
    let refused = api
        .call::<_, RolloutOutcome>(endpoint::ROLLOUT_START, &raw)
        .await
        .unwrap_err();
    assert_eq!(refused.kind.as_str(), "validation");
    raw.steps = vec![10.0];
    raw.health = vec!["nonsense".into()];
    let refused = api
        .call::<_, RolloutOutcome>(endpoint::ROLLOUT_START, &raw)
        .await
        .unwrap_err();
    assert!(refused.message.contains("nonsense"), "{}", refused.message);

    let invalid = cli(&[
        "rollout",
        "start",
        NS,
        ENV,
        "--set",
        "limit=100",
        "--steps",
        "100%",
    ])
    .await;
    assert_eq!(
        invalid.status.code(),
        Some(i32::from(exit::VALIDATION)),
        "{}",
        stderr(&invalid)
    );
    assert!(status(&api).await.rollout.is_none(), "nothing stored");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sub.get::<u64>("limit").unwrap(), 1);
    assert!(sub.rollout().is_none());

    let first = cli(&[
        "rollout", "start", NS, ENV, "--set", "limit=2", "--steps", "100%", "--bake", "1h",
    ])
    .await;
    assert!(first.status.success(), "{}", stderr(&first));
    let running = status(&api).await.rollout.expect("running");
    let second = cli(&[
        "rollout", "start", NS, ENV, "--set", "limit=3", "--steps", "100%",
    ])
    .await;
    assert_eq!(
        second.status.code(),
        Some(i32::from(exit::CONFLICT)),
        "{}",
        stderr(&second)
    );
    assert!(
        stderr(&second).contains(&running.id),
        "names the running one: {}",
        stderr(&second)
    );
}
