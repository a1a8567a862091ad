//! `mycosynth console login URL`: signs a short-lived session token for the console at URL with
//! the person's own nkey (the credentials every command takes: `--nkey-file` or
//! `MYCOSYNTH_NKEY`) and prints the sign-in link `URL/login?token=...`.
//!
//! The token's audience is the console's public key: taken from `--audience`, else read from
//! `URL/.well-known/mycosynth-console` (JSON `{"public_key": "U..."}`). The validator accepts the
//! token only on requests that console signs (see `access::session`).

use std::time::Duration;

use mycosynth_subscriber::wire::{ConsoleInfo, CONSOLE_INFO_PATH, DEFAULT_SESSION_TTL_MS};

use super::args::Cli;
pub use super::console_args::LoginArgs;
use super::exit::{self, CliError};
use crate::access::{session_token, SessionError};

/// Why no sign-in link could be made.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// No nkey among the credentials.
    #[error("console login signs with your own key: give it with --nkey-file or MYCOSYNTH_NKEY")]
    NoKey,
    /// The console's key could not be fetched.
    #[error("cannot ask the console at {url} for its key: {reason} (or give --audience)")]
    Unreachable {
        /// The address asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The console answered something that is not [`ConsoleInfo`].
    #[error("{url} is not a Mycosynth console's key document: {reason}")]
    NotAConsole {
        /// The address asked.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The token could not be made (lifetime, audience, key).
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Why `mycosynth console login` made no link: no key 2, the console unreachable or not a
/// console 7, a lifetime out of range 2, an audience that is not a key 3.
impl From<LoginError> for CliError {
    fn from(err: LoginError) -> Self {
        let code = match &err {
            LoginError::NoKey | LoginError::Session(SessionError::Ttl { .. }) => exit::USAGE,
            LoginError::Unreachable { .. } | LoginError::NotAConsole { .. } => exit::UNAVAILABLE,
            LoginError::Session(SessionError::Audience(_)) => exit::VALIDATION,
            LoginError::Session(SessionError::Sign(_)) => exit::INTERNAL,
        };
        CliError::Local(code, err.to_string())
    }
}

/// Prints the sign-in link (with `--json`: the link, the audience and the expiry).
pub async fn run(cli: &Cli, args: &LoginArgs) -> Result<(), CliError> {
    let key = super::identity::credentials(cli)?
        .key_pair()
        .ok_or(LoginError::NoKey)?;
    let link = sign_in_link(&key, args).await?;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"link": link.url, "audience": link.audience, "ttl_s": link.ttl.as_secs()})
        );
    } else {
        println!("{}", link.url);
    }
    Ok(())
}

/// A sign-in link and what its token says.
#[derive(Debug, Clone)]
pub struct SignInLink {
    /// `URL/login?token=...`.
    pub url: String,
    /// The console key the token is for.
    pub audience: String,
    /// How long it lasts.
    pub ttl: Duration,
}

/// Signs a session token for the console of `args` with `key`: the link to open.
pub async fn sign_in_link(
    key: &nkeys::KeyPair,
    args: &LoginArgs,
) -> Result<SignInLink, LoginError> {
    let base = args.url.trim_end_matches('/').to_owned();
    let audience = match &args.audience {
        Some(audience) => audience.clone(),
        None => console_key(&base).await?,
    };
    let ttl = args
        .ttl
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_millis(DEFAULT_SESSION_TTL_MS as u64));
    let token = session_token(key, &audience, ttl)?;
    // The token is base64url and a dot: safe in a query string as it is.
    Ok(SignInLink {
        url: format!("{base}/login?token={token}"),
        audience,
        ttl,
    })
}

/// The console's public key, from `BASE/.well-known/mycosynth-console`.
async fn console_key(base: &str) -> Result<String, LoginError> {
    let url = format!("{base}{CONSOLE_INFO_PATH}");
    let fetched = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            agent
                .get(&url)
                .call()
                .and_then(|mut r| r.body_mut().read_to_string())
        })
        .await
    };
    let text = match fetched {
        Ok(Ok(text)) => text,
        Ok(Err(err)) => {
            return Err(LoginError::Unreachable {
                url,
                reason: err.to_string(),
            })
        }
        Err(err) => {
            return Err(LoginError::Unreachable {
                url,
                reason: err.to_string(),
            })
        }
    };
    let info: ConsoleInfo = serde_json::from_str(&text).map_err(|e| LoginError::NotAConsole {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    Ok(info.public_key)
}
