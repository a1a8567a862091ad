//! The edit page: one or several keys as one change set. Inputs follow the schema's types; a
//! preview (the validator's dry run) shows the diff before the commit; a validation error
//! appears next to its field with the validator's own message, and nothing is written; where
//! the environment requires approval, the commit opens a change request instead.

use std::collections::HashMap;

use askama::Template;
use axum::extract::Path;
use axum::response::Response;
use axum::{Extension, Form};
use mycosynth_subscriber::wire::{
    endpoint, ApiError, ChangeOutcome, ChangeRequest, ErrorKind, KeyChange,
};
use serde_json::Value;

use super::{field, render, DiffRow, Page, OPEN_AUTHOR};
use crate::client::explain::Explained;
use crate::console::error::ConsoleError;
use crate::console::form::{input_for, text_of, value_of, Input};
use crate::console::state::BUDGET;
use crate::console::viewer::Viewer;

/// One field of the form.
pub struct Field {
    /// The key.
    pub key: String,
    /// The input's kind.
    pub input: Input,
    /// What the input holds.
    pub text: String,
    /// The value is a sealed one (its input starts empty; empty keeps it).
    pub sealed: bool,
    /// The schema's description.
    pub description: String,
    /// The validator's message for this key, if it refused it.
    pub error: String,
    /// Its effective value when the form was made (None: not set).
    pub value: Option<Value>,
}

/// The edit page.
#[derive(Template)]
#[template(path = "console/edit.html")]
pub struct EditPage {
    /// The layout.
    pub page: Page,
    /// Namespace.
    pub ns: String,
    /// Environment.
    pub env: String,
    /// The version the form was made from (the commit expects it).
    pub version: u64,
    /// The fields.
    pub fields: Vec<Field>,
    /// The new key's name and value, as typed.
    pub new_key: String,
    /// The new key's value (JSON or text).
    pub new_value: String,
    /// The reason, as typed.
    pub reason: String,
    /// Marked as an emergency.
    pub emergency: bool,
    /// The preview's diff (empty: no preview yet).
    pub diff: Vec<DiffRow>,
    /// A preview was made (the commit button shows).
    pub previewed: bool,
    /// Refusals not about one field.
    pub errors: Vec<String>,
}

fn fields_of(explained: &Explained) -> Vec<Field> {
    explained
        .resolve_all()
        .into_iter()
        .map(|r| {
            let property = explained.property(&r.key);
            let sealed = r
                .value
                .as_ref()
                .is_some_and(mycosynth_subscriber::wire::is_sealed);
            Field {
                input: input_for(property),
                text: if sealed {
                    String::new()
                } else {
                    r.value.as_ref().map(text_of).unwrap_or_default()
                },
                sealed,
                description: property
                    .and_then(|p| p.get("description"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                error: String::new(),
                key: r.key,
                value: r.value,
            }
        })
        .collect()
}

fn blank(viewer: &Viewer, ns: String, env: String, explained: &Explained) -> EditPage {
    EditPage {
        page: Page::new(format!("Edit {ns}/{env}"), viewer),
        ns,
        env,
        version: explained.version,
        fields: fields_of(explained),
        new_key: String::new(),
        new_value: String::new(),
        reason: String::new(),
        emergency: false,
        diff: Vec::new(),
        previewed: false,
        errors: Vec::new(),
    }
}

/// `GET /ns/{ns}/{env}/edit`.
pub async fn page(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let explained = Explained::read(&viewer.api, &ns, &env, BUDGET).await?;
    render(&blank(&viewer, ns, env, &explained))
}

/// The change set the form asks for: every field whose value differs from the effective one
/// (a sealed field left empty keeps its value), and the new key if named.
fn changes_of(page: &mut EditPage, fields: &[(String, String)]) -> Vec<KeyChange> {
    // The last value of each `v:KEY` field (a toggle sends "false", then "true" when on).
    let submitted: HashMap<&str, &str> = fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("v:")?, v.as_str())))
        .collect();
    let mut changes = Vec::new();
    for f in &mut page.fields {
        // A key the form did not send is left as it is.
        let Some(text) = submitted.get(f.key.as_str()).copied() else {
            continue;
        };
        f.text = text.to_owned();
        let now = f.value.as_ref();
        // An empty input keeps a sealed value, and leaves an unset key unset.
        if text.is_empty() && (f.sealed || now.is_none()) {
            continue;
        }
        let value = value_of(&f.input, text);
        if now != Some(&value) {
            changes.push(KeyChange::set(f.key.as_str(), value));
        }
    }
    page.new_key = field(fields, "new_key").trim().to_owned();
    page.new_value = field(fields, "new_value").to_owned();
    if !page.new_key.is_empty() {
        changes.push(KeyChange::set(
            page.new_key.as_str(),
            value_of(&Input::Json, &page.new_value),
        ));
    }
    changes
}

/// `POST /ns/{ns}/{env}/edit` with `action=preview` (the dry run) or `action=commit`.
pub async fn submit(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let explained = Explained::read(&viewer.api, &ns, &env, BUDGET).await?;
    let mut page = blank(&viewer, ns.clone(), env.clone(), &explained);
    let changes = changes_of(&mut page, &fields);
    page.reason = field(&fields, "reason").to_owned();
    page.emergency = field(&fields, "emergency") == "on";
    let expected = field(&fields, "version").parse::<u64>().ok();
    let commit = field(&fields, "action") == "commit";
    if changes.is_empty() {
        page.errors
            .push("nothing to change: every value is as it is now".into());
        return render(&page);
    }
    let mut request = ChangeRequest::new(ns.as_str(), env.as_str(), changes, OPEN_AUTHOR);
    request.reason = page.reason.clone();
    request.emergency = page.emergency;
    request.expected_version = expected;
    request.dry_run = !commit;
    match viewer
        .api
        .call::<_, ChangeOutcome>(endpoint::CHANGE, &request)
        .await
    {
        Ok(outcome) if commit => {
            let notice = match &outcome.proposed {
                Some(p) => format!(
                    "Change request {} opened: it needs {} approval(s) before it applies.",
                    p.id, p.required
                ),
                None if outcome.committed => format!("Committed v{}.", outcome.version),
                None => "Nothing changed.".to_owned(),
            };
            super::keys::with_notice(&viewer, ns, env, notice).await
        }
        Ok(outcome) => {
            page.diff = DiffRow::of(&outcome.diff);
            page.previewed = true;
            render(&page)
        }
        Err(err) => refused(page, err),
    }
}

/// The page again, with the validator's refusal next to each field it names.
fn refused(mut page: EditPage, err: ApiError) -> Result<Response, ConsoleError> {
    let status = ConsoleError::Api(err.clone()).status();
    for v in &err.violations {
        match page.fields.iter_mut().find(|f| f.key == v.key) {
            Some(f) => f.error = v.message.clone(),
            None => page.errors.push(format!("{}: {}", v.key, v.message)),
        }
    }
    if err.violations.is_empty() || err.kind != ErrorKind::Validation {
        page.errors.push(err.message.clone());
    }
    let mut response = render(&page)?;
    *response.status_mut() = status;
    Ok(response)
}
