//! `mycosynth console --listen ADDR`: serves the web console until SIGINT or SIGTERM, acting
//! with the global credentials as the console's own key (signed mode) or without (open
//! mode). `mycosynth console login URL` (`console_login.rs`) makes a person's sign-in link.

use std::process::ExitCode;
use std::time::Duration;

use super::args::Cli;
use super::console_args::ConsoleArgs;
use super::exit::{self, CliError};
use crate::client::ApiClient;
use crate::console::{self, Console};

/// Runs the console until SIGINT or SIGTERM; returns the process exit code.
pub async fn console(cli: &Cli, args: &ConsoleArgs) -> ExitCode {
    match run(cli, args).await {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => exit::report(&err, false),
    }
}

async fn run(cli: &Cli, args: &ConsoleArgs) -> Result<(), CliError> {
    let creds = super::identity::credentials(cli)?;
    let timeout = Duration::from_secs_f64(cli.timeout.clamp(0.1, 3600.0));
    let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
    let public_key = creds.key_pair().map(|k| k.public_key());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            CliError::Local(
                exit::UNAVAILABLE,
                format!("cannot listen on {}: {e}", args.listen),
            )
        })?;
    let mode = if public_key.is_some() {
        "signed"
    } else {
        "open"
    };
    tracing::info!(addr = %args.listen, mode, "console ready");
    let console = Console::new(api, public_key, args.secure_cookie);
    tokio::select! {
        served = console::serve(listener, console) => served.map_err(|e| {
            CliError::Local(exit::UNAVAILABLE, format!("console stopped: {e}"))
        }),
        () = super::serve::stop_signal() => Ok(()),
    }
}
