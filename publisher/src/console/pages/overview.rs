//! The overview: every namespace × environment the person may read, with its version, its
//! last change, the fleet's convergence and open change requests; and the search across keys
//! and values.

use std::collections::HashMap;

use askama::Template;
use axum::extract::Query;
use axum::response::Response;
use axum::Extension;
use futures::future::join_all;
use mycosynth_subscriber::wire::{
    endpoint, EnvironmentSummary, ListFilter, NamespacesOutcome, NamespacesRequest, ProposalList,
    RequestListRequest, StatusOutcome, StatusRequest,
};

use super::{render, shown, Page, OPEN_AUTHOR};
use crate::client::explain::live;
use crate::console::error::ConsoleError;
use crate::console::state::BUDGET;
use crate::console::viewer::Viewer;

/// One namespace × environment on the overview.
pub struct Row {
    /// Its summary.
    pub env: EnvironmentSummary,
    /// `held/live` instances holding the current version (empty: no instance reports).
    pub fleet: String,
    /// Open change requests.
    pub requests: usize,
}

/// One search hit.
pub struct Hit {
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// The key.
    pub key: String,
    /// Its value as shown.
    pub value: String,
}

/// The overview page.
#[derive(Template)]
#[template(path = "console/overview.html")]
pub struct OverviewPage {
    /// The layout.
    pub page: Page,
    /// Every namespace × environment.
    pub rows: Vec<Row>,
    /// The search asked for (empty: none).
    pub query: String,
    /// What it found.
    pub hits: Vec<Hit>,
}

async fn environments(viewer: &Viewer) -> Result<Vec<EnvironmentSummary>, ConsoleError> {
    let list: NamespacesOutcome = viewer
        .api
        .call_retrying(endpoint::NAMESPACES, &NamespacesRequest {}, BUDGET)
        .await?;
    Ok(list.environments)
}

/// `GET /`.
pub async fn page(Extension(viewer): Extension<Viewer>) -> Result<Response, ConsoleError> {
    let envs = environments(&viewer).await?;
    let pending: ProposalList = viewer
        .api
        .call(
            endpoint::REQUEST_LIST,
            &RequestListRequest {
                filter: ListFilter::Pending,
                author: OPEN_AUTHOR.into(),
                ..Default::default()
            },
        )
        .await?;
    let statuses = join_all(envs.iter().map(|e| {
        let request = StatusRequest {
            namespace: e.namespace.clone(),
            environment: e.environment.clone(),
        };
        let api = &viewer.api;
        async move {
            api.call::<_, StatusOutcome>(endpoint::STATUS, &request)
                .await
        }
    }))
    .await;
    let rows = envs
        .into_iter()
        .zip(statuses)
        .map(|(env, status)| Row {
            fleet: match status {
                Ok(s) if !s.instances.is_empty() => {
                    format!("{}/{}", s.holding_latest, s.instances.len())
                }
                _ => String::new(),
            },
            requests: pending
                .requests
                .iter()
                .filter(|r| r.namespace == env.namespace && r.environment == env.environment)
                .count(),
            env,
        })
        .collect();
    render(&OverviewPage {
        page: Page::new("Overview", &viewer),
        rows,
        query: String::new(),
        hits: Vec::new(),
    })
}

/// `GET /search?q=`: keys and values containing the text (case-insensitive), across every
/// namespace × environment the person may read. Sealed values are not searched.
pub async fn search(
    Extension(viewer): Extension<Viewer>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let asked = query
        .get("q")
        .map(|q| q.trim().to_owned())
        .unwrap_or_default();
    let needle = asked.to_lowercase();
    let envs = environments(&viewer).await?;
    let values = join_all(
        envs.iter()
            .map(|e| live(&viewer.api, &e.namespace, &e.environment, BUDGET)),
    )
    .await;
    let mut hits = Vec::new();
    for (env, outcome) in envs.iter().zip(values) {
        let Ok(outcome) = outcome else { continue };
        for (key, record) in &outcome.values {
            let value = shown(Some(&record.value));
            let found = key.to_lowercase().contains(&needle)
                || (value != mycosynth_subscriber::wire::REDACTED
                    && value.to_lowercase().contains(&needle));
            if !needle.is_empty() && found {
                hits.push(Hit {
                    namespace: env.namespace.clone(),
                    environment: env.environment.clone(),
                    key: key.clone(),
                    value,
                });
            }
        }
    }
    render(&OverviewPage {
        page: Page::new(format!("Search: {asked}"), &viewer),
        rows: Vec::new(),
        query: asked,
        hits,
    })
}
