//! `mycosynth deploy DIR`: validates the config repository like `validate`, then sends one
//! atomic change set per (namespace, environment), parents before children, each recording
//! the repository's git commit.

use std::path::Path;
use std::time::Duration;

use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, ChangeRequest, ChangeSource, KeyChange, ParentOutcome, ParentRequest,
};

use super::args::RepoSelect;
use super::exit::{self, CliError};
use super::output;
use super::repository::{live, load_repo, selected};
use crate::client::ApiClient;
use crate::gitops::{check, repo};

/// How `deploy` writes.
pub struct DeployOptions {
    /// Validate and print the plan; write nothing.
    pub dry_run: bool,
    /// Also delete live keys the files do not name.
    pub prune: bool,
    /// The reason recorded (default: `deploy <commit>`).
    pub reason: String,
}

/// What deploying one file did.
struct Deployed {
    outcome: ChangeOutcome,
    /// The file declares another parent than the live one.
    parent_changed: bool,
    /// The live parent before.
    parent_before: Option<String>,
}

/// `deploy DIR`.
pub async fn deploy(
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
        let change = Change {
            reason: &reason,
            commit: commit.as_deref(),
            author,
        };
        let deployed = deploy_file(api, file, options, &change, budget).await?;
        let outcome = &deployed.outcome;
        if outcome.committed
            || (options.dry_run && !outcome.diff.is_empty())
            || deployed.parent_changed
        {
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
                "parent_changed": deployed.parent_changed,
                "git_commit": commit,
                "outcome": outcome,
            }));
        } else {
            print_deployed(file, &deployed, options.dry_run);
        }
    }
    if json {
        output::json(
            &serde_json::json!({"dry_run": options.dry_run, "git_commit": commit, "targets": report}),
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

/// Who deploys, why, from which commit.
struct Change<'a> {
    reason: &'a str,
    commit: Option<&'a str>,
    author: &'a str,
}

/// Declares the file's parent if it differs from the live one (not in a dry run), then sends
/// the file's values as one change set.
async fn deploy_file(
    api: &ApiClient,
    file: &repo::EnvFile,
    options: &DeployOptions,
    change: &Change<'_>,
    budget: Duration,
) -> Result<Deployed, CliError> {
    let current = live(api, &file.namespace, &file.environment, budget).await?;
    let parent_changed = current.parent != file.parent;
    if parent_changed && !options.dry_run {
        let request = ParentRequest {
            namespace: file.namespace.clone(),
            environment: file.environment.clone(),
            parent: file.parent.clone(),
            author: change.author.to_owned(),
        };
        let _: ParentOutcome = api
            .call_retrying(endpoint::PARENT, &request, budget)
            .await?;
    }
    let changes = file
        .values
        .iter()
        .map(|(k, v)| KeyChange::set(k.clone(), v.clone()))
        .collect();
    let request = ChangeRequest {
        reason: change.reason.to_owned(),
        source: ChangeSource::Apply,
        git_commit: change.commit.map(str::to_owned),
        dry_run: options.dry_run,
        replace: options.prune,
        request_id: Some(uuid::Uuid::now_v7().to_string()),
        ..ChangeRequest::new(
            file.namespace.clone(),
            file.environment.clone(),
            changes,
            change.author,
        )
    };
    let target = format!("{}/{}", file.namespace, file.environment);
    let outcome: ChangeOutcome = api
        .call_retrying(endpoint::CHANGE, &request, budget)
        .await
        .map_err(|mut err| {
            err.message = format!("{target}: {}", err.message);
            err
        })?;
    Ok(Deployed {
        outcome,
        parent_changed,
        parent_before: current.parent,
    })
}

fn print_deployed(file: &repo::EnvFile, deployed: &Deployed, dry_run: bool) {
    let outcome = &deployed.outcome;
    let state = if let Some(proposed) = &outcome.proposed {
        format!(
            "change request {} opened ({}, needs {} approval(s)); nothing committed",
            proposed.id,
            proposed.state.as_str(),
            proposed.required
        )
    } else if dry_run {
        if outcome.diff.is_empty() && !deployed.parent_changed {
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
    println!(
        "{}/{} ({}): {state}",
        file.namespace, file.environment, file.path
    );
    if deployed.parent_changed {
        println!(
            "~ _meta.parent: {} -> {}",
            deployed.parent_before.as_deref().unwrap_or("(none)"),
            file.parent.as_deref().unwrap_or("(none)")
        );
    }
    output::diff(&outcome.diff);
}
