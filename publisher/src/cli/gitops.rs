//! The config-as-code commands: `validate`, `deploy`, `drift`, `parent`, `get --explain` and
//! `schema docs`. Repository reading and comparisons live in [`crate::gitops`]; this module
//! sends the requests and prints.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, ChangeRequest, ChangeSource, GetOutcome, GetRequest, KeyChange,
    ParentOutcome, ParentRequest, SchemaGetRequest, SchemaRecord, ValueRecord,
};
use serde_json::Value;

use super::args::{Command, RepoSelect, SchemaCommand};
use super::exit::{self, CliError};
use crate::client::ApiClient;
use crate::gitops::{check, drift, repo};

/// Commands that need the validator.
pub async fn run(
    api: &ApiClient,
    command: Command,
    author: &str,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    match command {
        Command::Deploy {
            dir,
            select,
            dry_run,
            prune,
            reason,
        } => {
            let options = DeployOptions {
                dry_run,
                prune,
                reason,
            };
            deploy(api, &dir, &select, &options, author, budget, json).await
        }
        Command::Drift { dir, select, patch } => {
            drift_report(api, &dir, &select, patch, budget, json).await
        }
        Command::Parent {
            namespace,
            env,
            parent,
            clear,
        } => declare_parent(api, namespace, env, parent, clear, author, budget, json).await,
        Command::Get {
            namespace,
            env,
            key,
            ..
        } => explain(api, &namespace, &env, key.as_deref(), budget, json).await,
        Command::Schema(SchemaCommand::Docs { namespace, .. }) => {
            let record: SchemaRecord = api
                .call_retrying(
                    endpoint::SCHEMA_GET,
                    &SchemaGetRequest {
                        namespace: namespace.clone(),
                    },
                    budget,
                )
                .await?;
            print!(
                "{}",
                crate::schema_docs::markdown(&namespace, &record.schema)
            );
            Ok(())
        }
        _ => Err(CliError::Local(
            exit::INTERNAL,
            "not a config-as-code command".into(),
        )),
    }
}

/// `schema docs NS --file F`: offline.
pub fn schema_docs_file(namespace: &str, file: &Path) -> Result<(), CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::Local(exit::INPUT, format!("cannot read {}: {e}", file.display()))
    })?;
    let schema: Value = serde_json::from_str(&text).map_err(|e| {
        CliError::Local(
            exit::VALIDATION,
            format!("{}: not valid JSON: {e}", file.display()),
        )
    })?;
    print!("{}", crate::schema_docs::markdown(namespace, &schema));
    Ok(())
}

fn load_repo(dir: &Path) -> Result<repo::ConfigRepo, CliError> {
    let (repo, findings) =
        repo::load(dir).map_err(|e| CliError::Local(exit::INPUT, e.to_string()))?;
    let mut findings = findings;
    findings.extend(check::check(&repo, false));
    refuse(&findings, false)?;
    Ok(repo)
}

fn refuse(findings: &[repo::Finding], json: bool) -> Result<(), CliError> {
    if findings.is_empty() {
        return Ok(());
    }
    print_findings(findings, json);
    Err(CliError::Local(
        exit::VALIDATION,
        format!("{} rule(s) broken; nothing was deployed", findings.len()),
    ))
}

/// `validate DIR`: offline.
pub fn validate(dir: &Path, require_schema: bool, json: bool) -> Result<(), CliError> {
    let (repo, mut findings) =
        repo::load(dir).map_err(|e| CliError::Local(exit::INPUT, e.to_string()))?;
    findings.extend(check::check(&repo, require_schema));
    if findings.is_empty() {
        if json {
            println!(
                "{}",
                serde_json::json!({"valid": true, "files": repo.files.len()})
            );
        } else {
            println!(
                "valid: {} file(s) in {} namespace(s)",
                repo.files.len(),
                repo.files
                    .iter()
                    .map(|f| f.namespace.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            );
        }
        return Ok(());
    }
    print_findings(&findings, json);
    Err(CliError::Local(
        exit::VALIDATION,
        format!("{} rule(s) broken in {}", findings.len(), dir.display()),
    ))
}

/// One line per broken rule on stderr (JSON lines with `--json`).
fn print_findings(findings: &[repo::Finding], json: bool) {
    for finding in findings {
        if json {
            eprintln!("{}", serde_json::to_string(finding).unwrap_or_default());
        } else {
            eprintln!("mycosynth: validation failed: {finding}");
        }
    }
}

fn selected<'a>(files: Vec<&'a repo::EnvFile>, select: &RepoSelect) -> Vec<&'a repo::EnvFile> {
    files
        .into_iter()
        .filter(|f| select.namespace.as_ref().is_none_or(|n| *n == f.namespace))
        .filter(|f| select.env.as_ref().is_none_or(|e| *e == f.environment))
        .collect()
}

