//! `mycosynth sidecar NAMESPACE ENV`: its arguments, and the call into [`crate::sidecar`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tracing_subscriber::EnvFilter;

use super::args::Cli;
use super::exit::{self, CliError};
use crate::sidecar::{self, SidecarConfig};

/// `mycosynth sidecar`
#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// Namespace served (the only one).
    pub namespace: String,
    /// Environment served (the only one).
    pub env: String,
    /// Address to listen on.
    #[arg(
        long,
        env = "MYCOSYNTH_SIDECAR_LISTEN",
        default_value = "127.0.0.1:8686"
    )]
    pub listen: SocketAddr,
    /// Keep a last-known-good cache here, and start from it when NATS is down.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Exit (code 7) when no config could be loaded within this many seconds; by default keep
    /// trying, answering 503 on /health meanwhile.
    #[arg(long)]
    pub start_timeout: Option<f64>,
    /// Seconds between heartbeats on the change stream.
    #[arg(long, default_value_t = 15.0)]
    pub heartbeat: f64,
    /// Events a change-stream client may have waiting; one more and it is dropped (it
    /// reconnects and gets the current state).
    #[arg(long, default_value_t = 256)]
    pub client_queue: usize,
    /// Largest request body, in bytes (OFREP evaluation requests).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body: usize,
    /// A host name to answer for besides localhost and the listen address (repeatable; `*`:
    /// any). On a loopback address other names are refused, against DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// This instance's id in the fleet view (`mycosynth status`).
    #[arg(long)]
    pub instance_id: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

/// Sets up logs, runs the sidecar until SIGINT or SIGTERM, and returns the exit code.
pub async fn main(cli: &Cli, args: &SidecarArgs) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    match run(cli, args).await {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => exit::report(&err, false),
    }
}

async fn run(cli: &Cli, args: &SidecarArgs) -> Result<(), CliError> {
    let seconds = |s: f64| Duration::from_secs_f64(s.clamp(0.01, 86_400.0));
    let config = SidecarConfig {
        listen: args.listen,
        nats_url: cli.nats_url.clone(),
        credentials: super::identity::credentials(cli)?,
        cache_dir: args.cache_dir.clone(),
        start_timeout: args.start_timeout.map(seconds),
        heartbeat: seconds(args.heartbeat),
        client_queue: args.client_queue,
        max_body: args.max_body,
        allowed_hosts: args.allowed_hosts.clone(),
        instance_id: args.instance_id.clone(),
        ..SidecarConfig::new(&args.namespace, &args.env)
    };
    sidecar::run(config, super::serve::stop_signal(), |addr| {
        tracing::info!(%addr, "ready");
    })
    .await?;
    Ok(())
}
