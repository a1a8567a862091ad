//! The validator service: the only writer. It serves the API endpoints over NATS
//! request/reply (registered with NATS's service API, so `nats micro ls/info/stats` see it),
//! validates each change set, commits it atomically and publishes one change event.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;
use mycosynth_subscriber::wire::{
    self, api_subject, direct_subject, endpoint, event_subject, schema_subject, ApiError,
    ChangeEvent, ChangeMeta, ChangeOutcome, ChangeRequest, ChangeSetRecord, ChangeSource,
    Environment, ErrorKind, EventChange, GetOutcome, GetRequest, HeadRecord, HistoryOutcome,
    HistoryRequest, KeyChange, Namespace, ParentRequest, Receipt, Reply, RollbackRequest,
    SchemaGetRequest, SchemaPushOutcome, SchemaPushRequest, SchemaRecord, StatusOutcome,
    StatusRequest, ValueRecord, Violation, EVENT_FORMAT, MAX_REQUEST_BYTES,
};
use mycosynth_subscriber::wire::{PolicyGetRequest, PolicySetRequest, Role};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex as AsyncMutex;

use crate::access::{Access, SecurityConfig};
use crate::affinity::{Affinity, Forwarded};
use crate::audit::Auditor;
use crate::auth::Caller;
use crate::caller::{caller, Envelope};
use crate::committer::{self, HeadExpected};
use crate::fleet::{Fleet, FleetOptions};
use crate::limits::RateLimits;
use crate::policy::Scope;
use crate::schema::Schema;
use crate::store::{BucketOptions, Commit, KeptDocument, State, Store, StoreError};
use crate::validate;
use crate::vault::Vault;

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
    pub rate_limit: Option<crate::limits::RateLimit>,
    /// Burst of the rate limit (None: the limit's count).
    pub rate_burst: Option<std::num::NonZeroU32>,
    /// JetStream domains of the site replicas whose lag this validator watches.
    pub sites: Vec<String>,
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

/// Sends a service request's reply.
async fn respond(name: &str, request: async_nats::service::Request, bytes: Bytes) {
    if let Err(err) = request.respond(Ok(bytes)).await {
        tracing::warn!(endpoint = name, error = %err, "could not send the reply");
    }
}

