//! The change stream, `GET /v1/watch/{ns}/{env}`: Server-Sent Events rendered once per change
//! and handed to every client's own bounded queue.
//!
//! One task, the broadcaster, owns the list of clients: it takes the subscriber's change
//! notices, renders each into a [`Frame`] once, and offers it to every queue with `try_send`.
//! It never waits for a client: a client whose queue is full is dropped (its stream ends once
//! it has taken what it holds) and counted in `mycosynth_sidecar_stream_dropped_total`; it
//! reconnects with `Last-Event-ID` and is sent the current state. Registrations go through the
//! same task, so a new client's first frame (the state, when it is behind) and the events after
//! it are in order, without a lock between the broadcaster and the handlers.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use mycosynth_subscriber::{ChangeNotice, NoticeCause, Subscriber};
use tokio::sync::{broadcast, mpsc, watch};

use super::runtime::{check_names, path};
use super::view::{change_event, Frame, Revision};
use super::{Sidecar, SidecarError};

/// How a client wants its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `event: change` / `event: state` with the values.
    Mycosynth,
    /// OFREP's `refetchEvaluation` notifications (`?format=ofrep`).
    Ofrep,
}

/// A client asking to be added.
struct Registration {
    queue: mpsc::Sender<Arc<Frame>>,
    /// The `Last-Event-ID` it resumes from (none: a new client).
    last_event_id: Option<String>,
}

/// The handlers' side: adds clients to the broadcaster.
pub struct Fanout {
    registrations: mpsc::Sender<Registration>,
    queue: usize,
    clients: Arc<AtomicUsize>,
}

impl Fanout {
    /// A fan-out whose clients may queue `queue` frames, and the broadcaster that feeds them
    /// (to be run once the subscriber exists).
    pub fn new(queue: usize, heartbeat: Duration) -> (Fanout, Broadcaster) {
        let (registrations, pending) = mpsc::channel(1024);
        let clients = Arc::new(AtomicUsize::new(0));
        let fanout = Fanout {
            registrations,
            queue: queue.max(1),
            clients: Arc::clone(&clients),
        };
        let broadcaster = Broadcaster {
            pending,
            heartbeat: heartbeat.max(Duration::from_millis(10)),
            clients: Vec::new(),
            count: clients,
            published: None,
            state: None,
        };
        (fanout, broadcaster)
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    async fn register(
        &self,
        last_event_id: Option<String>,
    ) -> Result<mpsc::Receiver<Arc<Frame>>, SidecarError> {
        let (queue, frames) = mpsc::channel(self.queue);
        self.registrations
            .send(Registration {
                queue,
                last_event_id,
            })
            .await
            .map_err(|_| SidecarError::Starting)?;
        Ok(frames)
    }
}

struct Client {
    queue: mpsc::Sender<Arc<Frame>>,
    /// The revision of the state it was sent on joining: a change frame of that same revision
    /// (its notice was still on the way) would tell it nothing new.
    seen: Option<Revision>,
}

/// The one task that owns the clients; see the module doc.
pub struct Broadcaster {
    pending: mpsc::Receiver<Registration>,
    heartbeat: Duration,
    clients: Vec<Client>,
    count: Arc<AtomicUsize>,
    /// The revision of the last change or state frame sent to everyone.
    published: Option<Revision>,
    /// The state frame of the newest revision, for clients that join behind.
    state: Option<Arc<Frame>>,
}

impl Broadcaster {
    /// Runs until `stopped` turns true; then drops every client, which ends their streams.
    pub async fn run(
        mut self,
        sidecar: Arc<Sidecar>,
        subscriber: Subscriber,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut notices = subscriber.subscribe();
        self.published = Some(Revision::of(&subscriber));
        let heartbeat = Arc::new(Frame::heartbeat());
        let mut beat = tokio::time::interval(self.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.reset();
        loop {
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => break,
                notice = notices.recv() => match notice {
                    Ok(notice) => self.on_notice(&sidecar, &subscriber, &notice),
                    // More notices than the channel holds went by: the state says it all.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.publish_state(&sidecar, &subscriber),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                registration = self.pending.recv() => match registration {
                    Some(registration) => self.register(&sidecar, &subscriber, registration),
                    None => break,
                },
                _ = beat.tick() => self.send_all(&heartbeat),
            }
        }
        self.clients.clear();
        self.count.store(0, Ordering::Relaxed);
        metrics::gauge!("mycosynth_sidecar_stream_clients").set(0.0);
    }

