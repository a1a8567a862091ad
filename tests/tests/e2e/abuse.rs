//! Abuse (acceptance 6): a per-identity rate limit on change requests, oversized and malformed
//! requests. Each is refused with its documented error, is audited, and writes nothing.

use mycosynth::cli::exit;
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ErrorKind, GetOutcome, GetRequest};
use mycosynth_testkit::{NatsServer, Validator};

use crate::{api, change_request, run_cli, stderr, stdout};

const NS: &str = "payment-service";
const ENV: &str = "production";

async fn state(url: &str) -> GetOutcome {
    let request = GetRequest {
        namespace: NS.into(),
        environment: ENV.into(),
        key: None,
    };
    api(url)
        .await
        .call(endpoint::GET, &request)
        .await
        .expect("get")
}

fn audit_outcomes(output: &std::process::Output) -> Vec<String> {
    stdout(output)
        .lines()
        .map(|l| {
            mycosynth_testkit::json(l)["outcome"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_is_refused_audited_and_writes_nothing() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &["--rate-limit", "1/m", "--rate-burst", "2"]);
    let url = nats.url();
    for value in ["1", "2"] {
        let out = run_cli(&url, &["set", NS, ENV, "a", value]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let before = state(&url).await;
    assert_eq!(before.version, 2);

    let out = run_cli(&url, &["set", NS, ENV, "a", "3"]).await;
    assert_eq!(
        out.status.code(),
        Some(exit::RATE_LIMITED.into()),
        "{}",
        stderr(&out)
    );
    let message = stderr(&out);
    assert!(message.starts_with("mycosynth: rate limited: identity \"test-operator\" exceeded the rate limit of 1/m change requests (burst 2)"), "{message}");
    assert!(message.contains("nothing was written"), "{message}");
    assert_eq!(
        state(&url).await,
        before,
        "a refused request writes nothing"
    );

    // Another identity has its own budget; reads are never limited.
    let out = run_cli(
        &url,
        &["--author", "someone-else", "set", NS, ENV, "b", "1"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_cli(&url, &["get", NS, ENV, "a"]).await;
    assert_eq!(stdout(&out).trim(), "2");

    let out = run_cli(&url, &["--json", "audit", "--identity", "test-operator"]).await;
    assert_eq!(audit_outcomes(&out), vec!["ok", "ok", "rate_limited"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_are_refused_and_write_nothing() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let out = run_cli(&url, &["set", NS, ENV, "a", "1"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let before = state(&url).await;

    // Larger than a request may be: refused by the client before it is sent, clearly.
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.json");
    let big = "x".repeat(9 * 1024 * 1024);
    std::fs::write(&huge, format!("{{\"a\": \"{big}\"}}")).unwrap();
    let out = run_cli(
        &url,
        &[
            "apply",
            &huge.display().to_string(),
            "--namespace",
            NS,
            "--env",
            ENV,
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(exit::VALIDATION.into()),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("is larger than the limit of"),
        "{}",
        stderr(&out)
    );
    let api = api(&url).await;
    let request = change_request(NS, ENV, &[("a", serde_json::Value::String(big))]);
    let refused = api
        .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
        .await
        .unwrap_err();
    assert_eq!(refused.kind, ErrorKind::BadRequest);

    // Malformed bodies reaching the validator: not JSON, and JSON of the wrong shape.
    let client = async_nats::connect(&url).await.unwrap();
    for body in [
        "{not json".to_owned(),
        format!(
            r#"{{"namespace":"{NS}","environment":"{ENV}","author":"x","changes":"all of them"}}"#
        ),
        format!("[{}]", "1,".repeat(1_000_000) + "1"),
    ] {
        let reply = client
            .request("mycosynth.api.change", body.into())
            .await
            .unwrap();
        let reply = String::from_utf8_lossy(&reply.payload);
        assert!(
            reply.starts_with(r#"{"error":{"kind":"bad_request","message":"malformed request"#),
            "{reply}"
        );
    }
    assert_eq!(state(&url).await, before, "nothing was written");
    let out = run_cli(&url, &["--json", "audit"]).await;
    let outcomes = audit_outcomes(&out);
    assert_eq!(
        outcomes.iter().filter(|o| *o == "bad_request").count(),
        3,
        "{outcomes:?}"
    );
}