/// How many times a change set without `expected_version` is retried after losing a race.
const MAX_COMMIT_ATTEMPTS: usize = 8;
/// How long after losing a compare-and-set to another writer a namespace/environment's commits
/// go one at a time instead of pipelined.
const CONTENTION_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);
/// How long shutdown waits for in-flight requests and a final flush.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a starting validator waits for the server to confirm its endpoints' subscriptions
/// before it says it is ready anyway.
const SUBSCRIBE_CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the validator until `shutdown` resolves. Calls `ready` with the HTTP address once
/// requests are being served.
pub async fn run(
    config: ValidatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Option<SocketAddr>),
) -> Result<(), ServeError> {
    let metrics = crate::http::install_metrics().map_err(ServeError::Start)?;
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
    let replicas = match config.replicas {
        // Auto: three replicas when the server is part of a cluster of three or more.
        0 if client.server_info().connect_urls.len() >= 3 => 3,
        0 => 1,
        n => n,
    };
    let store = open_store(&client, BucketOptions { replicas }).await?;
    let access = Access::open(&store, &config.security, BucketOptions { replicas }).await?;
    let audit = Auditor::open(crate::audit::context(&client), replicas)
        .await
        .map_err(|e| ServeError::Start(e.to_string()))?;
    let vault = Vault::open(&async_nats::jetstream::new(client.clone()), replicas).await?;
    let service = client
        .service_builder()
        .description("Mycosynth validator: the only writer of config")
        .queue_group(wire::SERVICE_QUEUE_GROUP)
        .start(wire::SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| ServeError::Start(e.to_string()))?;
    let affinity = Affinity::new(service.info().await.id);
    let validator = Arc::new(Validator {
        client: client.clone(),
        affinity,
        store,
        access,
        require_schema: config.require_schema,
        fleet: Fleet::new(config.fleet),
        slots: Mutex::new(HashMap::new()),
        schemas: Mutex::new(HashMap::new()),
        contended: Mutex::new(HashMap::new()),
        audit,
        limits: RateLimits::new(config.rate_limit, config.rate_burst),
        vault,
        sites: crate::site::lag::SiteLags::default(),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_addr = match config.http_addr {
        Some(addr) => {
            let mut stop = stop_rx.clone();
            let bound = crate::http::serve(addr, metrics, client.clone(), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| ServeError::Start(format!("http port {addr}: {e}")))?;
            Some(bound)
        }
        None => None,
    };

    let group = service.group(wire::API_PREFIX);
    let mut tasks = tokio::task::JoinSet::new();
    for name in [
        endpoint::CHANGE,
        endpoint::ROLLBACK,
        endpoint::GET,
        endpoint::HISTORY,
        endpoint::SCHEMA_PUSH,
        endpoint::SCHEMA_GET,
        endpoint::STATUS,
        endpoint::PARENT,
        endpoint::POLICY_GET,
        endpoint::POLICY_SET,
        endpoint::AUDIT,
        endpoint::AUDIT_VERIFY,
        endpoint::REVEAL,
    ] {
        let requests = group
            .endpoint(name)
            .await
            .map_err(|e| ServeError::Start(e.to_string()))?;
        let validator = Arc::clone(&validator);
        tasks.spawn(serve_each(requests, stop_rx.clone(), move |request| {
            let validator = Arc::clone(&validator);
            async move { validator.route(name, request).await }
        }));
    }
    // The change requests of the slots this instance owns, forwarded by the other instances.
    for name in crate::affinity::ROUTED {
        let direct = direct_subject(validator.affinity.own(), name);
        let requests = client
            .subscribe(direct)
            .await
            .map_err(|e| ServeError::Start(e.to_string()))?;
        let validator = Arc::clone(&validator);
        tasks.spawn(serve_each(requests, stop_rx.clone(), move |message| {
            let validator = Arc::clone(&validator);
            async move { validator.serve_forwarded(name, message).await }
        }));
    }
    {
        let validator = Arc::clone(&validator);
        let (client, stop) = (client.clone(), stop_rx.clone());
        tasks.spawn(async move { validator.affinity.discover(client, stop).await });
    }
    if !config.sites.is_empty() {
        let sites = validator.sites.clone();
        tasks.spawn(sites.run(client.clone(), config.sites.clone(), stop_rx.clone()));
    }
    tasks.spawn(track_fleet(
        Arc::clone(&validator),
        client.clone(),
        stop_rx.clone(),
    ));
    // The endpoints' subscriptions are written to the connection by its own task: until the
    // server has them, a request finds no responder. Ready means they are in (a flush is a
    // round trip after them); bounded, as with NATS gone a flush waits for the reconnect.
    if tokio::time::timeout(SUBSCRIBE_CONFIRM_TIMEOUT, client.flush())
        .await
        .map_or(true, |flushed| flushed.is_err())
    {
        tracing::warn!("the server has not confirmed the endpoints' subscriptions yet");
    }
    tracing::info!(nats = %config.nats_url, http = ?http_addr, subject = %api_subject("*"), "validator serving");
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

/// A failed request, before it is written as a reply.
pub type Failure = ApiError;

pub(crate) fn failure(kind: ErrorKind, message: impl Into<String>) -> Failure {
    ApiError {
        kind,
        message: message.into(),
        violations: Vec::new(),
        current_version: None,
    }
}

pub(crate) fn invalid(violations: Vec<Violation>) -> Failure {
    let message = match violations.as_slice() {
        [one] => one.message.clone(),
        many => format!("{} rules broken; first: {}", many.len(), many[0].message),
    };
    ApiError {
        kind: ErrorKind::Validation,
        message,
        violations,
        current_version: None,
    }
}

fn from_store(err: StoreError) -> Failure {
    match err {
        StoreError::Conflict => failure(
            ErrorKind::Conflict,
            "the namespace/environment changed concurrently",
        ),
        StoreError::Unavailable(m) => failure(ErrorKind::Unavailable, m),
        other => failure(ErrorKind::Internal, other.to_string()),
    }
}

/// What a change request asks for.
enum Intent {
    /// Set/delete these keys (`replace`: and delete every other key).
    Changes {
        changes: Vec<KeyChange>,
        replace: bool,
    },
    /// Make the state equal to this document.
    Restore(BTreeMap<String, Value>),
}

/// Who/why/where of a change, before it is committed.
struct Attribution {
    author: String,
    reason: String,
    source: ChangeSource,
    git_commit: Option<String>,
    request_id: Option<String>,
    emergency: bool,
}

/// The cached state of one namespace/environment, behind the lock that serializes its commits.
type Slot = Arc<AsyncMutex<Option<State>>>;

struct Validator {
    /// The connection requests are forwarded on.
    client: async_nats::Client,
    /// Which instance writes which namespace/environment.
    affinity: Affinity,
    store: Store,
    /// Who may do what (the stored policy) and who is asking.
    access: Access,
    /// What subscriber instances reported.
    fleet: Fleet,
    require_schema: bool,
    /// One slot per namespace/environment: serializes this instance's commits to it and caches
    /// its state between requests (another validator's commit shows up as a failed CAS).
    slots: Mutex<HashMap<(Namespace, Environment), Slot>>,
    /// Compiled schemas by namespace, with the stored record (bytes) each was compiled from.
    schemas: Mutex<HashMap<Namespace, (Bytes, Arc<Schema>)>>,
    /// Namespaces/environments where another writer won a compare-and-set recently, until when:
    /// their commits are not pipelined.
    contended: Mutex<HashMap<(Namespace, Environment), Instant>>,
    /// The audit log every request is recorded in.
    audit: Auditor,
    /// Per-identity rate limits on change requests.
    limits: RateLimits,
    /// Data keys of sensitive values.
    vault: Vault,
    /// The lag of the watched sites.
    sites: crate::site::lag::SiteLags,
}

impl Validator {
    /// A request from the queue group: a change or rollback of a slot another live instance
    /// owns goes to that instance (see `affinity.rs`); everything else is served here.
    async fn route(&self, name: &'static str, request: async_nats::service::Request) {
        // Alone, every slot is this instance's: no need to read the request for its slot.
        if crate::affinity::routed(name) && self.affinity.peers() > 0 {
            let envelope = Envelope::read(&request.message.payload);
            let owner = match (&envelope.namespace, &envelope.environment) {
                (Some(ns), Some(env)) => self.affinity.owner(ns, env),
                _ => None,
            };
            if let Some(owner) = owner {
                let forwarded = crate::affinity::forward(
                    &self.client,
                    &self.affinity,
                    &owner,
                    name,
                    &request.message,
                );
                match forwarded.await {
                    Forwarded::Answered(bytes) => return respond(name, request, bytes).await,
                    Forwarded::OwnerGone => {
                        tracing::info!(
                            owner,
                            endpoint = name,
                            "the owning instance is gone; serving here"
                        );
                        self.affinity.forget(&owner);
                    }
                    Forwarded::Unanswered => {
                        tracing::warn!(
                            owner,
                            endpoint = name,
                            "the owning instance stopped answering; serving here"
                        );
                        self.affinity.forget(&owner);
                    }
                }
            }
        }
        let bytes = self.handle(name, &request.message).await;
        respond(name, request, bytes).await;
    }

    /// A request another instance forwarded to this one, its owner: served here, whoever owns
    /// the slot by now (forwarding twice could go round in circles).
    async fn serve_forwarded(&self, name: &'static str, mut message: async_nats::Message) {
        let Some(reply) = message.reply.take() else {
            return;
        };
        // Signed for the queue group's subject, which is what the signature is checked against.
        message.subject = api_subject(name).into();
        let bytes = self.handle(name, &message).await;
        if let Err(err) = self.client.publish(reply, bytes).await {
            tracing::warn!(endpoint = name, error = %err, "could not send the reply");
        }
    }

    /// Serves one request: authentication, the endpoint, the audit record, metrics. Returns the
    /// reply's bytes.
    async fn handle(&self, name: &'static str, message: &async_nats::Message) -> Bytes {
        let started = Instant::now();
        let body = message.payload.clone();
        let envelope = Envelope::read(&body);
        let authenticated = self.access.authenticate(message).await;
        // The audit log and the rate limit know the caller by its verified identity when the
        // request is signed, else by the name it declares.
        let verified = authenticated
            .as_ref()
            .ok()
            .and_then(|c| c.identity.as_deref());
        let who = caller(verified, &envelope);
        let refusal = self.limits.refusal(name, &who);
        let reply = match (name, authenticated) {
            (_, Err(denied)) => {
                tracing::warn!(endpoint = name, reason = %denied.message, "request refused: authentication failed");
                encode::<()>(Err(denied))
            }
            (_, Ok(_)) if refusal.is_some() => encode::<()>(refusal.map_or(Ok(()), Err)),
            (endpoint::CHANGE, Ok(c)) => {
                encode(self.change(&c, parse::<ChangeRequest>(&body)).await)
            }
            (endpoint::ROLLBACK, Ok(c)) => {
                encode(self.rollback(&c, parse::<RollbackRequest>(&body)).await)
            }
            (endpoint::GET, Ok(c)) => encode(self.get(&c, parse::<GetRequest>(&body), None).await),
            (endpoint::REVEAL, Ok(c)) => encode(match parse::<GetRequest>(&body) {
                Ok(request) => match c.may(
                    "reveal sensitive values of",
                    Role::Admin,
                    Scope::Env(&request.namespace, &request.environment),
                ) {
                    Ok(()) => self.get(&c, Ok(request), Some(&who)).await,
                    Err(denied) => Err(denied),
                },
                Err(err) => Err(err),
            }),
            (endpoint::HISTORY, Ok(c)) => {
                encode(self.history(&c, parse::<HistoryRequest>(&body)).await)
            }
            (endpoint::SCHEMA_PUSH, Ok(c)) => encode(
                self.schema_push(&c, parse::<SchemaPushRequest>(&body))
                    .await,
            ),
            (endpoint::SCHEMA_GET, Ok(c)) => {
                encode(self.schema_get(&c, parse::<SchemaGetRequest>(&body)).await)
            }
            (endpoint::STATUS, Ok(c)) => {
                encode(self.status(&c, parse::<StatusRequest>(&body)).await)
            }
            (endpoint::POLICY_GET, Ok(c)) => encode(
                self.access
                    .policy_get(&c, parse::<PolicyGetRequest>(&body))
                    .await,
            ),
            (endpoint::POLICY_SET, Ok(c)) => encode(
                self.access
                    .policy_set(&c, parse::<PolicySetRequest>(&body))
                    .await,
            ),
            (endpoint::AUDIT, Ok(c)) => encode(
                match c.may("read the audit log", Role::Admin, Scope::Env("*", "*")) {
                    Ok(()) => self.audit.answer_query(parse(&body)).await,
                    Err(denied) => Err(denied),
                },
            ),
            (endpoint::AUDIT_VERIFY, Ok(c)) => encode(
                match c.may("verify the audit log", Role::Admin, Scope::Env("*", "*")) {
                    Ok(()) => self.audit.answer_verify(parse(&body)).await,
                    Err(denied) => Err(denied),
                },
            ),
            (endpoint::PARENT, Ok(c)) => encode(match parse::<ParentRequest>(&body) {
                Ok(mut request) => {
                    match c.may(
                        "declare a parent",
                        Role::Write,
                        Scope::Env(&request.namespace, &request.environment),
                    ) {
                        Ok(()) => {
                            request.author = c.author(request.author);
                            crate::inherit::declare(&self.store, request).await
                        }
                        Err(denied) => Err(denied),
                    }
                }
                Err(err) => Err(err),
            }),
            _ => encode::<()>(Err(failure(
                ErrorKind::BadRequest,
                format!("unknown endpoint {name}"),
            ))),
        };
        let (bytes, outcome) = reply;
        if name != endpoint::STATUS {
            let record = crate::audit::entry::draft(name, &who, &envelope, &bytes, new_meta_time());
            if let Err(err) = self.audit.append(record).await {
                metrics::counter!("mycosynth_audit_failures_total").increment(1);
                tracing::error!(endpoint = name, error = %err, "could not record the request in the audit log");
            }
        }
        metrics::counter!("mycosynth_validator_requests_total", "endpoint" => name, "outcome" => outcome).increment(1);
        metrics::histogram!("mycosynth_validator_request_seconds", "endpoint" => name)
            .record(started.elapsed().as_secs_f64());
        bytes
    }

    /// What `env` inherits: its parents' values, nearest parent winning, sensitive values opened
    /// (each parent's are sealed for that parent's environment).
    async fn inherited(
        &self,
        ns: &Namespace,
        env: &Environment,
    ) -> Result<BTreeMap<String, Value>, Failure> {
        let mut document = BTreeMap::new();
        let chain = crate::inherit::chain(&self.store, ns, env)
            .await
            .map_err(from_store)?;
        for parent in chain.iter().rev() {
            let state = self
                .store
                .load_state(ns, parent)
                .await
                .map_err(from_store)?;
            document.extend(
                self.vault
                    .open_document(ns, parent, state.documents())
                    .await?,
            );
        }
        Ok(document)
    }

    fn contended(&self, ns: &Namespace, env: &Environment) -> bool {
        let contended = self.contended.lock().unwrap_or_else(|p| p.into_inner());
        contended
            .get(&(ns.clone(), env.clone()))
            .is_some_and(|until| Instant::now() < *until)
    }

    fn mark_contended(&self, ns: &Namespace, env: &Environment) {
        let mut contended = self.contended.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        contended.retain(|_, until| *until > now);
        contended.insert((ns.clone(), env.clone()), now + CONTENTION_WINDOW);
    }

    fn slot(&self, ns: &Namespace, env: &Environment) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry((ns.clone(), env.clone())).or_default())
    }

    async fn schema(&self, ns: &Namespace) -> Result<Option<Arc<Schema>>, Failure> {
        // Read on every change so that all validator instances use the schema just pushed;
        // parsed and compiled only when the stored record differs from the cached one's (a
        // comparison of bytes: parsing a large schema on every change costs more than the
        // change).
        let Some(bytes) = self.store.schema_bytes(ns).await.map_err(from_store)? else {
            return Ok(None);
        };
        if let Some((known, compiled)) = self
            .schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns)
        {
            if *known == bytes {
                return Ok(Some(Arc::clone(compiled)));
            }
        }
        let record = crate::store::parse_schema(ns, &bytes).map_err(from_store)?;
        let compiled = Arc::new(Schema::compile(record.schema).map_err(|v| invalid(vec![v]))?);
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.clone(), (bytes, Arc::clone(&compiled)));
        Ok(Some(compiled))
    }

    async fn change(
        &self,
        caller: &Caller,
        request: Result<ChangeRequest, Failure>,
    ) -> Result<ChangeOutcome, Failure> {
        let request = request?;
        let (ns, env) =
            validate::names(&request.namespace, &request.environment).map_err(invalid)?;
        if request.emergency && request.reason.trim().is_empty() {
            return Err(invalid(vec![Violation {
                key: "(reason)".into(),
                rule: "emergency_reason".into(),
                message: "an emergency override needs a --reason".into(),
            }]));
        }
        caller.may("change", Role::Write, Scope::Env(ns.as_str(), env.as_str()))?;
        let only_deletes =
            !request.changes.is_empty() && request.changes.iter().all(|c| c.value.is_none());
        let attribution = Attribution {
            author: caller.author(request.author),
            reason: request.reason,
            source: request.source,
            git_commit: request.git_commit,
            request_id: request.request_id,
            emergency: request.emergency,
        };
        let intent = Intent::Changes {
            changes: request.changes,
            replace: request.replace,
        };
        let outcome = self
            .commit(
                &ns,
                &env,
                intent,
                request.expected_version,
                attribution,
                request.dry_run,
            )
            .await?;
        if only_deletes && !outcome.committed && outcome.diff.is_empty() && !request.dry_run {
            return Err(failure(
                ErrorKind::NotFound,
                format!("no such key in {ns}/{env}"),
            ));
        }
        Ok(outcome)
    }

    async fn rollback(
        &self,
        caller: &Caller,
        request: Result<RollbackRequest, Failure>,
    ) -> Result<ChangeOutcome, Failure> {
        let request = request?;
        let (ns, env) =
            validate::names(&request.namespace, &request.environment).map_err(invalid)?;
        caller.may(
            "roll back",
            Role::Write,
            Scope::Env(ns.as_str(), env.as_str()),
        )?;
        let history = self.store.history(&ns, &env).await.map_err(from_store)?;
        let latest = history.last().map_or(0, |s| s.version);
        if request.to_version > latest {
            return Err(failure(
                ErrorKind::NotFound,
                format!(
                    "{ns}/{env} has no version {} (latest is {latest})",
                    request.to_version
                ),
            ));
        }
        let target = state_at(&history, request.to_version).map_err(|missing| {
            failure(
                ErrorKind::Internal,
                format!("history of {ns}/{env} lacks version {missing}"),
            )
        })?;
        let target = self.vault.open_document(&ns, &env, target).await?;
        let reason = if request.reason.is_empty() {
            format!("rollback to version {}", request.to_version)
        } else {
            request.reason
        };
        let attribution = Attribution {
            author: caller.author(request.author),
            reason,
            source: ChangeSource::Rollback,
            git_commit: None,
            request_id: request.request_id,
            emergency: false,
        };
        self.commit(
            &ns,
            &env,
            Intent::Restore(target),
            request.expected_version,
            attribution,
            request.dry_run,
        )
        .await
    }

    async fn commit(
        &self,
        ns: &Namespace,
        env: &Environment,
        intent: Intent,
        expected_version: Option<u64>,
        attribution: Attribution,
        dry_run: bool,
    ) -> Result<ChangeOutcome, Failure> {
        use tracing::Instrument;
        // Instrumented, not entered: a span entered across an await stays "current" on the
        // worker thread for whatever task runs next there, and spans created there take it as
        // their parent; under load the parent chains grow until closing one overflows the stack.
        let span = tracing::info_span!("commit", namespace = %ns, environment = %env, author = %attribution.author);
        async move {
            if let Some(id) = &attribution.request_id {
                wire::check_request_id(id).map_err(|e| invalid(vec![validate::name_violation(&e)]))?;
            }
            // Reads that do not depend on this namespace/environment's own state happen before its
            // lock, and together (one round trip, not three): under the lock, every round trip to the
            // config stream (which is busy with commits) would hold up every change set queued
            // behind this one. A request applied meanwhile is still caught: by the head it made, by
            // its idempotency record, or by the head's duplicate id (see `committer`).
            let (replayed, schema, inherited) = tokio::join!(
                self.replay(ns, env, &attribution, dry_run),
                self.schema(ns),
                self.inherited(ns, env)
            );
            if let Some(outcome) = replayed? {
                return Ok(outcome);
            }
            let (schema, inherited) = (schema?, inherited?);
            let slot = self.slot(ns, env);
            let mut cached = slot.lock().await;
            let mut fresh = false;
            for attempt in 1..=MAX_COMMIT_ATTEMPTS {
                let mut state = match cached.take() {
                    Some(state) => state,
                    None => {
                        fresh = true;
                        let mut state = self.store.load_state(ns, env).await.map_err(from_store)?;
                        match self.store.complete(ns, env, &mut state).await {
                            Ok(()) => state,
                            // The head moved while we read it: read again.
                            Err(StoreError::Conflict) => continue,
                            Err(err) => return Err(from_store(err)),
                        }
                    }
                };
                // A retry of the change set that made the current version, which may have been
                // committed a moment ago (its idempotency record is written just after its head).
                if let (Some(id), Some((last, change_id)), false) =
                    (&attribution.request_id, &state.last_request, dry_run)
                {
                    if id == last && state.pending {
                        // Its first attempt is still in flight (the client gave up waiting): its
                        // outcome is not known yet, so neither replay nor apply it again.
                        *cached = Some(state);
                        return Err(failure(
                            ErrorKind::Unavailable,
                            format!("request {id} is still being committed; retry"),
                        ));
                    }
                    if id == last {
                        metrics::counter!("mycosynth_validator_replayed_requests_total").increment(1);
                        tracing::info!(request_id = id, version = state.version, "request made the current head; replaying its outcome");
                        let outcome = ChangeOutcome {
                            version: state.version,
                            previous_version: state.version.saturating_sub(1),
                            committed: true,
                            change_id: Some(change_id.clone()),
                            diff: Vec::new(),
                            replayed: true,
                        };
                        *cached = Some(state);
                        return Ok(outcome);
                    }
                }
                if let Some(expected) = expected_version {
                    if expected != state.version {
                        if !fresh {
                            // Our cache may be behind another validator; check before refusing.
                            fresh = true;
                            continue;
                        }
                        let version = state.version;
                        *cached = Some(state);
                        metrics::counter!("mycosynth_validator_rejections_total", "reason" => "conflict").increment(1);
                        return Err(ApiError {
                            current_version: Some(version),
                            ..failure(
                                ErrorKind::Conflict,
                                format!("{ns}/{env} is at version {version}, not {expected}"),
                            )
                        });
                    }
                }
                // With the schema the kept document is known to conform to (none for a rebuilt one).
                let (current, conformed) = match state.document.take() {
                    Some(kept) => (kept.values, kept.conforms_to),
                    None => {
                        // A copy of the whole namespace: after a load, a refusal, a dry run, a lost
                        // race, or a change set that carried a value already sealed.
                        metrics::counter!("mycosynth_validator_document_builds_total").increment(1);
                        (self.vault.open_document(ns, env, state.documents()).await?, None)
                    }
                };
                let (changes, replace) = match &intent {
                    Intent::Changes { changes, replace } => (changes.clone(), *replace),
                    Intent::Restore(target) => (validate::difference(&current, target).0, false),
                };
                // A child environment is validated together with what it inherits.
                let own_schema = schema.as_ref().filter(|_| inherited.is_empty());
                let conforms = match (own_schema, &conformed) {
                    (Some(own), Some(to)) => std::ptr::eq(to.as_ptr(), Arc::as_ptr(own)),
                    _ => false,
                };
                let conforms_to = own_schema.map(Arc::downgrade);
                let own_schema = own_schema.map(Arc::as_ref);
                let require = self.require_schema;
                let planned =
                    validate::plan_on(current, &changes, replace, own_schema, require, conforms)
                        .and_then(
                            |plan| match schema.as_deref().filter(|_| !inherited.is_empty()) {
                                Some(schema) => {
                                    let found = crate::inherit::schema_violations(
                                        schema,
                                        &inherited,
                                        &plan.document,
                                    );
                                    if found.is_empty() {
                                        Ok(plan)
                                    } else {
                                        Err(found)
                                    }
                                }
                                None => Ok(plan),
                            },
                        );
                // A value sent already sealed stays sealed in the plan's document, unlike the
                // one that `open_document` would make of the stored record: then the next change
                // set builds its document anew.
                let document_reusable = planned.as_ref().is_ok_and(|plan| {
                    !plan
                        .changes
                        .iter()
                        .any(|c| c.value.as_ref().is_some_and(mycosynth_subscriber::wire::is_sealed))
                });
                let mut plan = match planned {
                    Ok(plan) => plan,
                    Err(violations) => {
                        let violations = crate::vault::redact_violations(schema.as_deref(), violations);
                        for v in &violations {
                            metrics::counter!("mycosynth_validator_rejections_total", "reason" => v.rule.clone()).increment(1);
                        }
                        tracing::info!(violations = violations.len(), first = %violations[0].message, "change set refused");
                        *cached = Some(state);
                        return Err(invalid(violations));
                    }
                };
                self.vault
                    .seal_plan(ns, env, schema.as_deref(), &mut plan)
                    .await?;
                if dry_run || plan.is_empty() {
                    let version = state.version;
                    if plan.is_empty() && document_reusable {
                        // Nothing changed: the document is still the state's, and was checked.
                        state.document = Some(KeptDocument {
                            values: plan.document,
                            conforms_to,
                        });
                    }
                    *cached = Some(state);
                    return Ok(ChangeOutcome {
                        version,
                        previous_version: version,
                        committed: false,
                        change_id: None,
                        diff: plan.diff,
                        replayed: false,
                    });
                }

                let meta = new_meta(&attribution);
                let version = state.version + 1;
                let head = HeadRecord {
                    version,
                    keys: plan.document.len() as u64,
                    meta: meta.clone(),
                    changes: Some(plan.changes.clone()),
                };
                let started = Instant::now();
                let head_expected = if state.pending {
                    HeadExpected::AfterPrevious
                } else {
                    HeadExpected::Revision(state.head_revision)
                };
                let staged = self
                    .store
                    .stage(&Commit {
                        namespace: ns,
                        environment: env,
                        head_expected,
                        head: head.clone(),
                        request_id: attribution.request_id.as_deref(),
                        event: Some(change_event(ns, env, version, &plan.changes, &meta)),
                    })
                    .await;
                let receipt = match staged {
                    Ok(receipt) => receipt,
                    Err(err) => {
                        tracing::warn!(error = %err, version, request_id = attribution.request_id.as_deref().unwrap_or(""), "commit failed");
                        return Err(from_store(err));
                    }
                };
                // The next change set to this namespace/environment validates against this one
                // while it is in flight (the committer may write both in one batch); if this one
                // fails, so does the next, and both reload.
                let mut next = state;
                // What this change set replaces, to step back to the state it was validated
                // against if it loses a race (see `catch_up`).
                let mut undo = Vec::with_capacity(plan.changes.len());
                let before = (next.head_revision, next.last_request.clone(), next.pending);
                for change in &plan.changes {
                    let replaced = match &change.value {
                        Some(value) => next
                            .values
                            .insert(change.key.clone(), head.value_record(value.clone())),
                        None => next.values.remove(&change.key),
                    };
                    undo.push((change.key.clone(), replaced));
                }
                next.version = version;
                next.pending = true;
                next.document = document_reusable.then_some(KeptDocument {
                    values: plan.document,
                    conforms_to,
                });
                next.last_request = attribution
                    .request_id
                    .clone()
                    .map(|id| (id, meta.change_id.clone()));
                *cached = Some(next);
                let committed = if self.contended(ns, env) {
                    // Another validator commits here too: change sets chained on this one would
                    // fail with it on the other's commits, so hold the slot until it is stored.
                    committer::outcome(receipt).await
                } else {
                    drop(cached);
                    let committed = committer::outcome(receipt).await;
                    cached = slot.lock().await;
                    committed
                };
                match committed {
                    Ok(head_revision) => {
                        metrics::histogram!("mycosynth_validator_commit_seconds")
                            .record(started.elapsed().as_secs_f64());
                        metrics::counter!("mycosynth_validator_commits_total").increment(1);
                        if let Some(current) = cached.as_mut().filter(|s| s.version == version) {
                            current.head_revision = head_revision;
                            current.pending = false;
                        }
                        tracing::info!(version, keys = plan.changes.len(), change_id = %meta.change_id, request_id = attribution.request_id.as_deref().unwrap_or(""), "committed");
                        return Ok(ChangeOutcome {
                            version,
                            previous_version: version - 1,
                            committed: true,
                            change_id: Some(meta.change_id),
                            diff: plan.diff,
                            replayed: false,
                        });
                    }
                    Err(StoreError::Conflict) => {
                        // The state this change set was validated against, when nothing was chained
                        // on it: another validator's commit is usually one version on top of it.
                        let base = match (cached.take(), before) {
                            (Some(mut state), (revision, last_request, false))
                                if state.version == version =>
                            {
                                for (key, replaced) in undo {
                                    match replaced {
                                        Some(record) => state.values.insert(key, record),
                                        None => state.values.remove(&key),
                                    };
                                }
                                state.version = version - 1;
                                state.document = None;
                                state.head_revision = revision;
                                state.last_request = last_request;
                                state.pending = false;
                                Some(state)
                            }
                            _ => None,
                        };
                        self.mark_contended(ns, env);
                        // Either this very request was applied already (a retry whose first reply
                        // was lost), or another change set won the race.
                        if let Some(outcome) = self.replay(ns, env, &attribution, dry_run).await? {
                            return Ok(outcome);
                        }
                        // Another validator committed first: catch up with its version (or reload)
                        // and validate again.
                        metrics::counter!("mycosynth_validator_commit_conflicts_total").increment(1);
                        tracing::debug!(attempt, "lost a commit race; catching up");
                        if let Some(base) = base {
                            *cached = self.store.catch_up(ns, env, base).await.unwrap_or(None);
                        }
                        fresh = false;
                        continue;
                    }
                    Err(err) => {
                        // The outcome of an unanswered commit is unknown: reload before the next one.
                        *cached = None;
                        tracing::warn!(error = %err, version, request_id = attribution.request_id.as_deref().unwrap_or(""), "commit failed");
                        return Err(from_store(err));
                    }
                }
            }
            Err(failure(
                ErrorKind::Unavailable,
                format!("{ns}/{env} is changing too fast; try again"),
            ))
        }
        .instrument(span)
        .await
    }

    /// The first outcome of an idempotency key that was already applied, if any.
    async fn replay(
        &self,
        ns: &Namespace,
        env: &Environment,
        attribution: &Attribution,
        dry_run: bool,
    ) -> Result<Option<ChangeOutcome>, Failure> {
        let Some(id) = attribution.request_id.as_deref().filter(|_| !dry_run) else {
            return Ok(None);
        };
        let applied = self
            .store
            .applied_request(ns, env, id)
            .await
            .map_err(from_store)?;
        Ok(applied.map(|record| {
            metrics::counter!("mycosynth_validator_replayed_requests_total").increment(1);
            tracing::info!(
                request_id = id,
                version = record.version,
                "request already applied; replaying its outcome"
            );
            ChangeOutcome {
                version: record.version,
                previous_version: record.version.saturating_sub(1),
                committed: true,
                change_id: Some(record.change_id),
                diff: Vec::new(),
                replayed: true,
            }
        }))
    }

    async fn get(
        &self,
        caller: &Caller,
        request: Result<GetRequest, Failure>,
        reveal_to: Option<&crate::caller::Caller>,
    ) -> Result<GetOutcome, Failure> {
        let request = request?;
        let (ns, env) =
            validate::names(&request.namespace, &request.environment).map_err(invalid)?;
        caller.may("read", Role::Read, Scope::Env(ns.as_str(), env.as_str()))?;
        let mut state = self.store.load_state(&ns, &env).await.map_err(from_store)?;
        if let Some(caller) = reveal_to {
            self.reveal(&ns, &env, caller, &mut state).await?;
        }
        let values: Vec<(String, ValueRecord)> = match &request.key {
            Some(key) => match state.values.get(key) {
                Some(record) => vec![(key.clone(), record.clone())],
                None => {
                    return Err(failure(
                        ErrorKind::NotFound,
                        format!("key {key:?} is not set in {ns}/{env}"),
                    ))
                }
            },
            None => state.values.into_iter().collect(),
        };
        let parent = self
            .store
            .parent(&ns, &env)
            .await
            .map_err(from_store)?
            .map(|r| r.parent);
        Ok(GetOutcome {
            version: state.version,
            values,
            parent,
        })
    }

    /// Opens the sealed values of `state` for a caller allowed to see them (the `reveal`
    /// endpoint checks the policy: admin on the namespace/environment).
    async fn reveal(
        &self,
        ns: &Namespace,
        env: &Environment,
        caller: &crate::caller::Caller,
        state: &mut State,
    ) -> Result<(), Failure> {
        let mut clear = self.vault.open_document(ns, env, state.documents()).await?;
        for (key, record) in state.values.iter_mut() {
            if let Some(value) = clear.remove(key) {
                record.value = value;
            }
        }
        tracing::info!(identity = %caller.identity, namespace = %ns, environment = %env, "sensitive values revealed");
        Ok(())
    }

    async fn history(
        &self,
        caller: &Caller,
        request: Result<HistoryRequest, Failure>,
    ) -> Result<HistoryOutcome, Failure> {
        let request = request?;
        let (ns, env) =
            validate::names(&request.namespace, &request.environment).map_err(invalid)?;
        caller.may(
            "read the history of",
            Role::Read,
            Scope::Env(ns.as_str(), env.as_str()),
        )?;
        let mut sets = self.store.history(&ns, &env).await.map_err(from_store)?;
        if let Some(key) = &request.key {
            sets.retain(|s| s.changes.iter().any(|c| &c.key == key));
        }
        sets.reverse();
        sets.truncate(request.limit.unwrap_or(100));
        Ok(HistoryOutcome { change_sets: sets })
    }

    async fn schema_push(
        &self,
        caller: &Caller,
        request: Result<SchemaPushRequest, Failure>,
    ) -> Result<SchemaPushOutcome, Failure> {
        let request = request?;
        let ns = Namespace::new(&request.namespace)
            .map_err(|e| invalid(vec![validate::name_violation(&e)]))?;
        caller.may(
            "push the schema of",
            Role::Admin,
            Scope::Namespace(ns.as_str()),
        )?;
        let schema = Schema::compile(request.schema.clone()).map_err(|v| invalid(vec![v]))?;
        let previous = self.store.schema(&ns).await.map_err(from_store)?;
        let old = previous.as_ref().map(|r| &r.schema).unwrap_or(&Value::Null);
        let removed = crate::schema_docs::removed_keys(old, &request.schema);
        let mut violations = Vec::new();
        for env in self.store.environments(&ns).await.map_err(from_store)? {
            let state = self.store.load_state(&ns, &env).await.map_err(from_store)?;
            // What the environment holds, with what it inherits (own values win).
            let inherited = self.inherited(&ns, &env).await?;
            let clear = self
                .vault
                .open_document(&ns, &env, state.documents())
                .await?;
            let found = crate::inherit::schema_violations(&schema, &inherited, &clear);
            // Removing a key that is set live is incompatible even when the new schema
            // allows unknown keys.
            let removed_live = removed
                .iter()
                .filter(|k| state.values.contains_key(*k) && !found.iter().any(|v| &v.key == *k))
                .map(|k| Violation {
                    key: k.clone(),
                    rule: "removed_key".into(),
                    message: format!("key {k:?} is set live but the new schema removes it"),
                })
                .collect::<Vec<_>>();
            violations.extend(found.into_iter().chain(removed_live).map(|v| Violation {
                message: format!("{env}: {}", v.message),
                ..v
            }));
        }
        if !violations.is_empty() && !request.force {
            let mut err = invalid(violations);
            err.message = format!(
                "live config violates the new schema ({}); use --force to push anyway",
                err.message
            );
            return Err(err);
        }
        let record_schema = request.schema.clone();
        let record = SchemaRecord {
            schema: request.schema,
            author: caller.author(request.author),
            time: new_meta_time().0,
        };
        let stored = self
            .store
            .put_schema(&ns, &record)
            .await
            .map_err(from_store)?;
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.clone(), (stored, Arc::new(schema)));
        if let Err(err) = self
            .store
            .client()
            .publish(schema_subject(&ns), Bytes::new())
            .await
        {
            tracing::warn!(error = %err, "could not announce the schema change");
        }
        tracing::info!(namespace = %ns, forced = !violations.is_empty(), "schema pushed");
        Ok(SchemaPushOutcome {
            forced_violations: violations,
            added_keys: crate::schema_docs::added_keys(old, &record_schema),
            removed_keys: removed,
        })
    }

    async fn status(
        &self,
        caller: &Caller,
        request: Result<StatusRequest, Failure>,
    ) -> Result<StatusOutcome, Failure> {
        let request = request?;
        let (ns, env) =
            validate::names(&request.namespace, &request.environment).map_err(invalid)?;
        caller.may(
            "read the status of",
            Role::Read,
            Scope::Env(ns.as_str(), env.as_str()),
        )?;
        let head = self.store.head(&ns, &env).await.map_err(from_store)?;
        let (version, committed) = head.map_or((0, 0), |h| (h.version, h.meta.time_us));
        let mut status = self
            .fleet
            .status(ns.as_str(), env.as_str(), version, committed, now_us());
        status.sites = self.sites.snapshot();
        Ok(status)
    }

    async fn schema_get(
        &self,
        caller: &Caller,
        request: Result<SchemaGetRequest, Failure>,
    ) -> Result<SchemaRecord, Failure> {
        let request = request?;
        let ns = Namespace::new(&request.namespace)
            .map_err(|e| invalid(vec![validate::name_violation(&e)]))?;
        caller.may(
            "read the schema of",
            Role::Read,
            Scope::Env(ns.as_str(), "*"),
        )?;
        self.store
            .schema(&ns)
            .await
            .map_err(from_store)?
            .ok_or_else(|| failure(ErrorKind::NotFound, format!("namespace {ns} has no schema")))
    }
}

