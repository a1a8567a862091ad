//! The fleet view: subscriber processes report the version they hold; `mycosynth status` shows
//! who holds what, waits for convergence, and names stale and rejecting instances.

use std::time::{Duration, Instant};

use mycosynth::cli::exit;
use mycosynth_subscriber::wire::{InstanceState, StatusOutcome};
use mycosynth_testkit::{signal, CliProcess, NatsServer, Validator};
use serde_json::json;

use crate::{run_cli, set_keys, stderr, stdout};

fn watchers(url: &str, ns: &str, count: usize) -> Vec<CliProcess> {
    (0..count)
        .map(|_| CliProcess::spawn(url, &["watch", ns, "prod", "--json", "--heartbeat", "0.5"]))
        .collect()
}

async fn status(url: &str, ns: &str) -> StatusOutcome {
    let out = run_cli(url, &["--json", "status", ns, "prod"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("status --json")
}

async fn wait_live(url: &str, ns: &str, count: usize, timeout: Duration) -> StatusOutcome {
    let deadline = Instant::now() + timeout;
    loop {
        let now = status(url, ns).await;
        if now.instances.len() == count || Instant::now() > deadline {
            assert_eq!(now.instances.len(), count, "live instances");
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Acceptance 1: 20 subscriber processes; after a change, `status --wait-version` succeeds and
/// reports 20/20 with the convergence time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_instances_converge_and_status_says_so() {
    let nats = NatsServer::start();
    let validator = Validator::start(
        &nats.url(),
        &["--stale-after", "5", "--instance-expiry", "10"],
    );
    let url = nats.url();
    let api = crate::api(&url).await;
    set_keys(&api, "fleet", "prod", &[("limit", json!(1))]).await;
    let _instances = watchers(&url, "fleet", 20);
    wait_live(&url, "fleet", 20, Duration::from_secs(60)).await;

    let changed = set_keys(&api, "fleet", "prod", &[("limit", json!(2))]).await;
    let version = changed.version.to_string();
    let out = run_cli(
        &url,
        &[
            "status",
            "fleet",
            "prod",
            "--wait-version",
            &version,
            "--timeout",
            "20",
        ],
    )
    .await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let summary = text.lines().last().unwrap_or_default();
    println!("{summary}");
    assert!(
        summary.contains("20/20 live instances hold it") && summary.contains("converged"),
        "{text}"
    );
    let now = status(&url, "fleet").await;
    assert!(now
        .instances
        .iter()
        .all(|i| i.state == InstanceState::Current));
    assert!(now.convergence_ms.is_some_and(|ms| ms > 0.0));

    // The validator exports the fleet per namespace/environment (refreshed every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, metrics) = mycosynth_testkit::http_get(&validator.http_addr(), "/metrics").unwrap();
    for line in [
        "mycosynth_fleet_instances{namespace=\"fleet\",environment=\"prod\"} 20",
        "mycosynth_fleet_instances_behind{namespace=\"fleet\",environment=\"prod\"} 0",
        "mycosynth_fleet_convergence_seconds_count{namespace=\"fleet\",environment=\"prod\"}",
        "mycosynth_fleet_max_staleness_seconds{namespace=\"fleet\",environment=\"prod\"}",
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}");
    }
}

/// Acceptance 2: a paused instance (SIGSTOP) is named behind or stale, the wait times out with
/// its exit code; resumed (SIGCONT), it converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_is_named_and_the_wait_times_out() {
    let nats = NatsServer::start();
    let _validator = Validator::start(
        &nats.url(),
        &["--stale-after", "2", "--instance-expiry", "30"],
    );
    let url = nats.url();
    let api = crate::api(&url).await;
    set_keys(&api, "paused", "prod", &[("limit", json!(1))]).await;
    let instances = watchers(&url, "paused", 3);
    wait_live(&url, "paused", 3, Duration::from_secs(30)).await;

    let paused = instances[0].pid();
    signal(paused, libc::SIGSTOP);
    let version = set_keys(&api, "paused", "prod", &[("limit", json!(2))])
        .await
        .version;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = status(&url, "paused").await;
    let state = now
        .instances
        .iter()
        .find(|i| i.receipt.pid == paused)
        .map(|i| i.state);
    assert!(
        matches!(state, Some(InstanceState::Behind | InstanceState::Stale)),
        "{state:?}"
    );
    assert_eq!(now.holding_latest, 2);

    let out = run_cli(
        &url,
        &[
            "status",
            "paused",
            "prod",
            "--wait-version",
            &version.to_string(),
            "--timeout",
            "3",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::NOT_CONVERGED)),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("2 of 3"), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table
            .lines()
            .any(|l| l.contains(&paused.to_string()) && l.contains("stale")),
        "{table}"
    );

    signal(paused, libc::SIGCONT);
    let out = run_cli(
        &url,
        &[
            "status",
            "paused",
            "prod",
            "--wait-version",
            &version.to_string(),
            "--timeout",
            "20",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Acceptance 3: an instance whose client-side check refuses a change (here one committed around
/// the validator, breaking the schema) is listed as rejected with the reason, and keeps serving
/// its previous snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_instance_is_listed_with_its_reason() {
    let nats = NatsServer::start();
    let _validator = Validator::start(
        &nats.url(),
        &["--stale-after", "5", "--instance-expiry", "10"],
    );
    let url = nats.url();
    let (_api, instance) = watched_payment_service(&url).await;

    let bad = breaking_pool_size_is_refused(&url).await;
    assert!(instance
        .wait_line(1, Duration::from_millis(500), |l| l
            .contains(&format!("\"version\":{bad}")))
        .is_none());
}

/// payment-service/prod under its schema (database.host db1, database.pool_size 10), watched by
/// one `mycosynth watch` instance (JSON lines, receipts every 0.5 s) that the fleet lists live.
async fn watched_payment_service(url: &str) -> (mycosynth::client::ApiClient, CliProcess) {
    let out = run_cli(
        url,
        &["schema", "push", "payment-service", &crate::schema_path()],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let api = crate::api(url).await;
    let pairs = [
        ("database.host", json!("db1")),
        ("database.pool_size", json!(10)),
    ];
    set_keys(&api, "payment-service", "prod", &pairs).await;
    let instance = CliProcess::spawn(
        url,
        &[
            "watch",
            "payment-service",
            "prod",
            "--json",
            "--heartbeat",
            "0.5",
        ],
    );
    wait_live(url, "payment-service", 1, Duration::from_secs(30)).await;
    (api, instance)
}

/// Commits database.pool_size 0 to payment-service/prod around the validator (breaking the
/// schema's minimum) and checks that the watching instance refuses it, naming the rule, and
/// serves the version before; returns the refused version.
async fn breaking_pool_size_is_refused(url: &str) -> u64 {
    let bad = crate::commit_bypassing_validator(
        url,
        "payment-service",
        "prod",
        "database.pool_size",
        json!(0),
        true,
    )
    .await;
    let (refused, serving, reason) = first_rejection(url, "payment-service").await;
    println!("rejected v{refused}: {reason}");
    assert_eq!((refused, serving), (bad, bad - 1));
    assert!(
        reason.contains("minimum") || reason.contains("less than"),
        "{reason}"
    );
    bad
}

/// The first rejection an instance of `ns` reports (within 10 s): the version it refused, the
/// version it serves, and why.
async fn first_rejection(url: &str, ns: &str) -> (u64, u64, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = status(url, ns).await;
        if let Some(i) = now
            .instances
            .iter()
            .find(|i| i.state == InstanceState::Rejected)
        {
            let rejection = i.receipt.rejected.clone().expect("reason");
            return (rejection.version, i.receipt.version, rejection.reason);
        }
        assert!(
            Instant::now() < deadline,
            "no instance reported the rejection: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The client-side check judges a change event on the keys it sets once the snapshot has
/// passed under the schema (the payment-service schema's rules all apply key by key): after two
/// changes it served, a change committed around the validator that breaks the schema is still
/// refused, naming the rule, and the previous snapshot is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_changes_it_served_an_instance_still_refuses_a_breaking_one() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let (api, instance) = watched_payment_service(&url).await;
    for pool in [20, 30] {
        let done = set_keys(
            &api,
            "payment-service",
            "prod",
            &[("database.pool_size", json!(pool))],
        )
        .await;
        let served = format!("\"version\":{}", done.version);
        assert!(
            instance
                .wait_line(0, Duration::from_secs(10), |l| l.contains(&served))
                .is_some(),
            "version {} served",
            done.version
        );
    }
    breaking_pool_size_is_refused(&url).await;
}

/// Acceptance 4: a killed instance leaves the live list within the configured expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_expires() {
    let nats = NatsServer::start();
    let expiry = Duration::from_secs(3);
    let _validator = Validator::start(
        &nats.url(),
        &["--stale-after", "1", "--instance-expiry", "3"],
    );
    let url = nats.url();
    let api = crate::api(&url).await;
    set_keys(&api, "expiry", "prod", &[("limit", json!(1))]).await;
    let mut instances = watchers(&url, "expiry", 2);
    wait_live(&url, "expiry", 2, Duration::from_secs(30)).await;
    let victim = instances.remove(0);
    let pid = victim.pid();
    signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    let now = wait_live(&url, "expiry", 1, expiry + Duration::from_secs(3)).await;
    println!(
        "killed instance gone from the live list after {:?} (expiry {expiry:?})",
        killed.elapsed()
    );
    assert!(now.instances.iter().all(|i| i.receipt.pid != pid));
    drop(victim);
}
