//! Starting a subscriber: where the first snapshot comes from (NATS, the last-known-good cache,
//! or schema defaults), and the connection's reconnect policy.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc, watch};

use crate::backoff::Backoff;
use crate::cache::{self, CacheError};
use crate::reporter::{identity, spawn_reporter, ReportState};
use crate::snapshot::{schema_defaults, Snapshot};
use crate::status::{Health, Origin};
use crate::updater::{Counters, Shared, Updater, UpdaterOptions};
use crate::wire::{receipt_subject, Environment, Namespace, ReceiptKind};
use crate::{loader, Error, Lifetime, Subscriber};

/// What `connect` does when NATS cannot be reached and there is no usable cache.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StartPolicy {
    /// Fail at once with [`Error::Connect`] (or [`Error::Load`]). The default: a service that
    /// has never had its config should not start with a guess.
    #[default]
    FailFast,
    /// Keep trying (with backoff) until this much time has passed, then fail.
    WaitFor(Duration),
    /// Start at once serving the `default`s of this JSON Schema (version 0), and keep
    /// connecting in the background; the real config replaces them when NATS is reached.
    SchemaDefaults(serde_json::Value),
}

/// Builds a [`Subscriber`]; see [`Subscriber::builder`].
#[derive(Debug, Clone)]
pub struct SubscriberBuilder {
    pub(crate) namespace: String,
    pub(crate) environment: String,
    pub(crate) nats_urls: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) load_timeout: Duration,
    pub(crate) gap_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) anti_entropy_interval: Duration,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) start_policy: StartPolicy,
    pub(crate) client_name: Option<String>,
    pub(crate) receipts: bool,
    pub(crate) heartbeat: Duration,
    pub(crate) instance_id: Option<String>,
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    pub(crate) validate: bool,
    /// Follow the declared parent chain (off for the inner subscribers of parents).
    pub(crate) inherit: bool,
    pub(crate) credentials: crate::Credentials,
    pub(crate) events_from: crate::EventSource,
}

impl SubscriberBuilder {
    pub(crate) fn new(namespace: String, environment: String) -> SubscriberBuilder {
        SubscriberBuilder {
            namespace,
            environment,
            nats_urls: "nats://127.0.0.1:4222".into(),
            connect_timeout: Duration::from_secs(5),
            load_timeout: Duration::from_secs(10),
            gap_timeout: Duration::from_millis(200),
            backoff: Backoff::default(),
            anti_entropy_interval: Duration::from_secs(30),
            cache_dir: None,
            start_policy: StartPolicy::FailFast,
            client_name: None,
            receipts: true,
            heartbeat: Duration::from_secs(10),
            instance_id: None,
            labels: Default::default(),
            validate: false,
            inherit: true,
            credentials: crate::Credentials::default(),
            events_from: crate::EventSource::Validator,
        }
    }

    /// NATS server URL, or several separated by commas (the client fails over between them).
    /// Default `nats://127.0.0.1:4222`.
    pub fn nats_url(mut self, urls: impl Into<String>) -> Self {
        self.nats_urls = urls.into();
        self
    }

    /// How long one connection attempt may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long loading the snapshot from KV may take. Default 10 s.
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// How long an out-of-order event waits for the missing one before a full resync.
    /// Default 200 ms.
    pub fn gap_timeout(mut self, timeout: Duration) -> Self {
        self.gap_timeout = timeout;
        self
    }

