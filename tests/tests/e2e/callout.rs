//! Auth callout (`nats/callout/`, `mycosynth auth serve`): services connect with a static token
//! or a Kubernetes service-account JWT, with no server config per service; bad and expired
//! tokens are refused with the reason logged; expiry and rotation; a callout that is down;
//! several callouts sharing the load. The permission matrix through the callout is in
//! `security.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use mycosynth::client::ApiClient;
use mycosynth_subscriber::{Credentials, Origin, Subscriber};
use mycosynth_testkit::callout::{
    callout_config, dev_token_file, k8s_backend, k8s_token, nkey_backend, service_account_claims,
    sign_jwt, unix_now, write_token, Callout,
};
use mycosynth_testkit::{dev_seed_file, NatsServer, Validator};
use serde_json::json;

use super::security::{probe_with, Outcome};
use super::{set_keys, stderr};

const NS_A: &str = "payment-service";
const NS_B: &str = "inventory-service";
const ENV: &str = "staging";

/// A callout-mode server, its callout(s), a signed validator, and `admin`'s API client (an
/// open connection, which survives the callout going down).
struct Stack {
    nats: NatsServer,
    _validator: Validator,
    callouts: Vec<Callout>,
    admin: ApiClient,
    dir: tempfile::TempDir,
}

