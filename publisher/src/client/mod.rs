//! The client of the validator's API: one request, one typed reply or an [`ApiError`] whose
//! kind the caller matches on.

pub mod explain;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use mycosynth_subscriber::wire::{
    api_subject, direct_subject, ApiError, ErrorKind, Reply, MAX_REQUEST_BYTES,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Talks to whichever validator instance answers first.
#[derive(Clone, Debug)]
pub struct ApiClient {
    client: async_nats::Client,
    timeout: Duration,
    /// Signs every request when set (validators in signed mode refuse unsigned ones).
    signer: Option<Signer>,
    /// Sends changes and rollbacks to the instance that owns their namespace, when set.
    router: Option<Arc<Router>>,
    /// A person's session token sent with every request (a console acting for them), when set.
    session: Option<Session>,
}

/// A session token: never printed (`Debug` shows only that there is one).
#[derive(Clone)]
struct Session(Arc<str>);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(..)")
    }
}

/// The validator instances a long-lived client has discovered; the discovery task ends when the
/// last clone of the client goes (its stop sender with it).
struct Router {
    instances: Arc<crate::validator::affinity::Affinity>,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Router({} instances)", self.instances.peers())
    }
}

/// An identity's key pair, used to sign requests.
#[derive(Clone)]
struct Signer(nkeys::KeyPair);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.0.public_key())
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError {
        kind,
        message: message.into(),
        violations: Vec::new(),
        current_version: None,
    }
}

impl ApiClient {
    /// Connects to NATS without credentials (open mode).
    pub async fn connect(urls: &str, timeout: Duration) -> Result<ApiClient, ApiError> {
        ApiClient::connect_with(urls, timeout, &mycosynth_subscriber::Credentials::default()).await
    }

    /// Connects with `credentials`; with an nkey, every request is signed with it.
    pub async fn connect_with(
        urls: &str,
        timeout: Duration,
        credentials: &mycosynth_subscriber::Credentials,
    ) -> Result<ApiClient, ApiError> {
        let client = crate::connect_with(urls, "mycosynth-cli", credentials)
            .await
            .map_err(|e| {
                error(
                    ErrorKind::Unavailable,
                    format!("cannot connect to NATS at {urls}: {e}"),
                )
            })?;
        Ok(ApiClient {
            client,
            timeout,
            signer: credentials.key_pair().map(Signer),
            router: None,
            session: None,
        })
    }

    /// Wraps an existing connection.
    pub fn new(client: async_nats::Client, timeout: Duration) -> ApiClient {
        ApiClient {
            client,
            timeout,
            signer: None,
            router: None,
            session: None,
        }
    }

    /// For a long-lived client (a program, a load generator; not a one-shot CLI command): finds
    /// the validator instances (a service ping every second, on a task of the current tokio
    /// runtime) and sends each change and rollback straight to the instance that owns its
    /// namespace, as the instances themselves would forward it (`affinity.rs`). It saves that
    /// forward, one hop for most requests once there are several instances. Until the instances
    /// are known, and when an owner has gone, requests go to the queue group as usual.
    pub fn route_to_owners(mut self) -> ApiClient {
        let instances = Arc::new(crate::validator::affinity::Affinity::observer());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (discovering, client) = (Arc::clone(&instances), self.client.clone());
        tokio::spawn(async move { discovering.discover(client, stopped).await });
        self.router = Some(Arc::new(Router {
            instances,
            _stop: stop,
        }));
        self
    }

    /// How many validator instances routing knows now (0 without [`ApiClient::route_to_owners`]).
    pub fn instances_known(&self) -> usize {
        self.router
            .as_ref()
            .map_or(0, |router| router.instances.peers())
    }

    /// The instance a request to `endpoint` with `body` should go to, if routing knows one.
    fn owner_of(&self, endpoint: &str, body: &[u8]) -> Option<String> {
        let router = self.router.as_ref()?;
        if !crate::validator::affinity::routed(endpoint) || self.instances_known() == 0 {
            return None;
        }
        let envelope = crate::access::Envelope::read(body);
        router.instances.owner(
            envelope.namespace.as_deref()?,
            envelope.environment.as_deref()?,
        )
    }

    /// Signs every request with `key` from now on.
    pub fn signing_with(mut self, key: nkeys::KeyPair) -> ApiClient {
        self.signer = Some(Signer(key));
        self
    }

    /// A handle on the same connection that sends each request on behalf of the person whose
    /// session token is `token` (`console login`): signed with this client's key (the
    /// console's, the token's audience) and carrying the token, so the validator records the
    /// person, via the console. Cheap: one per request is fine.
    pub fn with_session(&self, token: &str) -> ApiClient {
        ApiClient {
            session: Some(Session(Arc::from(token))),
            ..self.clone()
        }
    }

