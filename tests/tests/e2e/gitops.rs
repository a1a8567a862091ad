//! Config as code (issue 6): `validate`, `deploy`, emergency overrides and `drift`, schema
//! compatibility and docs, against a real nats-server and a temporary git repository.

use std::path::Path;
use std::process::Command;

use mycosynth::cli::exit;
use mycosynth_testkit::{NatsServer, Validator};
use serde_json::Value;

use crate::{run_cli, schema_path, stderr, stdout};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A git repository holding the shipped example (schema and config files), committed.
pub fn example_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = mycosynth_testkit::repo_root();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    std::fs::copy(
        schema_path(),
        dir.path().join("schemas/payment-service.schema.json"),
    )
    .unwrap();
    let config = dir.path().join("config/payment-service");
    std::fs::create_dir_all(&config).unwrap();
    for env in ["production", "production-eu"] {
        std::fs::copy(
            root.join(format!("config/payment-service/{env}.yaml")),
            config.join(format!("{env}.yaml")),
        )
        .unwrap();
    }
    git(dir.path(), &["init", "-q"]);
    commit_all(dir.path(), "example config");
    dir
}

pub fn commit_all(dir: &Path, message: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `get --json` as a map key -> value record.
pub async fn live(url: &str, ns: &str, env: &str) -> (u64, serde_json::Map<String, Value>) {
    let out = run_cli(url, &["--json", "get", ns, env]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let outcome: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let values = outcome["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_str().unwrap().to_owned(), pair[1].clone()))
        .collect();
    (outcome["version"].as_u64().unwrap(), values)
}

/// Acceptance 1: `validate` catches each rule with file, key and line named, without any
/// server; it passes on the shipped examples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_names_file_key_line_and_rule() {
    let shipped = mycosynth_testkit::repo_root().display().to_string();
    let out = run_cli("nats://127.0.0.1:1", &["validate", &shipped]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("valid: 2 file(s)"),
        "{}",
        stdout(&out)
    );

    let repo = example_repo();
    let dir = repo.path();
    let prod = "config/payment-service/production.yaml";
    write(
        dir,
        prod,
        "database.host: db1\ndatabase.pool_size: 0\nhttp.retries: \"many\"\ntypo.key: 1\n",
    );
    write(
        dir,
        "config/payment-service/dev.yaml",
        "database.host: db1\n_system.x: 1\n",
    );
    write(
        dir,
        "config/payment-service/staging.yaml",
        "http.retries: 3\n",
    );
    write(
        dir,
        "config/payment-service/BadEnv.yaml",
        "database.host: db1\n",
    );
    write(
        dir,
        "config/payment-service/canary.yaml",
        "_meta.parent: nowhere\n",
    );
    write(dir, "config/payment-service/a.yaml", "_meta.parent: b\n");
    write(dir, "config/payment-service/b.yaml", "_meta.parent: a\n");
    write(dir, "config/payment-service/broken.yaml", "a: [1\n");
    let out = run_cli(
        "nats://127.0.0.1:1",
        &["validate", &dir.display().to_string()],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(exit::VALIDATION.into()),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    for expected in [
        format!("{prod}:2: key \"database.pool_size\" broke rule \"minimum\""),
        format!("{prod}:3: key \"http.retries\" broke rule \"type\""),
        format!("{prod}:4: key \"typo.key\" broke rule \"additionalProperties\""),
        "config/payment-service/dev.yaml:2: key \"_system.x\" broke rule \"reserved_prefix\""
            .into(),
        "config/payment-service/staging.yaml: key \"database.host\" broke rule \"required\"".into(),
        "config/payment-service/BadEnv.yaml: key \"BadEnv\" broke rule".into(),
        "config/payment-service/canary.yaml:1: key \"_meta.parent\" broke rule \"unknown_parent\""
            .into(),
        "config/payment-service/a.yaml:1: key \"_meta.parent\" broke rule \"cycle\"".into(),
        "config/payment-service/broken.yaml:2: key \"(file)\" broke rule \"format\"".into(),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    // A child may inherit a required key: production-eu passes without database.host of its own.
    assert!(
        !err.contains("production-eu"),
        "production-eu inherits database.host:\n{err}"
    );
}

/// Acceptance 2: deploying the same files twice makes one version, not two; editing one file
/// moves only its (namespace, environment), with the commit recorded; `--prune` removes exactly
/// the keys missing from the files; `--dry-run` prints the plan and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_is_idempotent_records_the_commit_and_prunes() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let out = run_cli(&url, &["schema", "push", "payment-service", &schema_path()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let repo = example_repo();
    let dir = repo.path().display().to_string();

    let out = run_cli(&url, &["deploy", &dir]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (prod_v, _) = live(&url, "payment-service", "production").await;
    let (eu_v, eu) = live(&url, "payment-service", "production-eu").await;
    assert_eq!((prod_v, eu_v), (1, 1));
    assert_eq!(eu.len(), 2, "production-eu holds only its own keys: {eu:?}");

    let out = run_cli(&url, &["deploy", &dir]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("changed 0 (namespace, environment), 2 unchanged"),
        "{}",
        stdout(&out)
    );
    assert_eq!(live(&url, "payment-service", "production").await.0, 1);
    assert_eq!(live(&url, "payment-service", "production-eu").await.0, 1);

    write(
        repo.path(),
        "config/payment-service/production-eu.yaml",
        "_meta.parent: production\ndatabase.host: db-primary.payments-eu.internal\nhttp.timeout_ms: 500\n",
    );
    let sha = commit_all(repo.path(), "slower eu timeout");
    let out = run_cli(&url, &["deploy", &dir, "--dry-run"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("~ http.timeout_ms: 400 -> 500"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        live(&url, "payment-service", "production-eu").await.0,
        1,
        "dry run wrote nothing"
    );

    let out = run_cli(&url, &["deploy", &dir]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        live(&url, "payment-service", "production").await.0,
        1,
        "untouched"
    );
    let (eu_v, eu) = live(&url, "payment-service", "production-eu").await;
    assert_eq!(eu_v, 2);
    assert_eq!(eu["http.timeout_ms"]["value"], 500);
    assert_eq!(
        eu["http.timeout_ms"]["git_commit"],
        Value::String(sha.clone())
    );
    let out = run_cli(
        &url,
        &[
            "--json",
            "history",
            "payment-service",
            "production-eu",
            "--limit",
            "1",
        ],
    )
    .await;
    assert!(stdout(&out).contains(&sha), "{}", stdout(&out));

    // Keys set live but absent from the files: --prune deletes exactly those.
    crate::set_keys(
        &crate::api(&url).await,
        "payment-service",
        "production",
        &[
            ("http.retries", 7.into()),
            ("feature_flags.new_checkout", true.into()),
        ],
    )
    .await;
    std::fs::write(
        repo.path().join("config/payment-service/production.yaml"),
        "database.host: db-primary.payments.internal\ndatabase.pool_size: 40\nhttp.timeout_ms: 250\nhttp.retries: 7\ncircuit_breaker.error_rate_threshold: 0.25\ncircuit_breaker.open_seconds: 20\n",
    )
    .unwrap();
    commit_all(repo.path(), "drop two keys");
    let out = run_cli(&url, &["deploy", &dir, "--env", "production"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        live(&url, "payment-service", "production")
            .await
            .1
            .contains_key("feature_flags.new_checkout"),
        "without --prune nothing is deleted"
    );
    let out = run_cli(&url, &["deploy", &dir, "--prune", "--env", "production"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("- feature_flags.new_checkout"),
        "{}",
        stdout(&out)
    );
    let (_, prod) = live(&url, "payment-service", "production").await;
    let keys: Vec<&str> = prod.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "circuit_breaker.error_rate_threshold",
            "circuit_breaker.open_seconds",
            "database.host",
            "database.pool_size",
            "http.retries",
            "http.timeout_ms"
        ]
    );
}

/// Acceptance 3: an emergency override shows in `drift` with its reason; applying the
/// `--patch` to the files and deploying makes `drift` clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_override_shows_in_drift_and_the_patch_cleans_it() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let out = run_cli(&url, &["schema", "push", "payment-service", &schema_path()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let repo = example_repo();
    let dir = repo.path().display().to_string();
    let out = run_cli(&url, &["deploy", &dir]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_cli(&url, &["drift", &dir]).await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let ns = "payment-service";
    let out = run_cli(
        &url,
        &[
            "set",
            ns,
            "production",
            "database.pool_size",
            "80",
            "--emergency",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(exit::VALIDATION.into()),
        "an emergency needs a reason"
    );
    let out = run_cli(
        &url,
        &[
            "--author",
            "oncall",
            "set",
            ns,
            "production",
            "database.pool_size",
            "80",
            "--emergency",
            "--reason",
            "INC-42 pool exhausted",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_cli(
        &url,
        &[
            "delete",
            ns,
            "production-eu",
            "http.timeout_ms",
            "--emergency",
            "--reason",
            "INC-43",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run_cli(&url, &["drift", &dir]).await;
    assert_eq!(
        out.status.code(),
        Some(exit::DRIFT.into()),
        "{}",
        stderr(&out)
    );
    let report = stdout(&out);
    let line = report
        .lines()
        .find(|l| l.contains("database.pool_size"))
        .unwrap_or_else(|| panic!("{report}"));
    for word in [
        "file 40",
        "live 80",
        "oncall",
        "INC-42 pool exhausted",
        "EMERGENCY",
        "production.yaml:4",
    ] {
        assert!(line.contains(word), "{word:?} missing from {line:?}");
    }
    assert!(
        report.contains("production-eu http.timeout_ms: file 400, live (absent)"),
        "{report}"
    );

    let out = run_cli(&url, &["drift", &dir, "--patch"]).await;
    assert_eq!(out.status.code(), Some(exit::DRIFT.into()));
    let patch = repo.path().join("drift.patch");
    std::fs::write(&patch, stdout(&out)).unwrap();
    git(repo.path(), &["apply", "drift.patch"]);
    std::fs::remove_file(&patch).unwrap();
    let text = std::fs::read_to_string(repo.path().join("config/payment-service/production.yaml"))
        .unwrap();
    assert!(
        text.contains("database.pool_size: 80") && text.starts_with("# Config"),
        "{text}"
    );
    commit_all(repo.path(), "follow up INC-42");

    let out = run_cli(&url, &["deploy", &dir]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_cli(&url, &["drift", &dir]).await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("no drift"), "{}", stdout(&out));
}

/// Acceptance 5: an incompatible schema push is refused naming the keys; a compatible one is
/// accepted; the docs list every key of the example schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_push_reports_compatibility_and_docs_list_every_key() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let ns = "payment-service";
    let out = run_cli(&url, &["schema", "push", ns, &schema_path()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let repo = example_repo();
    let out = run_cli(&url, &["deploy", &repo.path().display().to_string()]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let original: Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap()).unwrap();
    let push = |schema: Value| {
        let url = url.clone();
        let file = repo.path().join("next.schema.json");
        std::fs::write(&file, schema.to_string()).unwrap();
        async move {
            run_cli(
                &url,
                &[
                    "schema",
                    "push",
                    "payment-service",
                    &file.display().to_string(),
                ],
            )
            .await
        }
    };
    // Removing a key that is set live, even with unknown keys allowed.
    let mut removed = original.clone();
    removed["properties"]
        .as_object_mut()
        .unwrap()
        .remove("http.retries");
    removed["additionalProperties"] = Value::Bool(true);
    let out = push(removed).await;
    assert_eq!(
        out.status.code(),
        Some(exit::VALIDATION.into()),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("key \"http.retries\" broke rule \"removed_key\""),
        "{}",
        stderr(&out)
    );
    // Tightening a constraint that live values violate (pool_size is 40 live).
    let mut tightened = original.clone();
    tightened["properties"]["database.pool_size"]["maximum"] = 30.into();
    let out = push(tightened).await;
    assert_eq!(
        out.status.code(),
        Some(exit::VALIDATION.into()),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("key \"database.pool_size\" broke rule \"maximum\""),
        "{}",
        stderr(&out)
    );
    let out = run_cli(&url, &["--json", "schema", "get", ns]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out)).unwrap()["schema"],
        original,
        "refused pushes store nothing"
    );
    // Adding an optional key with a default is fine.
    let mut added = original.clone();
    added["properties"]["http.keepalive_s"] =
        serde_json::json!({"type": "integer", "default": 60, "description": "Keep-alive"});
    let out = push(added).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("added keys: http.keepalive_s"),
        "{}",
        stdout(&out)
    );

    let out = run_cli(&url, &["schema", "docs", ns]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let docs = stdout(&out);
    for key in original["properties"].as_object().unwrap().keys() {
        assert!(
            docs.contains(&format!("| `{key}` |")),
            "{key} missing from\n{docs}"
        );
    }
    assert!(docs.contains("| `database.pool_size` | integer | no | minimum: 1, maximum: 1000 | `10` | Database connection pool size |"), "{docs}");
}

/// Acceptance 4: a child sees a parent's value; its own value shadows it; deleting its own
/// value reveals the parent's again; a parent change reaches a child's subscriber; a cycle and
/// an unknown parent are refused when declared; `get --explain` names where a value comes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_inherit_from_their_parents() {
    use mycosynth_subscriber::{NoticeCause, Subscriber};
    use std::time::Duration;

    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let ns = "payment-service";
    let out = run_cli(&url, &["schema", "push", ns, &schema_path()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let repo = example_repo();
    let out = run_cli(&url, &["deploy", &repo.path().display().to_string()]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let child = Subscriber::builder(ns, "production-eu")
        .nats_url(url.clone())
        .connect()
        .await
        .expect("child subscriber");
    assert_eq!(child.parents(), ["production"]);
    assert_eq!(
        child.get::<u32>("database.pool_size").unwrap(),
        40,
        "inherited"
    );
    assert_eq!(
        child.get::<String>("database.host").unwrap(),
        "db-primary.payments-eu.internal",
        "own value shadows the parent's"
    );
    assert_eq!(child.get::<u32>("http.timeout_ms").unwrap(), 400);

    let mut notices = child.subscribe();
    let out = run_cli(&url, &["delete", ns, "production-eu", "http.timeout_ms"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(child.wait_for_version(2, Duration::from_secs(10)).await);
    assert_eq!(
        child.get::<u32>("http.timeout_ms").unwrap(),
        250,
        "deleting its own value reveals the parent's"
    );

    let out = run_cli(
        &url,
        &[
            "set",
            ns,
            "production",
            "http.retries",
            "5",
            "--reason",
            "parent change",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let inherited = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let notice = notices.recv().await.expect("notice");
            if notice.cause == NoticeCause::Inherited {
                return notice;
            }
        }
    })
    .await
    .expect("the parent's change reaches the child's subscriber");
    assert_eq!(inherited.keys, ["http.retries"]);
    assert_eq!(inherited.reason, "parent change");
    assert_eq!(child.get::<u32>("http.retries").unwrap(), 5);
    // A parent change of a key the child shadows is not the child's change.
    let out = run_cli(&url, &["set", ns, "production", "database.host", "\"db2\""]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_cli(&url, &["set", ns, "production", "http.retries", "6"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let notice = notices.recv().await.expect("notice");
            if notice.cause == NoticeCause::Inherited {
                return notice;
            }
        }
    })
    .await
    .expect("second inherited change");
    assert_eq!(next.keys, ["http.retries"], "database.host is shadowed");
    assert_eq!(
        child.get::<String>("database.host").unwrap(),
        "db-primary.payments-eu.internal"
    );

    let out = run_cli(
        &url,
        &[
            "get",
            ns,
            "production-eu",
            "database.pool_size",
            "--explain",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("database.pool_size = 40  <- inherited from production"),
        "{}",
        stdout(&out)
    );
    let out = run_cli(
        &url,
        &[
            "get",
            ns,
            "production-eu",
            "feature_flags.new_checkout",
            "--explain",
        ],
    )
    .await;
    assert!(
        stdout(&out).contains("inherited from production"),
        "{}",
        stdout(&out)
    );
    let out = run_cli(
        &url,
        &[
            "get",
            ns,
            "production-eu",
            "circuit_breaker.open_seconds",
            "--explain",
        ],
    )
    .await;
    assert!(
        stdout(&out).contains("circuit_breaker.open_seconds = 20"),
        "{}",
        stdout(&out)
    );

    // Declarations: a cycle and an unknown parent are refused; nothing changes.
    let out = run_cli(&url, &["parent", ns, "production", "production-eu"]).await;
    assert_eq!(
        out.status.code(),
        Some(exit::VALIDATION.into()),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("\"cycle\"")
            && stderr(&out).contains("production -> production-eu -> production"),
        "{}",
        stderr(&out)
    );
    let out = run_cli(&url, &["parent", ns, "production-eu", "nowhere"]).await;
    assert_eq!(
        out.status.code(),
        Some(exit::VALIDATION.into()),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("\"unknown_parent\""),
        "{}",
        stderr(&out)
    );
    let out = run_cli(&url, &["parent", ns, "production-eu"]).await;
    assert_eq!(stdout(&out).trim(), "production");
    let out = run_cli(&url, &["parent", ns, "production"]).await;
    assert_eq!(stdout(&out).trim(), "(none)");

    // Two levels: canary -> production-eu -> production. The validator accepts canary's change
    // set without the required database.host (inherited), and a validating subscriber serves it.
    let out = run_cli(&url, &["parent", ns, "canary", "production-eu"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_cli(&url, &["set", ns, "canary", "http.retries", "9"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_cli(
        &url,
        &["set", ns, "production", "database.host", "\"bad host!\""],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(exit::VALIDATION.into()),
        "parents are still validated"
    );
    let canary = Subscriber::builder(ns, "canary")
        .nats_url(url.clone())
        .validate_against_schema(true)
        .connect()
        .await
        .expect("canary subscriber");
    assert_eq!(canary.parents(), ["production-eu", "production"]);
    assert_eq!(canary.get::<u32>("http.retries").unwrap(), 9);
    assert_eq!(
        canary.get::<String>("database.host").unwrap(),
        "db-primary.payments-eu.internal"
    );
    assert_eq!(canary.get::<u32>("database.pool_size").unwrap(), 40);
    assert_eq!(
        canary.get::<u32>("circuit_breaker.open_seconds").unwrap(),
        20
    );
    assert_eq!(
        canary.get_or::<u32>("no.such.key", 7),
        7,
        "then the caller's default"
    );
    // Schema pushes check each environment with what it inherits.
    let out = run_cli(&url, &["schema", "push", ns, &schema_path()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}
