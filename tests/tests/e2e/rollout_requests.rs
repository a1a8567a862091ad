//! A change request rolled out through a canary: once approved, `rollout start --request ID`
//! rolls out exactly its change set, and the promotion applies it: one version carrying its
//! approvers and its id, the request `applied` with that version.

use mycosynth_testkit::{NatsServer, Validator};

use super::security::{ok_as as ok, set_policy};

const NS: &str = "payment-service";
const PROD: &str = "production";

#[tokio::test]
async fn an_approved_change_request_rolled_out_is_applied_at_its_promotion() {
    let nats = NatsServer::start_secure();
    let _validator = Validator::start_secure(&nats.url(), &[]);
    let url = nats.url();
    let key = mycosynth_testkit::dev_public_key;
    let policy = serde_json::json!({
        "identities": {
            "admin": {"public_key": key("admin")},
            "alice": {"public_key": key("alice")},
            "bob": {"public_key": key("bob")},
        },
        "grants": [
            {"identity": "admin", "role": "admin", "namespace": "*", "environment": "*"},
            {"identity": "alice", "role": "write", "namespace": NS, "environment": "*"},
            {"identity": "bob", "role": "write", "namespace": NS, "environment": "*"},
        ],
        "approvals": [
            {"namespace": "*", "environment": PROD, "approvals": 1, "approvers": ["bob"]},
        ]
    });
    set_policy(&url, &policy).await;

    let proposed = ok(
        &url,
        "alice",
        &[
            "set",
            NS,
            PROD,
            "http.retries",
            "4",
            "--reason",
            "canary it",
        ],
    )
    .await;
    let id = proposed["proposed"]["id"].as_str().expect("id").to_owned();
    let hash = proposed["proposed"]["content_hash"]
        .as_str()
        .expect("hash")
        .to_owned();
    ok(
        &url,
        "bob",
        &["requests", "approve", &id, "--content-hash", &hash],
    )
    .await;

    let started = ok(
        &url,
        "alice",
        &[
            "rollout",
            "start",
            NS,
            PROD,
            "--request",
            &id,
            "--steps",
            "100%",
            "--bake",
            "1h",
        ],
    )
    .await;
    assert_eq!(
        started["rollout"]["change_request"],
        id.as_str(),
        "{started}"
    );
    // Rolling out is not applying: the request stays approved until the promotion.
    let shown = ok(&url, "admin", &["requests", "show", &id]).await;
    assert_eq!(shown["request"]["state"], "approved", "{shown}");

    let promoted = ok(&url, "alice", &["rollout", "promote", NS, PROD]).await;
    let version = promoted["rollout"]["promoted_version"]
        .as_u64()
        .unwrap_or_else(|| panic!("promoted version: {promoted}"));
    let shown = ok(&url, "admin", &["requests", "show", &id]).await;
    assert_eq!(shown["request"]["state"], "applied", "{shown}");
    assert_eq!(shown["request"]["applied"]["version"], version, "{shown}");
    let history = ok(&url, "admin", &["history", NS, PROD]).await;
    let newest = &history["change_sets"][0];
    assert_eq!(newest["version"], version, "{history}");
    assert_eq!(
        newest["approved_by"],
        serde_json::json!(["bob"]),
        "{history}"
    );
    assert_eq!(newest["change_request"], id.as_str(), "{history}");
    // Applying it again commits nothing more.
    let again = ok(&url, "alice", &["requests", "apply", &id]).await;
    assert_eq!(again["request"]["applied"]["version"], version, "{again}");
    let history = ok(&url, "admin", &["history", NS, PROD]).await;
    assert_eq!(
        history["change_sets"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
}
