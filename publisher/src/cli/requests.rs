//! The request commands (`set`, `delete`, `apply`, `get`, `history`, `rollback`, `schema
//! push|get`): local input is read and checked first, so bad input fails before connecting
//! and changes nothing; then the request is sent, retried while the validator is unavailable.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mycosynth_subscriber::wire::{
    endpoint, ApiError, ChangeOutcome, ChangeRequest, ChangeSource, ErrorKind, GetOutcome,
    GetRequest, HistoryOutcome, HistoryRequest, KeyChange, ProposeOptions, RollbackRequest,
    SchemaGetRequest, SchemaPushOutcome, SchemaPushRequest, SchemaRecord, Violation,
};
use serde_json::Value;

use super::args::{ChangeArgs, Command, SchemaCommand};
use super::exit::{self, CliError};
use super::output;
use crate::client::ApiClient;

/// A request, ready to send.
pub enum Request {
    /// `set`, `delete`, `apply`.
    Change(ChangeRequest),
    /// `rollback`.
    Rollback(RollbackRequest),
    /// `get`; `true`: ask for sensitive values in clear.
    Get(GetRequest, bool),
    /// `history`.
    History(HistoryRequest),
    /// `schema push`.
    SchemaPush(SchemaPushRequest),
    /// `schema get`.
    SchemaGet(SchemaGetRequest),
}

/// The request of a request command, from local input only.
pub fn build(command: Command, author: &str) -> Result<Request, CliError> {
    Ok(match command {
        Command::Set { .. } | Command::Delete { .. } | Command::Apply { .. } => {
            Request::Change(change_command(command, author)?)
        }
        Command::Get {
            namespace,
            env,
            key,
            reveal,
            ..
        } => Request::Get(
            GetRequest {
                namespace,
                environment: env,
                key,
            },
            reveal,
        ),
        Command::History {
            namespace,
            env,
            key,
            limit,
        } => Request::History(HistoryRequest {
            namespace,
            environment: env,
            key,
            limit: Some(limit),
        }),
        Command::Rollback {
            namespace,
            env,
            to,
            dry_run,
            change,
        } => rollback_request(namespace, env, to, dry_run, change, author)?,
        Command::Schema(SchemaCommand::Push {
            namespace,
            file,
            force,
        }) => schema_push_request(namespace, &file, force, author)?,
        Command::Schema(SchemaCommand::Get { namespace }) => {
            Request::SchemaGet(SchemaGetRequest { namespace })
        }
        _ => {
            return Err(CliError::Local(
                exit::INTERNAL,
                "not a request command".into(),
            ))
        }
    })
}

/// The change request of `set`, `delete` or `apply`.
fn change_command(command: Command, author: &str) -> Result<ChangeRequest, CliError> {
    Ok(match command {
        Command::Set {
            namespace,
            env,
            key,
            value,
            change,
        } => {
            let value: Value = serde_json::from_str(&value).map_err(|e| {
                CliError::Api(validation(&key, "json", format!("key {key:?}: value is not valid JSON ({e}); quote strings, e.g. '\"text\"'")))
            })?;
            let set = vec![KeyChange::set(key, value)];
            change_request(namespace, env, set, change, author, ChangeSource::Cli)
        }
        Command::Delete {
            namespace,
            env,
            key,
            change,
        } => {
            let delete = vec![KeyChange { key, value: None }];
            change_request(namespace, env, delete, change, author, ChangeSource::Cli)
        }
        Command::Apply {
            file,
            namespace,
            env,
            dry_run,
            prune,
            change,
        } => {
            let changes = read_config_file(&file)?
                .into_iter()
                .map(|(key, value)| KeyChange::set(key, value))
                .collect();
            let mut request =
                change_request(namespace, env, changes, change, author, ChangeSource::Apply);
            request.dry_run = dry_run;
            request.replace = prune;
            request
        }
        _ => {
            return Err(CliError::Local(
                exit::INTERNAL,
                "not a change command".into(),
            ))
        }
    })
}

fn change_request(
    namespace: String,
    env: String,
    changes: Vec<KeyChange>,
    args: ChangeArgs,
    author: &str,
    source: ChangeSource,
) -> ChangeRequest {
    let proposal = propose_options(&args);
    ChangeRequest {
        expected_version: args.expect_version,
        proposal,
        emergency: args.emergency,
        reason: args.reason,
        source,
        // One key per command invocation: the retries below reuse it.
        request_id: Some(uuid::Uuid::now_v7().to_string()),
        ..ChangeRequest::new(namespace, env, changes, author)
    }
}

