use std::time::Duration;

use futures::StreamExt;
use mycosynth::cli::exit;
use mycosynth_testkit::{NatsServer, Validator};

use crate::{run_cli, schema_path, stderr, stdout};

/// Acceptance 2: each invalid input gives its documented exit code and a message naming the key
/// and the rule; KV is unchanged and no event is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_and_changes_nothing() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let out = run_cli(&url, &["schema", "push", "payment-service", &schema_path()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let example = mycosynth_testkit::repo_root().join("config/payment-service/production.yaml");
    let out = run_cli(
        &url,
        &[
            "apply",
            &example.display().to_string(),
            "--namespace",
            "payment-service",
            "--env",
            "production",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let before = stdout(&run_cli(&url, &["--json", "get", "payment-service", "production"]).await);

    let client = async_nats::connect(&url).await.unwrap();
    let mut events = client.subscribe("mycosynth.events.>").await.unwrap();
    client.flush().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.yaml");
    std::fs::write(
        &huge,
        format!("database.host: \"{}\"\n", "a".repeat(1024 * 1024 + 1)),
    )
    .unwrap();
    let huge = huge.display().to_string();
    let long_key = "k".repeat(1025);
    let ns = "payment-service";
    let env = "production";
    // (arguments, exit code, words the message must contain: the key and the rule)
    let cases: Vec<(Vec<&str>, u8, Vec<&str>)> = vec![
        (
            vec!["set", ns, env, "database.pool_size", "\"many\""],
            exit::VALIDATION,
            vec!["database.pool_size", "type"],
        ),
        (
            vec!["set", ns, env, "database.pool_size", "0"],
            exit::VALIDATION,
            vec!["database.pool_size", "minimum"],
        ),
        (
            vec!["set", ns, env, "database.host", "\"bad host!\""],
            exit::VALIDATION,
            vec!["database.host", "pattern"],
        ),
        (
            vec!["delete", ns, env, "database.host"],
            exit::VALIDATION,
            vec!["database.host", "required"],
        ),
        (
            vec!["set", ns, env, "no.such.key", "1"],
            exit::VALIDATION,
            vec!["no.such.key", "additionalProperties"],
        ),
        (
            vec!["set", ns, env, &long_key, "1"],
            exit::VALIDATION,
            vec!["kkkkkkkk", "max_length"],
        ),
        (
            vec!["apply", &huge, "--namespace", ns, "--env", env],
            exit::VALIDATION,
            vec!["database.host", "max_size"],
        ),
        (
            vec!["set", ns, env, "_system.flag", "1"],
            exit::VALIDATION,
            vec!["_system.flag", "reserved_prefix"],
        ),
        (
            vec!["set", ns, env, "database.pool_size", "{oops"],
            exit::VALIDATION,
            vec!["database.pool_size", "json"],
        ),
        (
            vec!["set", "Payment_Service", env, "a", "1"],
            exit::VALIDATION,
            vec!["Payment_Service", "charset"],
        ),
        (
            vec!["set", ns, "prod.eu", "a", "1"],
            exit::VALIDATION,
            vec!["prod.eu", "charset"],
        ),
        (
            vec![
                "set",
                ns,
                env,
                "database.pool_size",
                "5",
                "--expect-version",
                "99",
            ],
            exit::CONFLICT,
            vec!["version"],
        ),
        (
            vec!["get", ns, env, "no.such.key"],
            exit::NOT_FOUND,
            vec!["no.such.key"],
        ),
        (
            vec!["rollback", ns, env, "--to", "999"],
            exit::NOT_FOUND,
            vec!["999"],
        ),
        (
            vec![
                "apply",
                "/no/such/file.yaml",
                "--namespace",
                ns,
                "--env",
                env,
            ],
            exit::INPUT,
            vec!["/no/such/file.yaml"],
        ),
    ];
    for (args, code, words) in &cases {
        let out = run_cli(&url, args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(i32::from(*code)), "{args:?}: {err}");
        for word in words {
            assert!(
                err.contains(word),
                "{args:?}: message {err:?} lacks {word:?}"
            );
        }
        assert!(!err.contains("panicked"), "{err}");
    }

    let after = stdout(&run_cli(&url, &["--json", "get", ns, env]).await);
    assert_eq!(before, after, "KV changed");
    let leaked = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
    assert!(
        leaked.is_err(),
        "an event was published for a refused change"
    );

    // With no validator at all: unavailable.
    let out = run_cli("nats://127.0.0.1:1", &["get", ns, env]).await;
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::UNAVAILABLE)),
        "{}",
        stderr(&out)
    );
}