/// `callouts` instances with the config `config` (None: the shipped one), and one value set in
/// each of two namespaces.
async fn stack(callouts: usize, config: Option<&Path>) -> Stack {
    let nats = NatsServer::start_callout();
    let url = nats.url();
    let shipped = mycosynth_testkit::callout::callout_dir().join("callout.yaml");
    let callouts: Vec<Callout> = (0..callouts)
        .map(|_| Callout::start_with_config(&url, config.unwrap_or(&shipped)))
        .collect();
    let validator = Validator::start_secure(&url, &[]);
    let admin = ApiClient::connect_with(&url, Duration::from_secs(10), &nkey("admin"))
        .await
        .expect("admin connects through the callout");
    set_keys(&admin, NS_A, ENV, &[("db.pool", json!(1))]).await;
    set_keys(&admin, NS_B, ENV, &[("db.pool", json!(2))]).await;
    Stack {
        nats,
        _validator: validator,
        callouts,
        admin,
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

fn nkey(identity: &str) -> Credentials {
    Credentials::default()
        .with_nkey_file(dev_seed_file(identity))
        .expect("dev seed")
}

fn token_file(path: &Path) -> Credentials {
    Credentials::default()
        .with_token_file(path)
        .expect("token file")
}

/// A subscriber of `ns` with `creds` (fails fast when refused).
async fn subscriber(url: &str, ns: &str, creds: Credentials) -> Result<Subscriber, String> {
    Subscriber::builder(ns, ENV)
        .nats_url(url)
        .credentials(creds)
        .load_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// `creds` reads `NS_A` through the real subscriber crate, and the server refuses it a direct
/// read of `NS_B`.
async fn reads_a_and_is_refused_b(url: &str, creds: &Credentials) {
    let config = subscriber(url, NS_A, creds.clone())
        .await
        .expect("the service loads its namespace");
    assert_eq!(config.get::<u64>("db.pool").ok(), Some(1));
    let mut probe = probe_with(url, creds).await.expect("connect");
    let other =
        format!("$JS.API.DIRECT.GET.KV_mycosynth-config.$KV.mycosynth-config.{NS_B}.{ENV}.db.pool");
    assert_eq!(
        probe.request(&other, "", |_| true).await,
        Outcome::Server,
        "a service read another namespace"
    );
    config.shutdown().await;
}

/// The connection is refused by the server (authorization violation).
async fn refused(url: &str, creds: &Credentials) {
    let err = probe_with(url, creds)
        .await
        .err()
        .expect("the connection was accepted");
    assert!(err.contains("authorization violation"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_token_and_a_kubernetes_jwt_read_their_namespace_and_are_refused_another() {
    let stack = stack(1, None).await;
    let url = stack.nats.url();
    // A dev static token (nats/callout/tokens.txt holds its hash).
    reads_a_and_is_refused_b(&url, &token_file(&dev_token_file("svc-payment-service"))).await;
    // A projected service-account token of service account `payment-service`, signed by the
    // stand-in Kubernetes issuer whose public key is in nats/callout/jwks.json.
    let jwt = stack.dir.path().join("token");
    write_token(&jwt, &k8s_token(&service_account_claims(NS_A, 600)));
    reads_a_and_is_refused_b(&url, &token_file(&jwt)).await;
    let callout = &stack.callouts[0];
    for (backend, identity) in [
        ("static", "svc-payment-service"),
        ("jwt", "system:serviceaccount:apps:payment-service"),
    ] {
        let line = callout.wait_log(
            &["connection accepted", identity, backend],
            Duration::from_secs(5),
        );
        assert!(line.is_some_and(|l| l.contains("namespace=\"payment-service\"")));
    }
    assert!(
        callout.metric(
            "mycosynth_callout_decisions_total",
            "outcome=\"accepted\",backend=\"jwt\",kind=\"service\""
        ) >= 1.0
    );
    // The CLI reads its token file too (`--token-file`).
    let watch = mycosynth_testkit::CliProcess::spawn(
        &url,
        &[
            "--token-file",
            &jwt.display().to_string(),
            "watch",
            NS_A,
            ENV,
        ],
    );
    let watching = watch.wait_line(0, Duration::from_secs(15), |l| l.contains("watching"));
    assert!(
        watching.is_some(),
        "the CLI did not connect with its token file"
    );
}

/// Each bad token is refused at connection, with its reason in the callout's log, and no log
/// line holds a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_expired_jwts_are_refused_with_the_reason_logged() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let stack = stack(1, None).await;
    let url = stack.nats.url();
    let claims = service_account_claims(NS_A, 600);
    let good = k8s_token(&claims);
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = claims.clone();
        change(&mut claims);
        claims
    };
    let (head, rest) = good.split_once('.').expect("jwt");
    let signature = rest.split_once('.').expect("jwt").1;
    let forged_claims = with(&|c| c["kubernetes.io"]["serviceaccount"]["name"] = NS_B.into());
    let tampered = format!(
        "{head}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(forged_claims.to_string())
    );
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let rogue = rcgen::KeyPair::generate().expect("key");
    let unknown_kid = sign_jwt(
        &claims,
        jsonwebtoken::Algorithm::ES256,
        rogue.serialize_pem().as_bytes(),
        Some("rogue-1"),
    );
    let cases = [
        (
            "wrong audience",
            k8s_token(&with(&|c| c["aud"] = json!(["another-system"]))),
            "wrong audience",
        ),
        (
            "wrong issuer",
            k8s_token(&with(&|c| c["iss"] = "https://evil.example".into())),
            "issuer \"https://evil.example\" is not the trusted issuer",
        ),
        ("tampered", tampered, "the signature does not verify"),
        ("alg none", alg_none, "algorithm \"none\" is not accepted"),
        ("unknown kid", unknown_kid, "unknown key id \"rogue-1\""),
        (
            "expired",
            k8s_token(&with(&|c| c["exp"] = (unix_now() - 120).into())),
            "the token has expired",
        ),
    ];
    let callout = &stack.callouts[0];
    let mut tokens = vec![good];
    for (n, (what, token, reason)) in cases.into_iter().enumerate() {
        let file = stack.dir.path().join(format!("bad-{n}"));
        write_token(&file, &token);
        refused(&url, &token_file(&file)).await;
        let line = callout.wait_log(&["connection refused", reason], Duration::from_secs(5));
        assert!(line.is_some(), "{what}: no refusal naming {reason:?}");
        tokens.push(token);
    }
    assert_eq!(
        callout.metric("mycosynth_callout_decisions_total", "outcome=\"refused\""),
        6.0
    );
    let log = callout.log_lines();
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(
            !log.iter()
                .any(|l| l.contains(token.as_str())
                    || (!signature.is_empty() && l.contains(signature))),
            "a token is in the callout's log"
        );
    }
}

/// The user JWT expires with the token: the server drops the connection then, and the
/// subscriber reconnects with the token the file holds by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_dropped_at_expiry_and_reconnects_with_the_rotated_token() {
    let stack = stack(1, None).await;
    let url = stack.nats.url();
    let file = stack.dir.path().join("token");
    let expires = unix_now() + 6;
    write_token(&file, &k8s_token(&service_account_claims(NS_A, 6)));
    let config = subscriber(&url, NS_A, token_file(&file))
        .await
        .expect("connects");
    let callout = &stack.callouts[0];
    let identity = "system:serviceaccount:apps:payment-service";
    let first = format!("expires={expires}");
    assert!(callout
        .wait_log(
            &["connection accepted", identity, &first],
            Duration::from_secs(5)
        )
        .is_some());
    // The kubelet rotates the token well before it expires.
    let rotated = service_account_claims(NS_A, 3600);
    write_token(&file, &k8s_token(&rotated));
    let second = format!("expires={}", rotated["exp"]);
    let line = callout.wait_log(
        &["connection accepted", identity, &second],
        Duration::from_secs(20),
    );
    assert!(line.is_some(), "no reconnection with the rotated token");
    assert!(
        unix_now() >= expires,
        "the connection was renewed before its credential expired"
    );
    // It keeps following changes on the new connection.
    let mut versions = config.version_watch();
    let before = *versions.borrow();
    super::set_keys_retrying(&stack.admin, NS_A, ENV, &[("db.pool", json!(7))]).await;
    tokio::time::timeout(Duration::from_secs(15), versions.wait_for(|v| *v > before))
        .await
        .expect("the subscriber follows changes after reconnecting")
        .expect("watch");
    assert_eq!(config.get::<u64>("db.pool").ok(), Some(7));
    assert!(config.stats().reconnects >= 2, "{:?}", config.stats());
}

/// Fail safe: with no callout, new connections are refused and open ones keep working; a
/// service restarted then starts from its last-known-good cache; a callout back accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_callout_down_new_connections_are_refused_and_running_subscribers_keep_reading() {
    let mut stack = stack(1, None).await;
    let url = stack.nats.url();
    let creds = token_file(&dev_token_file("svc-payment-service"));
    let cache = stack.dir.path().join("cache");
    let running = Subscriber::builder(NS_A, ENV)
        .nats_url(&url)
        .credentials(creds.clone())
        .cache_dir(&cache)
        .connect()
        .await
        .expect("connects");
    let cached = mycosynth_subscriber::cache::cache_path(
        &cache,
        &mycosynth_subscriber::wire::Namespace::new(NS_A).unwrap(),
        &mycosynth_subscriber::wire::Environment::new(ENV).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cached.exists() {
        assert!(Instant::now() < deadline, "no cache file written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.callouts[0].kill();

    refused(&url, &creds).await;
    let out = super::security::run_as(&url, Some("admin"), &["get", NS_A, ENV]).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    // Open connections are not asked again: a change through the admin's open connection
    // reaches the running subscriber.
    let mut versions = running.version_watch();
    let before = *versions.borrow();
    set_keys(&stack.admin, NS_A, ENV, &[("db.pool", json!(5))]).await;
    tokio::time::timeout(Duration::from_secs(10), versions.wait_for(|v| *v > before))
        .await
        .expect("the running subscriber keeps reading")
        .expect("watch");
    assert_eq!(running.get::<u64>("db.pool").ok(), Some(5));
    // A service starting now serves its last-known-good cache.
    let restarted = Subscriber::builder(NS_A, ENV)
        .nats_url(&url)
        .credentials(creds.clone())
        .cache_dir(&cache)
        .connect()
        .await
        .expect("starts from the cache");
    assert_eq!(restarted.status().origin, Origin::Cache);
    assert!(restarted.get::<u64>("db.pool").is_ok());

    // A callout back: the waiting service connects and catches up.
    stack.callouts.push(Callout::start(&url));
    let latest = running.version();
    let mut versions = restarted.version_watch();
    tokio::time::timeout(Duration::from_secs(20), versions.wait_for(|v| *v >= latest))
        .await
        .expect("the restarted service catches up once a callout answers")
        .expect("watch");
    assert_eq!(restarted.get::<u64>("db.pool").ok(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_callout_instances_share_the_load() {
    let stack = stack(2, None).await;
    let url = stack.nats.url();
    let creds = token_file(&dev_token_file("svc-inventory-service"));
    const CONNECTIONS: usize = 40;
    for _ in 0..CONNECTIONS {
        let probe = probe_with(&url, &creds).await.expect("accepted");
        drop(probe);
    }
    let accepted: Vec<f64> = stack
        .callouts
        .iter()
        .map(|c| {
            c.metric(
                "mycosynth_callout_decisions_total",
                "outcome=\"accepted\",backend=\"static\",kind=\"service\"",
            )
        })
        .collect();
    assert_eq!(
        accepted.iter().sum::<f64>(),
        CONNECTIONS as f64,
        "{accepted:?}"
    );
    assert!(
        accepted.iter().all(|n| *n >= 1.0),
        "one instance did all: {accepted:?}"
    );
}

/// Adding a service is a line in the tokens file: no server config, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_added_to_the_tokens_file_is_accepted_without_any_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens.txt");
    std::fs::write(&tokens, "# tokens\n").expect("tokens");
    let jwks = mycosynth_testkit::callout::callout_dir().join("jwks.json");
    let backends = format!(
        "  - static:\n      tokens_file: {:?}\n{}{}",
        tokens.display().to_string(),
        k8s_backend(&jwks),
        nkey_backend()
    );
    let config = callout_config(dir.path(), 600, &backends);
    let stack = stack(1, Some(&config)).await;
    let url = stack.nats.url();
    let token = dir.path().join("svc.token");
    let out = mycosynth_testkit::cli(
        &url,
        &[
            "auth",
            "token",
            &token.display().to_string(),
            "--kind",
            "service",
            "--identity",
            "svc-new",
            "--namespace",
            NS_A,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let line = super::stdout(&out);
    assert!(line.starts_with("sha256:") && line.contains("service svc-new payment-service"));
    refused(&url, &token_file(&token)).await;
    assert!(stack.callouts[0]
        .wait_log(
            &["connection refused", "not a listed token"],
            Duration::from_secs(5)
        )
        .is_some());
    std::fs::write(&tokens, format!("# tokens\n{line}")).expect("add the token");
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe_with(&url, &token_file(&token)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new token was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reads_a_and_is_refused_b(&url, &token_file(&token)).await;
}

/// The issuer's keys can come from its JWKS URL (as `jwks_uri` of an OIDC discovery document).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_verifies_kubernetes_tokens() {
    let jwks = std::fs::read_to_string(mycosynth_testkit::callout::callout_dir().join("jwks.json"))
        .expect("jwks");
    let issuer = mycosynth_testkit::callout::JsonServer::start(jwks);
    let dir = tempfile::tempdir().expect("temp dir");
    let backends = format!(
        "  - jwt:\n      issuer: {}\n      audiences: [mycosynth]\n      jwks_url: {}\n      namespace_claim: kubernetes.io.serviceaccount.name\n{}",
        mycosynth_testkit::callout::K8S_ISSUER,
        issuer.url("/openid/v1/jwks"),
        nkey_backend()
    );
    let config = callout_config(dir.path(), 600, &backends);
    let stack = stack(1, Some(&config)).await;
    let url = stack.nats.url();
    let jwt = dir.path().join("token");
    write_token(&jwt, &k8s_token(&service_account_claims(NS_A, 600)));
    reads_a_and_is_refused_b(&url, &token_file(&jwt)).await;
}

/// `mycosynth auth users-conf` prints the committed static config.
#[test]
fn the_users_conf_command_prints_the_committed_file() {
    let root = mycosynth_testkit::repo_root();
    let identities = root.join("nats/secure/identities.txt");
    let out = mycosynth_testkit::cli(
        "nats://127.0.0.1:1",
        &["auth", "users-conf", &identities.display().to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let committed = std::fs::read_to_string(root.join("nats/secure/users.conf")).expect("file");
    assert_eq!(super::stdout(&out), committed);
}
