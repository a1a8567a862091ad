//! The `mycosynth` command line: arguments ([`args`], clap, no I/O), which code runs each
//! command ([`commands`]), the commands' modules, how outcomes are printed ([`output`]) and the
//! one place where errors become exit codes ([`exit`]).

pub mod args;
pub mod audit;
pub mod auth;
pub mod auth_args;
pub mod backup;
pub mod change_requests;
pub mod commands;
pub mod console;
pub mod console_args;
pub mod console_login;
pub mod deploy;
pub mod exit;
pub mod explain;
pub mod fleet;
pub mod gitops;
pub mod identity;
pub mod output;
pub mod repository;
pub mod requests;
pub mod rollout_args;
pub mod rollouts;
pub mod serve;
pub mod sidecar;
pub mod watch;

pub use args::Cli;
pub use commands::run;