/// `schema push`: a schema that live config violates is refused naming the keys, unless
/// `--force`; with `--require-schema`, a namespace without a schema refuses changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_push_checks_live_config() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &["--require-schema"]);
    let url = nats.url();
    let out = run_cli(
        &url,
        &[
            "set",
            "payment-service",
            "staging",
            "database.host",
            "\"db1\"",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::VALIDATION)),
        "no schema yet: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("schema_required"));

    let out = run_cli(&url, &["schema", "push", "payment-service", &schema_path()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    for (key, value) in [("database.host", "\"db1\""), ("database.pool_size", "500")] {
        let out = run_cli(&url, &["set", "payment-service", "staging", key, value]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let dir = tempfile::tempdir().unwrap();
    let tighter = dir.path().join("tighter.json");
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap()).unwrap();
    schema["properties"]["database.pool_size"]["maximum"] = serde_json::json!(100);
    std::fs::write(&tighter, schema.to_string()).unwrap();
    let tighter = tighter.display().to_string();

    let out = run_cli(&url, &["schema", "push", "payment-service", &tighter]).await;
    assert_eq!(out.status.code(), Some(i32::from(exit::VALIDATION)));
    assert!(
        stderr(&out).contains("database.pool_size") && stderr(&out).contains("maximum"),
        "{}",
        stderr(&out)
    );
    let stored = stdout(&run_cli(&url, &["schema", "get", "payment-service"]).await);
    assert!(
        stored.contains("\"maximum\": 1000"),
        "refused schema must not be stored: {stored}"
    );

    let out = run_cli(
        &url,
        &["schema", "push", "payment-service", &tighter, "--force"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("database.pool_size"),
        "forced violations are listed"
    );
    let stored = stdout(&run_cli(&url, &["schema", "get", "payment-service"]).await);
    assert!(stored.contains("\"maximum\": 100"), "{stored}");
}

/// Each validator keeps schemas in memory by a KV watch: a schema another instance stores (here
/// written straight to KV, as that instance's `schema push` does) is enforced without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_stored_by_another_instance_is_enforced() {
    use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ErrorKind, SCHEMA_BUCKET};
    use serde_json::json;
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    let first = crate::set_keys(&api, "limits", "prod", &[("max", json!(5))]).await;
    assert_eq!(first.version, 1);

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let schemas = async_nats::jetstream::new(client)
        .get_key_value(SCHEMA_BUCKET)
        .await
        .expect("schema bucket");
    let record = json!({
        "schema": {"type": "object", "properties": {"max": {"type": "integer", "maximum": 10}}},
        "author": "other-instance",
        "time": "2026-11-25T00:00:00Z",
    });
    schemas
        .put("limits", serde_json::to_vec(&record).unwrap().into())
        .await
        .expect("schema stored");

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let refusal = loop {
        let request = crate::change_request("limits", "prod", &[("max", json!(50))]);
        match api
            .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
            .await
        {
            Err(err) => break err,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(outcome) => panic!("the stored schema was never enforced: {outcome:?}"),
        }
    };
    assert_eq!(refusal.kind, ErrorKind::Validation, "{refusal:?}");
    assert_eq!(refusal.violations[0].key, "max");
    assert_eq!(refusal.violations[0].rule, "maximum");
    // And a value within it is still accepted.
    let within = crate::set_keys(&api, "limits", "prod", &[("max", json!(7))]).await;
    assert!(within.committed);
}

/// The validator keeps each namespace's document between change sets rather than copying it out
/// of the stored values for every one: whatever it held after a commit, a refusal, a dry run, a
/// no-op, a sealed value and a rollback, each change set below is diffed against what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_set_is_diffed_against_the_stored_state() {
    use mycosynth_subscriber::wire::{
        endpoint, ChangeOutcome, ChangeRequest, DiffEntry, KeyChange, RollbackRequest,
    };
    use serde_json::json;
    const SCHEMA: &str = r#"{
      "type": "object",
      "properties": {
        "a": {"type": "integer"},
        "secret": {"type": "string", "minLength": 8, "x-mycosynth-sensitive": true}
      },
      "additionalProperties": false
    }"#;
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("vault.schema.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    let out = run_cli(
        &url,
        &["schema", "push", "vault", &schema.display().to_string()],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let api = crate::api(&url).await;
    let send = |changes: Vec<KeyChange>, dry_run: bool| {
        let mut request = ChangeRequest::new("vault", "prod", changes, "tester");
        request.dry_run = dry_run;
        let api = &api;
        async move {
            api.call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
                .await
        }
    };
    let entry = |old: Option<serde_json::Value>, new: Option<serde_json::Value>| DiffEntry {
        key: "a".into(),
        old,
        new,
    };

    let first = send(
        vec![
            KeyChange::set("a", json!(1)),
            KeyChange::set("secret", json!("first-secret")),
        ],
        false,
    )
    .await
    .unwrap();
    assert_eq!((first.version, first.committed), (1, true));

    // A dry run leaves nothing behind: the same change then commits, with the same diff.
    let dry = send(vec![KeyChange::set("a", json!(2))], true)
        .await
        .unwrap();
    assert_eq!((dry.version, dry.committed), (1, false));
    assert_eq!(dry.diff, vec![entry(Some(json!(1)), Some(json!(2)))]);
    let second = send(vec![KeyChange::set("a", json!(2))], false)
        .await
        .unwrap();
    assert_eq!((second.version, second.committed), (2, true));
    assert_eq!(second.diff, dry.diff);

    // Neither does a refused change set.
    let refused = send(
        vec![KeyChange::set("a", json!(7)), KeyChange::set("b", json!(1))],
        false,
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    let third = send(vec![KeyChange::set("a", json!(3))], false)
        .await
        .unwrap();
    assert_eq!(third.version, 3);
    assert_eq!(third.diff, vec![entry(Some(json!(2)), Some(json!(3)))]);

    // A sensitive value is held in the clear: setting it again changes nothing; a new one does.
    let same = send(vec![KeyChange::set("secret", json!("first-secret"))], false)
        .await
        .unwrap();
    assert_eq!((same.version, same.committed), (3, false));
    let rotated = send(
        vec![KeyChange::set("secret", json!("second-secret"))],
        false,
    )
    .await
    .unwrap();
    assert_eq!((rotated.version, rotated.committed), (4, true));

    // A delete; deleting the key again is refused, as a key not set.
    let deleted = send(vec![KeyChange::delete("a")], false).await.unwrap();
    assert_eq!(deleted.version, 5);
    assert_eq!(deleted.diff, vec![entry(Some(json!(3)), None)]);
    let again = send(vec![KeyChange::delete("a")], false).await;
    assert!(again.is_err(), "{again:?}");

    // A rollback to version 2 restores `a` and the first secret; after it, setting either to
    // version 2's value changes nothing.
    let rollback = RollbackRequest {
        namespace: "vault".into(),
        environment: "prod".into(),
        to_version: 2,
        expected_version: Some(5),
        author: "tester".into(),
        reason: String::new(),
        dry_run: false,
        request_id: None,
        proposal: None,
    };
    let restored: ChangeOutcome = api.call(endpoint::ROLLBACK, &rollback).await.unwrap();
    assert_eq!((restored.version, restored.committed), (6, true));
    assert!(
        restored.diff.contains(&entry(None, Some(json!(2)))),
        "{:?}",
        restored.diff
    );
    let unchanged = send(
        vec![
            KeyChange::set("a", json!(2)),
            KeyChange::set("secret", json!("first-secret")),
        ],
        false,
    )
    .await
    .unwrap();
    assert_eq!((unchanged.version, unchanged.committed), (6, false));
}

/// Refused, the change set `changes` to svc/prod: its first violation's key and rule.
async fn first_violation(
    api: &mycosynth::client::ApiClient,
    changes: Vec<mycosynth_subscriber::wire::KeyChange>,
) -> (String, String) {
    use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, ErrorKind};
    let request = ChangeRequest::new("svc", "prod", changes, "t");
    let err = api
        .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
        .await
        .expect_err("refused");
    assert_eq!(err.kind, ErrorKind::Validation, "{err:?}");
    let first = &err.violations[0];
    (first.key.clone(), first.rule.clone())
}

