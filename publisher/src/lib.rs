//! # mycosynth (the write path)
//!
//! The validator service ([`validator`]), which is the only writer of config, the operator
//! CLI ([`cli`]), which talks to it, and the HTTP [`sidecar`] for applications in any language.
//! Both binaries' `main` only parse arguments and call in here.
//!
//! The parts, lowest first (a part uses only parts above it in this list):
//! - [`failure`], [`clock`]: the error every part answers with; the recorded time.
//! - [`validate`]: the one validation of change sets (pure, no I/O).
//! - [`store`]: the validator's JetStream edge: buckets, state, group commit.
//! - [`access`]: authentication, the policy, callers, rate limits, sensitive values.
//! - [`callout`]: the NATS auth callout (`mycosynth auth serve`) and the static `users.conf`,
//!   from one definition of each identity kind's permissions.
//! - [`audit`]: the hash-chained audit log. [`fleet`]: which instances hold which version.
//! - [`validator`]: the service: the endpoint table, the dispatcher, the change path.
//! - [`site`]: read-only site replicas and their lag. [`backup`]: archives and restore.
//! - [`client`]: the validator API's client. [`gitops`]: config as code (files, drift).
//! - [`sidecar`]: one subscriber's snapshot over HTTP (runtime API, change stream, OFREP);
//!   it uses no other part, only the subscriber crate.
//! - [`cli`]: the commands.

pub mod access;
pub mod audit;
pub mod backup;
pub mod callout;
pub mod cli;
pub mod client;
pub mod clock;
pub mod console;
pub mod failure;
pub mod fleet;
pub mod gitops;
pub mod sidecar;
pub mod site;
pub mod store;
pub mod validate;
pub mod validator;

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
