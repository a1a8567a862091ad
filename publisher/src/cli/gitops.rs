//! The config-as-code commands: `validate`, `drift`, `parent` and `schema docs`; `deploy` and
//! `get --explain` have modules of their own. Repository reading and comparisons live in [`crate::gitops`]; this module
//! sends the requests and prints.

use std::path::Path;
use std::time::Duration;

use mycosynth_subscriber::wire::{
    endpoint, ParentOutcome, ParentRequest, SchemaGetRequest, SchemaRecord, ValueRecord,
};
use serde_json::Value;

use super::args::{Command, RepoSelect, SchemaCommand};
use super::exit::{self, CliError};
use super::repository::{live, load_repo, print_findings, selected};
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
            let options = super::deploy::DeployOptions {
                dry_run,
                prune,
                reason,
            };
            super::deploy::deploy(api, &dir, &select, &options, author, budget, json).await
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
        } => super::explain::explain(api, &namespace, &env, key.as_deref(), budget, json).await,
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
                crate::validate::schema_docs::markdown(&namespace, &record.schema)
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
    print!(
        "{}",
        crate::validate::schema_docs::markdown(namespace, &schema)
    );
    Ok(())
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
