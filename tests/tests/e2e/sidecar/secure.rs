//! The sidecar on the secure config: what it reads is what its NATS credentials allow, and a
//! change request's approvers and id reach the change stream.

use std::time::Duration;

use mycosynth_testkit::sidecar::{SidecarProcess, Sse, SseClient};
use mycosynth_testkit::{
    cli_as, dev_public_key, identity_env, json as parse, NatsServer, Validator,
};
use serde_json::json;

use super::WAIT;
use crate::stderr;

/// Runs the CLI as `identity` with `--json`, expecting success; its JSON output.
fn ok(url: &str, identity: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = cli_as(url, Some(identity), &all);
    assert!(
        out.status.success(),
        "{identity} {args:?}: {}",
        stderr(&out)
    );
    parse(String::from_utf8_lossy(&out.stdout).trim())
}

#[tokio::test]
async fn a_sidecar_reads_what_its_nats_credentials_may_read() {
    let nats = NatsServer::start_secure();
    let url = nats.url();
    let _validator = Validator::start_secure(&url, &[]);
    for ns in ["payment-service", "inventory-service"] {
        let out = cli_as(
            &url,
            Some("admin"),
            &["set", ns, "production", "limits.max_items", "20"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let creds = identity_env("svc-payment-service");
    let own = SidecarProcess::start_with_env(&url, ("payment-service", "production"), &[], &creds);
    own.wait_serving(Duration::from_secs(30));
    let value = own.get("/v1/config/payment-service/production/limits.max_items");
    assert_eq!((value.status, &value.json()["value"]), (200, &json!(20)));

    // The same identity for another namespace: the NATS server refuses its reads, so nothing
    // is ever served, and with a start timeout the sidecar gives up with exit code 7.
    let mut other = SidecarProcess::start_with_env(
        &url,
        ("inventory-service", "production"),
        &["--start-timeout", "2"],
        &creds,
    );
    assert_eq!(other.get("/health").status, 503);
    assert_eq!(
        other.get("/v1/config/inventory-service/production").status,
        503
    );
    assert_eq!(
        other.wait_exit(Duration::from_secs(30)),
        Some(7),
        "{:?}",
        other.log_lines()
    );
}

#[tokio::test]
async fn a_change_requests_approvers_and_id_reach_the_change_stream() {
    let nats = NatsServer::start_secure();
    let url = nats.url();
    let _validator = Validator::start_secure(&url, &[]);
    // alice and bob write payment-service; in production a change needs bob's approval.
    let policy = json!({
        "identities": {
            "admin": {"public_key": dev_public_key("admin")},
            "alice": {"public_key": dev_public_key("alice")},
            "bob": {"public_key": dev_public_key("bob")},
        },
        "grants": [
            {"identity": "admin", "role": "admin", "namespace": "*", "environment": "*"},
            {"identity": "alice", "role": "write", "namespace": "payment-service", "environment": "*"},
            {"identity": "bob", "role": "write", "namespace": "payment-service", "environment": "*"},
        ],
        "approvals": [
            {"namespace": "*", "environment": "production", "approvals": 1, "approvers": ["bob"]},
        ]
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("policy.json");
    std::fs::write(&file, policy.to_string()).expect("write policy");
    ok(
        &url,
        "admin",
        &["policy", "set", &file.display().to_string()],
    );
    let set = ["set", "payment-service", "production", "http.retries"];
    // The first value: a direct change by the admin, who needs no approval.
    ok(&url, "admin", &[&set[..], &["1"]].concat());

    let creds = identity_env("svc-payment-service");
    let sidecar =
        SidecarProcess::start_with_env(&url, ("payment-service", "production"), &[], &creds);
    sidecar.wait_serving(Duration::from_secs(30));
    let stream = SseClient::connect(&sidecar.addr(), "/v1/watch/payment-service/production", &[]);
    let state = stream.next_event(WAIT).expect("the state first");
    assert!(
        matches!(&state, Sse::Event { event, .. } if event == "state"),
        "{state:?}"
    );

    let proposed = ok(
        &url,
        "alice",
        &[&set[..], &["2", "--reason", "more retries"]].concat(),
    );
    assert_eq!(proposed["committed"], false, "{proposed}");
    let id = proposed["proposed"]["id"]
        .as_str()
        .expect("request id")
        .to_owned();
    let hash = proposed["proposed"]["content_hash"]
        .as_str()
        .expect("hash")
        .to_owned();
    ok(
        &url,
        "bob",
        &["requests", "approve", &id, "--content-hash", &hash],
    );
    ok(&url, "alice", &["requests", "apply", &id]);

    let change = stream
        .next_event(WAIT)
        .expect("the applied request's change");
    assert!(
        matches!(&change, Sse::Event { event, .. } if event == "change"),
        "{change:?}"
    );
    let change = change.json();
    assert_eq!(change["values"], json!({"http.retries": 2}));
    assert_eq!(
        (&change["approved_by"], &change["change_request"]),
        (&json!(["bob"]), &json!(id)),
        "{change}"
    );
    assert_eq!(change["reason"], json!("more retries"));
}