    /// A change notice becomes a `change` frame with the values after it, when the subscriber
    /// still holds the version it is about. When it already holds a newer one (several change
    /// sets applied before this task ran), the values of the notice's version are gone: one
    /// `state` frame of what is held says the same, exactly, and the notices it covers are
    /// then skipped.
    fn on_notice(&mut self, sidecar: &Sidecar, subscriber: &Subscriber, notice: &ChangeNotice) {
        let revision = Revision::of(subscriber);
        if self.published.as_ref() == Some(&revision) {
            return;
        }
        let exact =
            notice.cause == NoticeCause::Inherited || subscriber.version() == notice.version;
        if !exact {
            self.publish_state(sidecar, subscriber);
            return;
        }
        let frame = Arc::new(change_event(sidecar.names(), notice, subscriber, &revision));
        metrics::counter!("mycosynth_sidecar_stream_events_total", "event" => "change")
            .increment(1);
        self.published = Some(revision);
        self.send_all(&frame);
    }

    fn publish_state(&mut self, sidecar: &Sidecar, subscriber: &Subscriber) {
        let Some(frame) = self.state_frame(sidecar, subscriber) else {
            return;
        };
        if self.published == frame.revision {
            return;
        }
        metrics::counter!("mycosynth_sidecar_stream_events_total", "event" => "state").increment(1);
        self.published.clone_from(&frame.revision);
        self.send_all(&frame);
    }

    /// The `state` frame of the revision held now (rendered once per revision).
    fn state_frame(&mut self, sidecar: &Sidecar, subscriber: &Subscriber) -> Option<Arc<Frame>> {
        let rendered = sidecar.rendered().ok()?;
        if let Some(state) = &self.state {
            if state.revision.as_ref() == Some(&rendered.revision) {
                return Some(Arc::clone(state));
            }
        }
        let committed_s = subscriber.snapshot().committed_at_us() / 1_000_000;
        let frame = Arc::new(Frame::state(&rendered, committed_s));
        self.state = Some(Arc::clone(&frame));
        Some(frame)
    }

    /// Adds a client; sends it the state first unless it resumes from the revision held.
    fn register(&mut self, sidecar: &Sidecar, subscriber: &Subscriber, registration: Registration) {
        let current = Revision::of(subscriber).to_string();
        let mut seen = None;
        if registration.last_event_id.as_deref() != Some(current.as_str()) {
            let Some(state) = self.state_frame(sidecar, subscriber) else {
                return;
            };
            if registration.queue.try_send(Arc::clone(&state)).is_err() {
                return;
            }
            seen.clone_from(&state.revision);
        }
        metrics::counter!("mycosynth_sidecar_stream_connects_total").increment(1);
        self.clients.push(Client {
            queue: registration.queue,
            seen,
        });
        self.counted();
    }

    /// Offers `frame` to every client; drops those whose queue is full or gone.
    fn send_all(&mut self, frame: &Arc<Frame>) {
        let before = self.clients.len();
        self.clients.retain_mut(|client| {
            if let Some(revision) = &frame.revision {
                if client.seen.take().as_ref() == Some(revision) {
                    return true;
                }
            }
            match client.queue.try_send(Arc::clone(frame)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("mycosynth_sidecar_stream_dropped_total", "reason" => "slow")
                        .increment(1);
                    tracing::warn!("dropping a change-stream client whose queue is full; it will get the state when it reconnects");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    metrics::counter!("mycosynth_sidecar_stream_dropped_total", "reason" => "gone")
                        .increment(1);
                    false
                }
            }
        });
        if self.clients.len() != before {
            self.counted();
        }
    }

    fn counted(&self) {
        self.count.store(self.clients.len(), Ordering::Relaxed);
        metrics::gauge!("mycosynth_sidecar_stream_clients").set(self.clients.len() as f64);
    }
}

/// `GET /v1/watch/{ns}/{env}[?format=ofrep]`: the change stream. `Last-Event-ID` resumes: a
/// client at the revision held gets only what follows; any other gets the state first.
pub async fn stream(
    State(sidecar): State<Arc<Sidecar>>,
    names: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, SidecarError> {
    let (namespace, environment) = path(names)?;
    check_names(&sidecar, &namespace, &environment)?;
    let format = match query.as_deref().unwrap_or_default() {
        "" | "format=mycosynth" => Format::Mycosynth,
        "format=ofrep" => Format::Ofrep,
        other => {
            return Err(SidecarError::BadPath(format!(
                "query {other:?}: the only parameter is format=mycosynth or format=ofrep"
            )))
        }
    };
    sidecar.subscriber()?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let frames = sidecar.fanout.register(last_event_id).await?;
    // The reconnect delay for EventSource clients, written at once so the headers leave now.
    let prelude = futures::stream::once(async { Ok(Bytes::from_static(b"retry: 1000\n\n")) });
    let frames = futures::stream::unfold(frames, move |mut frames| async move {
        let frame = frames.recv().await?;
        let bytes = match format {
            Format::Mycosynth => frame.mycosynth.clone(),
            Format::Ofrep => frame.ofrep.clone(),
        };
        Some((Ok::<Bytes, Infallible>(bytes), frames))
    });
    let mut response = (StatusCode::OK, Body::from_stream(prelude.chain(frames))).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
