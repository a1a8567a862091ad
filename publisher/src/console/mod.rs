//! The web console (`mycosynth console --listen ADDR`): server-rendered pages over the
//! validator's API, like the CLI a client of it, with no write path of its own.
//!
//! - `session.rs`: who is signed in (a person's session token, kept server-side behind an
//!   `HttpOnly`, `SameSite=Strict` cookie), the CSRF check of every state-changing request, and
//!   the security headers (a Content-Security-Policy with no inline script).
//! - `pages/`: one file per page; each reads through the person's own [`ApiClient`] and renders
//!   an askama template from `publisher/templates/console/` (escaped by default).
//! - `form.rs`: form values to typed config values, as the schema types them.
//! - `error.rs`: every failure to one HTTP status and an error page, in one place.
//!
//! Pages work without JavaScript (plain links and forms); the vendored htmx (`assets/`) only
//! swaps the part of a page that changed, and keeps the fleet page live over SSE.

mod error;
mod form;
mod pages;
mod session;
mod state;
mod viewer;

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mycosynth_subscriber::wire::{ConsoleInfo, CONSOLE_INFO_PATH};

pub use error::ConsoleError;
pub use state::{Console, Sessions, BUDGET};
pub use viewer::Viewer;

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    let pages = Router::new()
        .route("/", get(pages::overview::page))
        .route("/search", get(pages::overview::search))
        .route("/ns/{ns}/{env}", get(pages::keys::page))
        .route("/ns/{ns}/{env}/reveal", post(pages::keys::reveal))
        .route(
            "/ns/{ns}/{env}/edit",
            get(pages::edit::page).post(pages::edit::submit),
        )
        .route("/ns/{ns}/{env}/history", get(pages::history::page))
        .route("/ns/{ns}/{env}/diff", get(pages::history::diff))
        .route(
            "/ns/{ns}/{env}/rollback",
            get(pages::history::confirm).post(pages::history::rollback),
        )
        .route("/ns/{ns}/{env}/fleet", get(pages::fleet::page))
        .route("/ns/{ns}/{env}/impact", get(pages::impact::page))
        .route("/ns/{ns}/{env}/fleet/events", get(pages::fleet::events))
        .route("/compare/{ns}", get(pages::compare::page))
        .route("/compare/{ns}/copy", post(pages::compare::copy))
        .route("/requests", get(pages::requests::page))
        .route("/requests/{id}/approve", post(pages::requests::approve))
        .route("/requests/{id}/reject", post(pages::requests::reject))
        .route("/requests/{id}/apply", post(pages::requests::apply))
        .route("/audit", get(pages::audit::page))
        .route("/logout", post(session::logout))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            session::admit,
        ));
    Router::new()
        .route("/login", get(session::login))
        .route("/signin", get(session::signin))
        .route(CONSOLE_INFO_PATH, get(info))
        .route("/assets/{file}", get(asset))
        .merge(pages)
        .layer(axum::middleware::from_fn(session::security_headers))
        .with_state(console)
}

/// Serves the console on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, console: Console) -> std::io::Result<()> {
    let app = router(Arc::new(console));
    axum::serve(listener, app).await
}

/// `/.well-known/mycosynth-console`: the key `console login` makes tokens for.
async fn info(
    axum::extract::State(console): axum::extract::State<Arc<Console>>,
) -> Result<Response, ConsoleError> {
    let public_key = console.public_key.clone().ok_or(ConsoleError::NotFound(
        "this console runs in open mode: it takes no sign-in".into(),
    ))?;
    let body = serde_json::to_string(&ConsoleInfo { public_key })
        .map_err(|e| ConsoleError::Render(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The vendored script and the style sheet, compiled into the binary.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "htmx.min.js" => (include_str!("assets/htmx-2.0.11.min.js"), "text/javascript"),
        "sse.min.js" => (
            include_str!("assets/htmx-ext-sse-2.2.4.min.js"),
            "text/javascript",
        ),
        "console.css" => (include_str!("assets/console.css"), "text/css"),
        _ => return ConsoleError::NotFound(format!("no asset {file:?}")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
