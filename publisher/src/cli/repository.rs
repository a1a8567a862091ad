//! What the config-as-code commands share: reading and checking the repository, choosing its
//! files, reading the live state they are compared with.

use std::path::Path;
use std::time::Duration;

use mycosynth_subscriber::wire::{endpoint, GetOutcome, GetRequest};

use super::args::RepoSelect;
use super::exit::{self, CliError};
use crate::client::ApiClient;
use crate::gitops::{check, repo};

/// The repository at `dir`, refused (every broken rule printed) unless it passes the checks.
pub fn load_repo(dir: &Path) -> Result<repo::ConfigRepo, CliError> {
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

/// One line per broken rule on stderr (JSON lines with `--json`).
pub fn print_findings(findings: &[repo::Finding], json: bool) {
    for finding in findings {
        if json {
            eprintln!("{}", serde_json::to_string(finding).unwrap_or_default());
        } else {
            eprintln!("mycosynth: validation failed: {finding}");
        }
    }
}

/// The files `select` names.
pub fn selected<'a>(files: Vec<&'a repo::EnvFile>, select: &RepoSelect) -> Vec<&'a repo::EnvFile> {
    files
        .into_iter()
        .filter(|f| select.namespace.as_ref().is_none_or(|n| *n == f.namespace))
        .filter(|f| select.env.as_ref().is_none_or(|e| *e == f.environment))
        .collect()
}

/// The live values of `namespace`/`env`.
pub async fn live(
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
