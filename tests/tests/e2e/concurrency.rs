use std::collections::BTreeSet;
use std::sync::Arc;

use mycosynth::cli::exit;
use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, ChangeRequest, ErrorKind, HistoryOutcome, HistoryRequest, KeyChange,
};
use mycosynth_testkit::{NatsServer, Validator};
use serde_json::json;

use crate::{run_cli, stderr};

/// Acceptance 4a: a stale `--expect-version` is a conflict; the current one is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_expected_version_is_a_conflict() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    for value in ["1", "2"] {
        assert!(run_cli(&url, &["set", "orders", "prod", "limit", value])
            .await
            .status
            .success());
    }
    let out = run_cli(
        &url,
        &[
            "set",
            "orders",
            "prod",
            "limit",
            "3",
            "--expect-version",
            "1",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::CONFLICT)),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("version 2"), "{}", stderr(&out));
    let out = run_cli(
        &url,
        &[
            "set",
            "orders",
            "prod",
            "limit",
            "3",
            "--expect-version",
            "2",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Acceptance 4b: two validator instances serve 200 concurrent change requests on one
/// namespace; the final version equals the number of accepted change sets and the history holds
/// each of them, in order. One runs on one thread (the default), the other on three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_validators_never_lose_or_interleave_change_sets() {
    let nats = NatsServer::start();
    let _a = Validator::start(&nats.url(), &[]);
    let _b = Validator::start(&nats.url(), &["--workers", "3"]);
    let api = Arc::new(crate::api(&nats.url()).await);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let api = Arc::clone(&api);
        tasks.spawn(async move {
            let changes = vec![
                KeyChange::set(format!("k.{i}"), json!(i)),
                KeyChange::set("last_writer", json!(i)),
            ];
            let request = ChangeRequest::new("checkout", "prod", changes, format!("client-{i}"));
            api.call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
                .await
        });
    }
    let mut accepted = Vec::new();
    let mut refusals = std::collections::BTreeMap::<String, usize>::new();
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(outcome) => {
                assert!(outcome.committed);
                accepted.push(outcome);
            }
            Err(err) => {
                assert_eq!(
                    err.kind,
                    ErrorKind::Unavailable,
                    "only overload may refuse: {err:?}"
                );
                *refusals.entry(err.message).or_default() += 1;
            }
        }
    }
    let refused: usize = refusals.values().sum();
    println!(
        "{} accepted, {refused} refused as overloaded: {refusals:?}",
        accepted.len()
    );
    assert!(
        accepted.len() >= 190,
        "too many refusals: {refused} ({refusals:?})"
    );

    let (history, versions) = history_of(&api, "checkout").await;
    assert_eq!(
        versions,
        (1..=accepted.len() as u64).collect::<Vec<_>>(),
        "history is 1..=accepted, in order"
    );
    let ids: BTreeSet<String> = history
        .change_sets
        .iter()
        .map(|s| s.meta.change_id.clone())
        .collect();
    for outcome in &accepted {
        assert!(
            ids.contains(outcome.change_id.as_ref().unwrap()),
            "accepted change set missing from history"
        );
    }
    let accepted_versions: BTreeSet<u64> = accepted.iter().map(|o| o.version).collect();
    assert_eq!(
        accepted_versions.len(),
        accepted.len(),
        "two change sets got the same version"
    );
    for set in &history.change_sets {
        assert_eq!(set.previous_version + 1, set.version);
        assert_eq!(set.changes.len(), 2, "each change set is whole");
    }
}

