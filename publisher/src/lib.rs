//! # mycosynth (the write path)
//!
//! The validator service ([`service`]), which is the only writer of config, and the operator
//! CLI ([`cli`]), which talks to it. Both binaries' `main` only parse arguments and call in here.
//!
//! - [`validate`] and [`schema`]: the one validation of change sets (pure, no I/O).
//! - [`store`]: the validator's JetStream KV edge (staging commits, state with roll-forward,
//!   history, schemas); [`watched`]: schemas and parent declarations kept in memory by a watch.
//! - [`committer`]: group commit: heads first then materialisation, or one atomic batch.
//! - [`service`]: request handling, optimistic concurrency, change events.
//! - [`client`]: the request/reply client the CLI and other programs use.
//! - [`http`]: `/metrics` and `/health`.
//! - [`audit`]: the hash-chained audit log; [`caller`]: who sent a request; [`limits`]:
//!   per-identity rate limits.
//! - [`vault`]: sensitive values (data keys, sealing, redaction).
//! - [`callout`]: the NATS auth callout (`mycosynth auth serve`) and the static `users.conf`,
//!   from one definition of each identity kind's permissions.

pub mod access;
pub mod affinity;
pub mod audit;
pub mod auth;
pub mod caller;
pub mod callout;
pub mod cli;
pub mod client;
pub mod committer;
pub mod fleet;
pub mod gitops;
pub mod http;
pub mod inherit;
pub mod limits;
pub mod policy;
pub mod schema;
pub mod schema_docs;
pub mod service;
pub mod store;
pub mod validate;
pub mod vault;
pub mod watched;

/// Connects to NATS (comma-separated URLs), naming the connection; retries the first connection
/// for a few seconds so that a validator started together with its server does not exit.
pub async fn connect(urls: &str, name: &str) -> Result<async_nats::Client, String> {
    connect_with(urls, name, &mycosynth_subscriber::Credentials::default()).await
}

/// [`connect`] with credentials (nkey, TLS).
pub async fn connect_with(
    urls: &str,
    name: &str,
    credentials: &mycosynth_subscriber::Credentials,
) -> Result<async_nats::Client, String> {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad NATS URL {urls:?}: {e}"))?;
    // Writers come back fast after an outage (first retry at once, then 100 ms doubling to 2 s,
    // with jitter): a config change should not wait out a long reconnect delay.
    let backoff = mycosynth_subscriber::Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(2),
    );
    credentials
        .connect_options()
        .name(name)
        .connection_timeout(std::time::Duration::from_secs(3))
        .reconnect_delay_callback(move |attempt| match attempt {
            0 | 1 => std::time::Duration::ZERO,
            n => backoff.delay(u32::try_from(n - 1).unwrap_or(u32::MAX)),
        })
        .connect(addrs)
        .await
        .map_err(|e| e.to_string())
}
