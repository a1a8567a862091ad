//! History: every version with its author, reason, approvers, git commit and emergency mark;
//! the diff of any version against its predecessor or any other; and the rollback to a
//! version, after a confirmation that shows its diff (the validator's dry run).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::{Extension, Form};
use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, ChangeSetRecord, HistoryOutcome, HistoryRequest, RollbackRequest,
};

use super::{field, render, DiffRow, Page, OPEN_AUTHOR};
use crate::console::error::ConsoleError;
use crate::console::viewer::Viewer;
use crate::store::state_at;

/// The history page.
#[derive(Template)]
#[template(path = "console/history.html")]
pub struct HistoryPage {
    /// The layout.
    pub page: Page,
    /// Namespace.
    pub ns: String,
    /// Environment.
    pub env: String,
    /// The change sets, newest first.
    pub sets: Vec<ChangeSetRecord>,
}

/// A diff between two versions, or a rollback's confirmation.
#[derive(Template)]
#[template(path = "console/diff.html")]
pub struct DiffPage {
    /// The layout.
    pub page: Page,
    /// Namespace.
    pub ns: String,
    /// Environment.
    pub env: String,
    /// From this version.
    pub from: u64,
    /// To this one.
    pub to: u64,
    /// The rows.
    pub rows: Vec<DiffRow>,
    /// A rollback to `to` awaits confirmation (from is the current version).
    pub rollback: bool,
}

async fn history(
    viewer: &Viewer,
    ns: &str,
    env: &str,
) -> Result<Vec<ChangeSetRecord>, ConsoleError> {
    let request = HistoryRequest {
        namespace: ns.to_owned(),
        environment: env.to_owned(),
        key: None,
        limit: None,
    };
    let outcome: HistoryOutcome = viewer.api.call(endpoint::HISTORY, &request).await?;
    Ok(outcome.change_sets)
}

/// `GET /ns/{ns}/{env}/history`.
pub async fn page(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let sets = history(&viewer, &ns, &env).await?;
    render(&HistoryPage {
        page: Page::new(format!("History of {ns}/{env}"), &viewer),
        ns,
        env,
        sets,
    })
}

fn version_of(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ConsoleError> {
    query
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ConsoleError::BadRequest(format!("{name}={v:?}: not a version number"))
            })
        })
        .transpose()
}

/// `GET /ns/{ns}/{env}/diff?to=V[&from=W]`: version V against W (default: its predecessor).
pub async fn diff(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let to = version_of(&query, "to")?
        .ok_or_else(|| ConsoleError::BadRequest("diff needs to=VERSION".into()))?;
    let from = version_of(&query, "from")?.unwrap_or(to.saturating_sub(1));
    let mut sets = history(&viewer, &ns, &env).await?;
    sets.reverse();
    let at = |v: u64| {
        state_at(&sets, v).map_err(|missing| {
            ConsoleError::NotFound(format!(
                "version {missing} of {ns}/{env} is not in its history"
            ))
        })
    };
    let (_, diff) = crate::validate::difference(&at(from)?, &at(to)?);
    let rows = DiffRow::of(&diff);
    render(&DiffPage {
        page: Page::new(format!("{ns}/{env}: v{from} → v{to}"), &viewer),
        ns: ns.clone(),
        env: env.clone(),
        from,
        to,
        rows,
        rollback: false,
    })
}

fn rollback_request(ns: &str, env: &str, to: u64) -> RollbackRequest {
    RollbackRequest {
        namespace: ns.to_owned(),
        environment: env.to_owned(),
        to_version: to,
        expected_version: None,
        author: OPEN_AUTHOR.into(),
        reason: String::new(),
        dry_run: true,
        request_id: None,
        proposal: None,
    }
}

/// `GET /ns/{ns}/{env}/rollback?to=V`: what rolling back to V changes, and a button to do it.
pub async fn confirm(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let to = version_of(&query, "to")?
        .ok_or_else(|| ConsoleError::BadRequest("rollback needs to=VERSION".into()))?;
    let outcome: ChangeOutcome = viewer
        .api
        .call(endpoint::ROLLBACK, &rollback_request(&ns, &env, to))
        .await?;
    render(&DiffPage {
        page: Page::new(format!("Roll {ns}/{env} back to v{to}?"), &viewer),
        ns,
        env,
        from: outcome.version,
        to,
        rows: DiffRow::of(&outcome.diff),
        rollback: true,
    })
}

/// `POST /ns/{ns}/{env}/rollback` (`to`, `version` = the version confirmed against, `reason`).
pub async fn rollback(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let to = field(&fields, "to")
        .parse::<u64>()
        .map_err(|_| ConsoleError::BadRequest("rollback needs to=VERSION".into()))?;
    let mut request = rollback_request(&ns, &env, to);
    request.dry_run = false;
    request.expected_version = field(&fields, "version").parse().ok();
    request.reason = match field(&fields, "reason") {
        "" => format!("roll back to v{to} (console)"),
        reason => reason.to_owned(),
    };
    let outcome: ChangeOutcome = viewer.api.call(endpoint::ROLLBACK, &request).await?;
    let notice = match &outcome.proposed {
        Some(p) => format!("Change request {} opened to roll back to v{to}.", p.id),
        None if outcome.committed => format!("Rolled back to v{to}: now v{}.", outcome.version),
        None => format!("v{to} holds what is live now: nothing changed."),
    };
    super::keys::with_notice(&viewer, ns, env, notice).await
}
