//! Change requests on the secure config: approvals bound to the exact content, every state,
//! conflicts and rebase, the emergency path and its review, schedules (two validators with the
//! owner killed at its time, a restart within the grace, a missed and a failed schedule), the
//! audit records and notices of each step, and `approved_by` reaching a subscriber.

use std::process::Output;
use std::time::Duration;

use futures::StreamExt;
use mycosynth::cli::exit;
use mycosynth::validator::affinity::Affinity;
use mycosynth_subscriber::{Credentials, Subscriber};
use mycosynth_testkit::{cli_as, json, NatsServer, Validator};
use serde_json::Value;

use super::stderr;

const NS: &str = "payment-service";
const PROD: &str = "production";
const STAGING: &str = "staging";

/// `admin` administers everything; `alice`, `bob` and `ci-bot` write payment-service. In
/// production a change needs one approval from `bob` or an admin, and only `alice` may take
/// the emergency path; elsewhere nothing needs approval.
fn policy_json() -> Value {
    let key = mycosynth_testkit::dev_public_key;
    serde_json::json!({
        "identities": {
            "admin": {"public_key": key("admin")},
            "alice": {"public_key": key("alice")},
            "bob": {"public_key": key("bob")},
            "ci-bot": {"public_key": key("ci-bot")},
        },
        "grants": [
            {"identity": "admin", "role": "admin", "namespace": "*", "environment": "*"},
            {"identity": "alice", "role": "write", "namespace": NS, "environment": "*"},
            {"identity": "bob", "role": "write", "namespace": NS, "environment": "*"},
            {"identity": "ci-bot", "role": "write", "namespace": NS, "environment": "*"},
        ],
        "approvals": [
            {"namespace": "*", "environment": PROD, "approvals": 1,
             "approvers": ["bob", "role:admin"], "emergency": ["alice"]},
        ]
    })
}

/// A secure server, `validators` signed-mode validators, and the test policy.
struct Stack {
    nats: NatsServer,
    validators: Vec<Validator>,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(validators: usize) -> Stack {
        let nats = NatsServer::start_secure();
        let validators = (0..validators)
            .map(|_| Validator::start_secure(&nats.url(), &[]))
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("policy.json");
        std::fs::write(&file, policy_json().to_string()).expect("write policy");
        let stack = Stack {
            nats,
            validators,
            _dir: dir,
        };
        let out = stack
            .run("admin", &["policy", "set", &file.display().to_string()])
            .await;
        assert!(out.status.success(), "policy set: {}", stderr(&out));
        stack
    }

    fn url(&self) -> String {
        self.nats.url()
    }

