//! `mycosynth serve`: the validator's options become a [`ValidatorConfig`], and it runs until
//! SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use super::args::{Cli, ServeArgs};
use super::exit;
use crate::fleet::FleetOptions;
use crate::validator::{self, ValidatorConfig};

/// Runs the validator as `args` say; returns the process exit code.
pub async fn serve(cli: &Cli, args: &ServeArgs) -> ExitCode {
    let security = match super::identity::security(cli, args) {
        Ok(security) => security,
        Err(err) => return exit::report(&err, false),
    };
    let config = ValidatorConfig {
        security,
        nats_url: cli.nats_url.clone(),
        http_addr: Some(args.http),
        require_schema: args.require_schema,
        replicas: args.replicas,
        fleet: FleetOptions {
            stale_after: Duration::from_secs_f64(args.stale_after.clamp(0.1, 86_400.0)),
            expire_after: Duration::from_secs_f64(args.instance_expiry.clamp(0.1, 86_400.0)),
        },
        rate_limit: args.rate_limit,
        rate_burst: args.rate_burst,
        sites: args.sites.clone(),
        cached_states: args.cached_states,
    };
    match validator::run(config, stop_signal(), |http| {
        tracing::info!(http = ?http, "ready");
    })
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mycosynth serve: {err}");
            ExitCode::from(exit::UNAVAILABLE)
        }
    }
}

/// Resolves at SIGINT or SIGTERM.
pub(crate) async fn stop_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = interrupt => {}, _ = terminate => {} }
}
