//! Two environments of a namespace side by side (effective values), with an "only
//! differences" toggle; copying selected values from one to the other makes one change set.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::{Extension, Form};
use mycosynth_subscriber::wire::{
    endpoint, is_sealed, ChangeOutcome, ChangeRequest, KeyChange, NamespacesOutcome,
    NamespacesRequest,
};

use serde_json::Value;

use super::{field, render, shown, Page, OPEN_AUTHOR};
use crate::client::explain::Explained;
use crate::console::error::ConsoleError;
use crate::console::state::BUDGET;
use crate::console::viewer::Viewer;

/// One key of the comparison.
pub struct CompareRow {
    /// The key.
    pub key: String,
    /// Its effective value in `a`.
    pub a: String,
    /// In `b`.
    pub b: String,
    /// They differ.
    pub differs: bool,
}

/// The compare page.
#[derive(Template)]
#[template(path = "console/compare.html")]
pub struct ComparePage {
    /// The layout.
    pub page: Page,
    /// Namespace.
    pub ns: String,
    /// The namespace's environments.
    pub envs: Vec<String>,
    /// Left.
    pub a: String,
    /// Right.
    pub b: String,
    /// Only the keys that differ.
    pub only: bool,
    /// The rows.
    pub rows: Vec<CompareRow>,
}

/// `GET /compare/{ns}?a=ENV&b=ENV&only=1`.
pub async fn page(
    Extension(viewer): Extension<Viewer>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let list: NamespacesOutcome = viewer
        .api
        .call_retrying(endpoint::NAMESPACES, &NamespacesRequest {}, BUDGET)
        .await?;
    let envs: Vec<String> = list
        .environments
        .into_iter()
        .filter(|e| e.namespace == ns)
        .map(|e| e.environment)
        .collect();
    let pick = |name: &str, index: usize| {
        query
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| envs.get(index).cloned())
            .unwrap_or_default()
    };
    let (a, b) = (pick("a", 0), pick("b", 1));
    let only = query.get("only").is_some_and(|v| v == "1");
    let mut rows = Vec::new();
    if !a.is_empty() && !b.is_empty() {
        let left = Explained::read(&viewer.api, &ns, &a, BUDGET).await?;
        let right = Explained::read(&viewer.api, &ns, &b, BUDGET).await?;
        let values = |side: &Explained| -> BTreeMap<String, Option<Value>> {
            side.resolve_all()
                .into_iter()
                .map(|r| (r.key, r.value))
                .collect()
        };
        let (l, r) = (values(&left), values(&right));
        let keys: BTreeSet<&String> = l.keys().chain(r.keys()).collect();
        for key in keys {
            let (va, vb) = (l.get(key).cloned().flatten(), r.get(key).cloned().flatten());
            let differs = va != vb;
            if only && !differs {
                continue;
            }
            rows.push(CompareRow {
                key: key.clone(),
                a: shown(va.as_ref()),
                b: shown(vb.as_ref()),
                differs,
            });
        }
    }
    render(&ComparePage {
        page: Page::new(format!("Compare {ns}"), &viewer),
        ns,
        envs,
        a,
        b,
        only,
        rows,
    })
}

/// `POST /compare/{ns}/copy` (`from`, `to`, one `key` per selected key): the selected keys'
/// effective values of `from` set in `to`, as one change set.
pub async fn copy(
    Extension(viewer): Extension<Viewer>,
    Path(ns): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let (from, to) = (
        field(&fields, "from").to_owned(),
        field(&fields, "to").to_owned(),
    );
    let keys: Vec<&str> = fields
        .iter()
        .filter(|(k, _)| k == "key")
        .map(|(_, v)| v.as_str())
        .collect();
    if keys.is_empty() {
        return Err(ConsoleError::BadRequest("select the keys to copy".into()));
    }
    let source = Explained::read(&viewer.api, &ns, &from, BUDGET).await?;
    let mut changes = Vec::new();
    for key in keys {
        match source.resolve(key).value {
            Some(v) if is_sealed(&v) => {
                return Err(ConsoleError::BadRequest(format!(
                    "{key}: a sensitive value is sealed for {from} and cannot be copied; set it in {to} itself"
                )))
            }
            Some(v) => changes.push(KeyChange::set(key, v)),
            None => changes.push(KeyChange::delete(key)),
        }
    }
    let mut request = ChangeRequest::new(ns.as_str(), to.as_str(), changes, OPEN_AUTHOR);
    request.reason = format!("copied from {from} (console)");
    let outcome: ChangeOutcome = viewer.api.call(endpoint::CHANGE, &request).await?;
    let notice = match &outcome.proposed {
        Some(p) => format!("Change request {} opened in {to}.", p.id),
        None if outcome.committed => format!("Copied into {to}: now v{}.", outcome.version),
        None => "Nothing changed: the values were already the same.".to_owned(),
    };
    super::keys::with_notice(&viewer, ns, to, notice).await
}
