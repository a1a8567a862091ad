//! The arguments of `mycosynth auth ...` (part of [`super::args`]). Parsing does no I/O.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `mycosynth auth ...`
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Run the auth callout: answer nats-server's authorization requests with user JWTs
    /// (see nats/callout/).
    Serve(CalloutArgs),
    /// Print the static server config (`users.conf`) of an identities file.
    UsersConf {
        /// The identities file (`<kind> <name> <public nkey> [namespace | site domains]` lines).
        identities: PathBuf,
    },
    /// Make a static token: writes it to FILE (mode 0600) and prints its tokens-file line.
    Token {
        /// Where to write the token; refuses to overwrite.
        file: PathBuf,
        /// nats-admin, validator, operator or service.
        #[arg(long)]
        kind: String,
        /// The identity's name.
        #[arg(long)]
        identity: String,
        /// The namespace (services).
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Make a key of a callout deployment: writes the seed to FILE (mode 0600) and prints the
    /// public key (for the server config).
    Keygen {
        /// `account` (signs user JWTs: auth_callout.issuer) or `xkey` (encrypts requests:
        /// auth_callout.xkey).
        #[arg(value_enum)]
        key: CalloutKey,
        /// Where to write the seed; refuses to overwrite.
        file: PathBuf,
    },
}

/// The keys `mycosynth auth keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CalloutKey {
    /// An account nkey (SA...).
    Account,
    /// A curve key (SX...).
    Xkey,
}

/// `mycosynth auth serve`
#[derive(Debug, Args)]
pub struct CalloutArgs {
    /// The callout's config file (YAML; see nats/callout/callout.yaml).
    #[arg(long, env = "MYCOSYNTH_CALLOUT_CONFIG")]
    pub config: PathBuf,
    /// Address of the HTTP port with /metrics and /health.
    #[arg(long, default_value = "127.0.0.1:9465")]
    pub http: SocketAddr,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}