    /// Runs the CLI as `identity` with `--json`.
    async fn run(&self, identity: &str, args: &[&str]) -> Output {
        let (url, identity) = (self.url(), identity.to_owned());
        let mut all = vec!["--json".to_owned()];
        all.extend(args.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            cli_as(&url, Some(&identity), &args)
        })
        .await
        .expect("cli thread")
    }

    /// Runs the CLI as `identity`, expecting success; its JSON output.
    async fn ok(&self, identity: &str, args: &[&str]) -> Value {
        let out = self.run(identity, args).await;
        assert!(
            out.status.success(),
            "{identity} {args:?}: exit {:?}: {}",
            out.status.code(),
            stderr(&out)
        );
        json(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// Runs the CLI as `identity`, expecting exit `code`; its error output.
    async fn refused(&self, identity: &str, args: &[&str], code: u8) -> String {
        let out = self.run(identity, args).await;
        assert_eq!(
            out.status.code(),
            Some(i32::from(code)),
            "{identity} {args:?}: {}",
            stderr(&out)
        );
        stderr(&out)
    }

    /// Proposes `key = value` in production as `identity`: the change request's id and hash.
    async fn propose(
        &self,
        identity: &str,
        key: &str,
        value: &str,
        extra: &[&str],
    ) -> (String, String) {
        let mut args = vec!["set", NS, PROD, key, value, "--reason", "test"];
        args.extend_from_slice(extra);
        let outcome = self.ok(identity, &args).await;
        assert_eq!(outcome["committed"], false, "{outcome}");
        let proposed = &outcome["proposed"];
        (
            proposed["id"].as_str().expect("id").to_owned(),
            proposed["content_hash"].as_str().expect("hash").to_owned(),
        )
    }

    /// The audit records of the namespace, oldest first.
    async fn audit(&self) -> Vec<Value> {
        let out = self
            .run("admin", &["audit", "--namespace", NS, "--limit", "100"])
            .await;
        assert!(out.status.success(), "audit: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(json)
            .collect()
    }

    async fn show(&self, id: &str) -> Value {
        self.ok("admin", &["requests", "show", id]).await
    }

    async fn state(&self, id: &str) -> String {
        self.show(id).await["request"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The live value of `key` in production (None: not set).
    async fn live(&self, env: &str, key: &str) -> Option<Value> {
        let out = self.run("admin", &["get", NS, env, key]).await;
        out.status.success().then(|| {
            json(String::from_utf8_lossy(&out.stdout).trim())["values"][0][1]["value"].clone()
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_request_goes_through_every_state_and_amend_drops_approvals() {
    let stack = Stack::start(1).await;
    // Where approval is required, a change becomes a request: nothing is written.
    let (id, hash) = stack.propose("alice", "http.retries", "3", &[]).await;
    assert_eq!(stack.state(&id).await, "open");
    assert_eq!(stack.live(PROD, "http.retries").await, None);
    let to_bob = stack.ok("bob", &["requests", "list", "--to-approve"]).await;
    assert_eq!(to_bob["requests"][0]["id"], id.as_str(), "{to_bob}");
    let to_alice = stack
        .ok("alice", &["requests", "list", "--to-approve"])
        .await;
    assert_eq!(
        to_alice["requests"],
        serde_json::json!([]),
        "never one's own: {to_alice}"
    );
    // The author never approves; an identity the rule does not name may not either.
    let own = stack
        .refused(
            "alice",
            &["requests", "approve", &id, "--content-hash", &hash],
            exit::ACCESS_DENIED,
        )
        .await;
    assert!(own.contains("never approves"), "{own}");
    let stranger = stack
        .refused(
            "ci-bot",
            &["requests", "approve", &id, "--content-hash", &hash],
            exit::ACCESS_DENIED,
        )
        .await;
    assert!(stranger.contains("approvers"), "{stranger}");
    // Applying before approval is refused, with the rule named.
    let early = stack
        .refused("alice", &["requests", "apply", &id], exit::ACCESS_DENIED)
        .await;
    assert!(early.contains("approval_required"), "{early}");
    let approved = stack
        .ok(
            "bob",
            &[
                "requests",
                "approve",
                &id,
                "--content-hash",
                &hash,
                "--comment",
                "ok",
            ],
        )
        .await;
    assert_eq!(approved["request"]["state"], "approved");
    // An amendment drops the approval; approving the old content is a conflict.
    let amended = stack
        .ok(
            "alice",
            &["requests", "amend", &id, "--set", "http.retries=4"],
        )
        .await;
    assert_eq!(amended["request"]["state"], "open");
    assert_eq!(amended["request"]["approvals"], serde_json::json!([]));
    let new_hash = amended["request"]["content_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_hash, hash);
    stack
        .refused(
            "bob",
            &["requests", "approve", &id, "--content-hash", &hash],
            exit::CONFLICT,
        )
        .await;
    stack
        .ok(
            "bob",
            &["requests", "approve", &id, "--content-hash", &new_hash],
        )
        .await;
    let applied = stack.ok("alice", &["requests", "apply", &id]).await;
    assert_eq!(applied["request"]["state"], "applied");
    assert_eq!(stack.live(PROD, "http.retries").await, Some(4.into()));
    // Applying again applies nothing more.
    let again = stack.ok("alice", &["requests", "apply", &id]).await;
    assert_eq!(again["request"]["applied"], applied["request"]["applied"]);
    let history = stack.ok("admin", &["history", NS, PROD]).await;
    let sets = history["change_sets"].as_array().unwrap();
    assert_eq!(sets.len(), 1, "applied once: {history}");
    assert_eq!(sets[0]["approved_by"], serde_json::json!(["bob"]));
    assert_eq!(sets[0]["change_request"], id.as_str());
    assert_eq!(sets[0]["author"], "alice");

    // Rejected and cancelled requests are final.
    let (rejected, hash) = stack.propose("alice", "http.timeout_ms", "300", &[]).await;
    stack
        .refused(
            "bob",
            &["requests", "reject", &rejected, "--reason", ""],
            exit::VALIDATION,
        )
        .await;
    stack
        .ok(
            "bob",
            &["requests", "reject", &rejected, "--reason", "too slow"],
        )
        .await;
    assert_eq!(stack.state(&rejected).await, "rejected");
    stack
        .refused(
            "bob",
            &["requests", "approve", &rejected, "--content-hash", &hash],
            exit::CONFLICT,
        )
        .await;
    stack
        .refused("alice", &["requests", "apply", &rejected], exit::CONFLICT)
        .await;
    let (cancelled, _) = stack.propose("alice", "http.timeout_ms", "310", &[]).await;
    stack
        .refused(
            "bob",
            &["requests", "cancel", &cancelled],
            exit::ACCESS_DENIED,
        )
        .await;
    stack.ok("alice", &["requests", "cancel", &cancelled]).await;
    assert_eq!(stack.state(&cancelled).await, "cancelled");

    // An expired request cannot be approved.
    let (expiring, hash) = stack
        .propose("alice", "http.timeout_ms", "320", &["--expires", "1s"])
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stack.state(&expiring).await, "expired");
    stack
        .refused(
            "bob",
            &["requests", "approve", &expiring, "--content-hash", &hash],
            exit::CONFLICT,
        )
        .await;

    // Unknown and malformed ids.
    stack
        .refused(
            "bob",
            &[
                "requests",
                "show",
                "payment-service.production.000000000000",
            ],
            exit::NOT_FOUND,
        )
        .await;
    stack
        .refused("bob", &["requests", "show", "no-such-id"], exit::VALIDATION)
        .await;
    // The lists.
    let mine = stack
        .ok("alice", &["requests", "list", "--mine", "--all"])
        .await;
    assert_eq!(mine["requests"].as_array().unwrap().len(), 4, "{mine}");
    let pending = stack.ok("bob", &["requests", "list"]).await;
    assert_eq!(
        pending["requests"],
        serde_json::json!([]),
        "nothing pending: {pending}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_at_apply_is_rebased_and_a_move_on_other_keys_still_applies() {
    let stack = Stack::start(1).await;
    let (first, hash) = stack.propose("alice", "http.retries", "3", &[]).await;
    stack
        .ok(
            "bob",
            &["requests", "approve", &first, "--content-hash", &hash],
        )
        .await;
    // The namespace moves on another key (an emergency change): the request still applies.
    stack
        .ok(
            "alice",
            &[
                "set",
                NS,
                PROD,
                "http.timeout_ms",
                "900",
                "--emergency",
                "--reason",
                "INC-1",
            ],
        )
        .await;
    stack.ok("alice", &["requests", "apply", &first]).await;
    assert_eq!(stack.live(PROD, "http.retries").await, Some(3.into()));

    // It moves on the same key: the apply is refused, naming it, and the request stays.
    let (second, hash) = stack.propose("alice", "http.retries", "5", &[]).await;
    stack
        .ok(
            "bob",
            &["requests", "approve", &second, "--content-hash", &hash],
        )
        .await;
    stack
        .ok(
            "alice",
            &[
                "set",
                NS,
                PROD,
                "http.retries",
                "9",
                "--emergency",
                "--reason",
                "INC-2",
            ],
        )
        .await;
    let conflict = stack
        .refused("alice", &["requests", "apply", &second], exit::CONFLICT)
        .await;
    assert!(conflict.contains("http.retries"), "{conflict}");
    assert!(conflict.contains("conflicting_change"), "{conflict}");
    let shown = stack.show(&second).await;
    assert_eq!(shown["conflicts"], serde_json::json!(["http.retries"]));
    assert_eq!(shown["request"]["state"], "approved");
    assert_eq!(stack.live(PROD, "http.retries").await, Some(9.into()));
    // Rebased on the current state, it needs approval again, then applies.
    let rebased = stack.ok("alice", &["requests", "rebase", &second]).await;
    assert_eq!(rebased["request"]["state"], "open");
    let hash = rebased["request"]["content_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    stack
        .ok(
            "bob",
            &["requests", "approve", &second, "--content-hash", &hash],
        )
        .await;
    stack.ok("alice", &["requests", "apply", &second]).await;
    assert_eq!(stack.live(PROD, "http.retries").await, Some(5.into()));

    // Two requests on one key: applying one supersedes the other until it is rebased.
    let (one, one_hash) = stack.propose("alice", "http.retries", "6", &[]).await;
    let (two, two_hash) = stack.propose("ci-bot", "http.retries", "7", &[]).await;
    stack
        .ok(
            "bob",
            &["requests", "approve", &one, "--content-hash", &one_hash],
        )
        .await;
    stack
        .ok(
            "bob",
            &["requests", "approve", &two, "--content-hash", &two_hash],
        )
        .await;
    stack.ok("alice", &["requests", "apply", &one]).await;
    assert_eq!(stack.state(&two).await, "superseded");
    stack
        .refused(
            "bob",
            &["requests", "approve", &two, "--content-hash", &two_hash],
            exit::CONFLICT,
        )
        .await;
    stack.ok("ci-bot", &["requests", "rebase", &two]).await;
    assert_eq!(stack.state(&two).await, "open");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_emergency_path_commits_at_once_and_stays_listed_for_review() {
    let stack = Stack::start(1).await;
    let denied = stack
        .refused(
            "bob",
            &[
                "set",
                NS,
                PROD,
                "http.retries",
                "8",
                "--emergency",
                "--reason",
                "INC-3",
            ],
            exit::ACCESS_DENIED,
        )
        .await;
    assert!(denied.contains("emergency"), "{denied}");
    assert_eq!(stack.live(PROD, "http.retries").await, None);
    let committed = stack
        .ok(
            "alice",
            &[
                "set",
                NS,
                PROD,
                "http.retries",
                "8",
                "--emergency",
                "--reason",
                "INC-3",
            ],
        )
        .await;
    assert_eq!(committed["committed"], true);
    let review = committed["proposed"]["id"].as_str().unwrap().to_owned();
    assert_eq!(stack.live(PROD, "http.retries").await, Some(8.into()));
    let listed = stack.ok("bob", &["requests", "list", "--review"]).await;
    assert_eq!(listed["requests"][0]["id"], review.as_str(), "{listed}");
    assert_eq!(listed["requests"][0]["kind"], "review");
    let hash = listed["requests"][0]["content_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    stack
        .refused(
            "alice",
            &["requests", "approve", &review, "--content-hash", &hash],
            exit::ACCESS_DENIED,
        )
        .await;
    stack
        .ok(
            "bob",
            &["requests", "approve", &review, "--content-hash", &hash],
        )
        .await;
    let listed = stack.ok("bob", &["requests", "list", "--review"]).await;
    assert_eq!(listed["requests"], serde_json::json!([]));
    let history = stack.ok("admin", &["history", NS, PROD]).await;
    assert_eq!(history["change_sets"][0]["emergency"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_step_is_audited_announced_and_counted_and_approved_by_reaches_subscribers() {
    let stack = Stack::start(1).await;
    // A notice follower (an operator may subscribe to the notices) and a subscriber.
    let admin = async_nats::ConnectOptions::with_nkey(mycosynth_testkit::dev_seed("admin"))
        .custom_inbox_prefix(format!(
            "_INBOX_{}",
            mycosynth_testkit::dev_public_key("admin")
        ))
        .connect(stack.url())
        .await
        .expect("connect as admin");
    let mut notices = admin
        .subscribe("mycosynth.requests.>")
        .await
        .expect("subscribe to notices");
    admin.flush().await.expect("flush");
    stack
        .ok(
            "alice",
            &[
                "set",
                NS,
                PROD,
                "http.retries",
                "1",
                "--emergency",
                "--reason",
                "seed",
            ],
        )
        .await;
    let creds = Credentials::default()
        .with_nkey_file(mycosynth_testkit::dev_seed_file("svc-payment-service"))
        .expect("seed");
    let config = Subscriber::builder(NS, PROD)
        .nats_url(stack.url())
        .credentials(creds)
        .connect()
        .await
        .expect("subscriber");
    let mut changes = config.subscribe();

    let (id, hash) = stack.propose("alice", "http.retries", "2", &[]).await;
    stack
        .ok(
            "bob",
            &["requests", "approve", &id, "--content-hash", &hash],
        )
        .await;
    stack.ok("alice", &["requests", "apply", &id]).await;
    let notice = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let notice = changes.recv().await.expect("notice");
            if notice.change_request.as_deref() == Some(id.as_str()) {
                return notice;
            }
        }
    })
    .await
    .expect("the applied change reaches the subscriber");
    assert_eq!(notice.approved_by, vec!["bob".to_owned()]);
    assert_eq!(config.get::<u32>("http.retries").unwrap(), 2);

    let mut steps = Vec::new();
    while steps.len() < 4 {
        let message = tokio::time::timeout(Duration::from_secs(5), notices.next())
            .await
            .expect("a notice")
            .expect("subscription open");
        let notice: Value = serde_json::from_slice(&message.payload).expect("notice JSON");
        if notice["id"] == id.as_str() || notice["step"] == "review" {
            steps.push(notice["step"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(steps, ["review", "propose", "approve", "apply"]);

    let audit = stack.audit().await;
    let of_request: Vec<(&str, &str)> = audit
        .iter()
        .filter(|r| r["change_request"] == id.as_str())
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["identity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        of_request,
        [
            ("change", "alice"),
            ("request-approve", "bob"),
            ("request-apply", "alice")
        ],
        "{audit:?}"
    );
    let counted = stack.validators[0].metric("mycosynth_change_requests_total", "step=\"apply\"");
    assert_eq!(counted, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_schedules_and_invalid_change_requests_are_refused_and_store_nothing() {
    let stack = Stack::start(1).await;
    for at in ["2001-01-01T00:00:00Z", "tomorrow", "2026-13-40T99:00:00Z"] {
        let refused = stack
            .refused(
                "alice",
                &["set", NS, STAGING, "http.retries", "3", "--at", at],
                exit::VALIDATION,
            )
            .await;
        assert!(refused.contains("--at"), "{refused}");
    }
    // A change request is validated like a change: a refused one is never stored.
    stack
        .refused(
            "alice",
            &["set", NS, PROD, "bad key!", "1"],
            exit::VALIDATION,
        )
        .await;
    let listed = stack.ok("admin", &["requests", "list", "--all"]).await;
    assert_eq!(listed["requests"], serde_json::json!([]));
    assert_eq!(stack.live(STAGING, "http.retries").await, None);
}

/// An RFC 3339 time `seconds` from now.
fn in_seconds(seconds: f64) -> (String, std::time::SystemTime) {
    let at = std::time::SystemTime::now() + Duration::from_secs_f64(seconds);
    let text = time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    (text, at)
}

async fn sleep_until(at: std::time::SystemTime) {
    if let Ok(left) = at.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

/// The instance id a validator logged when it started serving.
fn instance_id(validator: &Validator) -> String {
    let line = validator
        .log_lines()
        .into_iter()
        .find(|l| l.contains("validator serving"))
        .expect("serving line");
    line.split("instance=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("instance id")
        .trim_matches('"')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_once_with_two_validators_when_its_owner_is_killed_at_its_time() {
    let mut stack = Stack::start(2).await;
    let ids: Vec<String> = stack.validators.iter().map(instance_id).collect();
    let observer = Affinity::observer();
    for id in &ids {
        observer.heard(id);
    }
    let owner = observer.owner(NS, PROD).expect("an owner");
    let owner_index = ids
        .iter()
        .position(|i| *i == owner)
        .expect("owner is one of them");
    // Both have found each other (discovery runs every second).
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (at, when) = in_seconds(4.0);
    let (id, hash) = stack
        .propose("alice", "http.retries", "11", &["--at", &at])
        .await;
    stack
        .ok(
            "bob",
            &["requests", "approve", &id, "--content-hash", &hash],
        )
        .await;
    sleep_until(when).await;
    stack.validators[owner_index].kill();
    // The survivor takes the slot over once it stops hearing from the owner, and fires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.state(&id).await != "applied" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never fired: {}",
            stack.show(&id).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stack.live(PROD, "http.retries").await, Some(11.into()));
    let history = stack.ok("admin", &["history", NS, PROD]).await;
    let fired: Vec<&Value> = history["change_sets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["change_request"] == id.as_str())
        .collect();
    assert_eq!(fired.len(), 1, "fired exactly once: {history}");
    assert_eq!(fired[0]["approved_by"], serde_json::json!(["bob"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_is_applied_by_a_validator_started_within_its_grace_and_missed_after_it() {
    let mut stack = Stack::start(1).await;
    // No approval needed in staging: a scheduled change is approved at once.
    let (at, when) = in_seconds(2.0);
    let scheduled = stack
        .ok(
            "alice",
            &["set", NS, STAGING, "http.retries", "21", "--at", &at],
        )
        .await;
    let kept = scheduled["proposed"]["id"].as_str().unwrap().to_owned();
    assert_eq!(scheduled["proposed"]["state"], "approved");
    let (late_at, _) = in_seconds(2.0);
    let missed = stack
        .ok(
            "alice",
            &[
                "set",
                NS,
                STAGING,
                "http.timeout_ms",
                "777",
                "--at",
                &late_at,
                "--grace",
                "1s",
            ],
        )
        .await;
    let missed = missed["proposed"]["id"].as_str().unwrap().to_owned();
    let listed = stack.ok("bob", &["requests", "list", "--scheduled"]).await;
    assert_eq!(listed["requests"].as_array().unwrap().len(), 2, "{listed}");

    // No validator runs at their time; one starts 2 s after (within the first's grace of
    // 10 minutes, past the second's grace of 1 s).
    stack.validators[0].kill();
    sleep_until(when + Duration::from_secs(2)).await;
    stack.validators[0] = Validator::start_secure(&stack.url(), &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while stack.state(&kept).await != "applied" || stack.state(&missed).await != "missed" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} / {}",
            stack.show(&kept).await,
            stack.show(&missed).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stack.live(STAGING, "http.retries").await, Some(21.into()));
    assert_eq!(
        stack.live(STAGING, "http.timeout_ms").await,
        None,
        "never applied late"
    );
    let audit = stack.audit().await;
    let actions: Vec<&str> = audit.iter().filter_map(|r| r["action"].as_str()).collect();
    assert!(
        actions.contains(&"request-fire") && actions.contains(&"request-miss"),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_whose_keys_moved_before_its_time_fails_with_the_reason() {
    let stack = Stack::start(1).await;
    let (at, when) = in_seconds(3.0);
    let scheduled = stack
        .ok(
            "alice",
            &["set", NS, STAGING, "http.retries", "31", "--at", &at],
        )
        .await;
    let id = scheduled["proposed"]["id"].as_str().unwrap().to_owned();
    stack
        .ok("bob", &["set", NS, STAGING, "http.retries", "30"])
        .await;
    sleep_until(when + Duration::from_secs(1)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stack.state(&id).await != "failed" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            stack.show(&id).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = stack.show(&id).await;
    let reason = shown["request"]["closed"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("http.retries"), "{shown}");
    assert_eq!(stack.live(STAGING, "http.retries").await, Some(30.into()));
}