/// Listens to every receipt, and once a second expires silent instances and exports the fleet
/// gauges of each namespace/environment.
async fn track_fleet(
    validator: Arc<Validator>,
    client: async_nats::Client,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut receipts = match client.subscribe(wire::RECEIPTS_ALL).await {
        Ok(subscription) => subscription,
        Err(err) => {
            tracing::error!(error = %err, "cannot follow receipts; the fleet view stays empty");
            return;
        }
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let stopped = async move {
        let mut stop = stop;
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            message = receipts.next() => {
                let Some(message) = message else { break };
                match serde_json::from_slice::<Receipt>(&message.payload) {
                    Ok(receipt) => validator.fleet.record(receipt, now_us()),
                    Err(err) => {
                        metrics::counter!("mycosynth_fleet_malformed_receipts_total").increment(1);
                        tracing::debug!(error = %err, "ignoring a malformed receipt");
                    }
                }
            }
            _ = tick.tick() => {
                let now = now_us();
                validator.fleet.expire(now);
                for (ns, env) in validator.fleet.groups() {
                    let (Ok(namespace), Ok(environment)) = (Namespace::new(&ns), Environment::new(&env)) else { continue };
                    let Ok(head) = validator.store.head(&namespace, &environment).await else { continue };
                    let (version, committed) = head.map_or((0, 0), |h| (h.version, h.meta.time_us));
                    let status = validator.fleet.status(&ns, &env, version, committed, now);
                    validator.fleet.export(&ns, &env, &status, now);
                }
            }
        }
    }
}

