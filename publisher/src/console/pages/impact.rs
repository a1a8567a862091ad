//! Impact: the fleet's health signals in a window before and after a version's commit, as a
//! table and a chart (bars drawn as server-rendered SVG: no script, nothing inline for the CSP
//! to refuse), plus canary against control while a rollout runs.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::Extension;
use mycosynth_subscriber::wire::{endpoint, ImpactOutcome, ImpactRequest, SignalComparison};

use super::{render, Page};
use crate::console::error::ConsoleError;
use crate::console::viewer::Viewer;

/// The chart's width for one bar at the largest value, in px.
const BAR_WIDTH: f64 = 360.0;

/// One signal as the page shows it.
pub struct SignalRow {
    /// Its name.
    pub signal: String,
    /// Mean before the commit (empty: no data).
    pub before: String,
    /// Mean after.
    pub after: String,
    /// Instances and samples before / after.
    pub counts: String,
    /// after ÷ before, when both exist and before is not 0.
    pub ratio: String,
    /// The bars' widths, px (0 without data).
    pub before_px: u32,
    /// After.
    pub after_px: u32,
    /// The chart's y of this signal's first bar.
    pub y: u32,
}

/// The impact page.
#[derive(Template)]
#[template(path = "console/impact.html")]
pub struct ImpactPage {
    /// The layout.
    pub page: Page,
    /// Namespace.
    pub ns: String,
    /// Environment.
    pub env: String,
    /// The version looked at.
    pub version: u64,
    /// The window on each side, as asked.
    pub window: String,
    /// The signals.
    pub rows: Vec<SignalRow>,
    /// The chart's height, px.
    pub height: u32,
    /// A running rollout's id (empty: none).
    pub rollout: String,
    /// Its canary against control.
    pub comparison: Vec<SignalComparison>,
}

fn rows_of(outcome: &ImpactOutcome) -> Vec<SignalRow> {
    let largest = outcome
        .signals
        .iter()
        .flat_map(|s| [s.before.map(|w| w.mean), s.after.map(|w| w.mean)])
        .flatten()
        .fold(0.0_f64, f64::max);
    let px = |mean: Option<f64>| match mean {
        Some(m) if largest > 0.0 && m.is_finite() => {
            (m / largest * BAR_WIDTH).round().max(1.0) as u32
        }
        _ => 0,
    };
    let text = |mean: Option<f64>| mean.map(|m| format!("{m:.4}")).unwrap_or_default();
    outcome
        .signals
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (b, a) = (s.before.map(|w| w.mean), s.after.map(|w| w.mean));
            let count = |w: Option<mycosynth_subscriber::wire::SignalWindow>| {
                w.map(|w| format!("{} / {}", w.instances, w.samples))
                    .unwrap_or_else(|| "—".into())
            };
            SignalRow {
                signal: s.signal.clone(),
                before: text(b),
                after: text(a),
                counts: format!("{} → {}", count(s.before), count(s.after)),
                ratio: s.ratio().map(|r| format!("{r:.2}×")).unwrap_or_default(),
                before_px: px(b),
                after_px: px(a),
                y: u32::try_from(i * 56).unwrap_or(u32::MAX),
            }
        })
        .collect()
}

/// `GET /ns/{ns}/{env}/impact?version=N&window=5m`.
pub async fn page(
    Extension(viewer): Extension<Viewer>,
    Path((ns, env)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let version = match query.get("version").filter(|v| !v.is_empty()) {
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ConsoleError::BadRequest(format!("version={v:?}: not a version number"))
        })?),
        None => None,
    };
    let window = query
        .get("window")
        .filter(|w| !w.is_empty())
        .cloned()
        .unwrap_or_else(|| "5m".into());
    let window_s = crate::clock::parse_duration(&window)
        .map_err(|m| ConsoleError::BadRequest(format!("window: {m}")))?;
    let request = ImpactRequest {
        namespace: ns.clone(),
        environment: env.clone(),
        version,
        window_s: Some(window_s),
    };
    let outcome: ImpactOutcome = viewer.api.call(endpoint::IMPACT, &request).await?;
    let rows = rows_of(&outcome);
    let (rollout, comparison) = outcome
        .rollout
        .clone()
        .map(|r| (r.id, r.comparison))
        .unwrap_or_default();
    render(&ImpactPage {
        page: Page::new(
            format!("Impact of v{} in {ns}/{env}", outcome.version),
            &viewer,
        ),
        ns,
        env,
        version: outcome.version,
        window,
        height: u32::try_from(rows.len() * 56).unwrap_or(u32::MAX).max(56),
        rows,
        rollout,
        comparison,
    })
}
