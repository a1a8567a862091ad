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
            cli::serve::serve(&cli, args).await
        }
        Command::Auth(AuthCommand::Serve(args)) => {
            service_logs(args.log_json);
            cli::auth::serve(&cli, args).await
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
