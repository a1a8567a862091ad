//! The one place where failures become exit codes and one-line messages.

use std::process::ExitCode;

use mycosynth_subscriber::wire::{ApiError, ErrorKind};

/// Success.
pub const OK: u8 = 0;
/// Anything not listed below (a fault inside Mycosynth).
pub const INTERNAL: u8 = 1;
/// Wrong command-line usage (clap's own code).
pub const USAGE: u8 = 2;
/// The change breaks a rule: names, sizes, malformed JSON/YAML, or the namespace schema.
pub const VALIDATION: u8 = 3;
/// `--expect-version` is not the current version.
pub const CONFLICT: u8 = 4;
/// The identity may not do this.
pub const ACCESS_DENIED: u8 = 5;
/// No such namespace, environment, key, version or schema.
pub const NOT_FOUND: u8 = 6;
/// NATS or the validator cannot be reached; nothing is known to be written.
pub const UNAVAILABLE: u8 = 7;
/// An input file cannot be read.
pub const INPUT: u8 = 8;
/// `status --wait-version`: not every live instance holds the version before the timeout.
pub const NOT_CONVERGED: u8 = 9;
/// `drift`: live config differs from the files.
pub const DRIFT: u8 = 10;
/// The identity sent more change requests than the validator's rate limit allows.
pub const RATE_LIMITED: u8 = 11;
/// `audit verify`: the audit log's hash chain is broken (records removed, edited or forged).
pub const AUDIT_BROKEN: u8 = 12;
/// `restore`: the archive is damaged, truncated or not an archive (nothing was written).
pub const ARCHIVE_DAMAGED: u8 = 13;
/// `restore`: the cluster already holds Mycosynth state (give `--force`), or a validator runs;
/// `site init`: a stream of a mirror's name exists and is not that mirror.
pub const NOT_EMPTY: u8 = 14;

/// The table printed by `mycosynth --help`.
pub const EXIT_CODES_HELP: &str =
    "Exit codes: 0 ok, 1 internal error, 2 usage, 3 validation failed, \
4 version conflict, 5 access denied, 6 not found, 7 service unavailable, 8 input file unreadable, \
9 not converged (status --wait-version), 10 drift found (drift), 11 rate limited, \
12 audit chain broken (audit verify), 13 archive damaged (restore), \
14 cluster not empty or validator running (restore), or not a mirror (site init)";

/// A CLI failure: the API's error, or a local one with its code.
#[derive(Debug)]
pub enum CliError {
    /// The validator (or the connection to it) said no.
    Api(ApiError),
    /// A local problem: message and exit code.
    Local(u8, String),
}

impl From<ApiError> for CliError {
    fn from(err: ApiError) -> Self {
        CliError::Api(err)
    }
}

/// Why `mycosynth sidecar` stopped: bad names 3, no listen address or no config 7.
impl From<crate::sidecar::StartError> for CliError {
    fn from(err: crate::sidecar::StartError) -> Self {
        use crate::sidecar::StartError;
        let code = match &err {
            StartError::Name(_) => VALIDATION,
            StartError::Listen { .. } | StartError::Subscriber(_) => UNAVAILABLE,
            StartError::Metrics(_) => INTERNAL,
        };
        CliError::Local(code, err.to_string())
    }
}

/// The exit code of an API error kind.
pub fn code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Validation | ErrorKind::BadRequest => VALIDATION,
        ErrorKind::Conflict => CONFLICT,
        ErrorKind::AccessDenied => ACCESS_DENIED,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Unavailable => UNAVAILABLE,
        ErrorKind::Internal => INTERNAL,
        ErrorKind::RateLimited => RATE_LIMITED,
    }
}

/// Prints the failure on stderr (one line per broken rule) and returns its exit code.
pub fn report(err: &CliError, json: bool) -> ExitCode {
    match err {
        CliError::Api(err) => {
            if json {
                eprintln!(
                    "{}",
                    serde_json::to_string(err).unwrap_or_else(|_| err.message.clone())
                );
            } else if err.violations.is_empty() {
                eprintln!(
                    "mycosynth: {}: {}",
                    err.kind.as_str().replace('_', " "),
                    err.message
                );
            } else {
                let what = match err.kind {
                    ErrorKind::Validation => "validation failed".to_owned(),
                    kind => kind.as_str().replace('_', " "),
                };
                for v in &err.violations {
                    eprintln!(
                        "mycosynth: {what}: key {:?} broke rule {:?}: {}",
                        v.key, v.rule, v.message
                    );
                }
            }
            ExitCode::from(code_of(err.kind))
        }
        CliError::Local(code, message) => {
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({"kind": "local", "code": code, "message": message})
                );
            } else {
                eprintln!("mycosynth: {message}");
            }
            ExitCode::from(*code)
        }
    }
}
