//! The namespace/environment page: every key with its effective value, where it comes from
//! (own, inherited from ENV, schema default), its type and description from the schema, and
//! who set it, when and why. Sensitive values are redacted; `reveal` shows them to those the
//! validator lets (admins).

use askama::Template;
use axum::extract::Path;
use axum::response::Response;
use axum::Extension;
use mycosynth_subscriber::wire::{endpoint, GetOutcome, GetRequest};
use serde_json::Value;

use super::{render, shown, Page};
use crate::client::explain::{Explained, Resolution, Source};
use crate::console::error::ConsoleError;
use crate::console::state::BUDGET;
use crate::console::viewer::Viewer;

/// One key on the page.
pub struct KeyRow {
    /// The key.
    pub key: String,
    /// Its effective value as shown.
    pub value: String,
    /// `own`, `inherited from ENV`, `schema default` or `not set`.
    pub source: String,
    /// The schema's type (empty without one).
    pub kind: String,
    /// The schema's description.
    pub description: String,
    /// Who set it, when, why (empty for defaults).
    pub set_by: String,
}

/// The namespace/environment page.
#[derive(Template)]
#[template(path = "console/keys.html")]
pub struct KeysPage {
    /// The layout.
    pub page: Page,
    /// Namespace.
    pub ns: String,
    /// Environment.
    pub env: String,
    /// Its version.
    pub version: u64,
    /// Its parent chain, nearest first, after itself.
    pub parents: Vec<String>,
    /// The keys.
    pub rows: Vec<KeyRow>,
    /// Values are shown in clear.
    pub revealed: bool,
}

fn row(explained: &Explained, r: &Resolution) -> KeyRow {
    let property = explained.property(&r.key);
    let text = |name: &str| {
        property
            .and_then(|p| p.get(name))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    KeyRow {
        key: r.key.clone(),
        value: shown(r.value.as_ref()),
        source: match (&r.source, &r.environment) {
            (Source::Inherited, Some(env)) => format!("inherited from {env}"),
            (Source::SchemaDefault, _) => "schema default".into(),
            (Source::Unset, _) => "not set".into(),
            _ => "own".into(),
        },
        kind: text("type"),
        description: text("description"),
        set_by: r.record.as_ref().map_or_else(String::new, |rec| {
            let why = if rec.meta.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", rec.meta.reason)
            };
            format!(
                "v{} by {} at {}{why}",
                rec.version, rec.meta.author, rec.meta.time
            )
        }),
    }
}

/// The page with a notice at the top (what the last action did).
pub async fn with_notice(
    viewer: &Viewer,
    ns: String,
    env: String,
    notice: String,
) -> Result<Response, ConsoleError> {
    keys_page(viewer, ns, env, None, Some(notice)).await
}

async fn keys_page(
    viewer: &Viewer,
    ns: String,
    env: String,
    clear: Option<GetOutcome>,
    notice: Option<String>,
) -> Result<Response, ConsoleError> {
    let explained = Explained::read(&viewer.api, &ns, &env, BUDGET).await?;
    let mut rows: Vec<KeyRow> = explained
        .resolve_all()
        .iter()
        .map(|r| row(&explained, r))
        .collect();
    let revealed = clear.is_some();
    if let Some(clear) = clear {
        for (key, record) in clear.values {
            if let Some(row) = rows.iter_mut().find(|r| r.key == key) {
                row.value = match &record.value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
            }
        }
    }
    render(&KeysPage {
        page: Page::new(format!("{ns}/{env}"), viewer).with_notice(notice),
        version: explained.version,
        parents: explained
            .chain
            .iter()
            .skip(1)
            .map(|(e, _)| e.clone())
            .collect(),
        ns,
        env,
        rows,
        revealed,
    })
}

/// `GET /ns/{ns}/{env}`.
pub async fn page(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    keys_page(&viewer, ns, env, None, None).await
}

/// `POST /ns/{ns}/{env}/reveal`: the same page with the environment's own sensitive values in
/// clear, if the validator lets this person see them (it records that they did).
pub async fn reveal(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let request = GetRequest {
        namespace: ns.clone(),
        environment: env.clone(),
        key: None,
    };
    let clear: GetOutcome = viewer.api.call(endpoint::REVEAL, &request).await?;
    keys_page(&viewer, ns, env, Some(clear), None).await
}