/// Group commit: 200 concurrent change sets over 20 namespaces (ten in flight on each) through
/// one validator share atomic batches (fewer batches than change sets; later versions of one
/// namespace staged while earlier ones are in flight), and none is lost, doubled or torn: every
/// namespace's history is 1..=n in order, and its head revision, which the validator computes
/// from the batch's acknowledgement, is right (the next change to every namespace commits
/// without a compare-and-set conflict).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_change_sets_are_each_whole_and_in_order() {
    let nats = NatsServer::start();
    let validator = Validator::start(&nats.url(), &[]);
    let api = Arc::new(crate::api(&nats.url()).await);
    let namespaces = 20u32;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let api = Arc::clone(&api);
        tasks.spawn(async move {
            let ns = format!("group-{}", i % namespaces);
            let changes = vec![
                KeyChange::set(format!("k.{i}"), json!(i)),
                KeyChange::set("last_writer", json!(i)),
            ];
            let request = ChangeRequest::new(ns, "prod", changes, format!("client-{i}"));
            api.call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
                .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        let outcome = result.unwrap().expect("every change set is accepted");
        assert!(outcome.committed);
    }
    for n in 0..namespaces {
        let ns = format!("group-{n}");
        // One more change per namespace: it must find the head where the validator thinks it is.
        let request = ChangeRequest::new(
            ns.clone(),
            "prod",
            vec![KeyChange::set("after", json!(true))],
            "checker",
        );
        let outcome: ChangeOutcome = api.call(endpoint::CHANGE, &request).await.unwrap();
        assert_eq!(outcome.version, 11, "{ns}: 10 change sets, then this one");
        let (history, versions) = history_of(&api, &ns).await;
        assert_eq!(versions, (1..=11).collect::<Vec<_>>(), "{ns}");
        for set in history.change_sets.iter().filter(|s| s.version <= 10) {
            assert_eq!(set.changes.len(), 2, "{ns} v{} is whole", set.version);
        }
    }
    let (_, metrics) = mycosynth_testkit::http_get(&validator.http_addr(), "/metrics").unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let groups = value("mycosynth_validator_commit_group_size_count");
    let commits = value("mycosynth_validator_commits_total");
    println!("{commits} commits in {groups} atomic batches");
    assert_eq!(commits, 220.0);
    assert!(groups < commits, "no two change sets shared a batch");
    assert_eq!(value("mycosynth_validator_commit_conflicts_total"), 0.0);
    // Their audit records were appended in groups too, and the hash chain is intact.
    let appends = value("mycosynth_audit_append_group_size_count");
    println!("{appends} audit appends for {commits} commits and their reads");
    assert!(appends < commits, "no two audit records shared an append");
    let out = run_cli(&nats.url(), &["audit", "verify"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The history of `ns`/prod and its versions, oldest first.
async fn history_of(api: &mycosynth::client::ApiClient, ns: &str) -> (HistoryOutcome, Vec<u64>) {
    let history: HistoryOutcome = api
        .call(
            endpoint::HISTORY,
            &HistoryRequest {
                namespace: ns.into(),
                environment: "prod".into(),
                key: None,
                limit: Some(1000),
            },
        )
        .await
        .unwrap();
    let versions = history
        .change_sets
        .iter()
        .rev()
        .map(|s| s.version)
        .collect();
    (history, versions)
}

/// `count` concurrent change sets, each setting `k.<round>.<i>` in one of ten namespaces
/// `<prefix>0` to `<prefix>9`.
fn send_changes(
    api: &Arc<mycosynth::client::ApiClient>,
    prefix: &str,
    round: u32,
    count: u32,
) -> tokio::task::JoinSet<Result<ChangeOutcome, mycosynth_subscriber::wire::ApiError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let api = Arc::clone(api);
        let ns = format!("{prefix}{}", i % 10);
        tasks.spawn(async move {
            let changes = vec![KeyChange::set(format!("k.{round}.{i}"), json!(i))];
            let request = ChangeRequest::new(&ns, "prod", changes, "client");
            api.call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
                .await
        });
    }
    tasks
}

/// Two validator instances find each other and split the namespaces between them: a change
/// request that lands on the instance that does not own its namespace is forwarded to the one
/// that does, so 200 concurrent change sets over 10 namespaces commit without a single lost
/// compare-and-set race, and both instances commit. When the owner of half the namespaces is
/// killed, the other serves them at once (nobody answers on the owner's subject any more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_validators_split_the_namespaces_instead_of_racing() {
    let nats = NatsServer::start();
    let mut a = Validator::start(&nats.url(), &[]);
    let b = Validator::start(&nats.url(), &[]);
    found_each_other(&[&a, &b]).await;
    let api = Arc::new(crate::api(&nats.url()).await);
    let send = |round: u32, count: u32| send_changes(&api, "split", round, count);
    let mut tasks = send(0, 200);
    while let Some(result) = tasks.join_next().await {
        let outcome = result.unwrap().expect("accepted");
        assert!(outcome.committed);
    }
    let both = |name: &str, labels: &str| a.metric(name, labels) + b.metric(name, labels);
    let conflicts = both("mycosynth_validator_commit_conflicts_total", "");
    assert_eq!(conflicts, 0.0, "the instances raced each other");
    let forwarded = both(
        "mycosynth_validator_forwarded_total",
        "outcome=\"answered\"",
    );
    assert!(forwarded > 0.0, "no request was forwarded");
    let commits = |v: &Validator| v.metric("mycosynth_validator_commits_total", "");
    assert!(
        commits(&a) > 0.0 && commits(&b) > 0.0,
        "one instance wrote everything: {} and {}",
        commits(&a),
        commits(&b)
    );
    assert_eq!(commits(&a) + commits(&b), 200.0);

    // The owner of some of the namespaces goes away: the other instance serves them. A request
    // forwarded to it in the moment it died is served once its discovery expires
    // (`PEER_EXPIRY`, 3.5 s), so this client waits longer than the default 10 s: on a loaded
    // machine that plus the serving can pass 10 s.
    a.kill();
    let patient = Arc::new(
        mycosynth::client::ApiClient::connect(&nats.url(), std::time::Duration::from_secs(30))
            .await
            .expect("connect api client"),
    );
    let mut tasks = send_changes(&patient, "split", 1, 20);
    while let Some(result) = tasks.join_next().await {
        let outcome = result.unwrap().expect("accepted by the remaining instance");
        assert!(outcome.committed);
    }
    for n in 0..10 {
        let (history, _) = history_of(&api, &format!("split{n}")).await;
        assert_eq!(
            history.change_sets.len(),
            22,
            "split{n}: 20 + 2 change sets"
        );
    }
}

