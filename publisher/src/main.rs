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
            logs("info", args.log_json);
            cli::serve::serve(&cli, args).await
        }
        Command::Sidecar(args) => {
            logs("info", args.log_json);
            cli::sidecar::sidecar(&cli, args).await
        }
        Command::Console(args) if args.command.is_none() => {
            logs("info", args.log_json);
            cli::console::console(&cli, args).await
        }
        Command::Auth(AuthCommand::Serve(args)) => {
            logs("info", args.log_json);
            cli::auth::serve(&cli, args).await
        }
        _ => {
            logs("warn", false);
            cli::run(cli).await
        }
    }
}

/// Logs to stderr at `level` unless `RUST_LOG` says otherwise; JSON lines with `json`.
fn logs(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}