fn now_us() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// The document at `version`, folded from the change sets 1..=version. Err(v): version v is
/// missing from the history.
pub fn state_at(history: &[ChangeSetRecord], version: u64) -> Result<BTreeMap<String, Value>, u64> {
    let mut document = BTreeMap::new();
    let mut expected = 1;
    for set in history.iter().take_while(|s| s.version <= version) {
        if set.version != expected {
            return Err(expected);
        }
        for change in &set.changes {
            match &change.value {
                Some(value) => document.insert(change.key.clone(), value.clone()),
                None => document.remove(&change.key),
            };
        }
        expected += 1;
    }
    if expected != version + 1 {
        return Err(expected);
    }
    Ok(document)
}

/// The change event of a committed change set: subject and rkyv bytes.
fn change_event(
    ns: &Namespace,
    env: &Environment,
    version: u64,
    changes: &[KeyChange],
    meta: &ChangeMeta,
) -> (String, Bytes) {
    let event = ChangeEvent {
        format: EVENT_FORMAT,
        namespace: ns.to_string(),
        environment: env.to_string(),
        version,
        previous_version: version - 1,
        changes: changes
            .iter()
            .map(|c| EventChange {
                key: c.key.clone(),
                value_json: c.value.as_ref().map(Value::to_string),
            })
            .collect(),
        change_id: meta.change_id.clone(),
        author: meta.author.clone(),
        reason: meta.reason.clone(),
        source: meta.source.as_str().to_owned(),
        committed_at_us: meta.time_us,
    };
    (event_subject(ns, env), Bytes::from(event.encode()))
}

