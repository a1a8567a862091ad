//! The auth callout (`mycosynth auth serve`): nats-server asks it, on `$SYS.REQ.USER.AUTH`, who
//! each new connection is (NATS ADR-26), and it answers with a short-lived user JWT carrying
//! the subject permissions of that identity's kind, the same ones the static `users.conf`
//! grants ([`IdentityKind::permissions`]). Several instances share the requests (queue group
//! [`CALLOUT_QUEUE_GROUP`]).
//!
//! - [`config`]: the config file; [`decide`]: the backends tried in order ([`tokens`]: static
//!   hashed tokens, [`oidc`]: JWT/OIDC with a JWKS, [`identities`]: the nkeys of
//!   `identities.txt`, also the source of `users.conf`).
//! - [`nats_jwt`]: the JWTs of the exchange.
//!
//! Fail safe: a request it cannot read, or no callout running at all, means the server refuses
//! the connection; connections already open are not asked again. A user JWT expires no later
//! than the credential it came from, nor than `max_lifetime_secs` after it was issued; the
//! server then disconnects the client, which must present a valid credential again. Every
//! decision is counted (`mycosynth_callout_decisions_total{outcome, backend, kind}`) and logged
//! with the identity and the reason, never with the credential.

pub mod config;
pub mod decide;
pub mod identities;
pub mod nats_jwt;
pub mod oidc;
pub mod reloading;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use mycosynth_subscriber::wire::{
    IdentityKind, AUTH_CALLOUT_SUBJECT, AUTH_CALLOUT_XKEY_HEADER, CALLOUT_QUEUE_GROUP,
};

pub use config::{CalloutConfig, ConfigError};
use decide::{Grant, Refusal};
use nats_jwt::AuthRequest;

/// Requests answered at the same time by one instance.
const CONCURRENCY: usize = 64;

/// Why the callout stopped.
#[derive(Debug, thiserror::Error)]
pub enum CalloutError {
    /// It cannot subscribe to the callout subject.
    #[error("cannot subscribe to {AUTH_CALLOUT_SUBJECT}: {0}")]
    Subscribe(String),
    /// The subscription ended (the connection closed for good).
    #[error("the subscription to {AUTH_CALLOUT_SUBJECT} ended")]
    Ended,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Why a request got no answer at all (the server then refuses the connection on its timeout).
#[derive(Debug, thiserror::Error)]
pub enum Unanswerable {
    /// Encrypted, and no key to open it, or it does not open.
    #[error("cannot open the request: {0}")]
    Sealed(String),
    /// Not a valid request of a server.
    #[error("not a valid authorization request: {0}")]
    Request(#[from] nats_jwt::JwtError),
}

impl CalloutConfig {
    /// The answer to one request: its payload, and the server's curve key when the request is
    /// encrypted (header `Nats-Server-Xkey`). The decision is logged and counted here.
    pub async fn answer(
        &self,
        payload: &[u8],
        server_xkey: Option<&str>,
    ) -> Result<Vec<u8>, Unanswerable> {
        let started = Instant::now();
        let sealed_by = match (server_xkey, &self.xkey) {
            (Some(key), Some(own)) => {
                let server = nkeys::XKey::from_public_key(key)
                    .map_err(|e| Unanswerable::Sealed(e.to_string()))?;
                Some((server, own))
            }
            (Some(_), None) => {
                return Err(Unanswerable::Sealed(
                    "the server encrypts but no xkey_seed_file is configured".into(),
                ))
            }
            (None, _) => None,
        };
        let opened;
        let text = match &sealed_by {
            Some((server, own)) => {
                opened = own
                    .open(payload, server)
                    .map_err(|e| Unanswerable::Sealed(e.to_string()))?;
                &opened[..]
            }
            None => payload,
        };
        let now = now();
        let token = std::str::from_utf8(text)
            .map_err(|_| Unanswerable::Sealed("the request is not text".into()))?;
        let request = nats_jwt::decode_request(token.trim(), now)?;
        let decision = decide::decide(&self.backends, &request).await;
        let outcome = decision.and_then(|grant| self.issue(&request, grant, now));
        let response = match &outcome {
            Ok(issued) => nats_jwt::response(&request, Ok(&issued.jwt), &self.issuer, now),
            Err(refusal) => nats_jwt::response(&request, Err(&refusal.reason), &self.issuer, now),
        }?;
        record(&request, &outcome, started);
        match &sealed_by {
            Some((server, own)) => own
                .seal(response.as_bytes(), server)
                .map_err(|e| Unanswerable::Sealed(e.to_string())),
            None => Ok(response.into_bytes()),
        }
    }

