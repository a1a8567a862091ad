//! What each command does: build a request, send it, print the outcome.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, ChangeRequest, ChangeSource, DiffEntry, GetOutcome, GetRequest,
    HistoryOutcome, HistoryRequest, InstanceState, KeyChange, RollbackRequest, SchemaGetRequest,
    SchemaPushOutcome, SchemaPushRequest, SchemaRecord, StatusOutcome, StatusRequest, Violation,
};
use mycosynth_subscriber::{NoticeCause, Subscriber};
use serde_json::Value;

use super::args::{ChangeArgs, Cli, Command, SchemaCommand};
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
    match cli.command {
        Command::Keygen { file } => super::identity::keygen(&file, json),
        Command::Auth(command) => super::auth::run(command, json),
        Command::Policy(command) => {
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            super::identity::policy(&api, command, json).await
        }
        Command::Serve(_) => Err(CliError::Local(
            exit::USAGE,
            "`serve` is started by main".into(),
        )),
        Command::Watch {
            namespace,
            env,
            cache_dir,
            heartbeat,
        } => {
            let heartbeat = Duration::from_secs_f64(heartbeat.clamp(0.1, 3600.0));
            let where_ = (namespace.as_str(), env.as_str());
            watch(&cli.nats_url, where_, creds, cache_dir, heartbeat, json).await
        }
        Command::Status {
            namespace,
            env,
            wait_version,
        } => {
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            fleet_status(
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
        Command::Audit(args) => {
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            super::audit::run(&api, args, &author, timeout, json).await
        }
        command => {
            // Parse local input before connecting, so bad input fails fast and changes nothing.
            let request = build(command, &author)?;
            let api = ApiClient::connect_with(&cli.nats_url, timeout, &creds).await?;
            send(&api, request, timeout, json).await
        }
    }
}

/// A request, ready to send.
enum Request {
    Change(ChangeRequest),
    Rollback(RollbackRequest),
    /// `true`: ask for sensitive values in clear.
    Get(GetRequest, bool),
    History(HistoryRequest),
    SchemaPush(SchemaPushRequest),
    SchemaGet(SchemaGetRequest),
}

fn change_request(
    namespace: String,
    env: String,
    changes: Vec<KeyChange>,
    args: ChangeArgs,
    author: &str,
    source: ChangeSource,
) -> ChangeRequest {
    ChangeRequest {
        expected_version: args.expect_version,
        emergency: args.emergency,
        reason: args.reason,
        source,
        // One key per command invocation: the retries below reuse it.
        request_id: Some(uuid::Uuid::now_v7().to_string()),
        ..ChangeRequest::new(namespace, env, changes, author)
    }
}

fn build(command: Command, author: &str) -> Result<Request, CliError> {
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
            let changes = vec![KeyChange {
                key,
                value: Some(value),
            }];
            Request::Change(change_request(
                namespace,
                env,
                changes,
                change,
                author,
                ChangeSource::Cli,
            ))
        }
        Command::Delete {
            namespace,
            env,
            key,
            change,
        } => {
            let changes = vec![KeyChange { key, value: None }];
            Request::Change(change_request(
                namespace,
                env,
                changes,
                change,
                author,
                ChangeSource::Cli,
            ))
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
                .map(|(key, value)| KeyChange {
                    key,
                    value: Some(value),
                })
                .collect();
            let mut request =
                change_request(namespace, env, changes, change, author, ChangeSource::Apply);
            request.dry_run = dry_run;
            request.replace = prune;
            Request::Change(request)
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
        } if !change.emergency => Request::Rollback(RollbackRequest {
            namespace,
            environment: env,
            to_version: to,
            expected_version: change.expect_version,
            author: author.to_owned(),
            reason: change.reason,
            dry_run,
            request_id: Some(uuid::Uuid::now_v7().to_string()),
        }),
        Command::Schema(SchemaCommand::Push {
            namespace,
            file,
            force,
        }) => {
            let schema: Value = serde_json::from_str(&read_file(&file)?).map_err(|e| {
                CliError::Api(validation(
                    "schema",
                    "json",
                    format!("{}: not valid JSON: {e}", file.display()),
                ))
            })?;
            Request::SchemaPush(SchemaPushRequest {
                namespace,
                schema,
                force,
                author: author.to_owned(),
            })
        }
        Command::Schema(SchemaCommand::Get { namespace }) => {
            Request::SchemaGet(SchemaGetRequest { namespace })
        }
        Command::Rollback { .. } => {
            return Err(CliError::Local(
                exit::USAGE,
                "a rollback cannot be marked --emergency".into(),
            ))
        }
        _ => {
            return Err(CliError::Local(
                exit::INTERNAL,
                "not a request command".into(),
            ))
        }
    })
}

