//! Security with the shipped secure config (`nats/secure/`): the permission matrix of every
//! identity over every action, signed requests and verified identities, the policy.

use std::process::Output;
use std::time::Duration;

use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ErrorKind, HEADER_KEY};
use mycosynth_subscriber::{Credentials, Subscriber};
use mycosynth_testkit::{cli_as, dev_seed_file, json, NatsServer, Validator};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{stderr, stdout};

const NS_A: &str = "payment-service";
const ENV: &str = "staging";
const AUDIT_STREAM: &str = "MYCOSYNTH_AUDIT";

/// The test policy: `admin` administers everything; `alice` may write payment-service in
/// staging (not production); `bob` may only read inventory-service.
fn policy_json() -> Value {
    let key = mycosynth_testkit::dev_public_key;
    serde_json::json!({
        "identities": {
            "admin": {"public_key": key("admin")},
            "alice": {"public_key": key("alice")},
            "bob": {"public_key": key("bob")},
        },
        "grants": [
            {"identity": "admin", "role": "admin", "namespace": "*", "environment": "*"},
            {"identity": "alice", "role": "write", "namespace": "payment-*", "environment": "staging"},
            {"identity": "alice", "role": "read", "namespace": "payment-*", "environment": "*"},
            {"identity": "bob", "role": "read", "namespace": "inventory-service", "environment": "*"},
        ]
    })
}

/// Runs the CLI as `identity` (None: without credentials) on a blocking thread.
pub(super) async fn run_as(url: &str, identity: Option<&str>, args: &[&str]) -> Output {
    let (url, identity) = (url.to_owned(), identity.map(str::to_owned));
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_as(&url, identity.as_deref(), &args)
    })
    .await
    .expect("cli thread")
}

/// Stores `policy` as `admin` (`mycosynth policy set`), asserting it was accepted.
pub(super) async fn set_policy(url: &str, policy: &Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("policy.json");
    std::fs::write(&file, policy.to_string()).expect("write policy");
    let out = run_as(
        url,
        Some("admin"),
        &["policy", "set", &file.display().to_string()],
    )
    .await;
    assert!(out.status.success(), "policy set: {}", stderr(&out));
}

/// Runs the CLI as `identity` with `--json`, asserting success; its JSON output.
pub(super) async fn ok_as(url: &str, identity: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run_as(url, Some(identity), &all).await;
    assert!(
        out.status.success(),
        "{identity} {args:?}: {}",
        stderr(&out)
    );
    json(String::from_utf8_lossy(&out.stdout).trim())
}

/// How the server knows its identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthSetup {
    /// `nats/secure/`: the static `users.conf`.
    UsersConf,
    /// `nats/callout/`: auth callout (`mycosynth auth serve`) with the shipped config.
    Callout,
}

/// A secure server, a signed-mode validator and the test policy, stored by `admin`.
pub(super) struct SecureStack {
    pub(super) nats: NatsServer,
    pub(super) _validator: Validator,
    pub(super) _dir: tempfile::TempDir,
    pub(super) policy_file: String,
    /// The auth callout, in callout mode (dropped last: the server and validator go first).
    pub(super) _callout: Option<mycosynth_testkit::callout::Callout>,
}

async fn secure_stack() -> SecureStack {
    secure_stack_in(AuthSetup::UsersConf).await
}

/// [`secure_stack`] with the identities known by `setup`.
pub(super) async fn secure_stack_in(setup: AuthSetup) -> SecureStack {
    let (nats, callout) = match setup {
        AuthSetup::UsersConf => (NatsServer::start_secure(), None),
        AuthSetup::Callout => {
            let nats = NatsServer::start_callout();
            let callout = mycosynth_testkit::callout::Callout::start(&nats.url());
            (nats, Some(callout))
        }
    };
    let validator = Validator::start_secure(&nats.url(), &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let policy_file = dir.path().join("policy.json");
    std::fs::write(&policy_file, policy_json().to_string()).expect("write policy");
    let policy_file = policy_file.display().to_string();
    let out = run_as(&nats.url(), Some("admin"), &["policy", "set", &policy_file]).await;
    assert!(
        out.status.success(),
        "admin sets the policy: {}",
        stderr(&out)
    );
    SecureStack {
        nats,
        _validator: validator,
        _dir: dir,
        policy_file,
        _callout: callout,
    }
}

/// A raw NATS connection of one identity that records the errors the server sends it.
pub(super) struct Probe {
    client: async_nats::Client,
    server_errors: mpsc::UnboundedReceiver<String>,
}

async fn probe(url: &str, identity: Option<&str>) -> Result<Probe, String> {
    let creds = match identity {
        Some(identity) => Credentials::default()
            .with_nkey_file(dev_seed_file(identity))
            .expect("dev seed"),
        None => Credentials::default(),
    };
    probe_with(url, &creds).await
}

/// A [`Probe`] connected with `creds`.
pub(super) async fn probe_with(url: &str, creds: &Credentials) -> Result<Probe, String> {
    let (tx, server_errors) = mpsc::unbounded_channel();
    let client = creds
        .connect_options()
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    let _ = tx.send(err.to_string());
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Probe {
        client,
        server_errors,
    })
}