async fn live(
    api: &ApiClient,
    namespace: &str,
    env: &str,
    budget: Duration,
) -> Result<GetOutcome, CliError> {
    Ok(api
        .call_retrying(
            endpoint::GET,
            &GetRequest {
                namespace: namespace.to_owned(),
                environment: env.to_owned(),
                key: None,
            },
            budget,
        )
        .await?)
}

struct DeployOptions {
    dry_run: bool,
    prune: bool,
    reason: String,
}

async fn deploy(
    api: &ApiClient,
    dir: &Path,
    select: &RepoSelect,
    options: &DeployOptions,
    author: &str,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let repo = load_repo(dir)?;
    let commit = repo::git_commit(dir);
    let reason = match (&options.reason, &commit) {
        (r, _) if !r.is_empty() => r.clone(),
        (_, Some(commit)) => format!("deploy {commit}"),
        (_, None) => "deploy".to_owned(),
    };
    let files = selected(check::deploy_order(&repo), select);
    if files.is_empty() {
        return Err(CliError::Local(
            exit::NOT_FOUND,
            format!("no config file in {} matches the selection", dir.display()),
        ));
    }
    let (mut moved, mut unchanged) = (0, 0);
    let mut report = Vec::new();
    for file in files {
        let target = format!("{}/{}", file.namespace, file.environment);
        let current = live(api, &file.namespace, &file.environment, budget).await?;
        let parent_changes = current.parent != file.parent;
        if parent_changes && !options.dry_run {
            let _: ParentOutcome = api
                .call_retrying(
                    endpoint::PARENT,
                    &ParentRequest {
                        namespace: file.namespace.clone(),
                        environment: file.environment.clone(),
                        parent: file.parent.clone(),
                        author: author.to_owned(),
                    },
                    budget,
                )
                .await?;
        }
        let changes = file
            .values
            .iter()
            .map(|(k, v)| KeyChange::set(k.clone(), v.clone()))
            .collect();
        let request = ChangeRequest {
            reason: reason.clone(),
            source: ChangeSource::Apply,
            git_commit: commit.clone(),
            dry_run: options.dry_run,
            replace: options.prune,
            request_id: Some(uuid::Uuid::now_v7().to_string()),
            ..ChangeRequest::new(
                file.namespace.clone(),
                file.environment.clone(),
                changes,
                author,
            )
        };
        let outcome: ChangeOutcome = api
            .call_retrying(endpoint::CHANGE, &request, budget)
            .await
            .map_err(|mut err| {
                err.message = format!("{target}: {}", err.message);
                err
            })?;
        if outcome.committed || (options.dry_run && !outcome.diff.is_empty()) || parent_changes {
            moved += 1;
        } else {
            unchanged += 1;
        }
        if json {
            report.push(serde_json::json!({
                "namespace": file.namespace,
                "environment": file.environment,
                "file": file.path,
                "parent": file.parent,
                "parent_changed": parent_changes,
                "git_commit": commit,
                "outcome": outcome,
            }));
            continue;
        }
        let state = if options.dry_run {
            if outcome.diff.is_empty() && !parent_changes {
                format!("no change (version {})", outcome.version)
            } else {
                format!(
                    "would change {} key(s) at version {}",
                    outcome.diff.len(),
                    outcome.version
                )
            }
        } else if outcome.committed {
            format!(
                "committed version {} (was {})",
                outcome.version, outcome.previous_version
            )
        } else {
            format!("no change; still at version {}", outcome.version)
        };
        println!("{target} ({}): {state}", file.path);
        if parent_changes {
            println!(
                "~ _meta.parent: {} -> {}",
                current.parent.as_deref().unwrap_or("(none)"),
                file.parent.as_deref().unwrap_or("(none)")
            );
        }
        for entry in &outcome.diff {
            match (&entry.old, &entry.new) {
                (None, Some(new)) => println!("+ {} = {new}", entry.key),
                (Some(old), None) => println!("- {} (was {old})", entry.key),
                (Some(old), Some(new)) => println!("~ {}: {old} -> {new}", entry.key),
                (None, None) => {}
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"dry_run": options.dry_run, "git_commit": commit, "targets": report})
        );
    } else {
        let verb = if options.dry_run {
            "would change"
        } else {
            "changed"
        };
        println!(
            "{verb} {moved} (namespace, environment), {unchanged} unchanged{}",
            commit
                .map(|c| format!("; git commit {c}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

async fn drift_report(
    api: &ApiClient,
    dir: &Path,
    select: &RepoSelect,
    patch: bool,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let repo = load_repo(dir)?;
    let files = selected(repo.files.iter().collect(), select);
    let mut all = Vec::new();
    let mut patches = String::new();
    for file in files {
        let current = live(api, &file.namespace, &file.environment, budget).await?;
        let entries = drift::compare(file, &current);
        if patch && !entries.is_empty() {
            let text = drift::patched_text(file, &entries)
                .map_err(|m| CliError::Local(exit::INTERNAL, m))?;
            patches.push_str(&drift::unified_diff(&file.path, &file.text, &text));
        }
        all.extend(entries);
    }
    if patch {
        print!("{patches}");
    } else if json {
        println!("{}", serde_json::to_string(&all).unwrap_or_default());
    } else {
        for entry in &all {
            println!("{}", describe(entry));
        }
    }
    if all.is_empty() {
        if !patch && !json {
            println!("no drift: live config matches {}", dir.display());
        }
        return Ok(());
    }
    Err(CliError::Local(
        exit::DRIFT,
        format!("drift: {} key(s) differ from the files", all.len()),
    ))
}

fn describe(entry: &drift::DriftEntry) -> String {
    let show = |v: &Option<Value>| match v {
        Some(v) => v.to_string(),
        None => "(absent)".into(),
    };
    let place = match entry.line {
        Some(line) => format!("{}:{line}", entry.file),
        None => entry.file.clone(),
    };
    let who = match &entry.live {
        Some(ValueRecord { version, meta, .. }) => format!(
            " — set at v{version} by {} at {}{}{}",
            meta.author,
            meta.time,
            if meta.reason.is_empty() {
                String::new()
            } else {
                format!(", reason {:?}", meta.reason)
            },
            if meta.emergency {
                " [EMERGENCY OVERRIDE]"
            } else {
                ""
            }
        ),
        None => String::new(),
    };
    format!(
        "{}/{} {}: file {}, live {}{who}  ({place})",
        entry.namespace,
        entry.environment,
        entry.key,
        show(&entry.file_value),
        show(&entry.live_value)
    )
}

#[allow(clippy::too_many_arguments)]
async fn declare_parent(
    api: &ApiClient,
    namespace: String,
    env: String,
    parent: Option<String>,
    clear: bool,
    author: &str,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    if parent.is_none() && !clear {
        let current = live(api, &namespace, &env, budget).await?;
        if json {
            println!("{}", serde_json::json!({"parent": current.parent}));
        } else {
            println!("{}", current.parent.as_deref().unwrap_or("(none)"));
        }
        return Ok(());
    }
    let outcome: ParentOutcome = api
        .call_retrying(
            endpoint::PARENT,
            &ParentRequest {
                namespace: namespace.clone(),
                environment: env.clone(),
                parent,
                author: author.to_owned(),
            },
            budget,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
    } else {
        match (&outcome.parent, outcome.changed) {
            (Some(p), true) => println!("{namespace}/{env} now inherits from {p}"),
            (None, true) => println!("{namespace}/{env} no longer inherits"),
            (_, false) => println!("{namespace}/{env}: no change"),
        }
    }
    Ok(())
}

/// Where one key's value comes from.
#[derive(Debug, serde::Serialize)]
struct Resolution {
    key: String,
    value: Option<Value>,
    /// `own`, `inherited`, `schema_default` or `unset`.
    source: &'static str,
    /// The environment that holds the value (own or a parent).
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<ValueRecord>,
}

/// `get --explain`: resolves keys the way a subscriber does (own value, the parent chain, the
/// schema default) and shows where each value comes from.
async fn explain(
    api: &ApiClient,
    namespace: &str,
    env: &str,
    key: Option<&str>,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let mut chain: Vec<(String, BTreeMap<String, ValueRecord>)> = Vec::new();
    let mut at = Some(env.to_owned());
    while let Some(current) = at.take() {
        if chain.iter().any(|(e, _)| *e == current) || chain.len() > crate::inherit::MAX_CHAIN {
            break;
        }
        let outcome = live(api, namespace, &current, budget).await?;
        at = outcome.parent.clone();
        chain.push((current, outcome.values.into_iter().collect()));
    }
    let schema = match api
        .call_retrying::<_, SchemaRecord>(
            endpoint::SCHEMA_GET,
            &SchemaGetRequest {
                namespace: namespace.to_owned(),
            },
            budget,
        )
        .await
    {
        Ok(record) => Some(record.schema),
        Err(err) if err.kind == mycosynth_subscriber::wire::ErrorKind::NotFound => None,
        Err(err) => return Err(err.into()),
    };
    let defaults: BTreeMap<String, Value> = schema
        .as_ref()
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .filter_map(|(k, p)| Some((k.clone(), p.get("default")?.clone())))
                .collect()
        })
        .unwrap_or_default();
    let keys: Vec<String> = match key {
        Some(key) => vec![key.to_owned()],
        None => {
            let mut all: std::collections::BTreeSet<String> = defaults.keys().cloned().collect();
            for (_, values) in &chain {
                all.extend(values.keys().cloned());
            }
            all.into_iter().collect()
        }
    };
    let resolve = |key: &str| {
        for (i, (environment, values)) in chain.iter().enumerate() {
            if let Some(record) = values.get(key) {
                return Resolution {
                    key: key.to_owned(),
                    value: Some(record.value.clone()),
                    source: if i == 0 { "own" } else { "inherited" },
                    environment: Some(environment.clone()),
                    record: Some(record.clone()),
                };
            }
        }
        let default = defaults.get(key).cloned();
        Resolution {
            key: key.to_owned(),
            source: if default.is_some() {
                "schema_default"
            } else {
                "unset"
            },
            value: default,
            environment: None,
            record: None,
        }
    };
    let resolved: Vec<Resolution> = keys.iter().map(|k| resolve(k)).collect();
    if json {
        println!("{}", serde_json::to_string(&resolved).unwrap_or_default());
    } else {
        let path: Vec<&str> = chain.iter().map(|(e, _)| e.as_str()).collect();
        println!(
            "{namespace}/{env}: resolution order {} -> schema default",
            path.join(" -> ")
        );
        for r in &resolved {
            let value = r
                .value
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_else(|| "(not set)".into());
            let origin = match (&r.environment, &r.record) {
                (Some(e), Some(rec)) => format!(
                    "{} {e} (v{} by {} at {})",
                    if r.source == "own" {
                        "set in"
                    } else {
                        "inherited from"
                    },
                    rec.version,
                    rec.meta.author,
                    rec.meta.time
                ),
                _ if r.source == "schema_default" => "schema default".to_owned(),
                _ => "no value and no default".to_owned(),
            };
            println!("{} = {value}  <- {origin}", r.key);
        }
    }
    match (key, resolved.first()) {
        (Some(key), Some(r)) if r.source == "unset" => Err(CliError::Local(
            exit::NOT_FOUND,
            format!(
                "key {key:?} is not set in {namespace}/{env}, its parents or the schema defaults"
            ),
        )),
        _ => Ok(()),
    }
}