/// A long-lived client that routes (`ApiClient::route_to_owners`) sends each change straight to
/// the instance that owns its namespace: no request needs forwarding and no race is lost. When
/// an owner is killed, the client's requests for its namespaces go to the queue group at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_client_sends_each_change_to_its_owner() {
    let nats = NatsServer::start();
    let mut a = Validator::start(&nats.url(), &[]);
    let b = Validator::start(&nats.url(), &[]);
    // 30 s, not the default 10 s: after the owner is killed, a request the other instance
    // forwards to it in that moment is served once its discovery expires (`PEER_EXPIRY`, 3.5 s),
    // which on a loaded machine can pass 10 s (seen once at load ~5).
    let api = Arc::new(
        mycosynth::client::ApiClient::connect(&nats.url(), std::time::Duration::from_secs(30))
            .await
            .expect("connect api client")
            .route_to_owners(),
    );
    within_15_s("the client did not find both instances", || {
        api.instances_known() >= 2
    })
    .await;
    let send = |round: u32, count: u32| send_changes(&api, "routed", round, count);
    let mut tasks = send(0, 100);
    while let Some(result) = tasks.join_next().await {
        assert!(result.unwrap().expect("accepted").committed);
    }
    let sum = |name: &str| a.metric(name, "") + b.metric(name, "");
    assert_eq!(sum("mycosynth_validator_forwarded_total"), 0.0, "forwarded");
    assert_eq!(
        sum("mycosynth_validator_commit_conflicts_total"),
        0.0,
        "raced"
    );
    assert_eq!(sum("mycosynth_validator_commits_total"), 100.0);

    a.kill();
    let mut tasks = send(1, 20);
    while let Some(result) = tasks.join_next().await {
        assert!(
            result
                .unwrap()
                .expect("accepted by the remaining instance")
                .committed
        );
    }
}

/// Waits (up to 15 s) until every one of `validators` counts them all as live.
async fn found_each_other(validators: &[&Validator]) {
    let all = validators.len() as f64;
    within_15_s("the instances did not find each other", || {
        validators
            .iter()
            .all(|v| v.metric("mycosynth_validator_instances", "") >= all)
    })
    .await;
}

/// Waits until `done` holds, looking every 50 ms; fails with `failure` after 15 s.
async fn within_15_s(failure: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{failure}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A change request forwarded to an owner that has stalled (stopped with SIGSTOP for 2.1 s,
/// less than the 3.5 s an instance stays live without answering discovery) is waited for and
/// committed once, by the owner. In 40 namespaces, one client sets `x` to 2, then, once that
/// is answered, to 3: every namespace ends at version 3 with `x` = 3. An instance that served
/// the forwarded request itself after waiting a while (as it did after 2 s before) committed it
/// a second time when the owner resumed, after the client's next change: `x` back to 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_forwarded_to_a_stalled_owner_is_committed_once() {
    let nats = NatsServer::start();
    let a = Validator::start(&nats.url(), &[]);
    let b = Validator::start(&nats.url(), &[]);
    found_each_other(&[&a, &b]).await;
    let api = Arc::new(crate::api(&nats.url()).await);
    let namespaces: Vec<String> = (0..40).map(|i| format!("stall{i}")).collect();
    for ns in &namespaces {
        crate::set_keys(&api, ns, "prod", &[("x", json!(1))]).await;
    }

    let stalled = b.pid().expect("pid of b");
    mycosynth_testkit::signal(stalled, libc::SIGSTOP);
    let resume = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        mycosynth_testkit::signal(stalled, libc::SIGCONT);
    });
    let mut clients = tokio::task::JoinSet::new();
    for ns in namespaces.clone() {
        let api = Arc::clone(&api);
        clients.spawn(async move {
            crate::set_keys(&api, &ns, "prod", &[("x", json!(2))]).await;
            crate::set_keys(&api, &ns, "prod", &[("x", json!(3))]).await;
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("both changes accepted");
    }
    resume.await.expect("resumed");
    // Whatever the stalled instance received is served by now; a late second commit shows.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    for ns in &namespaces {
        let (history, versions) = history_of(&api, ns).await;
        assert_eq!(versions, [1, 2, 3], "{ns}: one version per change set");
        let last = &history.change_sets[0];
        assert_eq!(last.version, 3);
        assert_eq!(last.changes, [KeyChange::set("x", json!(3))], "{ns}");
    }
}
