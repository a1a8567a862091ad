//! The audit log: every request (accepted, refused, malformed) is a record; `mycosynth audit`
//! queries it; `mycosynth audit verify` reports a removed record and a forged one (acceptance 3).

use async_nats::jetstream;
use mycosynth::cli::exit;
use mycosynth_subscriber::wire::{AuditRecord, AUDIT_STREAM};
use mycosynth_testkit::{NatsServer, Validator};

use crate::{run_cli, stderr, stdout};

const NS: &str = "payment-service";
const ENV: &str = "staging";

/// Four requests of different outcomes: accepted, refused by validation, malformed, a read.
async fn make_history(url: &str) {
    let out = run_cli(
        url,
        &["set", NS, ENV, "db.pool", "5", "--reason", "bigger pool"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let long_key = "k".repeat(1025);
    let out = run_cli(url, &["set", NS, ENV, &long_key, "1"]).await;
    assert_eq!(out.status.code(), Some(exit::VALIDATION.into()));
    let client = async_nats::connect(url).await.unwrap();
    let reply = client
        .request("mycosynth.api.change", "{not json".into())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&reply.payload).contains("bad_request"));
    let out = run_cli(url, &["get", NS, ENV, "db.pool"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

fn records(output: &std::process::Output) -> Vec<AuditRecord> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit record per line"))
        .collect()
}

async fn verify(url: &str) -> std::process::Output {
    run_cli(url, &["audit", "verify"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_recorded_and_queryable() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    make_history(&url).await;

    let out = run_cli(&url, &["--json", "audit"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let all = records(&out);
    let outcomes: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|r| (r.action.as_str(), r.outcome.as_str(), r.identity.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("change", "ok", "test-operator"),
            ("change", "validation", "test-operator"),
            ("change", "bad_request", "anonymous"),
            ("get", "ok", "anonymous"),
        ]
    );
    let accepted = &all[0];
    assert_eq!(
        (accepted.namespace.as_str(), accepted.environment.as_str()),
        (NS, ENV)
    );
    assert_eq!(accepted.keys, vec!["db.pool".to_owned()]);
    assert_eq!(accepted.version, Some(1));
    assert_eq!(accepted.reason, "bigger pool");
    assert!(
        all[1].reason.contains("max_length") || all[1].reason.contains("1024"),
        "{:?}",
        all[1].reason
    );
    assert!(all[2].reason.contains("malformed"), "{:?}", all[2].reason);
    assert!(all
        .windows(2)
        .all(|w| w[1].prev_hash == w[0].hash && w[1].seq == w[0].seq + 1));

    // Filters.
    let out = run_cli(
        &url,
        &[
            "--json",
            "audit",
            "--identity",
            "test-operator",
            "--namespace",
            NS,
            "--env",
            ENV,
        ],
    )
    .await;
    assert_eq!(records(&out).len(), 2, "{}", stdout(&out));
    let out = run_cli(
        &url,
        &["--json", "audit", "--since", "2999-01-01T00:00:00Z"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(records(&out).is_empty());
    let out = run_cli(&url, &["audit", "--since", "yesterday"]).await;
    assert_eq!(
        out.status.code(),
        Some(exit::VALIDATION.into()),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("RFC 3339"), "{}", stderr(&out));
    // Human output names who did what.
    let out = run_cli(&url, &["audit", "--namespace", NS]).await;
    assert!(
        stdout(&out).contains("test-operator change payment-service/staging ok v1 keys=db.pool"),
        "{}",
        stdout(&out)
    );

    let out = verify(&url).await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("audit chain intact"),
        "{}",
        stdout(&out)
    );
}

/// Removes record `seq` as the server admin can: the stream denies deleting a message, purging,
/// and lifting those flags, so the admin deletes the whole stream and recreates it with every
/// record but one.
async fn remove_record(url: &str, seq: u64) {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut stream = js.get_stream(AUDIT_STREAM).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    let mut config = info.config.clone();
    assert!(
        config.deny_delete && config.deny_purge,
        "the validator creates the stream locked"
    );
    assert!(
        stream.delete_message(seq).await.is_err(),
        "deleting one record is refused"
    );
    assert!(stream.purge().await.is_err(), "purging is refused");
    config.deny_delete = false;
    assert!(
        js.update_stream(config).await.is_err(),
        "the server will not lift deny_delete"
    );

    let mut kept = Vec::new();
    for n in 1..=info.state.last_sequence {
        let message = stream.get_raw_message(n).await.unwrap();
        if n != seq {
            kept.push((message.subject.to_string(), message.payload));
        }
    }
    js.delete_stream(AUDIT_STREAM).await.unwrap();
    js.create_stream(info.config.clone()).await.unwrap();
    for (subject, payload) in kept {
        js.publish(subject, payload).await.unwrap().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_record_is_reported() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    make_history(&url).await;
    assert!(verify(&url).await.status.success());

    remove_record(&url, 2).await;
    let out = verify(&url).await;
    assert_eq!(
        out.status.code(),
        Some(exit::AUDIT_BROKEN.into()),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("broken at sequence 2"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("record 2 was removed"),
        "{}",
        stderr(&out)
    );
    // The validator re-reads the end of the rebuilt chain and keeps appending to it.
    let out = run_cli(&url, &["set", NS, ENV, "db.pool", "6"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_cli(&url, &["--json", "audit", "--identity", "test-operator"]).await;
    let last = records(&out).pop().expect("records");
    assert_eq!((last.version, last.outcome.as_str()), (Some(2), "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_or_forged_record_is_reported() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    make_history(&url).await;
    let client = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(AUDIT_STREAM).await.unwrap();
    let last_seq = stream.info().await.unwrap().state.last_sequence;
    let last: AuditRecord =
        serde_json::from_slice(&stream.get_raw_message(last_seq).await.unwrap().payload).unwrap();

    // The admin appends a copy of the last record that claims someone else did it, keeping the
    // original hash and the link to the record before: the content no longer matches its hash.
    let forged = AuditRecord {
        identity: "mallory".into(),
        seq: last.seq + 1,
        ..last.clone()
    };
    let ack = js
        .publish(
            "mycosynth.audit.change",
            serde_json::to_vec(&forged).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, last.seq + 1);

    let out = verify(&url).await;
    assert_eq!(
        out.status.code(),
        Some(exit::AUDIT_BROKEN.into()),
        "{}",
        stderr(&out)
    );
    let first_bad = format!("broken at sequence {}", last.seq + 1);
    assert!(stderr(&out).contains(&first_bad), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("edited or forged"),
        "{}",
        stdout(&out)
    );

    // Requests after the forgery are still recorded, and verify keeps pointing at it.
    let out = run_cli(&url, &["set", NS, ENV, "db.pool", "6"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = verify(&url).await;
    assert!(stderr(&out).contains(&first_bad), "{}", stderr(&out));
}

/// Two validator instances append to one chain: under 100 concurrent change requests every
/// request is recorded once and the chain stays intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_validators_keep_one_intact_chain() {
    let nats = NatsServer::start();
    let url = nats.url();
    let _a = Validator::start(&url, &[]);
    let _b = Validator::start(&url, &[]);
    let api = crate::api(&url).await;
    let requests = (0..100u32).map(|i| {
        let api = api.clone();
        async move {
            let mut request =
                crate::change_request(NS, ENV, &[(&format!("k{}", i % 10), i.into())]);
            request.request_id = Some(format!("r{i}"));
            // A request losing too many commit races is answered "unavailable"; retry it.
            api.call_retrying::<_, mycosynth_subscriber::wire::ChangeOutcome>(
                mycosynth_subscriber::wire::endpoint::CHANGE,
                &request,
                std::time::Duration::from_secs(60),
            )
            .await
        }
    });
    let outcomes = futures::future::join_all(requests).await;
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(accepted, 100, "{:?}", outcomes.iter().find(|o| o.is_err()));

    let out = run_cli(&url, &["--json", "audit", "--limit", "1000"]).await;
    // Distinct change ids: a retried request answered from its first outcome has the same one.
    let changes: std::collections::BTreeSet<String> = records(&out)
        .into_iter()
        .filter(|r| r.action == "change" && r.outcome == "ok")
        .filter_map(|r| r.change_id)
        .collect();
    assert_eq!(changes.len(), 100);
    let out = verify(&url).await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}
