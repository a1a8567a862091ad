//! `mycosynth status`: the fleet view of a namespace/environment, and waiting for a version
//! to land everywhere; `mycosynth impact`: the signals before and after a version.

use std::time::Duration;

use mycosynth_subscriber::wire::{
    endpoint, ImpactOutcome, ImpactRequest, SignalWindow, StatusOutcome, StatusRequest,
};

use super::args::parse_duration;
use super::exit::{self, CliError};
use super::output;
use super::requests::validation;
use crate::client::ApiClient;

/// `mycosynth status`: the fleet table; with `wait_version`, polls until every live instance
/// holds that version or `budget` passes.
pub async fn fleet_status(
    api: &ApiClient,
    request: StatusRequest,
    wait_version: Option<u64>,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let status: StatusOutcome = api
            .call_retrying(
                endpoint::STATUS,
                &request,
                left.max(Duration::from_millis(100)),
            )
            .await?;
        let converged =
            wait_version.is_none_or(|v| status.instances.iter().all(|i| i.receipt.version >= v));
        if converged || tokio::time::Instant::now() >= deadline {
            output::fleet(&status, json);
            return match wait_version {
                Some(v) if !converged => {
                    Err(CliError::Local(
                        exit::NOT_CONVERGED,
                        format!(
                        "not converged: {} of {} live instances hold version {v} after {budget:?}",
                        status.instances.iter().filter(|i| i.receipt.version >= v).count(),
                        status.instances.len()
                    ),
                    ))
                }
                _ => Ok(()),
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `mycosynth impact`: the fleet's signals before and after `version` (default: the latest).
pub async fn impact(
    api: &ApiClient,
    (namespace, environment): (String, String),
    version: Option<u64>,
    window: &str,
    json: bool,
) -> Result<(), CliError> {
    let window_s = parse_duration(window)
        .map_err(|m| validation("window", "duration", format!("--window {window:?}: {m}")))?;
    let request = ImpactRequest {
        namespace,
        environment,
        version,
        window_s: Some(window_s),
    };
    let outcome: ImpactOutcome = api.call(endpoint::IMPACT, &request).await?;
    if json {
        output::json(&outcome);
    } else {
        print_impact(&outcome);
    }
    Ok(())
}

fn print_impact(outcome: &ImpactOutcome) {
    println!(
        "version {}: {} s before its commit against {} s after",
        outcome.version, outcome.window_s, outcome.window_s
    );
    if outcome.signals.is_empty() {
        println!("no health signals reported in either window");
    } else {
        let side = |w: Option<SignalWindow>| {
            w.map_or("-".to_owned(), |w| {
                format!("{:.4} (max {:.4}, {} inst)", w.mean, w.max, w.instances)
            })
        };
        println!(
            "{:<24} {:<32} {:<32} change",
            "signal", "before: mean", "after: mean"
        );
        for s in &outcome.signals {
            let change = s
                .ratio()
                .map_or("-".to_owned(), |r| format!("{:+.1}%", (r - 1.0) * 100.0));
            println!(
                "{:<24} {:<32} {:<32} {change}",
                s.signal,
                side(s.before),
                side(s.after)
            );
        }
    }
    if let Some(rollout) = &outcome.rollout {
        println!("rollout {}: canary against control now", rollout.id);
        for c in &rollout.comparison {
            let num = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
            println!(
                "  {:<40} canary {:<10} control {:<10} limit {:<10} {}",
                c.rule,
                num(c.canary),
                num(c.control),
                num(c.limit),
                if c.holds { "holds" } else { "BROKEN" }
            );
        }
    }
}
