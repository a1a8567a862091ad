//! The console's routes: the pages behind the session middleware, the sign-in routes, the key
//! document `console login` reads, and the vendored assets.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mycosynth_subscriber::wire::{ConsoleInfo, CONSOLE_INFO_PATH};

use super::error::ConsoleError;
use super::state::Console;

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    let pages = Router::new()
        .route("/", get(super::pages::overview::page))
        .route("/search", get(super::pages::overview::search))
        .route("/ns/{ns}/{env}", get(super::pages::keys::page))
        .route("/ns/{ns}/{env}/reveal", post(super::pages::keys::reveal))
        .route(
            "/ns/{ns}/{env}/edit",
            get(super::pages::edit::page).post(super::pages::edit::submit),
        )
        .route("/ns/{ns}/{env}/history", get(super::pages::history::page))
        .route("/ns/{ns}/{env}/diff", get(super::pages::history::diff))
        .route(
            "/ns/{ns}/{env}/rollback",
            get(super::pages::history::confirm).post(super::pages::history::rollback),
        )
        .route("/ns/{ns}/{env}/fleet", get(super::pages::fleet::page))
        .route("/ns/{ns}/{env}/impact", get(super::pages::impact::page))
        .route(
            "/ns/{ns}/{env}/fleet/events",
            get(super::pages::fleet::events),
        )
        .route("/compare/{ns}", get(super::pages::compare::page))
        .route("/compare/{ns}/copy", post(super::pages::compare::copy))
        .route("/requests", get(super::pages::requests::page))
        .route(
            "/requests/{id}/approve",
            post(super::pages::requests::approve),
        )
        .route(
            "/requests/{id}/reject",
            post(super::pages::requests::reject),
        )
        .route("/requests/{id}/apply", post(super::pages::requests::apply))
        .route("/audit", get(super::pages::audit::page))
        .route("/logout", post(super::session::logout))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            super::session::admit,
        ));
    Router::new()
        .route("/login", get(super::session::login))
        .route("/signin", get(super::session::signin))
        .route(CONSOLE_INFO_PATH, get(info))
        .route("/assets/{file}", get(asset))
        .merge(pages)
        .layer(axum::middleware::from_fn(super::session::security_headers))
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