    /// Like [`ApiClient::call`], but retries while the answer is "unavailable" (no validator
    /// reachable, no reply in time, store failing over) until `budget` has passed. Safe for
    /// reads, and for changes that carry an idempotency key: a retry of an applied change is
    /// answered with its first outcome, never applied twice.
    pub async fn call_retrying<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        endpoint: &str,
        request: &Req,
        budget: Duration,
    ) -> Result<Resp, ApiError> {
        let deadline = tokio::time::Instant::now() + budget;
        let backoff =
            mycosynth_subscriber::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let once = ApiClient {
                client: self.client.clone(),
                timeout: self.timeout.min(left.max(Duration::from_millis(100))),
                signer: self.signer.clone(),
                router: self.router.clone(),
                session: self.session.clone(),
            };
            match once.call(endpoint, request).await {
                Err(err)
                    if err.kind == ErrorKind::Unavailable
                        && tokio::time::Instant::now() < deadline =>
                {
                    attempt += 1;
                    tracing::debug!(attempt, error = %err.message, "validator unavailable; retrying");
                    let pause = backoff
                        .delay(attempt)
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// Sends `request` to `endpoint` and decodes the reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        endpoint: &str,
        request: &Req,
    ) -> Result<Resp, ApiError> {
        let body =
            serde_json::to_vec(request).map_err(|e| error(ErrorKind::BadRequest, e.to_string()))?;
        check_size(body.len(), self.client.server_info().max_payload)?;
        let body = bytes::Bytes::from(body);
        // Signed for the queue group's subject whichever instance it goes to: that is the
        // subject the validator checks the signature against.
        let subject = api_subject(endpoint);
        let headers = self.headers(&subject, &body)?;
        let send = |to: String| match &headers {
            Some(headers) => self
                .client
                .request_with_headers(to, headers.clone(), body.clone())
                .boxed(),
            None => self.client.request(to, body.clone()).boxed(),
        };
        let sent = match self.owner_of(endpoint, &body) {
            Some(owner) => {
                let direct = send(direct_subject(&owner, endpoint));
                async move {
                    match direct.await {
                        // The owner has gone: forget it and let the queue group answer.
                        Err(err) if err.kind() == async_nats::RequestErrorKind::NoResponders => {
                            if let Some(router) = &self.router {
                                router.instances.forget(&owner);
                            }
                            send(subject).await
                        }
                        other => other,
                    }
                }
                .boxed()
            }
            None => send(subject),
        };
        let reply = tokio::time::timeout(self.timeout, sent)
            .await
            .map_err(|_| {
                error(
                    ErrorKind::Unavailable,
                    format!("no reply from the validator within {:?}", self.timeout),
                )
            })?
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => error(
                    ErrorKind::Unavailable,
                    "no validator is serving (start one with `mycosynth serve`)",
                ),
                async_nats::RequestErrorKind::TimedOut => error(
                    ErrorKind::Unavailable,
                    "the validator did not answer in time",
                ),
                _ => error(ErrorKind::Unavailable, e.to_string()),
            })?;
        match serde_json::from_slice::<Reply<Resp>>(&reply.payload) {
            Ok(Reply::Ok(value)) => Ok(value),
            Ok(Reply::Error(err)) => Err(err),
            Err(e) => Err(error(
                ErrorKind::Internal,
                format!("unreadable reply from the validator: {e}"),
            )),
        }
    }
}

impl ApiClient {
    /// The signature headers of a request (none without a key); with a session token, signed
    /// for the session.
    fn headers(
        &self,
        subject: &str,
        body: &[u8],
    ) -> Result<Option<async_nats::HeaderMap>, ApiError> {
        let signed = match (&self.signer, &self.session) {
            (Some(Signer(key)), None) => crate::access::sign(key, subject, body),
            (Some(Signer(key)), Some(Session(token))) => {
                crate::access::sign_with_session(key, subject, body, token)
            }
            (None, Some(_)) => {
                return Err(error(
                    ErrorKind::AccessDenied,
                    "a request with a session token must be signed by the console's own key (connect with its nkey)",
                ))
            }
            (None, None) => return Ok(None),
        };
        signed.map(Some).map_err(|e| error(ErrorKind::Internal, e))
    }
}

/// Refuses, before sending, a request larger than the validator reads or the server carries.
fn check_size(len: usize, server_max_payload: usize) -> Result<(), ApiError> {
    // Headers and the subject travel in the same message: leave them room.
    let limit = MAX_REQUEST_BYTES.min(server_max_payload.saturating_sub(4096));
    if len > limit {
        return Err(error(
            ErrorKind::BadRequest,
            format!("request of {len} bytes is larger than the limit of {limit} bytes; send fewer or smaller values"),
        ));
    }
    Ok(())
}
