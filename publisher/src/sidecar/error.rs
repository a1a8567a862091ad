//! The one place where a sidecar failure becomes an HTTP status and a JSON body: the runtime
//! API's shape (`kind`, `message`, and the `key` and `rule` when there is one) or OFREP's
//! (`errorCode`, `errorDetails`, and the flag's `key`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mycosynth_subscriber::wire::NameError;
use serde::Serialize;

use super::view::to_bytes;

/// Why the sidecar refused or could not answer a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SidecarError {
    /// The request names a namespace/environment this sidecar does not serve.
    #[error("this sidecar serves {served}, not {asked}")]
    NotServed {
        /// `namespace/environment` asked for.
        asked: String,
        /// `namespace/environment` served.
        served: String,
    },
    /// The key has no value (not set, not inherited, no schema default).
    #[error("config key {key:?} is not set and has no default")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A name in the path breaks the naming rules.
    #[error("{0}")]
    BadName(NameError),
    /// The path cannot be read (bad percent-encoding, not UTF-8).
    #[error("{0}")]
    BadPath(String),
    /// The body is not what the endpoint takes (malformed JSON, not an object, wrong type).
    #[error("{0}")]
    BadBody(String),
    /// The body is not `application/json`.
    #[error("the body must be application/json, not {0:?}")]
    ContentType(String),
    /// The OFREP evaluation context is not an object.
    #[error("{0}")]
    InvalidContext(String),
    /// The body is larger than the limit.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The `Host` header names a host this sidecar does not answer for (DNS rebinding).
    #[error("host {0:?} is not one this sidecar answers for (see --allow-host)")]
    HostRefused(String),
    /// No snapshot yet: the subscriber is still connecting.
    #[error("no config loaded yet: the sidecar is still connecting to NATS")]
    Starting,
    /// No such endpoint.
    #[error("no endpoint {0}")]
    NoRoute(String),
    /// The endpoint exists, not with this method.
    #[error("method not allowed")]
    Method,
}

impl SidecarError {
    /// The HTTP status of each failure.
    pub fn status(&self) -> StatusCode {
        match self {
            SidecarError::NotServed { .. }
            | SidecarError::UnknownKey { .. }
            | SidecarError::NoRoute(_) => StatusCode::NOT_FOUND,
            SidecarError::BadName(_)
            | SidecarError::BadPath(_)
            | SidecarError::BadBody(_)
            | SidecarError::ContentType(_)
            | SidecarError::InvalidContext(_) => StatusCode::BAD_REQUEST,
            SidecarError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            SidecarError::HostRefused(_) => StatusCode::MISDIRECTED_REQUEST,
            SidecarError::Starting => StatusCode::SERVICE_UNAVAILABLE,
            SidecarError::Method => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The runtime API's `kind`.
    fn kind(&self) -> &'static str {
        match self {
            SidecarError::NotServed { .. }
            | SidecarError::UnknownKey { .. }
            | SidecarError::NoRoute(_) => "not_found",
            SidecarError::BadName(_) => "validation",
            SidecarError::BadPath(_)
            | SidecarError::BadBody(_)
            | SidecarError::ContentType(_)
            | SidecarError::InvalidContext(_)
            | SidecarError::TooLarge(_)
            | SidecarError::Method => "bad_request",
            SidecarError::HostRefused(_) => "access_denied",
            SidecarError::Starting => "unavailable",
        }
    }

    /// OFREP's `errorCode`.
    fn error_code(&self) -> &'static str {
        match self {
            SidecarError::UnknownKey { .. } => "FLAG_NOT_FOUND",
            SidecarError::BadBody(_) | SidecarError::ContentType(_) => "PARSE_ERROR",
            SidecarError::InvalidContext(_) => "INVALID_CONTEXT",
            _ => "GENERAL",
        }
    }

    fn key(&self) -> Option<&str> {
        match self {
            SidecarError::UnknownKey { key } => Some(key),
            SidecarError::BadName(err) => Some(name_of(err)),
            _ => None,
        }
    }

    fn finish(&self, body: bytes::Bytes) -> Response {
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if *self == SidecarError::Starting {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        metrics::counter!("mycosynth_sidecar_errors_total", "kind" => self.kind()).increment(1);
        response
    }
}

fn name_of(err: &NameError) -> &str {
    match err {
        NameError::Empty { name, .. }
        | NameError::TooLong { name, .. }
        | NameError::BadCharacter { name, .. }
        | NameError::Reserved { name, .. } => name,
    }
}

#[derive(Serialize)]
struct RuntimeBody<'a> {
    kind: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'static str>,
}

/// Runtime API failures: `{"kind": "not_found", "message": "...", "key": "..."}`.
impl IntoResponse for SidecarError {
    fn into_response(self) -> Response {
        let body = RuntimeBody {
            kind: self.kind(),
            message: self.to_string(),
            key: self.key(),
            rule: match &self {
                SidecarError::BadName(err) => Some(err.rule()),
                _ => None,
            },
        };
        self.finish(to_bytes(&body))
    }
}

/// A failure of an OFREP endpoint, with the flag it was about (single evaluations).
#[derive(Debug)]
pub struct OfrepError {
    /// What went wrong.
    pub error: SidecarError,
    /// The flag key of a single evaluation.
    pub key: Option<String>,
}

impl From<SidecarError> for OfrepError {
    fn from(error: SidecarError) -> Self {
        OfrepError { error, key: None }
    }
}

#[derive(Serialize)]
struct OfrepBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(rename = "errorCode")]
    error_code: &'static str,
    #[serde(rename = "errorDetails")]
    error_details: String,
}

/// OFREP failures: `{"key": "...", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "..."}`.
impl IntoResponse for OfrepError {
    fn into_response(self) -> Response {
        let body = OfrepBody {
            key: self.key.as_deref().or(self.error.key()),
            error_code: self.error.error_code(),
            error_details: self.error.to_string(),
        };
        self.error.finish(to_bytes(&body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::ConfigKey;

    #[test]
    fn every_failure_has_its_status_and_ofrep_code() {
        let bad_key = SidecarError::BadName(ConfigKey::new("a b").unwrap_err());
        assert_eq!(bad_key.status(), StatusCode::BAD_REQUEST);
        assert_eq!(bad_key.key(), Some("a b"));
        let unknown = SidecarError::UnknownKey { key: "x".into() };
        assert_eq!(
            (unknown.status(), unknown.error_code()),
            (StatusCode::NOT_FOUND, "FLAG_NOT_FOUND")
        );
        assert_eq!(
            SidecarError::BadBody("x".into()).error_code(),
            "PARSE_ERROR"
        );
        assert_eq!(
            SidecarError::TooLarge(10).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            SidecarError::Starting.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
