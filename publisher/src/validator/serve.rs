//! Starting and stopping a validator instance: [`run`] opens the parts, registers every row of
//! the endpoint table with NATS's service API (so `nats micro ls/info/stats` see them), serves
//! them until shutdown, and drains.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::service::ServiceExt;
use futures::StreamExt;
use mycosynth_subscriber::wire::{self, api_subject, direct_subject};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::affinity::{self, Affinity};
use super::endpoints;
use super::http;
use super::instance::Validator;
use super::slots::{Slots, DEFAULT_CACHED_STATES};
use crate::access::limits::RateLimits;
use crate::access::vault::Vault;
use crate::access::{Access, SecurityConfig};
use crate::audit::Auditor;
use crate::fleet::{self, Fleet, FleetOptions};
use crate::store::{BucketOptions, Store, StoreError};

/// How the validator runs.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    /// NATS URL(s), comma-separated.
    pub nats_url: String,
    /// Where to serve `/metrics` and `/health` (None: no HTTP port).
    pub http_addr: Option<SocketAddr>,
    /// Refuse changes to namespaces without a schema.
    pub require_schema: bool,
    /// Replicas for buckets created by this validator (0: 3 on a cluster of 3 or more, else 1).
    pub replicas: usize,
    /// When instances of the fleet view count as stale, and when they are forgotten.
    pub fleet: FleetOptions,
    /// Authentication, authorization and the validator's own NATS credentials.
    pub security: SecurityConfig,
    /// Per-identity limit on change requests (None: unlimited), and its burst.
    pub rate_limit: Option<crate::access::limits::RateLimit>,
    /// Burst of the rate limit (None: the limit's count).
    pub rate_burst: Option<std::num::NonZeroU32>,
    /// JetStream domains of the site replicas whose lag this validator watches.
    pub sites: Vec<String>,
    /// How many namespace/environment states to keep cached (0: [`DEFAULT_CACHED_STATES`]).
    pub cached_states: usize,
}

/// Why the validator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// URL(s).
        url: String,
        /// What the client said.
        message: String,
    },
    /// The buckets could not be opened or created.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The service API or the HTTP port could not start.
    #[error("cannot start: {0}")]
    Start(String),
}

