//! The fleet of a namespace/environment: every instance's version and state (current, behind,
//! rejected, stale) and the convergence after the last change. The page updates live: an SSE
//! stream (`/fleet/events`) sends the table again whenever it changes.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::Path;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use axum::Extension;
use futures::stream::{self, Stream};
use mycosynth_subscriber::wire::{endpoint, InstanceState, StatusOutcome, StatusRequest};

use super::{render, Page};
use crate::console::error::ConsoleError;
use crate::console::viewer::Viewer;

/// How often the live page asks the validator.
const POLL: Duration = Duration::from_secs(1);

/// One instance as the table shows it.
pub struct InstanceRow {
    /// Its id.
    pub id: String,
    /// Host and pid.
    pub host: String,
    /// The version it holds.
    pub version: u64,
    /// `current`, `behind`, `rejected` or `stale`.
    pub state: &'static str,
}

/// The table (also what the SSE stream sends).
#[derive(Template)]
#[template(path = "console/fleet_table.html")]
pub struct FleetTable {
    /// The authoritative version.
    pub latest: u64,
    /// Instances holding it.
    pub holding: usize,
    /// Convergence after the last change, ms (empty while not converged).
    pub convergence: String,
    /// The instances.
    pub instances: Vec<InstanceRow>,
}

/// The fleet page.
#[derive(Template)]
#[template(path = "console/fleet.html")]
pub struct FleetPage {
    /// The layout.
    pub page: Page,
    /// Namespace.
    pub ns: String,
    /// Environment.
    pub env: String,
    /// The table.
    pub table: FleetTable,
}

fn table(status: StatusOutcome) -> FleetTable {
    let mut instances: Vec<InstanceRow> = status
        .instances
        .iter()
        .map(|i| InstanceRow {
            id: i.receipt.instance_id.clone(),
            host: format!("{} pid {}", i.receipt.host, i.receipt.pid),
            version: i.receipt.version,
            state: match i.state {
                InstanceState::Current => "current",
                InstanceState::Behind => "behind",
                InstanceState::Rejected => "rejected",
                InstanceState::Stale => "stale",
            },
        })
        .collect();
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    FleetTable {
        latest: status.latest_version,
        holding: status.holding_latest,
        convergence: status
            .convergence_ms
            .map(|ms| format!("{ms:.1} ms"))
            .unwrap_or_default(),
        instances,
    }
}

async fn status(viewer: &Viewer, ns: &str, env: &str) -> Result<StatusOutcome, ConsoleError> {
    let request = StatusRequest {
        namespace: ns.to_owned(),
        environment: env.to_owned(),
    };
    Ok(viewer.api.call(endpoint::STATUS, &request).await?)
}

/// `GET /ns/{ns}/{env}/fleet`.
pub async fn page(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let table = table(status(&viewer, &ns, &env).await?);
    render(&FleetPage {
        page: Page::new(format!("Fleet of {ns}/{env}"), &viewer),
        ns,
        env,
        table,
    })
}

/// `GET /ns/{ns}/{env}/fleet/events`: the table as an SSE event `fleet` whenever it changes
/// (asked every second; an unanswered poll sends nothing and the next one tries again).
pub async fn events(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = (viewer, ns, env, String::new());
    let changes = stream::unfold(state, |(viewer, ns, env, last)| async move {
        loop {
            tokio::time::sleep(POLL).await;
            let html = match status(&viewer, &ns, &env).await {
                Ok(s) => table(s).render().unwrap_or_default(),
                Err(_) => continue,
            };
            if html != last && !html.is_empty() {
                let event = Event::default().event("fleet").data(html.clone());
                return Some((Ok(event), (viewer, ns, env, html)));
            }
        }
    });
    Sse::new(changes).keep_alive(KeepAlive::default())
}
