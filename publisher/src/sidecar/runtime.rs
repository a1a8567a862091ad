//! The runtime API: what an application reads, translated from HTTP to subscriber reads.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mycosynth_subscriber::wire::{ConfigKey, Environment, Namespace};
use mycosynth_subscriber::ValueSource;

use super::view::{to_bytes, KeyBody, Revision};
use super::{json, not_modified, rendered_reply, Sidecar, SidecarError};

/// The path's parameters, or 400 for a path that cannot be read.
pub(crate) fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, SidecarError> {
    path.map(|Path(p)| p)
        .map_err(|e| SidecarError::BadPath(e.body_text()))
}

/// Checks the names of a `{namespace}/{environment}` path against the naming rules (400) and
/// against what is served (404).
pub(crate) fn check_names(
    sidecar: &Sidecar,
    namespace: &str,
    environment: &str,
) -> Result<(), SidecarError> {
    sidecar
        .check_served(namespace, environment)
        .map_err(|not_served| {
            // What is served has valid names; something else may break the rules (400, naming
            // the rule) or just be another namespace (404).
            let bad = Namespace::new(namespace)
                .and_then(|_| Environment::new(environment))
                .err();
            bad.map_or(not_served, SidecarError::BadName)
        })
}

/// `GET /v1/config`: what this sidecar serves and where (for clients that start with only the
/// sidecar's address).
pub async fn served(State(sidecar): State<Arc<Sidecar>>) -> Response {
    let (namespace, environment) = sidecar.names();
    let body = serde_json::json!({
        "namespace": namespace,
        "environment": environment,
        "config": format!("/v1/config/{namespace}/{environment}"),
        "watch": format!("/v1/watch/{namespace}/{environment}"),
        "ofrep": "/ofrep/v1/evaluate/flags",
    });
    json(StatusCode::OK, to_bytes(&body), None)
}

/// `GET /v1/config/{ns}/{env}`: every effective value and the version; 304 when
/// `If-None-Match` names the revision served.
pub async fn all(
    State(sidecar): State<Arc<Sidecar>>,
    names: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, SidecarError> {
    let (namespace, environment) = path(names)?;
    check_names(&sidecar, &namespace, &environment)?;
    rendered_reply(&sidecar, &headers, |rendered| &rendered.config)
}

/// `GET /v1/config/{ns}/{env}/{key}`: the value, where it came from, and the version; 404
/// naming a key that has no value.
pub async fn key(
    State(sidecar): State<Arc<Sidecar>>,
    names: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, SidecarError> {
    let (namespace, environment, key) = path(names)?;
    check_names(&sidecar, &namespace, &environment)?;
    ConfigKey::new(key.as_str()).map_err(SidecarError::BadName)?;
    let subscriber = sidecar.subscriber()?;
    let revision = Revision::of(subscriber);
    if let Some(unchanged) = not_modified(&headers, &revision) {
        return Ok(unchanged);
    }
    let body = subscriber.read_raw(&key, |found| {
        found.map(|r| {
            to_bytes(&KeyBody {
                key: &key,
                value: r.value,
                source: r.source.as_str(),
                inherited_from: (r.source == ValueSource::Inherited).then_some(r.environment),
                version: revision.own,
            })
        })
    });
    match body {
        Some(body) => Ok(json(StatusCode::OK, body, Some(&revision))),
        None => Err(SidecarError::UnknownKey { key }),
    }
}
