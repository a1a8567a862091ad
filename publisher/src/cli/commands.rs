//! Which code runs each command: [`run`] parses nothing (clap did), connects where a command
//! needs the validator, and hands over to the command's module (`requests`, `watch`, `fleet`,
//! `gitops`, `identity`, `audit`).

use std::process::ExitCode;
use std::time::Duration;

use mycosynth_subscriber::wire::StatusRequest;

use super::args::{Cli, Command, SchemaCommand};
use super::exit::{self, CliError};
use crate::client::ApiClient;

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
    match dispatch(cli).await {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => exit::report(&err, json),
    }
}

fn default_author() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let timeout = Duration::from_secs_f64(cli.timeout.clamp(0.1, 3600.0));
    let author = cli.author.clone().unwrap_or_else(default_author);
    let json = cli.json;
    let creds = super::identity::credentials(&cli)?;
    if let Command::Console(console) = &cli.command {
        return console_login(&cli, console).await;
    }
    match cli.command {
        Command::Keygen { file } => super::identity::keygen(&file, json),
        Command::Auth(command) => super::auth::run(command, json),
        Command::Policy(command) => {
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            super::identity::policy(&api, command, json).await
        }
        Command::Serve(_) | Command::Sidecar(_) => Err(CliError::Local(
            exit::USAGE,
            "`serve` and `sidecar` are started by main".into(),
        )),
        Command::Watch {
            namespace,
            env,
            cache_dir,
            heartbeat,
        } => {
            let heartbeat = Duration::from_secs_f64(heartbeat.clamp(0.1, 3600.0));
            let where_ = (namespace.as_str(), env.as_str());
            super::watch::watch(&cli.nats_url, where_, creds, cache_dir, heartbeat, json).await
        }
        Command::Status {
            namespace,
            env,
            wait_version,
        } => {
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            super::fleet::fleet_status(
                &api,
                StatusRequest {
                    namespace,
                    environment: env,
                },
                wait_version,
                timeout,
                json,
            )
            .await
        }
        Command::Impact {
            namespace,
            env,
            version,
            window,
        } => {
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            let where_ = (namespace, env);
            super::fleet::impact(&api, where_, version, &window, json).await
        }
        Command::Validate {
            dir,
            require_schema,
        } => super::gitops::validate(&dir, require_schema, json),
        Command::Schema(SchemaCommand::Docs {
            namespace,
            file: Some(file),
        }) => super::gitops::schema_docs_file(&namespace, &file),
        command @ (Command::Deploy { .. }
        | Command::Drift { .. }
        | Command::Parent { .. }
        | Command::Get { explain: true, .. }
        | Command::Schema(SchemaCommand::Docs { .. })) => {
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            super::gitops::run(&api, command, &author, timeout, json).await
        }
        Command::Requests(command) => {
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            super::change_requests::run(&api, command, &author, timeout, json).await
        }
        Command::Rollout(command) => {
            // Bad input fails before connecting, and changes nothing.
            let command = super::rollouts::prepare(command, &author)?;
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            super::rollouts::run(&api, command, json).await
        }
        Command::Audit(args) => {
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            super::audit::run(&api, args, &author, timeout, json).await
        }
        command @ (Command::Site(_) | Command::Backup { .. } | Command::Restore { .. }) => {
            super::backup::run(&cli.nats_url, &creds, command, json).await
        }
        command => {
            // Parse local input before connecting, so bad input fails fast and changes nothing.
            let request = super::requests::build(command, &author)?;
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            super::requests::send(&api, request, timeout, json).await
        }
    }
}

/// `console login URL` (`console --listen` itself is started by main).
async fn console_login(
    cli: &Cli,
    console: &super::console_args::ConsoleArgs,
) -> Result<(), CliError> {
    match &console.command {
        Some(super::console_args::ConsoleCommand::Login(login)) => {
            super::console_login::run(cli, login).await
        }
        None => Err(CliError::Local(
            exit::USAGE,
            "`console` is started by main".into(),
        )),
    }
}