/// Who refused, if anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Allowed,
    /// The NATS server refused (a permissions violation, or no connection at all).
    Server,
    /// The validator refused (access denied, exit code 5).
    Validator,
}
use Outcome::{Allowed, Server, Validator as ByValidator};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    ReadKey,
    Watch,
    WriteViaValidator,
    WriteKvDirectly,
    PublishEvent,
    ChangePolicy,
    PurgeAudit,
}
use Action::*;

const ACTIONS: [Action; 7] = [
    ReadKey,
    Watch,
    WriteViaValidator,
    WriteKvDirectly,
    PublishEvent,
    ChangePolicy,
    PurgeAudit,
];

/// Waits for the server's permissions violation naming `subject`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    while let Some(err) = errors.recv().await {
        if err.contains("Permissions Violation") && err.contains(subject) {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// How long an action may take to be answered or refused.
const DECIDED_WITHIN: Duration = Duration::from_secs(10);

impl Probe {
    fn drain(&mut self) {
        while self.server_errors.try_recv().is_ok() {}
    }

    /// Sends a request: Allowed if answered (and `accept` likes the answer), Server if the
    /// server reports a permissions violation for the subject.
    pub(super) async fn request(
        &mut self,
        subject: &str,
        body: &str,
        accept: impl Fn(&[u8]) -> bool,
    ) -> Outcome {
        self.drain();
        let request = self
            .client
            .request(subject.to_owned(), body.to_owned().into());
        let decided = tokio::time::timeout(DECIDED_WITHIN, async {
            tokio::select! {
                reply = request => {
                    let message = reply.unwrap_or_else(|e| panic!("{subject}: {e}"));
                    assert!(accept(&message.payload), "{subject}: unexpected answer {:?}", String::from_utf8_lossy(&message.payload));
                    Allowed
                }
                _ = violation(&mut self.server_errors, subject) => Server,
            }
        })
        .await;
        decided.unwrap_or_else(|_| panic!("{subject}: neither answered nor refused by the server"))
    }

    /// Subscribes: Allowed if `trigger` makes a message arrive, Server if the server refuses.
    async fn subscribe(
        &mut self,
        subject: &str,
        trigger: impl std::future::Future<Output = ()>,
    ) -> Outcome {
        self.drain();
        let mut sub = self
            .client
            .subscribe(subject.to_owned())
            .await
            .expect("subscribe");
        self.client.flush().await.expect("flush");
        let decided = tokio::time::timeout(DECIDED_WITHIN, async {
            tokio::select! {
                _ = violation(&mut self.server_errors, subject) => Server,
                _ = async { trigger.await; futures::StreamExt::next(&mut sub).await } => Allowed,
            }
        })
        .await;
        decided.unwrap_or_else(|_| panic!("{subject}: no message and no refusal"))
    }

    /// Publishes: Allowed if `witness` receives it, Server if the server refuses.
    async fn publish(&mut self, subject: &str, witness: &mut async_nats::Subscriber) -> Outcome {
        self.drain();
        self.client
            .publish(subject.to_owned(), "matrix".into())
            .await
            .expect("publish");
        self.client.flush().await.expect("flush");
        let delivered = async {
            while let Some(message) = futures::StreamExt::next(witness).await {
                if &message.payload[..] == b"matrix" {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        let decided = tokio::time::timeout(DECIDED_WITHIN, async {
            tokio::select! {
                _ = violation(&mut self.server_errors, subject) => Server,
                _ = delivered => Allowed,
            }
        })
        .await;
        decided.unwrap_or_else(|_| panic!("{subject}: not delivered and not refused"))
    }
}

fn cli_outcome(out: &Output, what: &str) -> Outcome {
    match out.status.code() {
        Some(0) => Allowed,
        Some(5) => {
            assert!(
                stderr(out).contains("access denied"),
                "{what}: {}",
                stderr(out)
            );
            ByValidator
        }
        code => panic!("{what}: unexpected exit {code:?}: {}", stderr(out)),
    }
}

fn is_puback(payload: &[u8]) -> bool {
    json(&String::from_utf8_lossy(payload))
        .get("seq")
        .is_some_and(Value::is_u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_of_every_identity_and_action() {
    permission_matrix(AuthSetup::UsersConf).await;
}

/// The same matrix with the auth callout deciding every connection: the nkey identities of
/// `identities.txt`, and services holding a static token or a Kubernetes service-account JWT,
/// get exactly the rights `users.conf` gives their kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_of_every_identity_and_action_through_the_auth_callout() {
    permission_matrix(AuthSetup::Callout).await;
}

/// The credentials of a matrix row: a dev identity's nkey, or (`<identity> (static token)`,
/// `<identity> (kubernetes jwt)`) a service's token file, written into `dir`.
fn matrix_credentials(identity: &str, dir: &std::path::Path) -> Credentials {
    use mycosynth_testkit::callout::{
        dev_token_file, k8s_token, service_account_claims, write_token,
    };
    match identity.split_once(' ') {
        None => Credentials::default()
            .with_nkey_file(dev_seed_file(identity))
            .expect("dev seed"),
        Some((name, "(static token)")) => Credentials::default()
            .with_token_file(dev_token_file(name))
            .expect("token file"),
        Some((name, _)) => {
            let account = name.strip_prefix("svc-").expect("a service");
            let file = dir.join(format!("{name}.jwt"));
            write_token(&file, &k8s_token(&service_account_claims(account, 3600)));
            Credentials::default()
                .with_token_file(&file)
                .expect("token file")
        }
    }
}

async fn permission_matrix(setup: AuthSetup) {
    let stack = secure_stack_in(setup).await;
    let url = stack.nats.url();
    let out = run_as(&url, Some("admin"), &["set", NS_A, ENV, "db.pool", "10"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // The validator created the audit stream and recorded the `set` above.
    let root = probe(&url, Some("nats-admin"))
        .await
        .expect("nats-admin connects");
    let js = async_nats::jetstream::new(root.client.clone());
    // A witness of direct event publishes.
    let mut witness = root
        .client
        .subscribe(format!("mycosynth.events.{ENV}.{NS_A}"))
        .await
        .expect("witness");
    root.client.flush().await.expect("flush");
    let policy_bytes = serde_json::to_vec(&policy_json()).expect("policy");

    let key_subject =
        format!("$JS.API.DIRECT.GET.KV_mycosynth-config.$KV.mycosynth-config.{NS_A}.{ENV}.db.pool");
    let event_subject = format!("mycosynth.events.{ENV}.{NS_A}");
    // In an environment nobody reads: the raw bytes are no valid record.
    let kv_put = format!("$KV.mycosynth-config.{NS_A}.probe.direct-write");
    let policy_put = "$KV.mycosynth-policy.policy";
    let purge = format!("$JS.API.STREAM.PURGE.{AUDIT_STREAM}");
    let api_change = "mycosynth.api.change";
    let change_body =
        serde_json::to_string(&super::change_request(NS_A, ENV, &[("db.pool", 11.into())]))
            .expect("body");
    let trigger = || async {
        let out = run_as(
            &url,
            Some("admin"),
            &[
                "set",
                NS_A,
                ENV,
                "db.pool",
                &rand::random::<u16>().to_string(),
            ],
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
    };

    // identity -> the outcome of each action, in ACTIONS order.
    let mut matrix: Vec<(&str, [Outcome; 7])> = vec![
        //              read     watch    via validator  KV direct  event    policy      purge audit
        (
            "validator",
            [Allowed, Server, Server, Allowed, Allowed, Allowed, Server],
        ),
        (
            "admin",
            [Allowed, Server, Allowed, Server, Server, Allowed, Server],
        ),
        (
            "alice",
            [
                Allowed,
                Server,
                Allowed,
                Server,
                Server,
                ByValidator,
                Server,
            ],
        ),
        (
            "bob",
            [
                ByValidator,
                Server,
                ByValidator,
                Server,
                Server,
                ByValidator,
                Server,
            ],
        ),
        (
            "svc-payment-service",
            [Allowed, Allowed, Server, Server, Server, Server, Server],
        ),
        (
            "svc-inventory-service",
            [Server, Server, Server, Server, Server, Server, Server],
        ),
        ("anonymous", [Server; 7]),
    ];
    if setup == AuthSetup::Callout {
        let reader = [Allowed, Allowed, Server, Server, Server, Server, Server];
        matrix.extend([
            ("svc-payment-service (static token)", reader),
            ("svc-payment-service (kubernetes jwt)", reader),
            ("svc-inventory-service (static token)", [Server; 7]),
            ("svc-inventory-service (kubernetes jwt)", [Server; 7]),
        ]);
    }
    let people = ["admin", "alice", "bob"];
    for (identity, expected) in matrix {
        let observed: Vec<Outcome> = if identity == "anonymous" {
            // The server refuses the connection itself, so no action can even be tried.
            let err = probe(&url, None).await.err().expect("anonymous is refused");
            assert!(err.contains("authorization violation"), "{err}");
            let out = run_as(&url, None, &["get", NS_A, ENV]).await;
            assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
            assert!(
                stderr(&out).contains("authorization violation"),
                "{}",
                stderr(&out)
            );
            vec![Server; 7]
        } else {
            let creds = matrix_credentials(identity, stack._dir.path());
            let mut p = probe_with(&url, &creds).await.expect("connect");
            let service_a = identity.starts_with("svc-payment-service");
            let mut row = Vec::new();
            for action in ACTIONS {
                let person = people.contains(&identity);
                let outcome = match action {
                    ReadKey if person => cli_outcome(
                        &run_as(&url, Some(identity), &["get", NS_A, ENV, "db.pool"]).await,
                        "get",
                    ),
                    ReadKey if service_a => {
                        // The real subscriber crate, with the service's credentials.
                        let config = Subscriber::builder(NS_A, ENV)
                            .nats_url(&url)
                            .credentials(creds.clone())
                            .connect()
                            .await
                            .expect("service A loads its namespace");
                        assert!(config.get::<u64>("db.pool").is_ok());
                        p.request(&key_subject, "", |b| !b.is_empty()).await
                    }
                    ReadKey => p.request(&key_subject, "", |b| !b.is_empty()).await,
                    Watch if service_a => {
                        let config = Subscriber::builder(NS_A, ENV)
                            .nats_url(&url)
                            .credentials(creds.clone())
                            .connect()
                            .await
                            .expect("subscriber");
                        let before = config.version();
                        let mut versions = config.version_watch();
                        trigger().await;
                        tokio::time::timeout(
                            Duration::from_secs(10),
                            versions.wait_for(|v| *v > before),
                        )
                        .await
                        .expect("service A follows changes")
                        .expect("watch");
                        p.subscribe(&event_subject, trigger()).await
                    }
                    Watch => p.subscribe(&event_subject, trigger()).await,
                    WriteViaValidator if person => cli_outcome(
                        &run_as(&url, Some(identity), &["set", NS_A, ENV, "db.pool", "12"]).await,
                        "set",
                    ),
                    WriteViaValidator => p.request(api_change, &change_body, |_| true).await,
                    WriteKvDirectly => p.request(&kv_put, "1", is_puback).await,
                    PublishEvent => p.publish(&event_subject, &mut witness).await,
                    ChangePolicy if person => {
                        // Directly, the server refuses; through the validator, the policy decides.
                        assert_eq!(
                            p.request(policy_put, "{}", is_puback).await,
                            Server,
                            "{identity} writes the policy bucket"
                        );
                        cli_outcome(
                            &run_as(&url, Some(identity), &["policy", "set", &stack.policy_file])
                                .await,
                            "policy set",
                        )
                    }
                    ChangePolicy => {
                        p.request(
                            policy_put,
                            std::str::from_utf8(&policy_bytes).expect("utf8"),
                            is_puback,
                        )
                        .await
                    }
                    PurgeAudit => p.request(&purge, "{}", |_| true).await,
                };
                row.push(outcome);
            }
            row
        };
        for ((action, want), got) in ACTIONS.iter().zip(expected).zip(&observed) {
            assert_eq!(*got, want, "{identity} / {action:?}");
        }
    }
    // Nothing the refused identities tried took effect: no audit record was purged or removed
    // (the stream still starts at 1 and holds every record), and the chain verifies.
    let mut stream = js.get_stream(AUDIT_STREAM).await.expect("audit stream");
    let state = stream.info().await.expect("info").state.clone();
    assert_eq!(state.first_sequence, 1, "{state:?}");
    assert!(state.messages > 1, "{state:?}");
    assert_eq!(state.messages, state.last_sequence, "{state:?}");
    let out = run_as(&url, Some("admin"), &["audit", "verify"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

async fn signed_client(url: &str, identity: &str) -> ApiClient {
    let creds = Credentials::default()
        .with_nkey_file(dev_seed_file(identity))
        .expect("seed");
    ApiClient::connect_with(url, Duration::from_secs(5), &creds)
        .await
        .expect("api client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_names_the_verified_identity_and_bad_signatures_are_refused() {
    let stack = secure_stack().await;
    let url = stack.nats.url();
    // MYCOSYNTH_AUTHOR says "self-declared-name"; the signature says alice.
    let out = run_as(
        &url,
        Some("alice"),
        &["set", NS_A, ENV, "db.pool", "20", "--author", "mallory"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_as(&url, Some("alice"), &["--json", "history", NS_A, ENV]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\"author\":\"alice\""),
        "{}",
        stdout(&out)
    );
    assert!(
        !stdout(&out).contains("mallory") && !stdout(&out).contains("self-declared"),
        "{}",
        stdout(&out)
    );
    let out = run_as(
        &url,
        Some("alice"),
        &["--json", "get", NS_A, ENV, "db.pool"],
    )
    .await;
    assert!(
        stdout(&out).contains("\"author\":\"alice\""),
        "{}",
        stdout(&out)
    );

    // Missing signature: alice's NATS connection, but an unsigned request.
    let alice_creds = Credentials::default()
        .with_nkey_file(dev_seed_file("alice"))
        .expect("seed");
    let client = alice_creds
        .apply(async_nats::ConnectOptions::new())
        .connect(&url)
        .await
        .expect("connect");
    let unsigned = ApiClient::new(client.clone(), Duration::from_secs(5));
    let request = super::change_request(NS_A, ENV, &[("db.pool", 21.into())]);
    let err = unsigned
        .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied);
    assert!(err.message.contains("not signed"), "{}", err.message);

    // Forged: bob signs, claiming alice's key.
    let body = serde_json::to_vec(&request).expect("body");
    let bob = nkeys::KeyPair::from_seed(&mycosynth_testkit::dev_seed("bob")).expect("bob");
    let mut headers = mycosynth::access::sign(&bob, "mycosynth.api.change", &body).expect("sign");
    headers.insert(
        HEADER_KEY,
        mycosynth_testkit::dev_public_key("alice").as_str(),
    );
    let reply = client
        .request_with_headers("mycosynth.api.change", headers, body.clone().into())
        .await
        .expect("reply");
    let reply = json(&String::from_utf8_lossy(&reply.payload));
    assert_eq!(reply["error"]["kind"], "access_denied", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("forged"),
        "{reply}"
    );

    // Signed by a key the policy does not register (ci-bot has NATS rights, no policy entry).
    let ci = signed_client(&url, "ci-bot").await;
    let err = ci
        .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied);
    assert!(err.message.contains("not registered"), "{}", err.message);

    // Nothing of it was written: version 1 is still the only one.
    let out = run_as(
        &url,
        Some("alice"),
        &["--json", "get", NS_A, ENV, "db.pool"],
    )
    .await;
    assert_eq!(json(stdout(&out).trim())["version"], 1, "{}", stdout(&out));

    // The audit log names the verified identity of the accepted change, and records each of
    // the three refused requests.
    let out = run_as(
        &url,
        Some("admin"),
        &["--json", "audit", "--namespace", NS_A, "--env", ENV],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let records: Vec<serde_json::Value> = stdout(&out).lines().map(json).collect();
    let changes: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["action"] == "change").collect();
    let accepted: Vec<_> = changes.iter().filter(|r| r["outcome"] == "ok").collect();
    assert_eq!(accepted.len(), 1, "{records:?}");
    assert_eq!(accepted[0]["identity"], "alice", "{records:?}");
    let denied = changes
        .iter()
        .filter(|r| r["outcome"] == "access_denied")
        .count();
    assert_eq!(denied, 3, "unsigned, forged, unregistered: {records:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_decides_per_namespace_and_environment_and_is_shared_by_validators() {
    let stack = secure_stack().await;
    let url = stack.nats.url();
    let out = run_as(&url, Some("alice"), &["set", NS_A, ENV, "db.pool", "5"]).await;
    assert!(
        out.status.success(),
        "alice writes staging: {}",
        stderr(&out)
    );
    let out = run_as(
        &url,
        Some("alice"),
        &["set", NS_A, "production", "db.pool", "5"],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("identity \"alice\" may not change payment-service/production: missing permission write on payment-service/production (it has only read)"),
        "{}",
        stderr(&out)
    );
    let out = run_as(&url, Some("bob"), &["history", NS_A, ENV]).await;
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("identity \"bob\" may not read the history of payment-service/staging: missing permission read"), "{}", stderr(&out));

    // Only admins read or change the policy.
    let out = run_as(&url, Some("alice"), &["policy", "get"]).await;
    assert_eq!(out.status.code(), Some(5));
    assert!(
        stderr(&out).contains("missing permission admin on */*"),
        "{}",
        stderr(&out)
    );
    // A policy that would lock everybody out is refused, and nothing changes.
    let mut orphan = policy_json();
    orphan["grants"].as_array_mut().expect("grants").remove(0);
    let file = stack._dir.path().join("orphan.json");
    std::fs::write(&file, orphan.to_string()).expect("write");
    let out = run_as(
        &url,
        Some("admin"),
        &["policy", "set", &file.display().to_string()],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("rule \"admin\""), "{}", stderr(&out));

    // The admin grants alice production; a second validator instance (the first one stopped)
    // enforces the same stored policy.
    let mut wider = policy_json();
    wider["grants"].as_array_mut().expect("grants").push(serde_json::json!(
        {"identity": "alice", "role": "write", "namespace": "payment-service", "environment": "production"}));
    std::fs::write(&file, wider.to_string()).expect("write");
    let out = run_as(
        &url,
        Some("admin"),
        &["policy", "set", &file.display().to_string()],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let SecureStack {
        nats,
        _validator: mut first,
        _dir,
        ..
    } = stack;
    first.kill();
    let _second = Validator::start_secure(&nats.url(), &[]);
    let out = run_as(
        &url,
        Some("alice"),
        &["set", NS_A, "production", "db.pool", "6"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_as(
        &url,
        Some("bob"),
        &["set", NS_A, "production", "db.pool", "7"],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = run_as(&url, Some("admin"), &["--json", "policy", "get"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json(&stdout(&out))["grants"].as_array().map(Vec::len),
        Some(5)
    );
}

/// A CA and certificates it signs, written as PEM files into `dir`.
struct Pki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_file: std::path::PathBuf,
}

impl Pki {
    fn new(dir: &std::path::Path, name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca cert");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write ca");
        Pki {
            issuer: rcgen::Issuer::new(params, key),
            ca_file,
        }
    }

    /// A leaf certificate for `names`; returns (cert file, key file).
    fn leaf(
        &self,
        dir: &std::path::Path,
        file: &str,
        names: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let (cert_file, key_file) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        (
            cert_file.display().to_string(),
            key_file.display().to_string(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_generated_ca_and_untrusted_clients_refused() {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path(), "mycosynth");
    let (server_cert, server_key) = pki.leaf(
        dir.path(),
        "server",
        &["127.0.0.1", "localhost"],
        ServerAuth,
    );
    let (client_cert, client_key) = pki.leaf(dir.path(), "client", &["alice"], ClientAuth);
    let stranger = Pki::new(dir.path(), "stranger");
    let (bad_cert, bad_key) = stranger.leaf(dir.path(), "untrusted", &["alice"], ClientAuth);
    let ca = pki.ca_file.display().to_string();

    // The shipped tls.conf block, pointed at the generated files.
    let tls = std::fs::read_to_string(mycosynth_testkit::repo_root().join("nats/secure/tls.conf"))
        .expect("tls.conf")
        .replace("certs/server.pem", &server_cert)
        .replace("certs/server-key.pem", &server_key)
        .replace("certs/ca.pem", &ca);
    let nats = NatsServer::start_secure_with(&tls);
    let url = nats.url();
    let tls_env = |identity: &str| {
        let mut env = mycosynth_testkit::identity_env(identity);
        env.extend([
            ("MYCOSYNTH_TLS_CA".to_owned(), ca.clone()),
            ("MYCOSYNTH_TLS_CERT".to_owned(), client_cert.clone()),
            ("MYCOSYNTH_TLS_KEY".to_owned(), client_key.clone()),
        ]);
        env
    };
    let admin = format!("admin={}", mycosynth_testkit::dev_public_key("admin"));
    let _validator = Validator::start_with_env(
        &url,
        &["--auth", "signed", "--admin", &admin],
        &tls_env("validator"),
    );

    // The CLI over TLS, with the CA and a client certificate.
    let args = [
        "--tls-ca",
        &ca,
        "--tls-cert",
        &client_cert,
        "--tls-key",
        &client_key,
        "set",
        NS_A,
        ENV,
        "db.pool",
        "3",
    ];
    let out = run_as(&url, Some("admin"), &args).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // A service over TLS loads its namespace.
    let trusted = Credentials::default()
        .with_nkey_file(dev_seed_file("svc-payment-service"))
        .expect("seed")
        .with_tls_ca(&pki.ca_file);
    let config = Subscriber::builder(NS_A, ENV)
        .nats_url(&url)
        .credentials(
            trusted
                .clone()
                .with_tls_client_cert(&client_cert, &client_key),
        )
        .connect()
        .await
        .expect("service connects over TLS");
    assert_eq!(config.get::<u64>("db.pool").ok(), Some(3));

    // A client certificate from another CA, or none at all, is refused by the server.
    let untrusted = trusted.clone().with_tls_client_cert(&bad_cert, &bad_key);
    let refused = untrusted
        .apply(async_nats::ConnectOptions::new())
        .connect(&url)
        .await;
    assert!(
        refused.is_err(),
        "a certificate of an unknown CA is accepted"
    );
    let refused = trusted
        .apply(async_nats::ConnectOptions::new())
        .connect(&url)
        .await;
    assert!(refused.is_err(), "a client without certificate is accepted");
    assert!(
        nats.wait_log("TLS handshake error", Duration::from_secs(5)),
        "the server logged no TLS refusal"
    );
    // And the CLI reports it as unavailable.
    let args = [
        "--tls-ca",
        &ca,
        "--tls-cert",
        &bad_cert,
        "--tls-key",
        &bad_key,
        "get",
        NS_A,
        ENV,
    ];
    let out = run_as(&url, Some("admin"), &args).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
}

/// Signed change requests forwarded between two secure validator instances (to the one that
/// owns the namespace) keep their signature valid and are answered: the server lets instances
/// reach each other's own subjects, and the owner checks the signature against the subject the
/// client signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_are_forwarded_between_secure_validators() {
    let stack = secure_stack().await;
    let url = stack.nats.url();
    let second = Validator::start_secure(&url, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let validators = [&stack._validator, &second];
    let sum = |name: &str, labels: &str| -> f64 {
        validators.iter().map(|v| v.metric(name, labels)).sum()
    };
    while validators
        .iter()
        .any(|v| v.metric("mycosynth_validator_instances", "") < 2.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the instances did not find each other"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 0..12 {
        let value = n.to_string();
        let out = run_as(&url, Some("alice"), &["set", NS_A, ENV, "db.pool", &value]).await;
        assert!(out.status.success(), "set {n}: {}", stderr(&out));
    }
    let forwarded = sum(
        "mycosynth_validator_forwarded_total",
        "outcome=\"answered\"",
    );
    assert!(
        forwarded >= 1.0,
        "no request went through the other instance"
    );
    let out = run_as(&url, Some("alice"), &["--json", "get", NS_A, ENV]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"db.pool\""), "{}", stdout(&out));
}
