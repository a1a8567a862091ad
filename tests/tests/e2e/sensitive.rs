//! Sensitive values (acceptance 4): ciphertext in KV, history and events; clear text in the
//! namespace's subscribers (in this process and in a `watch` process); redacted in CLI output;
//! absent from every log line and audit record the test captures.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::{NatsServer, Validator};

use crate::{run_cli, stderr, stdout};

const NS: &str = "billing";
const ENV: &str = "prod";
const SECRET: &str = "Tr0ub4dor-and-3-horses";
const REFUSED_SECRET: &str = "Qz9x";

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "db.password": {"type": "string", "minLength": 8, "x-mycosynth-sensitive": true},
    "db.pool": {"type": "integer"}
  },
  "additionalProperties": false
}"#;

/// A `mycosynth watch` process with debug logs, both streams collected until it is killed.
struct Watch {
    child: std::process::Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Watch {
    fn start(url: &str) -> Watch {
        let mut child = Command::new(mycosynth_testkit::mycosynth_bin())
            .args(["--nats-url", url, "--json", "watch", NS, ENV])
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn watch");
        let collect = |mut r: Box<dyn Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = Arc::clone(&text);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = r.read(&mut buf) {
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            text
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Watch { child, out, err }
    }

    /// Waits (up to 20 s) until its stdout contains `text`.
    async fn wait_output(&self, text: &str) -> bool {
        for _ in 0..200 {
            if self.out.lock().unwrap().contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn stop(&mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let out = self.out.lock().unwrap().clone();
        let err = self.err.lock().unwrap().clone();
        (out, err)
    }
}

impl Drop for Watch {
    /// Stops the process (by its handle) even when the test fails early.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_values_are_sealed_everywhere_but_in_their_subscribers() {
    let nats = NatsServer::start();
    let validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("billing.schema.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    let mut outputs = Vec::new();
    let out = run_cli(&url, &["schema", "push", NS, &schema.display().to_string()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_cli(&url, &["set", NS, ENV, "db.pool", "5"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // A subscriber that starts before any sensitive value exists learns the data key later.
    let early = Subscriber::builder(NS, ENV)
        .nats_url(&url)
        .connect()
        .await
        .expect("subscriber");
    let mut watch = Watch::start(&url);
    let client = async_nats::connect(&url).await.unwrap();
    let mut events = client.subscribe("mycosynth.events.>").await.unwrap();
    client.flush().await.unwrap();

    let quoted = format!("\"{SECRET}\"");
    let out = run_cli(&url, &["set", NS, ENV, "db.password", &quoted]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("db.password = \"<redacted>\""),
        "{}",
        stdout(&out)
    );
    outputs.push(out);
    // Validation runs on the clear value, and its refusal does not quote it.
    let out = run_cli(
        &url,
        &[
            "set",
            NS,
            ENV,
            "db.password",
            &format!("\"{REFUSED_SECRET}\""),
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(mycosynth::cli::exit::VALIDATION.into())
    );
    assert!(
        stderr(&out).contains("db.password") && stderr(&out).contains("minLength"),
        "{}",
        stderr(&out)
    );
    outputs.push(out);

    // The event carries ciphertext.
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&event.payload).contains(SECRET));
    assert!(String::from_utf8_lossy(&event.payload).contains("$sealed"));

    // KV (what `nats kv get` shows), history included, holds ciphertext only.
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value("mycosynth-config").await.unwrap();
    let stored = kv.get("billing.prod.db.password").await.unwrap().unwrap();
    let stored = String::from_utf8_lossy(&stored).into_owned();
    assert!(
        stored.contains("$sealed") && !stored.contains(SECRET),
        "{stored}"
    );
    let everything =
        mycosynth_subscriber::kv_scan::scan(&js, "mycosynth-config", ">", Duration::from_secs(10))
            .await
            .unwrap();
    assert!(everything.len() > 3);
    for entry in &everything {
        assert!(
            !String::from_utf8_lossy(&entry.payload).contains(SECRET),
            "{}",
            entry.key
        );
    }

    // Both subscribers read the clear value: the early one through the event (after loading the
    // data key), a new one through its first load.
    assert!(early.wait_for_version(2, Duration::from_secs(20)).await);
    assert_eq!(early.get::<String>("db.password").unwrap(), SECRET);
    let late = Subscriber::builder(NS, ENV)
        .nats_url(&url)
        .connect()
        .await
        .expect("subscriber");
    assert_eq!(late.get::<String>("db.password").unwrap(), SECRET);

    // The CLI redacts unless asked to reveal.
    let out = run_cli(&url, &["get", NS, ENV]).await;
    assert!(
        stdout(&out).contains("db.password = \"<redacted>\""),
        "{}",
        stdout(&out)
    );
    outputs.push(out);
    let out = run_cli(&url, &["get", NS, ENV, "db.password"]).await;
    assert_eq!(stdout(&out).trim(), "\"<redacted>\"");
    outputs.push(out);
    let out = run_cli(&url, &["history", NS, ENV]).await;
    assert!(
        stdout(&out).contains("db.password = \"<redacted>\""),
        "{}",
        stdout(&out)
    );
    outputs.push(out);
    let out = run_cli(&url, &["--json", "audit"]).await;
    assert!(stdout(&out).contains("db.password"), "{}", stdout(&out));
    outputs.push(out);
    let out = run_cli(&url, &["get", NS, ENV, "db.password", "--reveal"]).await;
    assert_eq!(stdout(&out).trim(), quoted, "{}", stderr(&out));

    // The watch process is a subscriber of the namespace: its output is the value; its logs
    // are not.
    assert!(
        watch.wait_output(SECRET).await,
        "the watch subscriber did not read the value"
    );
    let (_, watch_logs) = watch.stop();
    drop(watch);
    assert!(!watch_logs.is_empty());
    let mut logs: Vec<String> = validator.log_lines();
    assert!(!logs.is_empty());
    logs.push(watch_logs);
    for out in &outputs {
        logs.push(stdout(out));
        logs.push(stderr(out));
    }
    for line in &logs {
        assert!(!line.contains(SECRET), "clear value in: {line}");
        assert!(
            !line.contains(REFUSED_SECRET),
            "refused clear value in: {line}"
        );
    }
}

/// A child environment inherits a sensitive value from its parent: the validator checks the
/// child's change sets against the parent's clear value (a sealed one would break the schema's
/// `type: string`), and the child's subscriber reads the clear value through the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_inherits_a_sensitive_value_in_clear() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let url = nats.url();
    let schema =
        std::env::temp_dir().join(format!("sensitive-inherit-{}.json", std::process::id()));
    std::fs::write(
        &schema,
        r#"{"type": "object", "required": ["db.password"], "properties": {
            "db.password": {"type": "string", "minLength": 8, "x-mycosynth-sensitive": true},
            "db.pool": {"type": "integer"}}}"#,
    )
    .unwrap();
    let ok = |out: std::process::Output| assert!(out.status.success(), "{}", stderr(&out));
    ok(run_cli(&url, &["schema", "push", NS, schema.to_str().unwrap()]).await);
    ok(run_cli(
        &url,
        &["set", NS, "base", "db.password", &format!("{SECRET:?}")],
    )
    .await);
    ok(run_cli(&url, &["parent", NS, "eu", "base"]).await);
    // Required and typed: satisfied only by the parent's opened value.
    ok(run_cli(&url, &["set", NS, "eu", "db.pool", "7"]).await);
    let child = Subscriber::builder(NS, "eu")
        .nats_url(&url)
        .connect()
        .await
        .expect("child subscriber");
    assert_eq!(child.get::<String>("db.password").unwrap(), SECRET);
    assert_eq!(child.get::<u32>("db.pool").unwrap(), 7);
    let _ = std::fs::remove_file(&schema);
}
