//! The sidecar: one [`Subscriber`] of one namespace/environment, served over HTTP to
//! applications in any language, from memory only.
//!
//! - [`runtime`]: `GET /v1/config/{ns}/{env}` (all effective values) and `.../{key}` (one value
//!   and where it came from), with `ETag`/`If-None-Match`.
//! - [`watch`]: `GET /v1/watch/{ns}/{env}`, Server-Sent Events: one event per applied change
//!   set, heartbeats, `Last-Event-ID` resume; every client has its own bounded queue and a
//!   client that falls behind is dropped (and counted), never waited for.
//! - [`ofrep`]: the OpenFeature Remote Evaluation Protocol, so that OpenFeature's own providers
//!   read Mycosynth keys as static flags.
//! - `/health` (503 until the first snapshot) and `/metrics` (Prometheus).
//! - [`layers`]: the `Host` check, body limit, security headers and request metrics around
//!   every route; [`error`]: the one mapping of failures to statuses and JSON bodies.
//!
//! The sidecar is a client of the subscriber crate and nothing else: it has the subscriber's
//! last-known-good cache, inheritance, schema defaults, client-side validation and fleet
//! receipts, and what it may read is what its NATS credentials may read.

pub mod error;
pub mod layers;
pub mod ofrep;
pub mod runtime;
pub mod view;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use mycosynth_subscriber::wire::{Environment, NameError, Namespace};
use mycosynth_subscriber::{Credentials, Origin, StartPolicy, Subscriber};
use tokio::sync::watch as signal;

pub use error::SidecarError;
use view::{Rendered, Revision};

/// How to run a sidecar. Data-shaped: public fields; [`SidecarConfig::new`] fills the
/// defaults.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The namespace served (the only one).
    pub namespace: String,
    /// The environment served (the only one).
    pub environment: String,
    /// Where to listen. Default `127.0.0.1:8686`.
    pub listen: SocketAddr,
    /// NATS server URL(s), comma-separated.
    pub nats_url: String,
    /// How to authenticate to NATS; the server's permissions for them decide what may be read.
    pub credentials: Credentials,
    /// The subscriber's last-known-good cache: with one, the sidecar serves at once (offline
    /// start) and catches up when NATS answers.
    pub cache_dir: Option<PathBuf>,
    /// Give up (and exit) when no snapshot could be loaded in this time; `None`: keep trying
    /// (with backoff) for as long as it runs, answering 503 meanwhile.
    pub start_timeout: Option<Duration>,
    /// Time between heartbeats on the change stream. Default 15 s.
    pub heartbeat: Duration,
    /// Frames a change-stream client may have queued; one more and it is dropped. Default 256.
    pub client_queue: usize,
    /// Largest request body, bytes. Default 64 KiB.
    pub max_body: usize,
    /// Hosts (the `Host` header, port aside) answered besides the listen address; on a
    /// loopback address only `localhost` and loopback IPs are answered otherwise, so a web
    /// page cannot read config through DNS rebinding. `*`: any host.
    pub allowed_hosts: Vec<String>,
    /// This instance's id in the fleet view (default: the subscriber's).
    pub instance_id: Option<String>,
}

impl SidecarConfig {
    /// The defaults for `namespace`/`environment` on a local NATS.
    pub fn new(namespace: impl Into<String>, environment: impl Into<String>) -> SidecarConfig {
        SidecarConfig {
            namespace: namespace.into(),
            environment: environment.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8686)),
            nats_url: "nats://127.0.0.1:4222".into(),
            credentials: Credentials::default(),
            cache_dir: None,
            start_timeout: None,
            heartbeat: Duration::from_secs(15),
            client_queue: 256,
            max_body: 64 * 1024,
            allowed_hosts: Vec::new(),
            instance_id: None,
        }
    }
}

/// Why a sidecar stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The namespace or environment breaks the naming rules.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        message: String,
    },
    /// The metrics recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
    /// No snapshot within `start_timeout`.
    #[error("no config loaded: {0}")]
    Subscriber(#[from] mycosynth_subscriber::Error),
}

/// The state every handler shares.
pub struct Sidecar {
    namespace: Namespace,
    environment: Environment,
    /// Set once, when the first snapshot is served; until then every config endpoint is 503.
    subscriber: OnceLock<Subscriber>,
    /// The bodies of the newest revision served, rendered once for every reader of it.
    rendered: ArcSwapOption<Rendered>,
    /// Registers change-stream clients with the broadcaster.
    fanout: watch::Fanout,
    /// `/metrics`.
    metrics: PrometheusHandle,
    /// `/v1/watch/{ns}/{env}?format=ofrep`, named by OFREP bulk responses.
    ofrep_events: String,
    /// The body limit, for the message of a refused body.
    max_body: usize,
}