fn rollback_request(
    namespace: String,
    environment: String,
    to_version: u64,
    dry_run: bool,
    change: ChangeArgs,
    author: &str,
) -> Result<Request, CliError> {
    if change.emergency {
        return Err(CliError::Local(
            exit::USAGE,
            "a rollback cannot be marked --emergency".into(),
        ));
    }
    let proposal = propose_options(&change);
    Ok(Request::Rollback(RollbackRequest {
        namespace,
        environment,
        to_version,
        expected_version: change.expect_version,
        author: author.to_owned(),
        reason: change.reason,
        dry_run,
        request_id: Some(uuid::Uuid::now_v7().to_string()),
        proposal,
    }))
}

/// The proposal options of a change command, if it gave any.
fn propose_options(args: &ChangeArgs) -> Option<ProposeOptions> {
    let options = ProposeOptions {
        propose: args.propose,
        at: args.at.clone(),
        expires_s: args.expires,
        grace_s: args.grace,
    };
    (options != ProposeOptions::default()).then_some(options)
}

fn schema_push_request(
    namespace: String,
    file: &Path,
    force: bool,
    author: &str,
) -> Result<Request, CliError> {
    let schema: Value = serde_json::from_str(&read_file(file)?).map_err(|e| {
        CliError::Api(validation(
            "schema",
            "json",
            format!("{}: not valid JSON: {e}", file.display()),
        ))
    })?;
    Ok(Request::SchemaPush(SchemaPushRequest {
        namespace,
        schema,
        force,
        author: author.to_owned(),
    }))
}

/// Sends the request, retrying while the validator is unavailable for up to `budget` (changes
/// carry an idempotency key, so a retry never applies twice), and prints the outcome.
pub async fn send(
    api: &ApiClient,
    request: Request,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    match request {
        Request::Change(request) => {
            let outcome: ChangeOutcome = api
                .call_retrying(endpoint::CHANGE, &request, budget)
                .await?;
            output::change(&outcome, request.dry_run, json);
        }
        Request::Rollback(request) => {
            let outcome: ChangeOutcome = api
                .call_retrying(endpoint::ROLLBACK, &request, budget)
                .await?;
            output::change(&outcome, request.dry_run, json);
        }
        Request::Get(request, reveal) => {
            let endpoint = if reveal {
                endpoint::REVEAL
            } else {
                endpoint::GET
            };
            let mut outcome: GetOutcome = api.call_retrying(endpoint, &request, budget).await?;
            output::redact(&mut outcome);
            output::values(&outcome, request.key.is_some(), json);
        }
        Request::History(request) => {
            let outcome: HistoryOutcome = api
                .call_retrying(endpoint::HISTORY, &request, budget)
                .await?;
            output::history(&outcome, json);
        }
        Request::SchemaPush(request) => {
            let outcome: SchemaPushOutcome = api
                .call_retrying(endpoint::SCHEMA_PUSH, &request, budget)
                .await?;
            output::schema_pushed(&request.namespace, &outcome, json);
        }
        Request::SchemaGet(request) => {
            let record: SchemaRecord = api
                .call_retrying(endpoint::SCHEMA_GET, &request, budget)
                .await?;
            output::schema(&record, json);
        }
    }
    Ok(())
}

/// A local validation error of `key` breaking `rule`.
pub fn validation(key: &str, rule: &str, message: String) -> ApiError {
    ApiError {
        kind: ErrorKind::Validation,
        message: message.clone(),
        violations: vec![Violation {
            key: key.into(),
            rule: rule.into(),
            message,
        }],
        current_version: None,
    }
}

fn read_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Local(exit::INPUT, format!("cannot read {}: {e}", path.display())))
}

/// Reads a config file: a YAML or JSON mapping whose top-level keys are config keys.
pub fn read_config_file(path: &Path) -> Result<BTreeMap<String, Value>, CliError> {
    let text = read_file(path)?;
    let is_json = path.extension().is_some_and(|e| e == "json");
    let parsed: Result<Value, String> = if is_json {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())
    };
    let bad =
        |message: String| CliError::Api(validation(&path.display().to_string(), "format", message));
    match parsed.map_err(|e| bad(format!("{}: {e}", path.display())))? {
        Value::Object(map) => Ok(map.into_iter().collect()),
        Value::Null => Ok(BTreeMap::new()),
        _ => Err(bad(format!(
            "{}: must be a mapping of config keys to values",
            path.display()
        ))),
    }
}
