//! `mycosynth requests ...`: change requests (see the README's "Change requests").

use std::time::Duration;

use mycosynth_subscriber::wire::{
    endpoint, AmendRequest, ApproveRequest, KeyChange, ListFilter, ProposalList, ProposalOutcome,
    RejectRequest, RequestIdRequest, RequestListRequest,
};
use serde_json::Value;

use super::args::RequestsCommand;
use super::exit::CliError;
use super::output;
use super::requests::{read_config_file, validation};
use crate::client::ApiClient;

/// Runs a `requests` command as `author` (open mode records it; signed mode, the key).
pub async fn run(
    api: &ApiClient,
    command: RequestsCommand,
    author: &str,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let by_id = |id: String, reason: String| RequestIdRequest {
        id,
        author: author.to_owned(),
        reason,
    };
    let outcome: ProposalOutcome = match command {
        RequestsCommand::List { .. } => return list(api, command, author, budget, json).await,
        RequestsCommand::Show { id } => {
            call(
                api,
                endpoint::REQUEST_SHOW,
                &by_id(id, String::new()),
                budget,
            )
            .await?
        }
        RequestsCommand::Approve {
            id,
            content_hash,
            comment,
        } => approve(api, id, content_hash, comment, author, budget, json).await?,
        RequestsCommand::Reject { id, reason } => {
            let request = RejectRequest {
                id,
                reason,
                author: author.to_owned(),
            };
            call(api, endpoint::REQUEST_REJECT, &request, budget).await?
        }
        RequestsCommand::Cancel { id, reason } => {
            call(api, endpoint::REQUEST_CANCEL, &by_id(id, reason), budget).await?
        }
        RequestsCommand::Amend {
            id,
            set,
            delete,
            file,
            reason,
        } => {
            let changes = amended_changes(&set, &delete, file.as_deref())?;
            let request = AmendRequest {
                id,
                changes,
                reason,
                author: author.to_owned(),
            };
            call(api, endpoint::REQUEST_AMEND, &request, budget).await?
        }
        RequestsCommand::Rebase { id } => {
            call(
                api,
                endpoint::REQUEST_REBASE,
                &by_id(id, String::new()),
                budget,
            )
            .await?
        }
        RequestsCommand::Apply { id } => {
            call(
                api,
                endpoint::REQUEST_APPLY,
                &by_id(id, String::new()),
                budget,
            )
            .await?
        }
    };
    output::proposal(&outcome, json);
    Ok(())
}

async fn call<R: serde::Serialize>(
    api: &ApiClient,
    endpoint: &str,
    request: &R,
    budget: Duration,
) -> Result<ProposalOutcome, CliError> {
    Ok(api.call_retrying(endpoint, request, budget).await?)
}

/// Approves the content `content_hash`, or the content the request has now (printed first, so
/// the approver sees what the approval is bound to).
async fn approve(
    api: &ApiClient,
    id: String,
    content_hash: Option<String>,
    comment: String,
    author: &str,
    budget: Duration,
    json: bool,
) -> Result<ProposalOutcome, CliError> {
    let content_hash = match content_hash {
        Some(hash) => hash,
        None => {
            let show = RequestIdRequest {
                id: id.clone(),
                author: author.to_owned(),
                reason: String::new(),
            };
            let shown = call(api, endpoint::REQUEST_SHOW, &show, budget).await?;
            if !json {
                println!("approving this content ({}):", shown.request.content_hash);
                output::diff(&shown.request.diff);
            }
            shown.request.content_hash
        }
    };
    let request = ApproveRequest {
        id,
        content_hash,
        comment,
        author: author.to_owned(),
    };
    call(api, endpoint::REQUEST_APPROVE, &request, budget).await
}

async fn list(
    api: &ApiClient,
    command: RequestsCommand,
    author: &str,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let RequestsCommand::List {
        mine,
        to_approve,
        scheduled,
        review,
        all,
        namespace,
        env,
    } = command
    else {
        return Ok(());
    };
    let filter = match (mine, to_approve, scheduled, review, all) {
        (true, ..) => ListFilter::Mine,
        (_, true, ..) => ListFilter::ToApprove,
        (_, _, true, ..) => ListFilter::Scheduled,
        (_, _, _, true, _) => ListFilter::Review,
        (.., true) => ListFilter::All,
        _ => ListFilter::Pending,
    };
    let request = RequestListRequest {
        namespace,
        environment: env,
        filter,
        author: author.to_owned(),
    };
    let listed: ProposalList = api
        .call_retrying(endpoint::REQUEST_LIST, &request, budget)
        .await?;
    if json {
        output::json(&listed);
    } else {
        output::proposals(&listed.requests, filter == ListFilter::Scheduled);
    }
    Ok(())
}

/// The change set of `requests amend`: `--set KEY=JSON`, `--delete KEY`, and a file's keys.
fn amended_changes(
    set: &[String],
    delete: &[String],
    file: Option<&std::path::Path>,
) -> Result<Vec<KeyChange>, CliError> {
    let mut changes = Vec::new();
    if let Some(file) = file {
        changes.extend(
            read_config_file(file)?
                .into_iter()
                .map(|(key, value)| KeyChange::set(key, value)),
        );
    }
    for pair in set {
        let Some((key, text)) = pair.split_once('=') else {
            return Err(CliError::Api(validation(
                pair,
                "set",
                format!("--set {pair:?}: use KEY=JSON, e.g. database.pool_size=50"),
            )));
        };
        let value: Value = serde_json::from_str(text).map_err(|e| {
            CliError::Api(validation(
                key,
                "json",
                format!(
                    "key {key:?}: value is not valid JSON ({e}); quote strings, e.g. '\"text\"'"
                ),
            ))
        })?;
        changes.push(KeyChange::set(key, value));
    }
    changes.extend(delete.iter().map(|key| KeyChange {
        key: key.clone(),
        value: None,
    }));
    Ok(changes)
}
