//! `mycosynth sidecar NAMESPACE ENV`: its arguments become a [`SidecarConfig`], and it runs
//! until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use super::args::{Cli, SidecarArgs};
use super::exit::{self, CliError};
use crate::sidecar::{self, SidecarConfig};

/// Runs the sidecar until SIGINT or SIGTERM; returns the process exit code.
pub async fn sidecar(cli: &Cli, args: &SidecarArgs) -> ExitCode {
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
