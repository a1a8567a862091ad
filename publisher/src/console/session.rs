//! Who is looking: sessions, sign-in, the CSRF check and the security headers.
//!
//! A person signs in with `mycosynth console login URL`, which opens `URL/login?token=...`: the
//! console checks the token is for it, keeps it server-side, and sets a cookie holding only a
//! random session id (`HttpOnly`, `SameSite=Strict`, `Secure` behind TLS). Every request of
//! that session then goes to the validator with the token, signed by the console's key, and the
//! validator decides and records it as the person's. In open mode (no console key) everyone is
//! "unauthenticated" and gets an anonymous session, for its CSRF token.
//!
//! Every state-changing request (any method but GET/HEAD) must carry the session's CSRF token,
//! in the `csrf` form field or the `X-CSRF-Token` header, and, when the browser sends one, an
//! `Origin` of this console. Tokens never reach the logs: the console logs no query strings.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use mycosynth_subscriber::wire::SessionToken;

use super::error::ConsoleError;
use super::pages::{render, Page, SigninPage};
use super::state::{random_hex, Console, Session};
use super::viewer::Viewer;

/// The session cookie's name.
pub const COOKIE: &str = "mycosynth_session";
/// Largest form a state-changing request may send.
const MAX_FORM_BYTES: usize = 1024 * 1024;

fn cookie_of<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(console: &Console, id: &str, max_age_s: i64) -> Option<HeaderValue> {
    let secure = if console.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

/// Middleware of every page: finds the session (open mode: makes one), refuses state-changing
/// requests without its CSRF token, and hands the page its [`Viewer`].
pub async fn admit(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let now = crate::clock::now_ms();
    let id = cookie_of(request.headers(), COOKIE).map(str::to_owned);
    let found = id
        .as_deref()
        .and_then(|id| console.sessions.get(id, now).map(|s| (id.to_owned(), s)));
    let (session, new_cookie) = match (found, console.public_key.is_some()) {
        (Some((_, session)), _) => (session, None),
        (None, true) => return Redirect::to("/signin").into_response(),
        (None, false) => {
            let session = Session {
                token: None,
                who: "unauthenticated".into(),
                csrf: random_hex(),
                expires_at_ms: now.saturating_add(24 * 3_600_000),
            };
            let id = console.sessions.insert(session.clone());
            (session, set_cookie(&console, &id, 24 * 3600))
        }
    };
    let request = match check_csrf(&session, request).await {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let viewer = Viewer {
        api: match &session.token {
            Some(token) => console.api.with_session(token),
            None => console.api.clone(),
        },
        who: session.who.clone(),
        csrf: session.csrf.clone(),
        open: session.token.is_none(),
    };
    let mut request = request;
    request.extensions_mut().insert(viewer);
    let mut response = next.run(request).await;
    if let Some(cookie) = new_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Passes GET and HEAD; any other request needs the session's CSRF token (header or form
/// field) and, if it says where it comes from, this console's origin.
async fn check_csrf(session: &Session, request: Request) -> Result<Request, ConsoleError> {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(request);
    }
    let headers = request.headers();
    if let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        let bare = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if bare != host {
            return Err(ConsoleError::Forbidden(format!(
                "request from origin {origin} refused: not this console"
            )));
        }
    }
    if let Some(token) = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) {
        return if token == session.csrf {
            Ok(request)
        } else {
            Err(csrf_refused())
        };
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|e| ConsoleError::BadRequest(format!("unreadable form: {e}")))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    match fields.iter().find(|(k, _)| k == "csrf") {
        Some((_, token)) if *token == session.csrf => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(csrf_refused()),
    }
}

fn csrf_refused() -> ConsoleError {
    ConsoleError::Forbidden("missing or wrong CSRF token: reload the page and try again".into())
}

/// `/login?token=...`: checks the token is for this console and still valid, starts a session
/// and goes to the overview (which drops the token from the address bar).
pub async fn login(
    State(console): State<Arc<Console>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let Some(audience) = &console.public_key else {
        return Ok(Redirect::to("/").into_response());
    };
    let raw = query
        .get("token")
        .ok_or_else(|| ConsoleError::BadRequest("the sign-in link holds no token".into()))?;
    let token = SessionToken::parse(raw).map_err(|e| ConsoleError::Unauthorized(e.to_string()))?;
    let claims = &token.claims;
    let now = crate::clock::now_ms();
    if claims.audience != *audience {
        return Err(ConsoleError::Unauthorized(
            "this sign-in link is for another console".into(),
        ));
    }
    if claims.expires_at_ms <= now {
        return Err(ConsoleError::Unauthorized(
            "this sign-in link has expired: run `mycosynth console login` again".into(),
        ));
    }
    let signed = nkeys::KeyPair::from_public_key(&claims.identity_key).is_ok_and(|key| {
        let payload = mycosynth_subscriber::wire::session_signing_payload(&token.claims_json);
        key.verify(&payload, &token.signature).is_ok()
    });
    if !signed {
        return Err(ConsoleError::Unauthorized(
            "the sign-in link's signature does not verify".into(),
        ));
    }
    let key = &claims.identity_key;
    let session = Session {
        token: Some(Arc::from(raw.as_str())),
        who: format!(
            "{}…{}",
            &key[..6.min(key.len())],
            &key[key.len().saturating_sub(4)..]
        ),
        csrf: random_hex(),
        expires_at_ms: claims.expires_at_ms,
    };
    let max_age = (claims.expires_at_ms - now) / 1000;
    let id = console.sessions.insert(session);
    tracing::info!(identity_key = %key, "console sign-in");
    let mut response = Redirect::to("/").into_response();
    if let Some(cookie) = set_cookie(&console, &id, max_age) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// `/signin`: how to sign in (signed mode, no session).
pub async fn signin(State(console): State<Arc<Console>>) -> Result<Response, ConsoleError> {
    render(&SigninPage {
        page: Page::bare("Sign in"),
        open: console.public_key.is_none(),
    })
}

/// `POST /logout`: ends the session.
pub async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    if let Some(id) = cookie_of(&headers, COOKIE) {
        console.sessions.remove(id);
    }
    let mut response = Redirect::to("/signin").into_response();
    if let Some(cookie) = set_cookie(&console, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The headers of every response: no inline script, no framing, no sniffing, no caching of
/// pages (they may hold config values).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
             object-src 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