fn new_meta_time() -> (String, i64) {
    let now = time::OffsetDateTime::now_utc();
    let text = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let micros = i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
    (text, micros)
}

fn new_meta(attribution: &Attribution) -> ChangeMeta {
    let (time, time_us) = new_meta_time();
    ChangeMeta {
        change_id: uuid::Uuid::now_v7().to_string(),
        author: attribution.author.clone(),
        time,
        time_us,
        reason: attribution.reason.clone(),
        source: attribution.source,
        git_commit: attribution.git_commit.clone(),
        request_id: attribution.request_id.clone(),
        emergency: attribution.emergency,
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    if body.len() > MAX_REQUEST_BYTES {
        metrics::counter!("mycosynth_validator_rejections_total", "reason" => "too_large")
            .increment(1);
        return Err(failure(
            ErrorKind::BadRequest,
            format!(
                "request of {} bytes is larger than {MAX_REQUEST_BYTES} bytes",
                body.len()
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        metrics::counter!("mycosynth_validator_rejections_total", "reason" => "malformed")
            .increment(1);
        failure(ErrorKind::BadRequest, format!("malformed request: {e}"))
    })
}

fn encode<T: serde::Serialize>(result: Result<T, Failure>) -> (Bytes, &'static str) {
    let (reply, outcome) = match result {
        Ok(value) => (serde_json::to_vec(&Reply::Ok(value)), "ok"),
        Err(err) => {
            let kind = err.kind.as_str();
            (serde_json::to_vec(&Reply::<T>::Error(err)), kind)
        }
    };
    (
        Bytes::from(reply.unwrap_or_else(|_| {
            br#"{"error":{"kind":"internal","message":"reply not encodable"}}"#.to_vec()
        })),
        outcome,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(version: u64, changes: Vec<KeyChange>) -> ChangeSetRecord {
        ChangeSetRecord {
            namespace: "ns".into(),
            environment: "e".into(),
            version,
            previous_version: version - 1,
            meta: ChangeMeta {
                change_id: String::new(),
                author: String::new(),
                time: String::new(),
                time_us: 0,
                reason: String::new(),
                source: ChangeSource::Cli,
                git_commit: None,
                request_id: None,
                emergency: false,
            },
            changes,
        }
    }

    #[test]
    fn state_at_folds_history() {
        let history = vec![
            set(
                1,
                vec![KeyChange {
                    key: "a".into(),
                    value: Some(json!(1)),
                }],
            ),
            set(
                2,
                vec![KeyChange {
                    key: "b".into(),
                    value: Some(json!(2)),
                }],
            ),
            set(
                3,
                vec![KeyChange {
                    key: "a".into(),
                    value: None,
                }],
            ),
        ];
        assert_eq!(state_at(&history, 0).unwrap(), BTreeMap::new());
        assert_eq!(
            state_at(&history, 2).unwrap(),
            BTreeMap::from([("a".into(), json!(1)), ("b".into(), json!(2))])
        );
        assert_eq!(
            state_at(&history, 3).unwrap(),
            BTreeMap::from([("b".into(), json!(2))])
        );
        assert_eq!(
            state_at(&history[1..], 3),
            Err(1),
            "a hole in history is reported"
        );
    }
}
