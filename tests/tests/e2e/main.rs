//! End-to-end tests against real nats-server processes (started by `mycosynth_testkit`).
//!
//! - `change_path`: a CLI change reaches a subscriber in another process; atomic apply; a
//!   standard KV client reads our JSON.
//! - `validation`: every invalid input is refused with its exit code and changes nothing.
//! - `concurrency`: optimistic concurrency and two validators under 200 concurrent requests.
//! - `rollback`: rollback restores a version's state beyond KV's 64-revision history.
//! - `subscriber`: reconnect convergence and garbage on the event subject.
//! - `service`: metrics, health and NATS service API discovery.
//! - `resilience`: faults injected into real processes; last-known-good cache; backoff.
//! - `ha`: a three-node cluster and two validators losing members under steady writes.

mod change_path;
mod concurrency;
mod ha;
mod resilience;
mod rollback;
mod service;
mod subscriber;
mod validation;

use std::process::Output;
use std::time::Duration;

use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, ChangeSource, KeyChange};

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
    ChangeRequest {
        namespace: ns.into(),
        environment: env.into(),
        changes: pairs
            .iter()
            .map(|(k, v)| KeyChange {
                key: (*k).into(),
                value: Some(v.clone()),
            })
            .collect(),
        expected_version: None,
        author: "test".into(),
        reason: String::new(),
        source: ChangeSource::Api,
        git_commit: None,
        dry_run: false,
        replace: false,
        request_id: None,
    }
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

pub fn schema_path() -> String {
    mycosynth_testkit::repo_root()
        .join("schemas/payment-service.schema.json")
        .display()
        .to_string()
}