impl Sidecar {
    /// The subscriber, or 503 before the first snapshot.
    pub(crate) fn subscriber(&self) -> Result<&Subscriber, SidecarError> {
        self.subscriber.get().ok_or(SidecarError::Starting)
    }

    /// Refuses a path naming another namespace/environment than the one served.
    pub(crate) fn check_served(
        &self,
        namespace: &str,
        environment: &str,
    ) -> Result<(), SidecarError> {
        if namespace == self.namespace.as_str() && environment == self.environment.as_str() {
            return Ok(());
        }
        Err(SidecarError::NotServed {
            asked: format!("{namespace}/{environment}"),
            served: format!("{}/{}", self.namespace, self.environment),
        })
    }

    fn names(&self) -> (&str, &str) {
        (self.namespace.as_str(), self.environment.as_str())
    }

    /// The bodies of the revision served now, rendered at most once per revision.
    pub(crate) fn rendered(&self) -> Result<Arc<Rendered>, SidecarError> {
        let subscriber = self.subscriber()?;
        let revision = Revision::of(subscriber);
        if let Some(current) = self.rendered.load_full() {
            if current.revision == revision {
                return Ok(current);
            }
        }
        // The values and the revision are read apart; read again if a change came between,
        // so a body never carries another revision's values (bounded: the newest wins).
        let mut revision = revision;
        let mut effective = subscriber.effective();
        for _ in 0..3 {
            let after = Revision::of(subscriber);
            if after == revision {
                break;
            }
            revision = after;
            effective = subscriber.effective();
        }
        let rendered = Arc::new(Rendered::new(
            self.names(),
            revision,
            &effective,
            &self.ofrep_events,
        ));
        self.rendered.store(Some(Arc::clone(&rendered)));
        Ok(rendered)
    }
}

/// Runs a sidecar until `shutdown` resolves: binds `config.listen` (calling `ready` with the
/// bound address), answers 503 until the subscriber has its first snapshot, then serves.
pub async fn run(
    config: SidecarConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), StartError> {
    let namespace = Namespace::new(config.namespace.clone())?;
    let environment = Environment::new(config.environment.clone())?;
    let metrics = layers::install_metrics().map_err(StartError::Metrics)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen {
            addr: config.listen,
            message: e.to_string(),
        })?;
    let bound = listener.local_addr().unwrap_or(config.listen);
    let (stop, stopped) = signal::channel(false);
    let (fanout, broadcaster) = watch::Fanout::new(config.client_queue, config.heartbeat);
    let sidecar = Arc::new(Sidecar {
        ofrep_events: format!("/v1/watch/{namespace}/{environment}?format=ofrep"),
        namespace,
        environment,
        subscriber: OnceLock::new(),
        rendered: ArcSwapOption::empty(),
        fanout,
        metrics,
        max_body: config.max_body,
    });
    let app = router(Arc::clone(&sidecar), layers::Limits::new(&config, bound));
    let listener = listener.tap_io(|tcp| {
        // Events are small writes that must leave at once, not wait for an ACK (Nagle).
        let _ = tcp.set_nodelay(true);
    });
    let mut server_stop = stopped.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = server_stop.wait_for(|s| *s).await;
    });
    tracing::info!(listen = %bound, namespace = %sidecar.namespace, environment = %sidecar.environment, "sidecar listening");
    ready(bound);
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    let start = start_subscriber(&config, Arc::clone(&sidecar));
    let mut shutdown = std::pin::pin!(shutdown);
    let subscriber = tokio::select! {
        started = start => started?,
        served = &mut server => return served.map_err(|e| StartError::Listen { addr: bound, message: e.to_string() }),
        () = &mut shutdown => return Ok(()),
    };
    let broadcast =
        tokio::spawn(broadcaster.run(Arc::clone(&sidecar), subscriber, stopped.clone()));
    tokio::spawn(upkeep(sidecar.metrics.clone(), stopped));
    tokio::select! {
        served = &mut server => served.map_err(|e| StartError::Listen { addr: bound, message: e.to_string() })?,
        () = &mut shutdown => {
            // Ends every change stream (graceful shutdown waits for open responses).
            stop.send_replace(true);
            let _ = broadcast.await;
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
    Ok(())
}

/// Folds recorded histogram samples into their buckets every few seconds: the recorder keeps
/// every sample until then, which without a scrape would grow with every request.
async fn upkeep(metrics: PrometheusHandle, mut stopped: signal::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = every.tick() => metrics.run_upkeep(),
        }
    }
}

