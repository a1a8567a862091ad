//! `mycosynth auth serve|users-conf|token|keygen`: the NATS auth callout and what a deployment
//! of it needs (static tokens, its keys), and the static server config of an identities file.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use mycosynth_subscriber::wire::IdentityKind;

use super::args::{AuthCommand, CalloutArgs, CalloutKey, Cli};
use super::exit::{self, CliError};
use crate::callout::{self, identities, tokens, CalloutConfig, ConfigError};
use crate::validator::http;

/// The commands that need no connection (`serve` is started by `main`, with its own logging).
pub fn run(command: AuthCommand, json: bool) -> Result<(), CliError> {
    match command {
        AuthCommand::UsersConf { identities } => users_conf(&identities),
        AuthCommand::Token {
            file,
            kind,
            identity,
            namespace,
        } => {
            let kind = IdentityKind::parse(&kind, namespace.as_deref())
                .map_err(|e| CliError::Local(exit::VALIDATION, format!("--kind: {e}")))?;
            let (token, line) = tokens::new_token(&kind, &identity);
            super::identity::write_secret(&file, "token", &token)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"token_file": file, "tokens_line": line})
                );
            } else {
                println!("{line}");
            }
            Ok(())
        }
        AuthCommand::Keygen { key, file } => {
            let (seed, public) = match key {
                CalloutKey::Account => {
                    let pair = nkeys::KeyPair::new_account();
                    (pair.seed(), pair.public_key())
                }
                CalloutKey::Xkey => {
                    let pair = nkeys::XKey::new();
                    (pair.seed(), pair.public_key())
                }
            };
            let seed = seed.map_err(|e| CliError::Local(exit::INTERNAL, e.to_string()))?;
            super::identity::write_secret(&file, "seed", &seed)?;
            println!("{public}");
            Ok(())
        }
        AuthCommand::Serve(_) => Err(CliError::Local(
            exit::USAGE,
            "`auth serve` is started by main".into(),
        )),
    }
}

fn users_conf(path: &Path) -> Result<(), CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::Local(exit::INPUT, format!("cannot read {}: {e}", path.display()))
    })?;
    let list = identities::parse(&text)
        .map_err(|e| CliError::Local(exit::VALIDATION, format!("{}: {e}", path.display())))?;
    print!("{}", identities::users_conf(&list));
    Ok(())
}

/// `mycosynth auth serve`: runs the callout until SIGINT or SIGTERM; returns the exit code.
pub async fn serve(cli: &Cli, args: &CalloutArgs) -> ExitCode {
    match answer(cli, args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit::report(&err, false),
    }
}

/// Loads the config, connects (with this invocation's credentials: the callout's own user,
/// one of the server's `auth_users`), serves `/metrics` and `/health`, and answers until
/// SIGINT or SIGTERM.
async fn answer(cli: &Cli, args: &CalloutArgs) -> Result<(), CliError> {
    let config = CalloutConfig::load(&args.config).map_err(|e| match e {
        ConfigError::Unreadable { .. } => CliError::Local(exit::INPUT, e.to_string()),
        ConfigError::Invalid { .. } => CliError::Local(exit::VALIDATION, e.to_string()),
    })?;
    let creds = super::identity::credentials(cli)?;
    let metrics = http::install_metrics()
        .map_err(|e| CliError::Local(exit::INTERNAL, format!("metrics: {e}")))?;
    let client = crate::connect_with(&cli.nats_url, "mycosynth-callout", &creds)
        .await
        .map_err(|e| CliError::Local(exit::UNAVAILABLE, format!("NATS {}: {e}", cli.nats_url)))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let bound = http::serve(args.http, metrics, client.clone(), async move {
        let _ = http_stop.wait_for(|s| *s).await;
    })
    .await
    .map_err(|e| CliError::Local(exit::UNAVAILABLE, format!("--http {}: {e}", args.http)))?;
    tracing::info!(
        http = %bound,
        account = %config.account,
        backends = ?config.backends.iter().map(|b| b.name()).collect::<Vec<_>>(),
        encrypted = config.xkey.is_some(),
        "ready"
    );
    let outcome = callout::run(Arc::new(config), client, super::serve::stop_signal()).await;
    let _ = stop_tx.send(true);
    outcome.map_err(|e| CliError::Local(exit::UNAVAILABLE, e.to_string()))
}
