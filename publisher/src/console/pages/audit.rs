//! The audit log, filtered by namespace, environment, identity and time, with the chain's
//! verification status.

use std::collections::HashMap;

use askama::Template;
use axum::extract::Query;
use axum::response::Response;
use axum::Extension;
use mycosynth_subscriber::wire::{
    endpoint, AuditOutcome, AuditRecord, AuditRequest, AuditVerifyOutcome, AuditVerifyRequest,
};

use super::{render, Page, OPEN_AUTHOR};
use crate::console::error::ConsoleError;
use crate::console::viewer::Viewer;

/// Most records one page shows (the newest that match).
const LIMIT: usize = 500;

/// The audit page.
#[derive(Template)]
#[template(path = "console/audit.html")]
pub struct AuditPage {
    /// The layout.
    pub page: Page,
    /// The filters as asked.
    pub namespace: String,
    /// Environment filter.
    pub environment: String,
    /// Identity filter.
    pub identity: String,
    /// From this instant (RFC 3339).
    pub since: String,
    /// The records, newest first.
    pub records: Vec<AuditRecord>,
    /// The chain's status in one line.
    pub chain: String,
    /// The chain is intact.
    pub intact: bool,
}

/// `GET /audit?namespace=&environment=&identity=&since=`.
pub async fn page(
    Extension(viewer): Extension<Viewer>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let get = |name: &str| {
        query
            .get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let some = |v: &String| (!v.is_empty()).then(|| v.clone());
    let (namespace, environment, identity, since) = (
        get("namespace"),
        get("environment"),
        get("identity"),
        get("since"),
    );
    let request = AuditRequest {
        namespace: some(&namespace),
        environment: some(&environment),
        identity: some(&identity),
        since: some(&since),
        limit: Some(LIMIT),
        author: OPEN_AUTHOR.into(),
    };
    let outcome: AuditOutcome = viewer.api.call(endpoint::AUDIT, &request).await?;
    let verify = AuditVerifyRequest {
        author: OPEN_AUTHOR.into(),
    };
    let (chain, intact) = match viewer
        .api
        .call::<_, AuditVerifyOutcome>(endpoint::AUDIT_VERIFY, &verify)
        .await
    {
        Ok(v) if v.problems.is_empty() => (format!("intact: {} records verified", v.records), true),
        Ok(v) => (
            format!(
                "BROKEN: {} problem(s), first at record {}: {}",
                v.problems.len(),
                v.problems[0].seq,
                v.problems[0].message
            ),
            false,
        ),
        Err(err) => (format!("not verified: {}", err.message), false),
    };
    let mut records = outcome.records;
    records.reverse();
    render(&AuditPage {
        page: Page::new("Audit log", &viewer),
        namespace,
        environment,
        identity,
        since,
        records,
        chain,
        intact,
    })
}