    /// Backoff of reconnects and resync retries: exponential from `initial` up to `max`, with
    /// jitter. Default 250 ms up to 30 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(initial, max);
        self
    }

    /// How often the held version is compared with the authoritative one, so that a lost final
    /// event is caught even when no further event arrives. Default 30 s.
    pub fn anti_entropy_interval(mut self, interval: Duration) -> Self {
        self.anti_entropy_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Keep a last-known-good cache file in `dir` (one per namespace/environment), written after
    /// every applied version and read at start, so the service can start while NATS is down.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// What to do when neither NATS nor a cache is available at start. Default
    /// [`StartPolicy::FailFast`].
    pub fn start_policy(mut self, policy: StartPolicy) -> Self {
        self.start_policy = policy;
        self
    }

    /// Report the version held to the fleet view (`mycosynth status`): a receipt at every
    /// change and a heartbeat every `heartbeat`. On by default, every 10 s.
    pub fn receipts(mut self, enabled: bool, heartbeat: Duration) -> Self {
        self.receipts = enabled;
        self.heartbeat = heartbeat.max(Duration::from_millis(100));
        self
    }

    /// This instance's id in the fleet view and in rollouts (default: `<host>-<pid>`). A
    /// rollout's cohort is a hash of this id, so a stable id (a pod or host name) puts an
    /// instance back into the same cohort when it restarts.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = mycosynth_subscriber::Subscriber::builder("payment-service", "production")
    ///     .instance_id("payments-7f9c")
    ///     .connect()
    ///     .await?;
    /// # let _ = config; Ok(()) }
    /// ```
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Labels of this instance (e.g. `zone=eu-1`), reported in its receipts; a rollout started
    /// with `--target label=value` takes only instances carrying them.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = mycosynth_subscriber::Subscriber::builder("payment-service", "production")
    ///     .labels([("zone", "eu-1")])
    ///     .connect()
    ///     .await?;
    /// # let _ = config; Ok(()) }
    /// ```
    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Check every new snapshot against the namespace schema before serving it; a version that
    /// fails is refused (the previous snapshot keeps being served) and reported to the fleet.
    /// Needs the crate feature `validation`; without it this checks nothing.
    pub fn validate_against_schema(mut self, enabled: bool) -> Self {
        self.validate = enabled;
        self
    }

    /// How to authenticate to NATS (nkey, TLS); see [`crate::Credentials`]. Default: none
    /// (anonymous, for an open dev server).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let creds = mycosynth_subscriber::Credentials::from_env()?;
    /// let config = mycosynth_subscriber::Subscriber::builder("payment-service", "production")
    ///     .credentials(creds)
    ///     .connect()
    ///     .await?;
    /// # let _ = config; Ok(()) }
    /// ```
    pub fn credentials(mut self, credentials: crate::Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Where change events come from: the validator's (default), or, for a service connected to
    /// a site's leaf node, the heads its mirror republishes; see [`crate::EventSource`]. Reads
    /// (start, resync, anti-entropy) always go to the JetStream of the server connected to,
    /// which at a site is the site's mirror.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = mycosynth_subscriber::Subscriber::builder("payment-service", "production")
    ///     .nats_url("nats://127.0.0.1:4222")
    ///     .events_from(mycosynth_subscriber::EventSource::SiteMirror)
    ///     .connect()
    ///     .await?;
    /// # let _ = config; Ok(()) }
    /// ```
    pub fn events_from(mut self, source: crate::EventSource) -> Self {
        self.events_from = source;
        self
    }

    /// Name of the NATS connection, as shown by the server's monitoring.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    fn options(
        &self,
        health: &Arc<Health>,
        resync: &mpsc::Sender<()>,
    ) -> async_nats::ConnectOptions {
        let (on_event_health, on_event_resync) = (Arc::clone(health), resync.clone());
        let (attempt_health, backoff) = (Arc::clone(health), self.backoff);
        // The credentials first: a token file needs options built around its auth callback.
        let mut options = self
            .credentials
            .connect_options()
            .connection_timeout(self.connect_timeout)
            .event_callback(move |event| {
                let (health, resync) = (Arc::clone(&on_event_health), on_event_resync.clone());
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            health.set_connected(true);
                            health.reconnects.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("mycosynth_subscriber_reconnects_total").increment(1);
                            // A full channel already holds a resync request; one is enough.
                            let _ = resync.try_send(());
                        }
                        async_nats::Event::Disconnected | async_nats::Event::Closed => {
                            health.set_connected(false)
                        }
                        _ => {}
                    }
                }
            })
            .reconnect_delay_callback(move |attempt| {
                attempt_health
                    .connect_attempts
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("mycosynth_subscriber_connect_attempts_total").increment(1);
                // The first retry after losing a connection is immediate; then back off.
                if attempt <= 1 {
                    Duration::ZERO
                } else {
                    backoff.delay(u32::try_from(attempt - 1).unwrap_or(u32::MAX))
                }
            });
        if let Some(name) = &self.client_name {
            options = options.name(name);
        }
        options
    }

    fn urls(&self) -> Result<Vec<async_nats::ServerAddr>, Error> {
        self.nats_urls
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|err: std::io::Error| Error::Connect {
                url: self.nats_urls.clone(),
                message: err.to_string(),
            })
    }

    /// Connects, loads the snapshot and starts following changes. Must be called inside a
    /// tokio runtime; the subscriber's task runs there until the last handle is dropped.
    ///
    /// With a cache present this returns at once, serving the cache, and catches up in the
    /// background. Without one, it loads from NATS, or follows the [`StartPolicy`].
    pub async fn connect(self) -> Result<Subscriber, Error> {
        let namespace = Namespace::new(self.namespace.clone())?;
        let environment = Environment::new(self.environment.clone())?;
        let urls = self.urls()?;
        let health = Arc::new(Health::new());
        let (resync_tx, resync_rx) = mpsc::channel(4);
        let connect_err = |message: String| Error::Connect {
            url: self.nats_urls.clone(),
            message,
        };

        let cached = self.cache_dir.as_ref().and_then(|dir| {
            match cache::read(dir, &namespace, &environment) {
                Ok(snapshot) => Some(snapshot),
                Err(CacheError::Missing(_)) => None,
                Err(err) => {
                    metrics::counter!("mycosynth_subscriber_cache_refused_total").increment(1);
                    tracing::warn!(error = %err, "ignoring the last-known-good cache");
                    None
                }
            }
        });

        // The first snapshot, and the client it will be kept current with.
        // `Some(following)` when the snapshot was loaded from NATS (subscribed before loading).
        let (client, snapshot, following) = match (cached, &self.start_policy) {
            (Some(snapshot), _) => {
                health.set_origin(Origin::Cache);
                let client = self.background_client(&health, &resync_tx, urls).await?;
                (client, snapshot, None)
            }
            (None, StartPolicy::FailFast) => {
                let client = self
                    .options(&health, &resync_tx)
                    .connect(urls)
                    .await
                    .map_err(|e| connect_err(e.to_string()))?;
                let (snapshot, following) = self.load(&client, &namespace, &environment).await?;
                (client, snapshot, Some(following))
            }
            (None, StartPolicy::WaitFor(wait)) => {
                let deadline = Instant::now() + *wait;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let tried = match self
                        .options(&health, &resync_tx)
                        .connect(urls.clone())
                        .await
                    {
                        Ok(client) => self
                            .load(&client, &namespace, &environment)
                            .await
                            .map(|loaded| (client, loaded)),
                        Err(err) => Err(connect_err(err.to_string())),
                    };
                    match tried {
                        Ok((client, (snapshot, following))) => {
                            break (client, snapshot, Some(following))
                        }
                        Err(err) if Instant::now() >= deadline => return Err(err),
                        Err(_) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            tokio::time::sleep(self.backoff.delay(attempt).min(left)).await;
                        }
                    }
                }
            }
            (None, StartPolicy::SchemaDefaults(schema)) => {
                let attempt = match self
                    .options(&health, &resync_tx)
                    .connect(urls.clone())
                    .await
                {
                    Ok(client) => self
                        .load(&client, &namespace, &environment)
                        .await
                        .map(|s| (client, s))
                        .ok(),
                    Err(_) => None,
                };
                match attempt {
                    Some((client, (snapshot, following))) => (client, snapshot, Some(following)),
                    None => {
                        health.set_origin(Origin::Defaults);
                        let client = self.background_client(&health, &resync_tx, urls).await?;
                        let defaults = Arc::new(schema_defaults(schema));
                        (
                            client,
                            Snapshot::new(0, Default::default(), defaults, 0),
                            None,
                        )
                    }
                }
            }
        };
        if client.connection_state() == async_nats::connection::State::Connected {
            health.set_connected(true);
        }

        let loaded_from_nats = following.is_some();
        let mut resync_rx = resync_rx;
        let following = match following {
            Some(following) => {
                health.confirm();
                // Just loaded: the Connected-event request made during connect is redundant.
                while resync_rx.try_recv().is_ok() {}
                following
            }
            None => {
                // Serving a cache or defaults: catch up as soon as NATS answers.
                let _ = resync_tx.try_send(());
                follow(&client, &namespace, &environment, self.events_from).await?
            }
        };
        tracing::info!(%namespace, %environment, version = snapshot.version(), keys = snapshot.len(), from_nats = loaded_from_nats, "config ready");

        let cache_writer = self.cache_dir.clone().map(|dir| {
            let (tx, rx) = watch::channel(Arc::new(snapshot.clone()));
            (
                tx,
                spawn_cache_writer(
                    dir,
                    namespace.clone(),
                    environment.clone(),
                    rx,
                    loaded_from_nats,
                ),
            )
        });
        let (notices, _) = broadcast::channel(1024);
        let instance_id = self
            .instance_id
            .clone()
            .unwrap_or_else(crate::reporter::default_instance_id);
        let canary = Arc::new(crate::rollout::Canary::new(
            instance_id.clone(),
            self.labels.clone(),
        ));
        let shared = Arc::new(Shared {
            namespace,
            environment,
            version: watch::Sender::new(snapshot.version()),
            snapshot: ArcSwap::from_pointee(snapshot),
            notices,
            counters: Counters::default(),
            resync_requests: resync_tx,
            health,
            client: client.clone(),
            canary,
        });
        let (cache, cache_task) = match cache_writer {
            Some((tx, task)) => (Some(tx), Some(task)),
            None => (None, None),
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (reports, reporter_task) = if self.receipts {
            let current = shared.snapshot.load();
            let (tx, rx) = watch::channel(ReportState {
                version: current.version(),
                applied_at_us: 0,
                committed_at_us: current.committed_at_us(),
                kind: ReceiptKind::Heartbeat,
                rejected: None,
            });
            let identity = identity(
                shared.namespace.as_str(),
                shared.environment.as_str(),
                instance_id.clone(),
            );
            let task = spawn_reporter(
                client.clone(),
                receipt_subject(&shared.namespace, &shared.environment),
                identity,
                self.heartbeat,
                (Arc::clone(&shared.health), Arc::clone(&shared.canary)),
                rx,
                shutdown_rx.clone(),
            );
            (Some(tx), Some(task))
        } else {
            (None, None)
        };
        // Inner subscribers of parents (inherit off) take no part in rollouts.
        let follower = self.inherit.then(|| {
            crate::rollout::spawn_follower(
                Arc::clone(&shared),
                Arc::clone(&shared.canary),
                reports.clone(),
                shutdown_rx.clone(),
            )
        });
        let updater = Updater {
            shared: Arc::clone(&shared),
            js: async_nats::jetstream::new(client.clone()),
            client,
            kv: None,
            cache,
            reports,
            validate: self.validate,
            schema_check: None,
            checked_with: None,
            events: following.events,
            events_from: self.events_from,
            schema_changes: following.schema_changes,
            resync_requests: resync_rx,
            options: UpdaterOptions {
                gap_timeout: self.gap_timeout,
                load_timeout: self.load_timeout,
                backoff: self.backoff,
                anti_entropy_interval: self.anti_entropy_interval,
            },
            meters: crate::updater::Meters::new(&shared.namespace, &shared.environment),
            pending: Default::default(),
            gap_since: None,
            retry: None,
            data_key: None,
            next_values: Default::default(),
        };
        let task = tokio::spawn(updater.run(shutdown_rx));
        let mut subscriber = Subscriber {
            shared,
            lifetime: Arc::new(Lifetime {
                shutdown: shutdown_tx,
                tasks: Mutex::new(
                    vec![task]
                        .into_iter()
                        .chain(cache_task)
                        .chain(reporter_task)
                        .chain(follower)
                        .collect(),
                ),
            }),
            parents: Arc::from([]),
        };
        if self.inherit && !loaded_from_nats {
            // Started from a cache or defaults because NATS is unreachable: do not wait for it.
            tracing::debug!(
                "started without NATS: a declared parent chain is not followed until restart"
            );
        } else if self.inherit {
            let (parents, tasks) = crate::inherit::attach(&subscriber, &self).await?;
            if let Ok(mut owned) = subscriber.lifetime.tasks.lock() {
                owned.extend(tasks);
            }
            subscriber.parents = parents;
        }
        Ok(subscriber)
    }

    /// A client that connects in the background (returns at once, retries with backoff).
    async fn background_client(
        &self,
        health: &Arc<Health>,
        resync: &mpsc::Sender<()>,
        urls: Vec<async_nats::ServerAddr>,
    ) -> Result<async_nats::Client, Error> {
        self.options(health, resync)
            .retry_on_initial_connect()
            .connect(urls)
            .await
            .map_err(|e| Error::Connect {
                url: self.nats_urls.clone(),
                message: e.to_string(),
            })
    }

    /// Subscribes to the change events, then loads the snapshot: the updater applies buffered
    /// events above the loaded version, so nothing committed in between is lost.
    async fn load(
        &self,
        client: &async_nats::Client,
        ns: &Namespace,
        env: &Environment,
    ) -> Result<(Snapshot, Following), Error> {
        let following = follow(client, ns, env, self.events_from).await?;
        client
            .flush()
            .await
            .map_err(|err| Error::Subscribe(err.to_string()))?;
        let js = async_nats::jetstream::new(client.clone());
        let (state, schema) = tokio::join!(
            loader::load_state(&js, ns, env, self.load_timeout),
            loader::load_schema(&js, ns, self.load_timeout)
        );
        let (state, schema) = (state?, schema?);
        let defaults = Arc::new(loader::defaults_of(schema.as_ref()));
        let snapshot = Snapshot::new(state.version, state.values, defaults, state.committed_at_us);
        Ok((snapshot, following))
    }
}