fn validation(key: &str, rule: &str, message: String) -> mycosynth_subscriber::wire::ApiError {
    mycosynth_subscriber::wire::ApiError {
        kind: mycosynth_subscriber::wire::ErrorKind::Validation,
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

/// Sends the request, retrying while the validator is unavailable for up to `budget` (changes
/// carry an idempotency key, so a retry never applies twice).
async fn send(
    api: &ApiClient,
    request: Request,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    match request {
        Request::Change(request) => {
            let dry_run = request.dry_run;
            let outcome: ChangeOutcome = api
                .call_retrying(endpoint::CHANGE, &request, budget)
                .await?;
            print_change(&outcome, dry_run, json);
        }
        Request::Rollback(request) => {
            let dry_run = request.dry_run;
            let outcome: ChangeOutcome = api
                .call_retrying(endpoint::ROLLBACK, &request, budget)
                .await?;
            print_change(&outcome, dry_run, json);
        }
        Request::Get(request, reveal) => {
            let single = request.key.is_some();
            let endpoint = if reveal {
                endpoint::REVEAL
            } else {
                endpoint::GET
            };
            let mut outcome: GetOutcome = api.call_retrying(endpoint, &request, budget).await?;
            redact(&mut outcome);
            if json {
                print_json(&outcome);
            } else if single {
                for (_, record) in &outcome.values {
                    println!("{}", record.value);
                }
            } else {
                println!("version {}", outcome.version);
                for (key, record) in &outcome.values {
                    println!(
                        "{key} = {}  (v{} by {} at {})",
                        record.value, record.version, record.meta.author, record.meta.time
                    );
                }
            }
        }
        Request::History(request) => {
            let outcome: HistoryOutcome = api
                .call_retrying(endpoint::HISTORY, &request, budget)
                .await?;
            if json {
                print_json(&outcome);
            }
            for set in outcome.change_sets.iter().filter(|_| !json) {
                let reason = if set.meta.reason.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", set.meta.reason)
                };
                let marks = format!(
                    "{}{}",
                    if set.meta.emergency {
                        ", EMERGENCY"
                    } else {
                        ""
                    },
                    set.meta
                        .git_commit
                        .as_deref()
                        .map(|c| format!(", git {c}"))
                        .unwrap_or_default()
                );
                println!(
                    "v{}  {}  {}  [{}{marks}]{}",
                    set.version,
                    set.meta.time,
                    set.meta.author,
                    set.meta.source.as_str(),
                    reason
                );
                for change in &set.changes {
                    let sealed = Value::String(mycosynth_subscriber::wire::REDACTED.into());
                    let shown = change.value.as_ref().map(|v| {
                        if mycosynth_subscriber::wire::is_sealed(v) {
                            &sealed
                        } else {
                            v
                        }
                    });
                    match shown {
                        Some(value) => println!("    {} = {value}", change.key),
                        None => println!("    {} deleted", change.key),
                    }
                }
            }
        }
        Request::SchemaPush(request) => {
            let outcome: SchemaPushOutcome = api
                .call_retrying(endpoint::SCHEMA_PUSH, &request, budget)
                .await?;
            if json {
                print_json(&outcome);
            } else {
                println!("schema of {} stored", request.namespace);
                if !outcome.added_keys.is_empty() {
                    println!("added keys: {}", outcome.added_keys.join(", "));
                }
                if !outcome.removed_keys.is_empty() {
                    println!("removed keys: {}", outcome.removed_keys.join(", "));
                }
                for v in &outcome.forced_violations {
                    println!(
                        "warning (forced): key {:?} breaks rule {:?}: {}",
                        v.key, v.rule, v.message
                    );
                }
            }
        }
        Request::SchemaGet(request) => {
            let record: SchemaRecord = api
                .call_retrying(endpoint::SCHEMA_GET, &request, budget)
                .await?;
            if json {
                print_json(&record);
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&record.schema).unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// Shows sealed (sensitive) values as `<redacted>`: a value comes back sealed unless `--reveal`.
fn redact(outcome: &mut GetOutcome) {
    for (_, record) in outcome.values.iter_mut() {
        if mycosynth_subscriber::wire::is_sealed(&record.value) {
            record.value = Value::String(mycosynth_subscriber::wire::REDACTED.into());
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

fn print_change(outcome: &ChangeOutcome, dry_run: bool, json: bool) {
    if json {
        print_json(outcome);
        return;
    }
    for DiffEntry { key, old, new } in &outcome.diff {
        match (old, new) {
            (None, Some(new)) => println!("+ {key} = {new}"),
            (Some(old), None) => println!("- {key} (was {old})"),
            (Some(old), Some(new)) => println!("~ {key}: {old} -> {new}"),
            (None, None) => {}
        }
    }
    if dry_run {
        println!(
            "dry run: valid; {} key(s) would change at version {}",
            outcome.diff.len(),
            outcome.version
        );
    } else if outcome.committed {
        println!(
            "committed version {} (was {})",
            outcome.version, outcome.previous_version
        );
    } else {
        println!("no change; still at version {}", outcome.version);
    }
}

async fn watch(
    nats_url: &str,
    (namespace, env): (&str, &str),
    creds: mycosynth_subscriber::Credentials,
    cache_dir: Option<std::path::PathBuf>,
    heartbeat: Duration,
    json: bool,
) -> Result<(), CliError> {
    let mut builder = Subscriber::builder(namespace, env)
        .credentials(creds)
        .nats_url(nats_url)
        .client_name("mycosynth-watch")
        .receipts(true, heartbeat)
        .validate_against_schema(true);
    if let Some(dir) = cache_dir {
        builder = builder.cache_dir(dir);
    }
    let config = builder.connect().await.map_err(|e| match e {
        mycosynth_subscriber::Error::InvalidName(err) => {
            CliError::Api(validation(&err.to_string(), err.rule(), err.to_string()))
        }
        other => CliError::Local(exit::UNAVAILABLE, other.to_string()),
    })?;
    let mut changes = config.subscribe();
    let snapshot = config.snapshot();
    if json {
        let origin = format!("{:?}", config.status().origin).to_lowercase();
        print_json(&serde_json::json!({
            "version": snapshot.version(),
            "values": snapshot.to_json(),
            "cause": "load",
            "origin": origin,
        }));
    } else {
        println!(
            "watching {namespace}/{env} at version {} ({} keys); Ctrl-C to stop",
            snapshot.version(),
            snapshot.len()
        );
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            notice = changes.recv() => {
                let notice = match notice {
                    Ok(notice) => notice,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                };
                let snapshot = config.snapshot();
                let values: BTreeMap<&str, Option<Value>> = match notice.cause {
                    // Inherited keys are not in this environment's own snapshot.
                    NoticeCause::Inherited => notice.keys.iter().map(|k| (k.as_str(), config.get::<Value>(k).ok())).collect(),
                    _ => notice.keys.iter().map(|k| (k.as_str(), snapshot.raw(k).map(|(v, _)| v.clone()))).collect(),
                };
                let delay_us = (notice.committed_at_us > 0).then(|| notice.applied_at_us - notice.committed_at_us);
                if json {
                    print_json(&serde_json::json!({
                        "version": notice.version,
                        "previous_version": notice.previous_version,
                        "values": values,
                        "author": notice.author,
                        "reason": notice.reason,
                        "change_id": notice.change_id,
                        "cause": match notice.cause { NoticeCause::Event => "event", NoticeCause::Resync => "resync", NoticeCause::Inherited => "inherited" },
                        "committed_at_us": notice.committed_at_us,
                        "applied_at_us": notice.applied_at_us,
                        "delay_us": delay_us,
                    }));
                } else {
                    let delay = delay_us.map(|d| format!(", {:.2} ms after commit", d as f64 / 1000.0)).unwrap_or_default();
                    println!("v{} (from v{}) by {}{delay}", notice.version, notice.previous_version, if notice.author.is_empty() { "resync" } else { &notice.author });
                    for (key, value) in values {
                        match value {
                            Some(value) => println!("    {key} = {value}"),
                            None => println!("    {key} deleted"),
                        }
                    }
                }
            }
        }
    }
}

/// `mycosynth status`: the fleet table; with `wait_version`, polls until every live instance
/// holds that version or `budget` passes.
async fn fleet_status(
    api: &ApiClient,
    request: StatusRequest,
    wait_version: Option<u64>,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let status: StatusOutcome = api
            .call_retrying(
                endpoint::STATUS,
                &request,
                left.max(Duration::from_millis(100)),
            )
            .await?;
        let converged =
            wait_version.is_none_or(|v| status.instances.iter().all(|i| i.receipt.version >= v));
        if converged || tokio::time::Instant::now() >= deadline {
            print_fleet(&status, json);
            return match wait_version {
                Some(v) if !converged => {
                    Err(CliError::Local(
                        exit::NOT_CONVERGED,
                        format!(
                        "not converged: {} of {} live instances hold version {v} after {budget:?}",
                        status.instances.iter().filter(|i| i.receipt.version >= v).count(),
                        status.instances.len()
                    ),
                    ))
                }
                _ => Ok(()),
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_fleet(status: &StatusOutcome, json: bool) {
    if json {
        print_json(status);
        return;
    }
    let now_us =
        i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(0);
    let ago = |us: i64| {
        if us > 0 {
            format!("{:.1}s ago", (now_us - us).max(0) as f64 / 1e6)
        } else {
            "at start".to_owned()
        }
    };
    println!(
        "{:<36} {:<16} {:>8} {:>8}  {:<9} {:<12} {:<12} reason",
        "instance", "host", "pid", "version", "state", "applied", "last seen"
    );
    for i in &status.instances {
        let state = match i.state {
            InstanceState::Current => "current",
            InstanceState::Behind => "behind",
            InstanceState::Rejected => "rejected",
            InstanceState::Stale => "stale",
        };
        let reason = i
            .receipt
            .rejected
            .as_ref()
            .map(|r| format!("refused v{}: {}", r.version, r.reason))
            .unwrap_or_default();
        println!(
            "{:<36} {:<16} {:>8} {:>8}  {:<9} {:<12} {:<12} {reason}",
            i.receipt.instance_id,
            i.receipt.host,
            i.receipt.pid,
            i.receipt.version,
            state,
            ago(i.receipt.applied_at_us),
            ago(i.last_seen_us)
        );
    }
    let converged = status
        .convergence_ms
        .map(|ms| format!("; converged {ms:.1} ms after commit"))
        .unwrap_or_default();
    println!(
        "latest version {}: {}/{} live instances hold it{converged}",
        status.latest_version,
        status.holding_latest,
        status.instances.len()
    );
}