    /// The user JWT of an accepted connection.
    fn issue(&self, request: &AuthRequest, grant: Grant, now: u64) -> Result<Issued, Refusal> {
        let limit = (self.max_lifetime > 0).then(|| now + self.max_lifetime);
        let credential = (grant.expires > 0).then_some(grant.expires);
        let expires = match (limit, credential) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0),
        };
        let refuse = |reason: String| Refusal {
            reason,
            backend: grant.backend,
            identity: Some(grant.identity.clone()),
        };
        if expires != 0 && expires <= now {
            return Err(refuse("the credential has expired".into()));
        }
        let permissions = grant.kind.permissions(&grant.inbox_key);
        let jwt = nats_jwt::user_jwt(
            &request.user_nkey,
            &self.account,
            &grant.identity,
            permissions.as_ref(),
            expires,
            &self.issuer,
            now,
        )
        .map_err(|e| refuse(e.to_string()))?;
        Ok(Issued {
            jwt,
            expires,
            grant,
        })
    }
}

/// A user JWT issued.
struct Issued {
    grant: Grant,
    jwt: String,
    /// Its expiry (seconds since the epoch; 0: none).
    expires: u64,
}

fn kind_label(kind: &IdentityKind) -> &'static str {
    kind.name()
}

/// Counts and logs one decision: the identity, kind, backend and reason; never a credential.
fn record(request: &AuthRequest, outcome: &Result<Issued, Refusal>, started: Instant) {
    let client = &request.client_info;
    metrics::histogram!("mycosynth_callout_decision_seconds")
        .record(started.elapsed().as_secs_f64());
    match outcome {
        Ok(Issued { grant, expires, .. }) => {
            metrics::counter!("mycosynth_callout_decisions_total", "outcome" => "accepted", "backend" => grant.backend, "kind" => kind_label(&grant.kind)).increment(1);
            tracing::info!(
                identity = %grant.identity,
                kind = grant.kind.name(),
                namespace = grant.kind.namespace().map(|n| n.as_str()).unwrap_or(""),
                backend = grant.backend,
                expires,
                client_host = %client.host,
                client_name = %client.name,
                client_id = client.id,
                "connection accepted"
            );
        }
        Err(refusal) => {
            metrics::counter!("mycosynth_callout_decisions_total", "outcome" => "refused", "backend" => refusal.backend, "kind" => "").increment(1);
            tracing::warn!(
                identity = refusal.identity.as_deref().unwrap_or(""),
                backend = refusal.backend,
                reason = %refusal.reason,
                client_host = %client.host,
                client_name = %client.name,
                client_id = client.id,
                "connection refused"
            );
        }
    }
}

/// Answers authorization requests on `client` until `shutdown` resolves.
pub async fn run(
    config: Arc<CalloutConfig>,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CalloutError> {
    let requests = client
        .queue_subscribe(AUTH_CALLOUT_SUBJECT, CALLOUT_QUEUE_GROUP.into())
        .await
        .map_err(|e| CalloutError::Subscribe(e.to_string()))?;
    client
        .flush()
        .await
        .map_err(|e| CalloutError::Subscribe(e.to_string()))?;
    let work = requests.for_each_concurrent(CONCURRENCY, |message| {
        let (config, client) = (Arc::clone(&config), client.clone());
        async move {
            let Some(reply) = message.reply.clone() else {
                return;
            };
            let xkey = message
                .headers
                .as_ref()
                .and_then(|h| h.get(AUTH_CALLOUT_XKEY_HEADER))
                .map(|v| v.as_str().to_owned());
            match config.answer(&message.payload, xkey.as_deref()).await {
                Ok(answer) => {
                    if let Err(err) = client.publish(reply, answer.into()).await {
                        tracing::error!(error = %err, "cannot send the answer");
                    }
                }
                Err(err) => {
                    metrics::counter!("mycosynth_callout_decisions_total", "outcome" => "unanswerable", "backend" => "none", "kind" => "").increment(1);
                    tracing::error!(error = %err, "request not answered; the server refuses the connection");
                }
            }
        }
    });
    tokio::select! {
        _ = work => Err(CalloutError::Ended),
        _ = shutdown => Ok(()),
    }
}
