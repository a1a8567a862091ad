//! Identity commands and options: the credentials every command connects and signs with,
//! `mycosynth keygen`, `mycosynth policy get|set`, and the validator's security settings.

use std::io::Write;
use std::path::Path;

use mycosynth_subscriber::wire::{endpoint, Policy, PolicyGetRequest, PolicySetRequest};
use mycosynth_subscriber::{Credentials, CredentialsError};

use super::args::{AuthArg, Cli, PolicyCommand, ServeArgs};
use super::exit::{self, CliError};
use crate::access::AuthMode;
use crate::access::SecurityConfig;
use crate::client::ApiClient;

fn credentials_error(err: CredentialsError) -> CliError {
    match err {
        CredentialsError::Unreadable { .. } => CliError::Local(exit::INPUT, err.to_string()),
        other => CliError::Local(exit::VALIDATION, other.to_string()),
    }
}

/// The credentials of this invocation: `--nkey-file`, else `MYCOSYNTH_NKEY`; `--token-file`;
/// TLS options.
pub fn credentials(cli: &Cli) -> Result<Credentials, CliError> {
    let mut creds = match &cli.nkey_file {
        Some(path) => Credentials::default()
            .with_nkey_file(path)
            .map_err(credentials_error)?,
        None => Credentials::from_env().map_err(credentials_error)?,
    };
    if let Some(path) = cli
        .token_file
        .as_deref()
        .filter(|p| creds.token_file() != Some(*p))
    {
        creds = creds.with_token_file(path).map_err(credentials_error)?;
    }
    if let Some(ca) = &cli.tls_ca {
        creds = creds.with_tls_ca(ca);
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        creds = creds.with_tls_client_cert(cert, key);
    }
    Ok(creds)
}

/// The validator's security settings from `mycosynth serve`'s options.
pub fn security(cli: &Cli, args: &ServeArgs) -> Result<SecurityConfig, CliError> {
    let bootstrap_admins = args
        .admins
        .iter()
        .map(|pair| {
            let (name, key) = pair.split_once('=').unwrap_or((pair, ""));
            let valid = nkeys::KeyPair::from_public_key(key).is_ok() && key.starts_with('U');
            if name.is_empty() || !valid {
                return Err(CliError::Local(
                    exit::USAGE,
                    format!(
                        "--admin {pair:?}: expected NAME=PUBLIC_KEY with a public user nkey (U...)"
                    ),
                ));
            }
            Ok((name.to_owned(), key.to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SecurityConfig {
        mode: match args.auth {
            AuthArg::Open => AuthMode::Open,
            AuthArg::Signed => AuthMode::Signed,
        },
        bootstrap_admins,
        credentials: credentials(cli)?,
    })
}

/// Writes a secret (seed, token) and a newline to a new `file` readable by its owner only.
pub(crate) fn write_secret(file: &Path, what: &str, secret: &str) -> Result<(), CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(file)
        .and_then(|mut f| f.write_all(format!("{secret}\n").as_bytes()));
    written.map_err(|e| {
        CliError::Local(
            exit::INPUT,
            format!("cannot write the {what} to {}: {e}", file.display()),
        )
    })
}

/// `mycosynth keygen FILE`: a new user nkey; the seed goes to FILE (0600), the public key to
/// stdout.
pub fn keygen(file: &Path, json: bool) -> Result<(), CliError> {
    let pair = nkeys::KeyPair::new_user();
    let seed = pair
        .seed()
        .map_err(|e| CliError::Local(exit::INTERNAL, e.to_string()))?;
    write_secret(file, "seed", &seed)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"public_key": pair.public_key(), "seed_file": file})
        );
    } else {
        println!("{}", pair.public_key());
    }
    Ok(())
}

/// `mycosynth policy get|set`.
pub async fn policy(api: &ApiClient, command: PolicyCommand, json: bool) -> Result<(), CliError> {
    let policy: Policy = match command {
        PolicyCommand::Get => api.call(endpoint::POLICY_GET, &PolicyGetRequest {}).await?,
        PolicyCommand::Set { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                CliError::Local(exit::INPUT, format!("cannot read {}: {e}", file.display()))
            })?;
            let policy: Policy = serde_yaml_ng::from_str(&text).map_err(|e| {
                CliError::Local(
                    exit::VALIDATION,
                    format!("{}: not a policy document: {e}", file.display()),
                )
            })?;
            let stored: Policy = api
                .call(endpoint::POLICY_SET, &PolicySetRequest { policy })
                .await?;
            if !json {
                println!(
                    "policy stored: {} identities, {} grants",
                    stored.identities.len(),
                    stored.grants.len()
                );
                return Ok(());
            }
            stored
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&policy).unwrap_or_default()
    );
    Ok(())
}
