//! OpenFeature Remote Evaluation Protocol (OFREP 0.3): every config key is a flag with one
//! static value, so OpenFeature's own providers (Python, Go, JavaScript, Java, .NET) read
//! Mycosynth without a client written here. The evaluation context is accepted and not used:
//! a sidecar serves one namespace/environment, the same to every caller (`reason: STATIC`);
//! the `variant` is the revision the value belongs to.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use mycosynth_subscriber::wire::ConfigKey;
use serde_json::Value;

use super::error::OfrepError;
use super::runtime::path;
use super::view::{to_bytes, FlagBody, Revision};
use super::{json, rendered_reply, Sidecar, SidecarError};

/// `POST /ofrep/v1/evaluate/flags/{key}`: one flag; 404 `FLAG_NOT_FOUND` for a key without a
/// value.
pub async fn single(
    State(sidecar): State<Arc<Sidecar>>,
    key: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OfrepError> {
    let key = path(key)?;
    let with_key = |error: SidecarError| OfrepError {
        error,
        key: Some(key.clone()),
    };
    evaluation_request(&sidecar, &headers, body).map_err(with_key)?;
    ConfigKey::new(key.as_str())
        .map_err(SidecarError::BadName)
        .map_err(with_key)?;
    let subscriber = sidecar.subscriber().map_err(with_key)?;
    let revision = Revision::of(subscriber);
    let body = subscriber.read_raw(&key, |found| {
        found.map(|r| to_bytes(&FlagBody::new(&key, r.value, r.source, &revision)))
    });
    match body {
        Some(body) => Ok(json(StatusCode::OK, body, Some(&revision))),
        None => Err(with_key(SidecarError::UnknownKey { key: key.clone() })),
    }
}

/// `POST /ofrep/v1/evaluate/flags`: every flag, with an `ETag` (304 when `If-None-Match`
/// names it) and the change stream in `eventStreams`. The `flagConfigEtag` and
/// `flagConfigLastModified` query parameters an event-triggered re-fetch carries need no
/// handling: answers come from memory, which is already current.
pub async fn bulk(
    State(sidecar): State<Arc<Sidecar>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OfrepError> {
    evaluation_request(&sidecar, &headers, body)?;
    Ok(rendered_reply(&sidecar, &headers, |rendered| {
        &rendered.bulk
    })?)
}

/// Checks an evaluation request: a JSON object of at most the body limit whose `context`, if
/// any, is an object. (OFREP requires `context`; OpenFeature's Python provider sends `{}`
/// when the caller gave none, so it is optional here.)
fn evaluation_request(
    sidecar: &Sidecar,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), SidecarError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => SidecarError::TooLarge(sidecar.max_body),
        _ => SidecarError::BadBody(rejection.body_text()),
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(SidecarError::ContentType(content_type));
    }
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| SidecarError::BadBody(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = request else {
        return Err(SidecarError::BadBody(
            "the body must be a JSON object".into(),
        ));
    };
    match fields.get("context") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(SidecarError::InvalidContext(
            "\"context\" must be an object".into(),
        )),
    }
}
