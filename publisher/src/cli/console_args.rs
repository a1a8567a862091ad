//! The arguments of `mycosynth console` and `mycosynth console login` (apart from `args.rs`,
//! which names them, so that the console's modules need not import it back).

use std::net::SocketAddr;

use clap::{Args, Subcommand};

use crate::clock::parse_duration;

/// `mycosynth console`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConsoleArgs {
    /// `login URL`: sign in to a console with your own key.
    #[command(subcommand)]
    pub command: Option<ConsoleCommand>,
    /// Address to listen on.
    #[arg(
        long,
        env = "MYCOSYNTH_CONSOLE_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Mark the session cookie `Secure` (set it when the console is served behind TLS).
    #[arg(long)]
    pub secure_cookie: bool,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

/// `mycosynth console login`
#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Sign in to a web console with your own key: prints a link that holds a session token.
    Login(LoginArgs),
}

/// Sign in to a web console with your own key: prints a link that holds a session token.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// The console's address, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// How long the session lasts (N, Ns, Nm, Nh; default 8h, at most 24h).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<u64>,
    /// The console's public key (U...), instead of asking the console for it.
    #[arg(long)]
    pub audience: Option<String>,
}
