//! The `mycosynth` command line: arguments ([`args`]), commands ([`commands`]) and the one place
//! where errors become exit codes ([`exit`]).

pub mod args;
pub mod audit;
pub mod auth;
pub mod commands;
pub mod exit;
pub mod gitops;
pub mod identity;

pub use args::Cli;
pub use commands::run;