/// Connects the one subscriber and publishes it to the handlers.
async fn start_subscriber(
    config: &SidecarConfig,
    sidecar: Arc<Sidecar>,
) -> Result<Subscriber, StartError> {
    // Instant + Duration overflows on huge values; a century is "for as long as it runs".
    let wait = config
        .start_timeout
        .unwrap_or(Duration::from_secs(100 * 365 * 86_400));
    let mut builder = Subscriber::builder(config.namespace.clone(), config.environment.clone())
        .nats_url(config.nats_url.clone())
        .credentials(config.credentials.clone())
        .client_name("mycosynth-sidecar")
        .validate_against_schema(true)
        .start_policy(StartPolicy::WaitFor(wait));
    if let Some(dir) = &config.cache_dir {
        builder = builder.cache_dir(dir);
    }
    if let Some(id) = &config.instance_id {
        builder = builder.instance_id(id);
    }
    let subscriber = builder.connect().await?;
    let status = subscriber.status();
    tracing::info!(version = subscriber.version(), origin = ?status.origin, "sidecar serving");
    let _ = sidecar.subscriber.set(subscriber.clone());
    Ok(subscriber)
}

/// The paths served (the metrics' `route` label).
const ROUTES: [&str; 8] = [
    "/v1/config",
    "/v1/config/{namespace}/{environment}",
    "/v1/config/{namespace}/{environment}/{key}",
    "/v1/watch/{namespace}/{environment}",
    "/ofrep/v1/evaluate/flags",
    "/ofrep/v1/evaluate/flags/{key}",
    "/health",
    "/metrics",
];

/// Every route, inside the layers.
pub fn router(sidecar: Arc<Sidecar>, limits: layers::Limits) -> Router {
    let [served, all, key, watch, bulk, single, health_path, metrics_path] = ROUTES;
    let routes = Router::new()
        .route(served, get(runtime::served))
        .route(all, get(runtime::all))
        .route(key, get(runtime::key))
        .route(watch, get(watch::stream))
        .route(bulk, post(ofrep::bulk))
        .route(single, post(ofrep::single))
        .route(health_path, get(health))
        .route(metrics_path, get(render_metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(|| async { SidecarError::Method })
        .with_state(sidecar);
    layers::wrap(routes, &ROUTES, limits)
}

async fn no_route(uri: axum::http::Uri) -> SidecarError {
    SidecarError::NoRoute(uri.path().chars().take(200).collect())
}

async fn render_metrics(State(sidecar): State<Arc<Sidecar>>) -> String {
    sidecar.metrics.render()
}

/// 200 with where the served snapshot came from and how stale it is; 503 before the first.
async fn health(State(sidecar): State<Arc<Sidecar>>) -> Response {
    let (namespace, environment) = sidecar.names();
    let Some(subscriber) = sidecar.subscriber.get() else {
        let body = serde_json::json!({
            "status": "starting", "namespace": namespace, "environment": environment,
        });
        return json(StatusCode::SERVICE_UNAVAILABLE, view::to_bytes(&body), None);
    };
    let status = subscriber.status();
    let origin = match status.origin {
        Origin::Nats => "nats",
        Origin::Cache => "cache",
        Origin::Defaults => "defaults",
    };
    let since = |t: Option<SystemTime>| {
        t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_micros() as u64)
    };
    let body = serde_json::json!({
        "status": "serving",
        "namespace": namespace,
        "environment": environment,
        "version": status.version,
        "parents": subscriber.parents(),
        "origin": origin,
        "connected": status.connected,
        "staleness_ms": status.staleness.as_millis() as u64,
        "last_update_us": since(status.last_update),
        "server": status.server,
        "change_stream_clients": sidecar.fanout.clients(),
    });
    json(StatusCode::OK, view::to_bytes(&body), None)
}

/// A JSON response, with an `ETag` when it is of a revision.
pub(crate) fn json(status: StatusCode, body: bytes::Bytes, etag: Option<&Revision>) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(etag) = etag.and_then(|r| HeaderValue::try_from(r.etag()).ok()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// 304 for a request whose `If-None-Match` names `revision`.
pub(crate) fn not_modified(headers: &HeaderMap, revision: &Revision) -> Option<Response> {
    let tags = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    revision.matches(tags).then(|| {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(etag) = HeaderValue::try_from(revision.etag()) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    })
}

/// A body of the revision served now (`pick` chooses it from the rendering), or 304 when
/// `If-None-Match` names that revision.
pub(crate) fn rendered_reply(
    sidecar: &Sidecar,
    headers: &HeaderMap,
    pick: fn(&Rendered) -> &bytes::Bytes,
) -> Result<Response, SidecarError> {
    let subscriber = sidecar.subscriber()?;
    if let Some(unchanged) = not_modified(headers, &Revision::of(subscriber)) {
        return Ok(unchanged);
    }
    let rendered = sidecar.rendered()?;
    Ok(json(
        StatusCode::OK,
        pick(&rendered).clone(),
        Some(&rendered.revision),
    ))
}
