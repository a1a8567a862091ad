//! The policy as every validator instance enforces it: each follows the stored policy with a KV
//! watch instead of reading it per request, and a change stored through one instance is
//! enforced by all: a grant works at once, a revoked one is refused everywhere.

use std::time::Duration;

use mycosynth::cli::exit;
use mycosynth_testkit::{dev_public_key, NatsServer, Validator};

use super::security::{run_as, set_policy};
use super::stderr;

const NS: &str = "payment-service";

fn policy(bob_writes: bool) -> serde_json::Value {
    let mut grants = vec![serde_json::json!(
        {"identity": "admin", "role": "admin", "namespace": "*", "environment": "*"}
    )];
    if bob_writes {
        grants.push(serde_json::json!(
            {"identity": "bob", "role": "write", "namespace": NS, "environment": "*"}
        ));
    }
    serde_json::json!({
        "identities": {
            "admin": {"public_key": dev_public_key("admin")},
            "bob": {"public_key": dev_public_key("bob")},
        },
        "grants": grants,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_through_one_instance_is_enforced_by_every_instance() {
    let nats = NatsServer::start_secure();
    let _a = Validator::start_secure(&nats.url(), &[]);
    let _b = Validator::start_secure(&nats.url(), &[]);
    let url = nats.url();
    set_policy(&url, &policy(true)).await;
    // Several namespaces, so that the two instances both serve some of them.
    for i in 0..6 {
        let ns_env = format!("env{i}");
        let out = run_as(&url, Some("bob"), &["set", NS, &ns_env, "k", "1"]).await;
        assert!(out.status.success(), "granted: {}", stderr(&out));
    }
    set_policy(&url, &policy(false)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..6 {
        let ns_env = format!("env{i}");
        let out = run_as(&url, Some("bob"), &["set", NS, &ns_env, "k", "2"]).await;
        assert_eq!(
            out.status.code(),
            Some(i32::from(exit::ACCESS_DENIED)),
            "revoked, on every instance: {}",
            stderr(&out)
        );
    }
}
