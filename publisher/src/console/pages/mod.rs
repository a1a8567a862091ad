//! The console's pages, one file each, and what they share: the layout's data ([`Page`]),
//! rendering ([`render`]) and small views of wire types.

pub mod audit;
pub mod compare;
pub mod edit;
pub mod fleet;
pub mod history;
pub mod impact;
pub mod keys;
pub mod overview;
pub mod requests;

use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use mycosynth_subscriber::wire::{is_sealed, DiffEntry, REDACTED};
use serde_json::Value;

use crate::console::error::ConsoleError;
use crate::console::viewer::Viewer;

/// What the layout of every page needs.
pub struct Page {
    /// The page's title.
    pub title: String,
    /// Who is signed in (empty on the sign-in page).
    pub who: String,
    /// The CSRF token of this session (empty on the sign-in page).
    pub csrf: String,
    /// Open mode: show the "unauthenticated" banner.
    pub open: bool,
    /// A notice to show at the top (what the last action did).
    pub notice: Option<String>,
}

impl Page {
    /// A page for `viewer`.
    pub fn new(title: impl Into<String>, viewer: &Viewer) -> Page {
        Page {
            title: title.into(),
            who: viewer.who.clone(),
            csrf: viewer.csrf.clone(),
            open: viewer.open,
            notice: None,
        }
    }

    /// A page outside any session (sign-in).
    pub fn bare(title: impl Into<String>) -> Page {
        Page {
            title: title.into(),
            who: String::new(),
            csrf: String::new(),
            open: false,
            notice: None,
        }
    }

    /// The same page with a notice.
    pub fn with_notice(mut self, notice: Option<String>) -> Page {
        self.notice = notice;
        self
    }
}

/// Renders a template as an HTML response.
pub fn render<T: Template>(template: &T) -> Result<Response, ConsoleError> {
    let html = template
        .render()
        .map_err(|e| ConsoleError::Render(e.to_string()))?;
    Ok(Html(html).into_response())
}

/// How to sign in.
#[derive(Template)]
#[template(path = "console/signin.html")]
pub struct SigninPage {
    /// The layout.
    pub page: Page,
    /// The console runs in open mode.
    pub open: bool,
}

/// A value as pages show it: sealed values redacted, strings bare, the rest as JSON.
pub fn shown(value: Option<&Value>) -> String {
    match value {
        None => String::new(),
        Some(v) if is_sealed(v) => REDACTED.to_owned(),
        Some(v) => crate::console::form::text_of(v),
    }
}

/// One row of a diff as pages show it.
pub struct DiffRow {
    /// The key.
    pub key: String,
    /// Before (empty: not set).
    pub old: String,
    /// After (empty: deleted).
    pub new: String,
    /// `added`, `removed` or `changed`.
    pub kind: &'static str,
}

impl DiffRow {
    /// The rows of a validator diff.
    pub fn of(diff: &[DiffEntry]) -> Vec<DiffRow> {
        diff.iter()
            .map(|d| DiffRow {
                key: d.key.clone(),
                old: shown(d.old.as_ref()),
                new: shown(d.new.as_ref()),
                kind: match (&d.old, &d.new) {
                    (None, _) => "added",
                    (_, None) => "removed",
                    _ => "changed",
                },
            })
            .collect()
    }
}

/// The author sent with requests: in signed mode the validator records the verified person
/// instead; in open mode it records this.
pub const OPEN_AUTHOR: &str = "console";

/// A form field's value, or empty.
pub fn field<'f>(fields: &'f [(String, String)], name: &str) -> &'f str {
    fields
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}
