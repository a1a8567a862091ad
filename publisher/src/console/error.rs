//! Every way a console request fails, mapped to an HTTP status and an error page in one place.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use mycosynth_subscriber::wire::{ApiError, ErrorKind};

/// Why a console request failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The validator refused or could not answer.
    #[error("{}", .0.message)]
    Api(ApiError),
    /// The request is malformed (a form field, a query).
    #[error("{0}")]
    BadRequest(String),
    /// Not signed in, or the sign-in link is not valid.
    #[error("{0}")]
    Unauthorized(String),
    /// The CSRF check failed, or the request came from elsewhere.
    #[error("{0}")]
    Forbidden(String),
    /// No such page or asset.
    #[error("{0}")]
    NotFound(String),
    /// A template did not render.
    #[error("the page could not be rendered: {0}")]
    Render(String),
}

impl From<ApiError> for ConsoleError {
    fn from(err: ApiError) -> Self {
        ConsoleError::Api(err)
    }
}

impl ConsoleError {
    /// The HTTP status of this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Api(err) => match err.kind {
                ErrorKind::BadRequest | ErrorKind::Validation => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::Conflict => StatusCode::CONFLICT,
                ErrorKind::AccessDenied => StatusCode::FORBIDDEN,
                ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Internal => StatusCode::BAD_GATEWAY,
            },
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        tracing::info!(status = status.as_u16(), error = %self, "console request refused");
        let message = askama::filters::escape(self.to_string(), askama::filters::Html)
            .map(|m| m.to_string())
            .unwrap_or_default();
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error</title>\
             <link rel=\"stylesheet\" href=\"/assets/console.css\"></head><body><main>\
             <h1>{} {}</h1><p class=\"error\" role=\"alert\">{message}</p>\
             <p><a href=\"/\">Overview</a></p></main></body></html>",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        (status, Html(body)).into_response()
    }
}