/// Under a schema whose rules apply key by key, a change set is checked on the keys it changes
/// and on the required keys (not by validating the whole namespace again), with the verdicts a
/// whole-document check gives; once a forced push leaves the stored config outside the schema,
/// the whole document is checked again, so a change elsewhere is refused as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_set_is_checked_on_its_keys_under_a_per_key_schema() {
    use mycosynth_subscriber::wire::{endpoint, KeyChange, SchemaPushRequest};
    use serde_json::{json, Value};
    let nats = NatsServer::start();
    let validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    let schema = |max: u64| {
        json!({
            "type": "object",
            "properties": {
                "db.host": {"type": "string"},
                "db.pool": {"type": "integer", "maximum": max}
            },
            "patternProperties": {"^flag\\.": {"type": "boolean"}},
            "required": ["db.host"],
            "additionalProperties": false
        })
    };
    let push = |schema: Value, force: bool| SchemaPushRequest {
        namespace: "svc".into(),
        schema,
        force,
        author: "t".into(),
    };
    let _: Value = api
        .call(endpoint::SCHEMA_PUSH, &push(schema(100), false))
        .await
        .expect("schema pushed");
    let keys_checked =
        || validator.metric("mycosynth_validator_schema_checks_total", "scope=\"keys\"");
    crate::set_keys(
        &api,
        "svc",
        "prod",
        &[("db.host", json!("a")), ("db.pool", json!(50))],
    )
    .await;
    for i in 0..10 {
        crate::set_keys(&api, "svc", "prod", &[(&format!("flag.f{i}"), json!(true))]).await;
    }
    assert!(
        keys_checked() >= 10.0,
        "checked key by key: {}",
        keys_checked()
    );

    for (changes, expected) in [
        (
            vec![KeyChange::set("db.pool", json!(500))],
            ("db.pool", "maximum"),
        ),
        (
            vec![KeyChange::set("flag.x", json!("yes"))],
            ("flag.x", "type"),
        ),
        (
            vec![KeyChange::set("typo", json!(1))],
            ("typo", "additionalProperties"),
        ),
        (vec![KeyChange::delete("db.host")], ("db.host", "required")),
    ] {
        let found = first_violation(&api, changes).await;
        assert_eq!((found.0.as_str(), found.1.as_str()), expected);
    }
    let at = crate::set_keys(&api, "svc", "prod", &[("flag.f0", json!(false))]).await;
    assert_eq!(at.version, 12, "the refusals changed nothing");

    // Forced: the stored db.pool (50) breaks the new maximum of 10.
    let _: Value = api
        .call(endpoint::SCHEMA_PUSH, &push(schema(10), true))
        .await
        .expect("forced push");
    let found = first_violation(&api, vec![KeyChange::set("flag.f1", json!(false))]).await;
    assert_eq!(
        (found.0.as_str(), found.1.as_str()),
        ("db.pool", "maximum"),
        "a change elsewhere is judged on the whole document again"
    );
    crate::set_keys(&api, "svc", "prod", &[("db.pool", json!(5))]).await;
    let before = keys_checked();
    let last = crate::set_keys(&api, "svc", "prod", &[("flag.f1", json!(false))]).await;
    assert!(last.committed);
    assert!(keys_checked() > before, "back to checking key by key");
}
