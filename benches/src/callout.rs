//! The auth callout's cost: connection set-up time (connect → first PONG, which includes
//! authentication) with a static nkey in `users.conf` against the same through the callout
//! (nkey, static token, Kubernetes JWT), and how many callouts per second one `mycosynth auth
//! serve` instance answers when 1,000 clients (re)connect at the same moment.

use std::time::{Duration, Instant};

use mycosynth_subscriber::Credentials;
use mycosynth_testkit::callout::{
    dev_token_file, k8s_token, service_account_claims, write_token, Callout,
};
use mycosynth_testkit::{dev_seed_file, NatsServer};

use crate::{histogram, Summary};

/// Connections made one after another for each set-up figure.
const SETUPS: u64 = 300;
/// Clients of the reconnect storm.
pub const STORM_CLIENTS: usize = 1000;

/// What the callout part measured.
#[derive(Debug, serde::Serialize)]
pub struct CalloutFigures {
    /// Set-up of a connection with a static nkey (`users.conf`, no callout), µs.
    pub setup_static_nkey_us: Summary,
    /// The same nkey, decided by the callout, µs.
    pub setup_callout_nkey_us: Summary,
    /// A static token through the callout, µs.
    pub setup_callout_token_us: Summary,
    /// A Kubernetes service-account JWT (RS256) through the callout, µs.
    pub setup_callout_jwt_us: Summary,
    /// The reconnect storm, static tokens.
    pub storm_token: Storm,
    /// The reconnect storm, Kubernetes JWTs.
    pub storm_jwt: Storm,
}

/// A storm of [`STORM_CLIENTS`] clients (re)connecting at the same moment through one callout
/// instance.
#[derive(Debug, serde::Serialize)]
pub struct Storm {
    /// Clients that connected.
    pub connected: usize,
    /// From the start signal to the last client connected, ms.
    pub seconds_ms: f64,
    /// Authorization requests the callout accepted in that time.
    pub decisions: f64,
    /// Decisions per second over the storm.
    pub callouts_per_s: f64,
    /// Each client's connect time during the storm, µs.
    pub connect_us: Summary,
    /// The callout's own mean time per decision in the storm (open, decide, sign, seal), µs:
    /// the rest of a connection's wait is queueing, the server, and the clients.
    pub mean_decision_us: f64,
}

async fn setup_times(url: &str, creds: &Credentials) -> Summary {
    const WARMUP: u64 = 20;
    let mut h = histogram();
    for i in 0..(SETUPS + WARMUP) {
        let started = Instant::now();
        let client = creds
            .connect_options()
            .connect(url)
            .await
            .expect("connection accepted");
        if i >= WARMUP {
            let _ = h.record(started.elapsed().as_nanos() as u64);
        }
        drop(client);
    }
    Summary::of(&h)
}

fn nkey(identity: &str) -> Credentials {
    Credentials::default()
        .with_nkey_file(dev_seed_file(identity))
        .expect("dev seed")
}

fn token(path: &std::path::Path) -> Credentials {
    Credentials::default()
        .with_token_file(path)
        .expect("token file")
}

fn decisions(callout: &Callout) -> f64 {
    callout.metric("mycosynth_callout_decisions_total", "outcome=\"accepted\"")
}

/// Seconds spent deciding, and decisions, so far (the callout's histogram).
fn decision_time(callout: &Callout) -> (f64, f64) {
    (
        callout.metric("mycosynth_callout_decision_seconds_sum", ""),
        callout.metric("mycosynth_callout_decision_seconds_count", ""),
    )
}

/// [`STORM_CLIENTS`] clients, released together, connect through the callout; each keeps its
/// connection until all have one (as after a server restart or a network partition heals).
async fn storm(url: &str, callout: &Callout, creds: &Credentials) -> Storm {
    let (go, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::with_capacity(STORM_CLIENTS);
    for _ in 0..STORM_CLIENTS {
        let (mut released, options, url) =
            (go.subscribe(), creds.connect_options(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let _ = released.recv().await;
            let started = Instant::now();
            let client = options
                .connection_timeout(Duration::from_secs(30))
                .connect(url)
                .await
                .ok()?;
            Some((client, started.elapsed()))
        }));
    }
    let before = decisions(callout);
    let (spent_before, count_before) = decision_time(callout);
    let started = Instant::now();
    let _ = go.send(());
    let mut h = histogram();
    let mut clients = Vec::with_capacity(STORM_CLIENTS);
    for task in tasks {
        if let Ok(Some((client, took))) = task.await {
            let _ = h.record(took.as_nanos() as u64);
            clients.push(client);
        }
    }
    let elapsed = started.elapsed();
    let decided = decisions(callout) - before;
    let (spent, count) = decision_time(callout);
    let mean_decision_us = (spent - spent_before) / (count - count_before).max(1.0) * 1e6;
    Storm {
        connected: clients.len(),
        seconds_ms: elapsed.as_secs_f64() * 1000.0,
        decisions: decided,
        callouts_per_s: decided / elapsed.as_secs_f64(),
        connect_us: Summary::of(&h),
        mean_decision_us,
    }
}

/// Runs the callout part.
pub async fn run() -> CalloutFigures {
    let plain = NatsServer::start_secure();
    let setup_static_nkey_us = setup_times(&plain.url(), &nkey("svc-payment-service")).await;
    drop(plain);

    let nats = NatsServer::start_callout();
    let callout = Callout::start(&nats.url());
    let url = nats.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let jwt = dir.path().join("token");
    write_token(
        &jwt,
        &k8s_token(&service_account_claims("payment-service", 3600)),
    );
    let setup_callout_nkey_us = setup_times(&url, &nkey("svc-payment-service")).await;
    let static_token = token(&dev_token_file("svc-payment-service"));
    let setup_callout_token_us = setup_times(&url, &static_token).await;
    let setup_callout_jwt_us = setup_times(&url, &token(&jwt)).await;

    let storm_token = storm(&url, &callout, &static_token).await;
    let storm_jwt = storm(&url, &callout, &token(&jwt)).await;
    CalloutFigures {
        setup_static_nkey_us,
        setup_callout_nkey_us,
        setup_callout_token_us,
        setup_callout_jwt_us,
        storm_token,
        storm_jwt,
    }
}

impl CalloutFigures {
    /// The Markdown tables.
    pub fn print(&self) {
        println!(
            "\n| connection set-up, connect → first PONG (µs) | p50 | p90 | p99 | p99.9 | max | n |\n|---|---|---|---|---|---|---|"
        );
        for (name, s) in [
            (
                "static nkey (users.conf, no callout)",
                &self.setup_static_nkey_us,
            ),
            ("nkey through the callout", &self.setup_callout_nkey_us),
            (
                "static token through the callout",
                &self.setup_callout_token_us,
            ),
            (
                "Kubernetes JWT (RS256) through the callout",
                &self.setup_callout_jwt_us,
            ),
        ] {
            println!("{}", s.row(name));
        }
        println!(
            "\n| storm: {STORM_CLIENTS} clients connecting at once, one callout | connected | ms | callouts | callouts/s | connect p50 (ms) | p99 (ms) | callout's own time per decision (µs) |\n|---|---|---|---|---|---|---|---|"
        );
        for (name, s) in [
            ("static tokens", &self.storm_token),
            ("Kubernetes JWTs", &self.storm_jwt),
        ] {
            println!(
                "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} |",
                s.connected,
                s.seconds_ms,
                s.decisions,
                s.callouts_per_s,
                s.connect_us.p50 / 1000.0,
                s.connect_us.p99 / 1000.0,
                s.mean_decision_us
            );
        }
    }
}
