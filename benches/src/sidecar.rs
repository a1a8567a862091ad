//! The sidecar's figures: `GET` of one key over keep-alive HTTP/1.1 (wrk, 1 and 64
//! connections) against a bare axum handler returning a constant, in the same run; a change
//! request to the SSE event at a client against the same change to a Rust subscriber in the
//! same process, sampled together; and the Python client's `get` from memory.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::routing::get;
use mycosynth::client::ApiClient;
use mycosynth::sidecar::{self, SidecarConfig};
use mycosynth_subscriber::wire::{endpoint, ChangeOutcome};
use mycosynth_subscriber::Subscriber;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use crate::paths::sample_change;
use crate::{histogram, Summary};

const NS: &str = "sidecar";
const KEY_PATH: &str = "/v1/config/sidecar/prod/limits.max_items";

/// A load run: requests per second and latency percentiles (µs), as wrk reports them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Load {
    /// Connections kept alive.
    pub connections: u32,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Latency percentiles, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
}

/// Every sidecar figure of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    /// `GET` of one key from the sidecar, 1 and 64 connections (empty without wrk).
    pub sidecar_get: Vec<Load>,
    /// The same load against a bare axum handler returning a constant.
    pub bare_get: Vec<Load>,
    /// Change request → the `change` event read by an SSE client of the sidecar.
    pub request_to_sse_event_us: Summary,
    /// The same samples: change request → a Rust subscriber in this process holds it.
    pub request_to_rust_subscriber_us: Summary,
    /// The Python client's reads from memory, ns per call (null without the venv).
    pub python_ns: Value,
}

impl Figures {
    /// The bench's Markdown tables.
    pub fn rows(&self) -> Vec<String> {
        let mut rows = vec![
            "| `GET` of one key, keep-alive HTTP/1.1 (wrk) | p50 (µs) | p90 (µs) | p99 (µs) | requests/s |".to_owned(),
            "|---|---|---|---|---|".to_owned(),
        ];
        for (name, loads) in [
            ("sidecar", &self.sidecar_get),
            ("bare axum handler, constant", &self.bare_get),
        ] {
            for l in loads {
                rows.push(format!(
                    "| {name}, {} connection(s) | {:.1} | {:.1} | {:.1} | {:.0} |",
                    l.connections, l.p50_us, l.p90_us, l.p99_us, l.requests_per_s
                ));
            }
        }
        for (sidecar, bare) in self.sidecar_get.iter().zip(&self.bare_get) {
            rows.push(format!(
                "| sidecar / bare, {} connection(s) | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
                sidecar.connections,
                sidecar.p50_us / bare.p50_us,
                sidecar.p90_us / bare.p90_us,
                sidecar.p99_us / bare.p99_us,
                sidecar.requests_per_s / bare.requests_per_s
            ));
        }
        let (sse, rust) = (
            &self.request_to_sse_event_us,
            &self.request_to_rust_subscriber_us,
        );
        rows.push(String::new());
        rows.push("| change request → (µs) | p50 | p90 | p99 | p99.9 | max | n |".to_owned());
        rows.push("|---|---|---|---|---|---|---|".to_owned());
        rows.push(sse.row("SSE `change` event at a client of the sidecar"));
        rows.push(rust.row("the same samples: a Rust subscriber in the bench process"));
        rows.push(format!(
            "| difference (SSE − Rust subscriber) | {:.1} | {:.1} | {:.1} | | | |",
            sse.p50 - rust.p50,
            sse.p90 - rust.p90,
            sse.p99 - rust.p99
        ));
        rows.push(String::new());
        rows.push(format!(
            "Python client, ns per call from memory: {}",
            self.python_ns
        ));
        rows
    }
}

/// Runs every part against the validator behind `api` (NATS at `url`).
pub async fn run(api: &ApiClient, url: &str, samples: u64) -> Figures {
    let seed = mycosynth_subscriber::wire::ChangeRequest::new(
        NS,
        "prod",
        vec![mycosynth_subscriber::wire::KeyChange::set(
            "limits.max_items",
            json!(20),
        )],
        "bench",
    );
    let _: ChangeOutcome = api.call(endpoint::CHANGE, &seed).await.expect("seed");
    let (stop, stopped) = oneshot::channel::<()>();
    let addr = start_sidecar(url, stopped).await;
    let bare = start_bare().await;
    let wrk = wrk_available();
    let (mut sidecar_get, mut bare_get) = (Vec::new(), Vec::new());
    if wrk {
        for connections in [1u32, 64] {
            // In turn, so both see the same moments of the machine.
            bare_get.push(load(bare, "/constant", connections).await);
            sidecar_get.push(load(addr, KEY_PATH, connections).await);
        }
    } else {
        eprintln!("wrk not found (benches/provision.sh installs it): no GET figures");
    }
    // The servers run on this runtime: the load and the Python process are waited for off it.
    let python_ns = tokio::task::spawn_blocking(move || python_get(addr))
        .await
        .unwrap_or(Value::Null);
    let (sse, rust) = change_to_event(api, url, addr, samples).await;
    let _ = stop.send(());
    Figures {
        sidecar_get,
        bare_get,
        request_to_sse_event_us: sse,
        request_to_rust_subscriber_us: rust,
        python_ns,
    }
}

