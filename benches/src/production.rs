//! Issue 27 §5, production settings (`--only production`): the latency and throughput rows
//! again with signed requests (signed-mode validator, nkey-authenticated clients on the shipped
//! secure server config) and `sync_interval: always`, next to the open, default-sync baseline,
//! in one run so that the differences name what each setting costs.
//!
//! Every row: one change in flight, request → one subscriber (the figure of the other latency
//! rows) and request → the validator's reply, sampled in turn with the durable floor's
//! counterpart on the same server (a raw KV put → one KV watcher), so that every row and its
//! floor see the same moments of the machine. The audit record is appended in every mode (the
//! validator audits every request, open or signed), after the commit and before the reply:
//! it is on the reply's path, not on the subscriber's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{
    api_subject, endpoint, signing_payload, ChangeOutcome, ChangeRequest, KeyChange, POLICY_BUCKET,
    POLICY_KEY,
};
use mycosynth_subscriber::{Credentials, Subscriber};
use mycosynth_testkit::{
    dev_public_key, dev_seed, dev_seed_file, NatsCluster, NatsServer, Validator,
};
use serde_json::json;

use crate::paths::{sample_change, KvFloor};
use crate::sites::load_average;
use crate::{histogram, Summary};

/// The namespace every row writes, the one the dev service identity reads.
const NS: &str = "payment-service";
/// Samples before the recorded ones.
const WARMUP: u64 = 100;
/// How long a committed change may take to arrive.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// One row of settings.
#[derive(Clone, Copy, PartialEq)]
enum Settings {
    /// No authentication, default sync (the baseline).
    Open,
    /// Signed requests, signed-mode validator, default sync.
    Signed,
    /// No authentication, one node, `sync_interval: always`.
    OpenFsync,
    /// Signed requests and `sync_interval: always`, one node: production on one node.
    SignedFsync,
    /// No authentication, three nodes, three replicas, `sync_interval: always`.
    OpenCluster,
}

impl Settings {
    fn label(self) -> &'static str {
        match self {
            Settings::Open => "1. open, default sync",
            Settings::Signed => "2. signed + audit, default sync",
            Settings::OpenFsync => "3. open, fsync always, 1 node",
            Settings::SignedFsync => "4. signed + audit + fsync always, 1 node",
            Settings::OpenCluster => "5. open, fsync always, 3 nodes, 3 replicas",
        }
    }

    fn signed(self) -> bool {
        matches!(self, Settings::Signed | Settings::SignedFsync)
    }
}

/// A server (or cluster) and a validator with the settings of one row, and the clients that
/// reach it as the row requires.
struct Stack {
    _nats: Vec<NatsServer>,
    _cluster: Option<NatsCluster>,
    _validator: Validator,
    _dir: Option<tempfile::TempDir>,
    url: String,
    replicas: usize,
    api: Arc<ApiClient>,
    /// What the subscriber connects with (the service identity when signed).
    service: Credentials,
    /// What the raw KV floor connects with (`nats-admin` when signed).
    floor: Credentials,
}

fn seed(identity: &str) -> Credentials {
    Credentials::default()
        .with_nkey_file(dev_seed_file(identity))
        .expect("dev seed")
}

impl Stack {
    async fn start(settings: Settings) -> Stack {
        let (nats, cluster) = match settings {
            Settings::Open => (vec![NatsServer::start()], None),
            Settings::Signed => (vec![NatsServer::start_secure_default_sync()], None),
            Settings::OpenFsync => (vec![NatsServer::start_durable()], None),
            Settings::SignedFsync => (vec![NatsServer::start_secure()], None),
            Settings::OpenCluster => (Vec::new(), Some(NatsCluster::start(3))),
        };
        let url = cluster
            .as_ref()
            .map_or_else(|| nats[0].url(), NatsCluster::urls);
        let replicas = if cluster.is_some() { 3 } else { 1 };
        if !settings.signed() {
            let validator = Validator::start(&url, &[]);
            let api = ApiClient::connect(&url, Duration::from_secs(10)).await;
            return Stack {
                _nats: nats,
                _cluster: cluster,
                _validator: validator,
                _dir: None,
                api: Arc::new(api.expect("api")),
                url,
                replicas,
                service: Credentials::default(),
                floor: Credentials::default(),
            };
        }
        let validator = Validator::start_secure(&url, &[]);
        let dir = set_policy(&url);
        let api = ApiClient::connect_with(&url, Duration::from_secs(10), &seed("ci-bot")).await;
        Stack {
            _nats: nats,
            _cluster: cluster,
            _validator: validator,
            _dir: Some(dir),
            api: Arc::new(api.expect("signed api")),
            url,
            replicas,
            service: seed("svc-payment-service"),
            floor: seed("nats-admin"),
        }
    }
}