/// The subscriptions a subscriber follows changes through.
struct Following {
    events: async_nats::Subscriber,
    schema_changes: async_nats::Subscriber,
}

async fn follow(
    client: &async_nats::Client,
    ns: &Namespace,
    env: &Environment,
    source: crate::EventSource,
) -> Result<Following, Error> {
    let subscribe_err = |err: async_nats::SubscribeError| Error::Subscribe(err.to_string());
    let (events, schema_changes) = source.subjects(ns, env);
    Ok(Following {
        events: client.subscribe(events).await.map_err(subscribe_err)?,
        schema_changes: client
            .subscribe(schema_changes)
            .await
            .map_err(subscribe_err)?,
    })
}

/// Writes each new snapshot to the cache file, off the updater's path: the updater only swaps
/// an `Arc` into a watch channel, so a slow disk never delays applying events, and a burst of
/// versions is written once, as its newest.
fn spawn_cache_writer(
    dir: PathBuf,
    ns: Namespace,
    env: Environment,
    mut latest: watch::Receiver<Arc<Snapshot>>,
    write_initial: bool,
) -> tokio::task::JoinHandle<()> {
    if !write_initial {
        latest.mark_unchanged();
    } else {
        latest.mark_changed();
    }
    tokio::spawn(async move {
        while latest.changed().await.is_ok() {
            let snapshot = Arc::clone(&latest.borrow_and_update());
            let (dir, ns, env) = (dir.clone(), ns.clone(), env.clone());
            let written =
                tokio::task::spawn_blocking(move || cache::write(&dir, &ns, &env, &snapshot)).await;
            match written {
                Ok(Ok(())) => {
                    metrics::counter!("mycosynth_subscriber_cache_writes_total").increment(1)
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "could not write the last-known-good cache")
                }
                Err(err) => tracing::warn!(error = %err, "cache writer failed"),
            }
        }
    })
}
