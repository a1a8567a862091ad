//! Console sessions against a secure server and a signed-mode validator: a person's session
//! token, presented by the console with requests it signs with its own key, makes the person the
//! author (history, audit record "via" the console); the console's key alone writes nothing; bad
//! tokens are refused with their reason and change nothing; `console login`'s link.
//!
//! The console here is the dev identity `ci-bot` (it has operator rights on NATS), registered in
//! the policy as `console` with no grants.

use std::time::Duration;

use axum::routing::get;
use mycosynth::access::session_token;
use mycosynth::cli::console_login::{sign_in_link, LoginArgs, LoginError};
use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{
    endpoint, session_signing_payload, ApiError, ChangeOutcome, ErrorKind, SessionClaims,
    SessionToken,
};
use mycosynth_subscriber::Credentials;
use mycosynth_testkit::{dev_public_key, dev_seed, dev_seed_file, json, NatsServer, Validator};
use serde_json::Value;

use super::security::{run_as, set_policy};
use super::{change_request, stderr, stdout};

const NS: &str = "payment-service";
const ENV: &str = "staging";
/// The dev identity playing the console.
const CONSOLE: &str = "ci-bot";
const HOUR: Duration = Duration::from_secs(3600);

struct Stack {
    nats: NatsServer,
    _validator: Validator,
    /// The console's connection, signing with the console's key.
    console: ApiClient,
}

/// `alice` writes payment-service in staging; `bob` only reads it; `console` has no grants.
async fn stack() -> Stack {
    let nats = NatsServer::start_secure();
    let validator = Validator::start_secure(&nats.url(), &[]);
    let policy = serde_json::json!({
        "identities": {
            "admin": {"public_key": dev_public_key("admin")},
            "alice": {"public_key": dev_public_key("alice")},
            "bob": {"public_key": dev_public_key("bob")},
            "console": {"public_key": dev_public_key(CONSOLE)},
        },
        "grants": [
            {"identity": "admin", "role": "admin", "namespace": "*", "environment": "*"},
            {"identity": "alice", "role": "write", "namespace": NS, "environment": ENV},
            {"identity": "bob", "role": "read", "namespace": NS, "environment": "*"},
        ]
    });
    set_policy(&nats.url(), &policy).await;
    let creds = Credentials::default()
        .with_nkey_file(dev_seed_file(CONSOLE))
        .expect("console seed");
    let console = ApiClient::connect_with(&nats.url(), Duration::from_secs(5), &creds)
        .await
        .expect("console client");
    Stack {
        nats,
        _validator: validator,
        console,
    }
}

fn key(identity: &str) -> nkeys::KeyPair {
    nkeys::KeyPair::from_seed(&dev_seed(identity)).expect("dev seed")
}

/// Sets `db.pool` to `value` through `client`.
async fn set_pool(client: &ApiClient, value: i64) -> Result<ChangeOutcome, ApiError> {
    let request = change_request(NS, ENV, &[("db.pool", value.into())]);
    client.call(endpoint::CHANGE, &request).await
}