/// `admin` sets a policy in which `ci-bot` (the bench's signing identity) writes [`NS`] in
/// every environment. Returns the directory of the policy file.
fn set_policy(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = json!({
        "identities": {
            "admin": {"public_key": dev_public_key("admin")},
            "ci-bot": {"public_key": dev_public_key("ci-bot")},
        },
        "grants": [
            {"identity": "admin", "role": "admin", "namespace": "*", "environment": "*"},
            {"identity": "ci-bot", "role": "write", "namespace": NS, "environment": "*"},
        ]
    });
    let file = dir.path().join("policy.json");
    std::fs::write(&file, policy.to_string()).expect("write policy");
    let file = file.display().to_string();
    let out = mycosynth_testkit::cli_as(url, Some("admin"), &["policy", "set", &file]);
    assert!(
        out.status.success(),
        "policy set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// The figures of one row.
struct Row {
    settings: Settings,
    arrival: Summary,
    reply: Summary,
    floor: Summary,
    throughput: Option<f64>,
    /// Signed rows: the policy read and the nkey signature, timed apart.
    parts: Option<(Summary, Summary)>,
    load: String,
}

/// Change `i` from the request until the subscriber holds it, and until the reply is in.
async fn sample(api: &ApiClient, subscriber: &Subscriber, i: u64) -> (Duration, Duration) {
    let target = subscriber.version() + 1;
    let mut watch = subscriber.version_watch();
    let request = sample_change(NS, i);
    let started = Instant::now();
    let arrived = async {
        let _ = watch.wait_for(|v| *v >= target).await;
        started.elapsed()
    };
    let reply = async {
        let outcome = api
            .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
            .await;
        (outcome, started.elapsed())
    };
    let (arrival, (outcome, replied)) =
        tokio::join!(tokio::time::timeout(ARRIVAL_TIMEOUT, arrived), reply);
    match outcome {
        Ok(o) if o.committed => {}
        other => panic!("change {i} to {NS} committed nothing: {other:?}"),
    }
    (arrival.expect("committed change did not arrive"), replied)
}

/// The latency of one row: `samples` changes, each followed by one floor put.
async fn latency(stack: &Stack, samples: u64) -> (Summary, Summary, Summary) {
    let first = ChangeRequest::new(NS, "prod", vec![KeyChange::set("seed", json!(0))], "b");
    let seeded: ChangeOutcome = stack
        .api
        .call(endpoint::CHANGE, &first)
        .await
        .expect("seed");
    assert!(seeded.committed, "seed change committed nothing");
    let subscriber = Subscriber::builder(NS, "prod")
        .nats_url(&stack.url)
        .credentials(stack.service.clone())
        .receipts(false, Duration::from_secs(10))
        .connect()
        .await
        .expect("subscriber");
    let floor_creds = stack.floor.clone();
    let mut floor = KvFloor::start_with(&stack.url, "floor", 1, stack.replicas, move || {
        floor_creds.connect_options()
    })
    .await;
    let (mut h_arrival, mut h_reply, mut h_floor) = (histogram(), histogram(), histogram());
    for i in 0..WARMUP + samples {
        let (arrival, reply) = sample(&stack.api, &subscriber, i).await;
        let put = floor.sample(i).await;
        if i >= WARMUP {
            let _ = h_arrival.record(arrival.as_nanos() as u64);
            let _ = h_reply.record(reply.as_nanos() as u64);
            let _ = h_floor.record(put.as_nanos() as u64);
        }
    }
    subscriber.shutdown().await;
    (
        Summary::of(&h_arrival),
        Summary::of(&h_reply),
        Summary::of(&h_floor),
    )
}

/// Two parts of the signed cost, timed apart on a signed row's server, `samples` each: the
/// policy read every signed request starts with (a KV get of the stored policy and its JSON
/// parse, as `nats-admin`), and an nkey signature of a change request and its check.
async fn signed_parts(stack: &Stack, samples: u64) -> (Summary, Summary) {
    let client = stack
        .floor
        .connect_options()
        .connect(stack.url.clone())
        .await;
    let js = async_nats::jetstream::new(client.expect("connect"));
    let bucket = js
        .get_key_value(POLICY_BUCKET)
        .await
        .expect("policy bucket");
    let signer = nkeys::KeyPair::from_seed(&dev_seed("ci-bot")).expect("seed");
    let verifier = nkeys::KeyPair::from_public_key(&signer.public_key()).expect("public key");
    let body = serde_json::to_vec(&sample_change(NS, 0)).expect("body");
    let subject = api_subject(endpoint::CHANGE);
    let (mut h_read, mut h_sign) = (histogram(), histogram());
    for i in 0..WARMUP + samples {
        let started = Instant::now();
        let stored = bucket
            .get(POLICY_KEY)
            .await
            .expect("get")
            .expect("a policy");
        let _: serde_json::Value = serde_json::from_slice(&stored).expect("policy json");
        let read = started.elapsed();
        let started = Instant::now();
        let payload = signing_payload(&subject, 1_700_000_000_000, &i.to_string(), &body);
        let signature = signer.sign(&payload).expect("sign");
        verifier.verify(&payload, &signature).expect("verify");
        let signed = started.elapsed();
        if i >= WARMUP {
            let _ = h_read.record(read.as_nanos() as u64);
            let _ = h_sign.record(signed.as_nanos() as u64);
        }
    }
    (Summary::of(&h_read), Summary::of(&h_sign))
}

/// One row: its stack started, its latency sampled, its throughput run (rows 1, 2 and 4).
async fn row(settings: Settings, samples: u64, run: Duration) -> Row {
    let stack = Stack::start(settings).await;
    let (arrival, reply, floor) = latency(&stack, samples).await;
    let load = load_average();
    let measured = matches!(
        settings,
        Settings::Open | Settings::Signed | Settings::SignedFsync
    );
    let throughput = if measured {
        Some(crate::throughput(&stack.api, |_| NS.to_owned(), 1, run).await)
    } else {
        None
    };
    let parts = if settings.signed() {
        Some(signed_parts(&stack, samples).await)
    } else {
        None
    };
    let row = Row {
        settings,
        arrival,
        reply,
        floor,
        throughput,
        parts,
        load,
    };
    println!("{}", row.line());
    row
}

impl Row {
    fn line(&self) -> String {
        let tput = self
            .throughput
            .map_or("–".to_owned(), |t| format!("{t:.0}"));
        format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {tput} | {} | {} |",
            self.settings.label(),
            self.arrival.p50,
            self.arrival.p99,
            self.reply.p50,
            self.reply.p99,
            self.floor.p50,
            self.floor.p99,
            self.arrival.n,
            self.load,
        )
    }
}

/// The production part's figures.
pub struct Figures {
    rows: Vec<Row>,
}

/// Runs rows 1 to 5, `samples` changes each (after 100 of warm-up), throughput over `run`.
pub async fn run(samples: u64, run: Duration) -> Figures {
    println!("\n| settings (µs; change sets/s) | request → subscriber p50 | p99 | request → reply p50 | p99 | KV floor in turn: put → watcher p50 | p99 | change sets/s, 1 namespace | n | load average |\n|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for settings in [
        Settings::Open,
        Settings::Signed,
        Settings::OpenFsync,
        Settings::SignedFsync,
        Settings::OpenCluster,
    ] {
        rows.push(row(settings, samples, run).await);
    }
    Figures { rows }
}

impl Figures {
    fn get(&self, settings: Settings) -> &Row {
        self.rows
            .iter()
            .find(|r| r.settings == settings)
            .expect("row")
    }

    /// The named costs: differences of p50 (and p99) between rows, and the ratio to the floor.
    pub fn print(&self) {
        let base = self.get(Settings::Open);
        let diff =
            |a: &Summary, b: &Summary| format!("{:+.0} / {:+.0}", a.p50 - b.p50, a.p99 - b.p99);
        let costs = [
            ("signature check + policy (row 2 − row 1)", Settings::Signed),
            ("fsync always (row 3 − row 1)", Settings::OpenFsync),
            (
                "all production settings (row 4 − row 1)",
                Settings::SignedFsync,
            ),
            (
                "three nodes, three replicas (row 5 − row 3)",
                Settings::OpenCluster,
            ),
        ];
        println!(
            "\n| cost (µs, p50 / p99) | request → subscriber | request → reply |\n|---|---|---|"
        );
        for (name, settings) in costs {
            let row = self.get(settings);
            let from = if settings == Settings::OpenCluster {
                self.get(Settings::OpenFsync)
            } else {
                base
            };
            println!(
                "| {name} | {} | {} |",
                diff(&row.arrival, &from.arrival),
                diff(&row.reply, &from.reply)
            );
        }
        println!("\n| audit append and reply after the commit (reply − subscriber, p50) | µs |\n|---|---|");
        for row in &self.rows {
            println!(
                "| {} | {:+.0} |",
                row.settings.label(),
                row.reply.p50 - row.arrival.p50
            );
        }
        println!("\n| parts of the signed cost, timed apart (µs) | p50 | p99 |\n|---|---|---|");
        for row in &self.rows {
            if let Some((read, sign)) = &row.parts {
                let label = row.settings.label();
                println!(
                    "| {label}: policy KV get + parse (what each signed request paid before the validator followed the policy with a watch) | {:.0} | {:.0} |",
                    read.p50, read.p99
                );
                println!(
                    "| {label}: nkey sign + verify of a change request | {:.0} | {:.0} |",
                    sign.p50, sign.p99
                );
            }
        }
        let full = self.get(Settings::SignedFsync);
        let open = self.get(Settings::OpenFsync);
        println!(
            "\nproduction on one node ÷ durable KV floor (in turn with it), p50: {:.2}× (p99 {:.2}×); \
             open with fsync ÷ its floor: {:.2}×; goal ≤ 2.5×",
            full.arrival.p50 / full.floor.p50,
            full.arrival.p99 / full.floor.p99,
            open.arrival.p50 / open.floor.p50,
        );
        println!("load average {}", load_average());
    }
}
