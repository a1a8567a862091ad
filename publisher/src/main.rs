//! `mycosynth`: the operator CLI, and `mycosynth serve`, the validator service.

use std::process::ExitCode;

use clap::Parser;
use mycosynth::cli::{self, args::AuthCommand, args::Command, Cli};
use tracing_subscriber::EnvFilter;

/// The validator builds and drops many small JSON values per change request; mimalloc serves
/// those with less contention than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command {
        runtime.worker_threads(args.workers.get());
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(err) => {
            eprintln!("mycosynth: cannot start the async runtime: {err}");
            ExitCode::from(cli::exit::UNAVAILABLE)
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Serve(args) => {
            service_logs(args.log_json);
            let security = match cli::identity::security(&cli, args) {
                Ok(security) => security,
                Err(err) => return cli::exit::report(&err, false),
            };
            let config = mycosynth::service::ValidatorConfig {
                security,
                nats_url: cli.nats_url.clone(),
                http_addr: Some(args.http),
                require_schema: args.require_schema,
                replicas: args.replicas,
                fleet: mycosynth::fleet::FleetOptions {
                    stale_after: std::time::Duration::from_secs_f64(
                        args.stale_after.clamp(0.1, 86_400.0),
                    ),
                    expire_after: std::time::Duration::from_secs_f64(
                        args.instance_expiry.clamp(0.1, 86_400.0),
                    ),
                },
                rate_limit: args.rate_limit,
                rate_burst: args.rate_burst,
            };
            match mycosynth::service::run(config, stop_signal(), |http| {
                tracing::info!(http = ?http, "ready");
            })
            .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("mycosynth serve: {err}");
                    ExitCode::from(cli::exit::UNAVAILABLE)
                }
            }
        }
        Command::Auth(AuthCommand::Serve(args)) => {
            service_logs(args.log_json);
            match cli::auth::serve(&cli, args, stop_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => cli::exit::report(&err, false),
            }
        }
        _ => {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            cli::run(cli).await
        }
    }
}

/// Logs of a long-running service (`serve`, `auth serve`): `info` unless `RUST_LOG` says
/// otherwise, on stderr, as JSON lines if asked.
fn service_logs(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// Resolves at Ctrl-C or SIGTERM.
async fn stop_signal() {
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
