//! # mycosynth (the write path)
//!
//! The validator service ([`service`]), which is the only writer of config, and the operator
//! CLI ([`cli`]), which talks to it. Both binaries' `main` only parse arguments and call in here.
//!
//! - [`validate`] and [`schema`]: the one validation of change sets (pure, no I/O).
//! - [`store`]: the validator's JetStream KV edge (atomic batch commits, history, schemas).
//! - [`service`]: request handling, optimistic concurrency, change events.
//! - [`client`]: the request/reply client the CLI and other programs use.
//! - [`http`]: `/metrics` and `/health`.

pub mod cli;
pub mod client;
pub mod http;
pub mod schema;
pub mod service;
pub mod store;
pub mod validate;

/// Connects to NATS (comma-separated URLs), naming the connection; retries the first connection
/// for a few seconds so that a validator started together with its server does not exit.
pub async fn connect(urls: &str, name: &str) -> Result<async_nats::Client, String> {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad NATS URL {urls:?}: {e}"))?;
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(std::time::Duration::from_secs(3))
        .connect(addrs)
        .await
        .map_err(|e| e.to_string())
}