/// An in-process sidecar of `sidecar`/prod on a free port, until `stopped`.
async fn start_sidecar(url: &str, stopped: oneshot::Receiver<()>) -> SocketAddr {
    let config = SidecarConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        nats_url: url.to_owned(),
        ..SidecarConfig::new(NS, "prod")
    };
    let (bound_tx, bound_rx) = oneshot::channel();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(err) = sidecar::run(config, shutdown, move |addr| {
            let _ = bound_tx.send(addr);
        })
        .await
        {
            eprintln!("sidecar failed: {err}");
        }
    });
    let addr = bound_rx.await.expect("sidecar bound");
    let deadline = Instant::now() + Duration::from_secs(30);
    while mycosynth_testkit::http_get(&addr.to_string(), "/health").map_or(0, |(s, _)| s) != 200 {
        assert!(Instant::now() < deadline, "the sidecar never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    addr
}

/// The floor: axum with nothing but a handler returning a constant body of the size of the
/// sidecar's answer, on the same runtime, with `TCP_NODELAY` like the sidecar.
async fn start_bare() -> SocketAddr {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new().route(
        "/constant",
        get(|| async { r#"{"key":"limits.max_items","value":20,"source":"own","version":1}"# }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn wrk_available() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

/// wrk for 5 s (after 1 s of warm-up) with `connections` keep-alive connections, waited for
/// on a blocking thread (the servers under load run on this runtime).
async fn load(addr: SocketAddr, path: &str, connections: u32) -> Load {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || wrk(&url, connections))
        .await
        .unwrap_or_else(|_| parse_wrk("", connections))
}

fn wrk(url: &str, connections: u32) -> Load {
    let threads = connections.min(2).to_string();
    let run = |seconds: &str| {
        Command::new("wrk")
            .args([
                "-t",
                &threads,
                "-c",
                &connections.to_string(),
                "-d",
                seconds,
                "--latency",
                url,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let _ = run("1s");
    parse_wrk(&run("5s"), connections)
}

/// Reads wrk's "Latency Distribution" (50%, 90%, 99%) and "Requests/sec".
fn parse_wrk(text: &str, connections: u32) -> Load {
    let quantile = |label: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(label))
            .map_or(f64::NAN, |v| micros(v.trim()))
    };
    let requests_per_s = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    Load {
        connections,
        requests_per_s,
        p50_us: quantile("50%"),
        p90_us: quantile("90%"),
        p99_us: quantile("99%"),
    }
}

/// `12.34us`, `1.20ms`, `1.00s` in µs.
fn micros(value: &str) -> f64 {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number,
        "ms" => number * 1e3,
        "s" => number * 1e6,
        _ => f64::NAN,
    }
}

/// The Python client's reads from memory, timed by `clients/python/benchmarks`.
fn python_get(addr: SocketAddr) -> Value {
    let root = mycosynth_testkit::repo_root();
    let python = Command::new("bash")
        .arg(root.join("clients/python/provision.sh"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let Some(python) = python else {
        eprintln!("clients/python/provision.sh failed: no Python figures");
        return Value::Null;
    };
    Command::new(python)
        .arg(root.join("clients/python/benchmarks/get_from_memory.py"))
        .arg(format!("http://{addr}"))
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(Value::Null)
}

/// Change request → SSE event at a client of the sidecar, and → a Rust subscriber here, for
/// the same samples, one change in flight.
async fn change_to_event(
    api: &ApiClient,
    url: &str,
    addr: SocketAddr,
    samples: u64,
) -> (Summary, Summary) {
    let subscriber = Subscriber::builder(NS, "prod")
        .nats_url(url)
        .receipts(false, Duration::from_secs(10))
        .connect()
        .await
        .expect("subscriber");
    let mut events = sse_client(addr).await;
    let (mut h_sse, mut h_rust) = (histogram(), histogram());
    const WARMUP: u64 = 50;
    for i in 0..WARMUP + samples {
        let target = subscriber.version() + 1;
        let mut watch = subscriber.version_watch();
        let started = Instant::now();
        let rust = async {
            let _ = watch.wait_for(|v| *v >= target).await;
            started.elapsed()
        };
        let sse = async {
            loop {
                match events.recv().await {
                    Some((version, at)) if version >= target => return at.duration_since(started),
                    Some(_) => continue,
                    None => panic!("the change stream ended"),
                }
            }
        };
        let request = sample_change(NS, i);
        let (reply, rust, sse) = tokio::join!(
            api.call::<_, ChangeOutcome>(endpoint::CHANGE, &request),
            rust,
            sse
        );
        reply.expect("change accepted");
        if i >= WARMUP {
            let _ = h_rust.record(rust.as_nanos() as u64);
            let _ = h_sse.record(sse.as_nanos() as u64);
        }
    }
    (Summary::of(&h_sse), Summary::of(&h_rust))
}

/// A change-stream client on raw TCP: each `change` event's version with the instant its
/// bytes were read.
async fn sse_client(addr: SocketAddr) -> mpsc::UnboundedReceiver<(u64, Instant)> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let request = format!("GET /v1/watch/{NS}/prod HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut pending = String::new();
        loop {
            let n = match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let at = Instant::now();
            pending.push_str(&String::from_utf8_lossy(&buffer[..n]));
            while let Some(end) = pending.find("\n\n") {
                let frame: String = pending.drain(..end + 2).collect();
                let id = frame.lines().find_map(|l| l.strip_prefix("id: "));
                if frame.contains("\nevent: change\n") {
                    if let Some(version) = id.and_then(|v| v.split('.').next()?.parse().ok()) {
                        let _ = tx.send((version, at));
                    }
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_wrk_prints() {
        let text = "  Latency Distribution\n     50%   41.00us\n     75%   52.00us\n     90%    1.20ms\n     99%    2.00s\n  123 requests in 5.00s\nRequests/sec:  24567.89\n";
        let load = parse_wrk(text, 64);
        assert_eq!((load.p50_us, load.p90_us, load.p99_us), (41.0, 1200.0, 2e6));
        assert_eq!(load.requests_per_s, 24567.89);
    }
}