/// How long shutdown waits for in-flight requests and a final flush.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long a starting validator waits for the server to confirm its endpoints' subscriptions
/// before it says it is ready anyway.
const SUBSCRIBE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the validator until `shutdown` resolves. Calls `ready` with the HTTP address once
/// requests are being served.
pub async fn run(
    config: ValidatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Option<SocketAddr>),
) -> Result<(), ServeError> {
    let metrics = http::install_metrics().map_err(ServeError::Start)?;
    let client = crate::connect_with(
        &config.nats_url,
        "mycosynth-validator",
        &config.security.credentials,
    )
    .await
    .map_err(|message| ServeError::Connect {
        url: config.nats_url.clone(),
        message,
    })?;
    let service = client
        .service_builder()
        .description("Mycosynth validator: the only writer of config")
        .queue_group(wire::SERVICE_QUEUE_GROUP)
        .start(wire::SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(start)?;
    let validator = Arc::new(open(&config, &client, service.info().await.id).await?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let http_addr = match config.http_addr {
        Some(addr) => {
            let mut stop = stop_rx.clone();
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let bound = http::serve(addr, metrics, client.clone(), stopped)
                .await
                .map_err(|e| ServeError::Start(format!("http port {addr}: {e}")))?;
            Some(bound)
        }
        None => None,
    };
    let mut tasks = JoinSet::new();
    serve_endpoints(&validator, &service, &client, &stop_rx, &mut tasks).await?;
    if !config.sites.is_empty() {
        let sites = validator.sites.clone();
        tasks.spawn(sites.run(client.clone(), config.sites.clone(), stop_rx.clone()));
    }
    // The endpoints' subscriptions are written to the connection by its own task: until the
    // server has them, a request finds no responder. Ready means they are in (a flush is a
    // round trip after them); bounded, as with NATS gone a flush waits for the reconnect.
    if tokio::time::timeout(SUBSCRIBE_CONFIRM_TIMEOUT, client.flush())
        .await
        .map_or(true, |flushed| flushed.is_err())
    {
        tracing::warn!("the server has not confirmed the endpoints' subscriptions yet");
    }
    tracing::info!(nats = %config.nats_url, http = ?http_addr, subject = %api_subject("*"), instance = validator.affinity.own(), "validator serving");
    ready(http_addr);

    shutdown.await;
    tracing::info!("validator shutting down");
    stop_tx.send_replace(true);
    // Bounded: with NATS gone, unsubscribing and flushing would wait for a reconnect forever.
    let drain = async {
        while tasks.join_next().await.is_some() {}
        let _ = service.stop().await;
        let _ = client.flush().await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("gave up waiting for in-flight requests and NATS at shutdown");
    }
    Ok(())
}

fn start(err: impl std::fmt::Display) -> ServeError {
    ServeError::Start(err.to_string())
}

/// Opens the parts of an instance whose service id is `id`.
async fn open(
    config: &ValidatorConfig,
    client: &async_nats::Client,
    id: String,
) -> Result<Validator, ServeError> {
    let replicas = match config.replicas {
        // Auto: three replicas when the server is part of a cluster of three or more.
        0 if client.server_info().connect_urls.len() >= 3 => 3,
        0 => 1,
        n => n,
    };
    let store = open_store(client, BucketOptions { replicas }).await?;
    let access = Access::open(&store, &config.security, BucketOptions { replicas }).await?;
    let audit = Auditor::open(crate::audit::context(client), replicas)
        .await
        .map_err(start)?;
    let vault = Vault::open(&async_nats::jetstream::new(client.clone()), replicas).await?;
    Ok(Validator {
        client: client.clone(),
        affinity: Affinity::new(id),
        store,
        access,
        require_schema: config.require_schema,
        fleet: Arc::new(Fleet::new(config.fleet)),
        slots: Slots::new(match config.cached_states {
            0 => DEFAULT_CACHED_STATES,
            n => n,
        }),
        schemas: Mutex::new(HashMap::new()),
        contended: Mutex::new(HashMap::new()),
        audit,
        limits: RateLimits::new(config.rate_limit, config.rate_burst),
        vault,
        sites: crate::site::lag::SiteLags::default(),
    })
}

/// Registers every row of the endpoint table in the queue group, subscribes to the forwarded
/// requests of the routed ones, and starts discovery and the fleet view, each a task of
/// `tasks` that stops when `stop` turns true.
async fn serve_endpoints(
    validator: &Arc<Validator>,
    service: &async_nats::service::Service,
    client: &async_nats::Client,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<(), ServeError> {
    let group = service.group(wire::API_PREFIX);
    for row in endpoints::table().into_iter().map(Arc::new) {
        let requests = group.endpoint(row.name).await.map_err(start)?;
        let (instance, queued) = (Arc::clone(validator), Arc::clone(&row));
        tasks.spawn(serve_each(requests, stop.clone(), move |request| {
            let (validator, row) = (Arc::clone(&instance), Arc::clone(&queued));
            async move { validator.route(&row, request).await }
        }));
        // The change requests of the slots this instance owns, forwarded by the other instances.
        if affinity::routed(row.name) {
            let direct = direct_subject(validator.affinity.own(), row.name);
            let requests = client.subscribe(direct).await.map_err(start)?;
            let instance = Arc::clone(validator);
            tasks.spawn(serve_each(requests, stop.clone(), move |message| {
                let (validator, row) = (Arc::clone(&instance), Arc::clone(&row));
                async move { validator.serve_forwarded(&row, message).await }
            }));
        }
    }
    {
        let validator = Arc::clone(validator);
        let (client, stop) = (client.clone(), stop.clone());
        tasks.spawn(async move { validator.affinity.discover(client, stop).await });
    }
    tasks.spawn(super::requests::schedule::run(
        Arc::clone(validator),
        stop.clone(),
    ));
    tasks.spawn(super::rollouts::drive::run(
        Arc::clone(validator),
        stop.clone(),
    ));
    tasks.spawn(fleet::track::track(
        Arc::clone(&validator.fleet),
        validator.store.clone(),
        client.clone(),
        stop.clone(),
    ));
    Ok(())
}

/// Serves each request of `requests` on a task of its own until `stop` turns true, then answers
/// those already accepted before returning.
async fn serve_each<R, F, Served>(
    mut requests: impl futures::Stream<Item = R> + Unpin,
    mut stop: tokio::sync::watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(R) -> Served,
    Served: Future<Output = ()> + Send + 'static,
{
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            request = requests.next() => {
                let Some(request) = request else { break };
                inflight.spawn(serve(request));
            }
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
        }
    }
    while inflight.join_next().await.is_some() {}
}

/// Opens the buckets, retrying for a while: a validator started together with its cluster may
/// come up before JetStream has elected a leader.
async fn open_store(
    client: &async_nats::Client,
    options: BucketOptions,
) -> Result<Store, StoreError> {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let backoff = mycosynth_subscriber::Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(2),
    );
    let mut attempt = 0;
    loop {
        match Store::open(client.clone(), options).await {
            Ok(store) => {
                tracing::info!(replicas = options.replicas, "config buckets open");
                return Ok(store);
            }
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(err) => {
                attempt += 1;
                tracing::warn!(error = %err, attempt, "config store not ready; retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
            }
        }
    }
}
