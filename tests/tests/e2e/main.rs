//! End-to-end tests against real nats-server processes (started by `mycosynth_testkit`).
//!
//! - `change_path`: a CLI change reaches a subscriber in another process; atomic apply; a
//!   standard KV client reads our JSON.
//! - `commit_point`: a head written without its values (validator died) is rolled forward by
//!   readers, replayed to a retry, and completed by the next writer.
//! - `validation`: every invalid input is refused with its exit code and changes nothing.
//! - `concurrency`: optimistic concurrency and two validators under 200 concurrent requests.
//! - `rollback`: rollback restores a version's state beyond KV's 64-revision history.
//! - `subscriber`: reconnect convergence and garbage on the event subject.
//! - `service`: metrics, health and NATS service API discovery.
//! - `resilience`: faults injected into real processes; last-known-good cache; backoff.
//! - `ha`: a three-node cluster and two validators losing members under steady writes.
//! - `fleet`: receipts from subscriber processes, `mycosynth status`, stale and rejecting instances.
//! - `gitops`: config as code with a temporary git repository: validate, deploy, drift, schema
//!   compatibility and docs, environment inheritance.
//! - `security`: the shipped secure config: permission matrix (with `users.conf`, and through the
//!   auth callout), signed requests, the policy.
//! - `callout`: auth callout: static tokens and Kubernetes JWTs, refusals with reasons, expiry
//!   and rotation, the callout down, two callouts sharing the load, tokens added live.
//! - `audit`: every request is an audit record; `audit verify` reports removed and forged records.
//! - `session`: console sessions: a person's token presented by the console makes the person the
//!   author, via the console; the console's key alone writes nothing; bad tokens refused.
//! - `sensitive`: sensitive values sealed in KV, events, CLI and logs; clear in subscribers.
//! - `sites`: a hub and a leaf-node site: changes reach the site's subscribers, the site serves
//!   with the hub gone and catches up after, lag in `status`, a site credential cannot write.
//! - `backup`: backup and restore into a fresh server; a damaged archive is refused.
//! - `browser`: the headless Chromium harness reads a page served on loopback and screenshots it.
//! - `abuse`: per-identity rate limits, oversized and malformed requests; nothing is written.
//! - `rollouts`: canary cohorts of 20 in-process subscribers: whole reads, promotion as one
//!   version, automatic rollback on a rejection and a health regression, a killed validator,
//!   a restarted canary, `--target`, bad input.
//! - `requests`: change requests: approvals bound to content, conflicts and rebase, the
//!   emergency path, schedules with validators killed and restarted, audit and notices.
//! - `sidecar`: `mycosynth sidecar` over HTTP: runtime API and 304s, the change stream and its
//!   resume, OFREP, health, bad input, a slow stream client.

mod abuse;
mod audit;
mod backup;
mod browser;
mod callout;
mod change_path;
mod commit_point;
mod concurrency;
mod console;
mod fleet;
mod gitops;
mod ha;
mod impact;
mod policy;
mod requests;
mod resilience;
mod rollback;
mod rollout_prometheus;
mod rollout_requests;
mod rollouts;
mod security;
mod sensitive;
mod service;
mod session;
mod sidecar;
mod sites;
mod subscriber;
mod validation;

use std::process::Output;
use std::time::Duration;

use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, KeyChange};

/// Runs the CLI on a blocking thread.
pub async fn run_cli(url: &str, args: &[&str]) -> Output {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mycosynth_testkit::cli(&url, &args)
    })
    .await
    .expect("cli thread")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub async fn api(url: &str) -> ApiClient {
    ApiClient::connect(url, Duration::from_secs(10))
        .await
        .expect("connect api client")
}

/// A change request setting `pairs`, as the API client of a program would send it.
pub fn change_request(ns: &str, env: &str, pairs: &[(&str, serde_json::Value)]) -> ChangeRequest {
    let changes = pairs
        .iter()
        .map(|(k, v)| KeyChange::set(*k, v.clone()))
        .collect();
    ChangeRequest::new(ns, env, changes, "test")
}

/// Sets keys through the validator API (faster than a CLI process per change).
pub async fn set_keys(
    api: &ApiClient,
    ns: &str,
    env: &str,
    pairs: &[(&str, serde_json::Value)],
) -> ChangeOutcome {
    let request = change_request(ns, env, pairs);
    api.call(endpoint::CHANGE, &request)
        .await
        .expect("change accepted")
}

/// Like [`set_keys`], retrying while the validator is unreachable (e.g. reconnecting after a
/// server restart), for up to 20 s.
pub async fn set_keys_retrying(
    api: &ApiClient,
    ns: &str,
    env: &str,
    pairs: &[(&str, serde_json::Value)],
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let request = change_request(ns, env, pairs);
        match api
            .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
            .await
        {
            Ok(_) => return,
            Err(err) if tokio::time::Instant::now() > deadline => panic!("change refused: {err:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Commits `key = value` as the next version of `ns`/`env` exactly as the validator would, but
/// without it: no validation, and a change event only if `publish_event` (as a rogue writer or a
/// validator dying between commit and publish would). Returns the new version.
pub async fn commit_bypassing_validator(
    url: &str,
    ns: &str,
    env: &str,
    key: &str,
    value: serde_json::Value,
    publish_event: bool,
) -> u64 {
    use mycosynth::store::{BucketOptions, Commit, Store};
    use mycosynth_subscriber::wire::*;
    let client = async_nats::connect(url).await.expect("connect");
    let store = Store::open(client.clone(), BucketOptions { replicas: 1 })
        .await
        .expect("store");
    let (namespace, environment) = (Namespace::new(ns).unwrap(), Environment::new(env).unwrap());
    let state = store
        .load_state(&namespace, &environment)
        .await
        .expect("state");
    let version = state.version + 1;
    let meta = ChangeMeta {
        change_id: format!("bypass-{version}"),
        author: "bypass".into(),
        time: "2026-11-23T00:00:00Z".into(),
        time_us: 1,
        reason: String::new(),
        source: ChangeSource::Api,
        git_commit: None,
        request_id: None,
        emergency: false,
        approved_by: Vec::new(),
        change_request: None,
    };
    let change = KeyChange {
        key: key.into(),
        value: Some(value.clone()),
    };
    store
        .commit(&Commit {
            namespace: &namespace,
            environment: &environment,
            head_expected: mycosynth::store::committer::HeadExpected::Revision(state.head_revision),
            request_id: None,
            event: None,
            head: HeadRecord {
                version,
                keys: state.values.len() as u64 + 1,
                meta,
                changes: Some(vec![change]),
            },
        })
        .await
        .expect("commit");
    if publish_event {
        let event = ChangeEvent {
            format: EVENT_FORMAT,
            namespace: ns.into(),
            environment: env.into(),
            version,
            previous_version: version - 1,
            changes: vec![EventChange {
                key: key.into(),
                value_json: Some(value.to_string()),
            }],
            change_id: format!("bypass-{version}"),
            author: "bypass".into(),
            reason: String::new(),
            source: "api".into(),
            committed_at_us: 1,
            approved_by: Vec::new(),
            change_request: None,
        };
        client
            .publish(
                event_subject(&namespace, &environment),
                event.encode().into(),
            )
            .await
            .expect("publish");
        client.flush().await.expect("flush");
    }
    version
}

pub fn schema_path() -> String {
    mycosynth_testkit::repo_root()
        .join("schemas/payment-service.schema.json")
        .display()
        .to_string()
}