/// The audit records of `NS`/`ENV` (as admin).
async fn audit(url: &str) -> Vec<Value> {
    let out = run_as(
        url,
        Some("admin"),
        &["--json", "audit", "--namespace", NS, "--env", ENV],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().map(json).collect()
}

/// The change sets of `NS`/`ENV`, newest first (as admin; none when nothing was written).
async fn history(url: &str) -> Vec<Value> {
    let out = run_as(url, Some("admin"), &["--json", "history", NS, ENV]).await;
    if !out.status.success() {
        assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
        return Vec::new();
    }
    let history = json(stdout(&out).trim());
    history["change_sets"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no change_sets in {history}"))
}

/// The current version of `NS`/`ENV` (0: nothing written).
async fn version(url: &str) -> u64 {
    history(url)
        .await
        .iter()
        .filter_map(|set| set["version"].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_a_session_is_the_persons_via_the_console() {
    let stack = stack().await;
    let url = stack.nats.url();
    let token = session_token(&key("alice"), &dev_public_key(CONSOLE), HOUR).expect("token");

    // The console's key alone has no rights: refused, nothing written.
    let err = set_pool(&stack.console, 10).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied, "{}", err.message);
    assert!(err.message.contains("console"), "{}", err.message);
    assert_eq!(version(&url).await, 0);

    // With alice's token, the console writes as alice.
    let outcome = set_pool(&stack.console.with_session(&token), 20)
        .await
        .expect("write as alice via the console");
    assert!(outcome.committed);
    let history = history(&url).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["version"], outcome.version, "{history:?}");
    assert_eq!(history[0]["author"], "alice", "{history:?}");

    // The person's grants apply, not the console's: bob (read only) cannot write through it.
    let bobs = session_token(&key("bob"), &dev_public_key(CONSOLE), HOUR).expect("token");
    let err = set_pool(&stack.console.with_session(&bobs), 30)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied, "{}", err.message);
    assert!(err.message.contains("bob"), "{}", err.message);
    assert_eq!(version(&url).await, outcome.version);

    // The audit log: alice's change via the console; the console alone, and bob via it, refused.
    let records = audit(&url).await;
    let changes: Vec<&Value> = records.iter().filter(|r| r["action"] == "change").collect();
    let accepted: Vec<&&Value> = changes.iter().filter(|r| r["outcome"] == "ok").collect();
    assert_eq!(accepted.len(), 1, "{records:?}");
    assert_eq!(accepted[0]["identity"], "alice", "{records:?}");
    assert_eq!(accepted[0]["via"], "console", "{records:?}");
    let refused: Vec<(&Value, &Value)> = changes
        .iter()
        .filter(|r| r["outcome"] == "access_denied")
        .map(|r| (&r["identity"], &r["via"]))
        .collect();
    assert_eq!(
        refused,
        [
            (&Value::from("console"), &Value::Null),
            (&Value::from("bob"), &Value::from("console"))
        ],
        "{records:?}"
    );
    // A session's record does not carry the token.
    assert!(
        !records.iter().any(|r| r.to_string().contains(&token)),
        "{records:?}"
    );
    // A plain signed request (the CLI) has no via.
    let out = run_as(&url, Some("alice"), &["set", NS, ENV, "db.pool", "21"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let last = audit(&url).await.pop().expect("a record");
    assert_eq!(
        (&last["identity"], &last["via"]),
        (&"alice".into(), &Value::Null)
    );
}

/// A token with these claims, signed by `signer`.
fn signed_token(signer: &nkeys::KeyPair, claims: &SessionClaims) -> String {
    let json = serde_json::to_vec(claims).expect("claims");
    let signature = signer.sign(&session_signing_payload(&json)).expect("sign");
    SessionToken::encode(&json, &signature)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_tokens_are_refused_with_their_reason_and_change_nothing() {
    let stack = stack().await;
    let url = stack.nats.url();
    let alice = key("alice");
    let now = mycosynth::clock::now_ms();
    let claims = SessionClaims {
        identity_key: alice.public_key(),
        audience: dev_public_key(CONSOLE),
        issued_at_ms: now - 3 * 3_600_000,
        expires_at_ms: now - 2 * 3_600_000,
        nonce: "expired".into(),
    };
    let expired = signed_token(&alice, &claims);
    // For another console (bob's key stands for it).
    let other_console = session_token(&alice, &dev_public_key("bob"), HOUR).expect("token");
    // Alice's real token with its audience's claim bytes changed: her signature no longer holds.
    let real =
        SessionToken::parse(&session_token(&alice, &dev_public_key(CONSOLE), HOUR).expect("token"))
            .expect("parse");
    let mut altered = real.claims.clone();
    altered.expires_at_ms += 30 * 24 * 3_600_000;
    let altered_json = serde_json::to_vec(&altered).expect("claims");
    let tampered = SessionToken::encode(&altered_json, &real.signature);
    // Signed by a key the policy does not register.
    let stranger = nkeys::KeyPair::new_user();
    let unknown = session_token(&stranger, &dev_public_key(CONSOLE), HOUR).expect("token");
    let cases = [
        ("expired", expired, "expired"),
        ("wrong audience", other_console, "wrong audience"),
        ("tampered", tampered, "bad signature"),
        ("unknown identity", unknown, "unknown identity"),
        ("malformed", "not-a-token".to_owned(), "malformed"),
    ];
    for (what, token, reason) in &cases {
        let err = set_pool(&stack.console.with_session(token), 99)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::AccessDenied, "{what}: {}", err.message);
        assert!(
            err.message.starts_with("session token refused: ")
                && err.message.contains(reason)
                && !err.message.contains('\n'),
            "{what}: {}",
            err.message
        );
    }
    assert_eq!(version(&url).await, 0, "nothing was written");
    let records = audit(&url).await;
    let refused = records
        .iter()
        .filter(|r| r["action"] == "change" && r["outcome"] == "access_denied")
        .count();
    assert_eq!(refused, cases.len(), "{records:?}");
    // A stolen token without the console's key: alice's own connection presents it, signed by
    // alice, so the audience (the console) does not match the signer.
    let token = session_token(&alice, &dev_public_key(CONSOLE), HOUR).expect("token");
    let creds = Credentials::default()
        .with_nkey_file(dev_seed_file("bob"))
        .expect("seed");
    let thief = ApiClient::connect_with(&url, Duration::from_secs(5), &creds)
        .await
        .expect("client");
    let err = set_pool(&thief.with_session(&token), 98).await.unwrap_err();
    assert!(err.message.contains("wrong audience"), "{}", err.message);
    assert_eq!(version(&url).await, 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_login_signs_a_link_for_the_key_the_console_serves() {
    let stack = stack().await;
    // A stand-in for the console's well-known document, on a free loopback port.
    let console_key = dev_public_key(CONSOLE);
    let body = serde_json::json!({ "public_key": console_key }).to_string();
    let app = axum::Router::new()
        .route(
            "/.well-known/mycosynth-console",
            get(move || async move { body }),
        )
        .route(
            "/not-a-console/.well-known/mycosynth-console",
            get(|| async { "<html>" }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let args = |url: &str| LoginArgs {
        url: url.to_owned(),
        ttl: Some(600),
        audience: None,
    };
    let link = sign_in_link(&key("alice"), &args(&format!("{base}/")))
        .await
        .expect("link");
    assert_eq!(link.audience, console_key);
    let token = link
        .url
        .strip_prefix(&format!("{base}/login?token="))
        .unwrap_or_else(|| panic!("{}", link.url));
    let parsed = SessionToken::parse(token).expect("a token");
    assert_eq!(parsed.claims.identity_key, dev_public_key("alice"));
    assert_eq!(
        parsed.claims.expires_at_ms - parsed.claims.issued_at_ms,
        600_000
    );
    // The link's token works through the console.
    let outcome = set_pool(&stack.console.with_session(token), 5)
        .await
        .expect("write via the link's token");
    assert!(outcome.committed);

    // Not a console, nobody there, a lifetime over 24 h: each its own error.
    let err = sign_in_link(&key("alice"), &args(&format!("{base}/not-a-console")))
        .await
        .unwrap_err();
    assert!(matches!(err, LoginError::NotAConsole { .. }), "{err}");
    let nobody = format!("http://127.0.0.1:{}", mycosynth_testkit::free_port());
    let err = sign_in_link(&key("alice"), &args(&nobody))
        .await
        .unwrap_err();
    assert!(matches!(err, LoginError::Unreachable { .. }), "{err}");
    let long = LoginArgs {
        ttl: Some(25 * 3600),
        ..args(&base)
    };
    let err = sign_in_link(&key("alice"), &long).await.unwrap_err();
    assert!(err.to_string().contains("24 h"), "{err}");
    server.abort();
}
