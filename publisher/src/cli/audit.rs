//! `mycosynth audit` and `mycosynth audit verify`: query the audit log and check its chain
//! through the validator's API (operators never read the audit stream directly).

use std::time::Duration;

use mycosynth_subscriber::wire::{
    endpoint, AuditOutcome, AuditRequest, AuditVerifyOutcome, AuditVerifyRequest,
};

use super::args::{AuditArgs, AuditCommand};
use super::exit::{self, CliError};
use crate::client::ApiClient;

/// Runs `audit` or `audit verify`.
pub async fn run(
    api: &ApiClient,
    args: AuditArgs,
    author: &str,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    match args.command {
        Some(AuditCommand::Verify) => verify(api, author, budget, json).await,
        None => {
            let request = AuditRequest {
                namespace: args.namespace,
                environment: args.env,
                identity: args.identity,
                since: args.since,
                limit: Some(args.limit),
                author: author.to_owned(),
            };
            let outcome: AuditOutcome =
                api.call_retrying(endpoint::AUDIT, &request, budget).await?;
            for record in &outcome.records {
                if json {
                    println!("{}", serde_json::to_string(record).unwrap_or_default());
                    continue;
                }
                let place = match (record.namespace.as_str(), record.environment.as_str()) {
                    ("", "") => "-".to_owned(),
                    (ns, "") => ns.to_owned(),
                    (ns, env) => format!("{ns}/{env}"),
                };
                let mut line = format!(
                    "#{} {} {} {} {} {}",
                    record.seq, record.time, record.identity, record.action, place, record.outcome
                );
                if let Some(version) = record.version {
                    line.push_str(&format!(" v{version}"));
                }
                if !record.keys.is_empty() {
                    line.push_str(&format!(" keys={}", record.keys.join(",")));
                    if record.more_keys > 0 {
                        line.push_str(&format!("(+{})", record.more_keys));
                    }
                }
                if !record.reason.is_empty() {
                    line.push_str(&format!(" — {}", record.reason));
                }
                println!("{line}");
            }
            Ok(())
        }
    }
}

async fn verify(
    api: &ApiClient,
    author: &str,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let request = AuditVerifyRequest {
        author: author.to_owned(),
    };
    let outcome: AuditVerifyOutcome = api
        .call_retrying(endpoint::AUDIT_VERIFY, &request, budget)
        .await?;
    if json {
        println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
    } else {
        for problem in &outcome.problems {
            println!("#{}: {}", problem.seq, problem.message);
        }
    }
    match outcome.problems.first() {
        None => {
            if !json {
                println!(
                    "audit chain intact: {} records, last sequence {}",
                    outcome.records, outcome.last_seq
                );
            }
            Ok(())
        }
        Some(first) => Err(CliError::Local(
            exit::AUDIT_BROKEN,
            format!(
                "audit chain broken at sequence {}: {} ({} problem(s))",
                first.seq,
                first.message,
                outcome.problems.len()
            ),
        )),
    }
}
