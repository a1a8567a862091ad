//! `mycosynth rollout ...`: the local checks (steps, health rules, values) before anything is
//! sent, the request, and the status printed as a table.

use std::collections::BTreeMap;

use mycosynth_subscriber::wire::{
    endpoint, parse_steps, ChangeSource, HealthRule, KeyChange, PrometheusRule,
    RolloutActionRequest, RolloutOutcome, RolloutStartRequest,
};
use serde_json::Value;

use super::args::parse_duration;
use super::exit::CliError;
use super::output;
use super::requests::{read_config_file, validation};
use super::rollout_args::{RolloutAt, RolloutCommand, RolloutStart};
use crate::client::ApiClient;

/// Builds the start request from the command line; bad input fails here, with nothing sent.
pub fn start_request(args: RolloutStart, author: &str) -> Result<RolloutStartRequest, CliError> {
    let steps = parse_steps(&args.steps).map_err(|m| validation("steps", "steps", m))?;
    let bake_s = parse_duration(&args.bake)
        .map_err(|m| validation("bake", "duration", format!("--bake {:?}: {m}", args.bake)))?;
    for rule in &args.health {
        HealthRule::parse(rule).map_err(|m| validation("health", "health_rule", m))?;
    }
    let prometheus = match (args.prometheus, args.query, args.max) {
        (Some(url), Some(query), Some(max)) => {
            let rule = PrometheusRule { url, query, max };
            rule.check()
                .map_err(|m| validation("prometheus", "prometheus_rule", m))?;
            Some(rule)
        }
        _ => None,
    };
    let mut target = BTreeMap::new();
    for pair in &args.target {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                target.insert(k.to_owned(), v.to_owned());
            }
            _ => {
                return Err(validation(
                    "target",
                    "target",
                    format!("target {pair:?}: use label=value"),
                )
                .into())
            }
        }
    }
    let mut changes = Vec::new();
    if let Some(file) = &args.file {
        changes.extend(
            read_config_file(file)?
                .into_iter()
                .map(|(k, v)| KeyChange::set(k, v)),
        );
    }
    for pair in &args.set {
        let (key, text) = pair
            .split_once('=')
            .ok_or_else(|| validation("set", "format", format!("--set {pair:?}: use KEY=JSON")))?;
        let value: Value = serde_json::from_str(text)
            .map_err(|e| validation(key, "json", format!("{key}: {text:?} is not JSON: {e}")))?;
        changes.push(KeyChange::set(key, value));
    }
    changes.extend(args.delete.iter().map(|k| KeyChange {
        key: k.clone(),
        value: None,
    }));
    if changes.is_empty() && args.change_request.is_none() {
        return Err(validation(
            "changes",
            "no_op",
            "nothing to roll out: give --set, --delete, --file or --request".into(),
        )
        .into());
    }
    Ok(RolloutStartRequest {
        namespace: args.at.namespace,
        environment: args.at.env,
        changes,
        change_request: args.change_request,
        steps,
        bake_s,
        auto_rollback: args.auto_rollback,
        health: args.health,
        target,
        prometheus,
        author: author.to_owned(),
        reason: args.reason,
        source: ChangeSource::Cli,
    })
}

fn action(at: RolloutAt, author: &str, reason: String) -> RolloutActionRequest {
    RolloutActionRequest {
        namespace: at.namespace,
        environment: at.env,
        author: author.to_owned(),
        reason,
    }
}

/// A rollout command with its local input checked.
pub enum Prepared {
    /// `start`, its request built.
    Start(RolloutStartRequest),
    /// Another step, its endpoint and request.
    Step(&'static str, RolloutActionRequest),
}

/// Checks what can be checked without the validator, and builds the request.
pub fn prepare(command: RolloutCommand, author: &str) -> Result<Prepared, CliError> {
    Ok(match command {
        RolloutCommand::Start(args) => Prepared::Start(start_request(*args, author)?),
        RolloutCommand::Status(at) => {
            Prepared::Step(endpoint::ROLLOUT_STATUS, action(at, author, String::new()))
        }
        RolloutCommand::Pause { at, reason } => {
            Prepared::Step(endpoint::ROLLOUT_PAUSE, action(at, author, reason))
        }
        RolloutCommand::Resume(at) => {
            Prepared::Step(endpoint::ROLLOUT_RESUME, action(at, author, String::new()))
        }
        RolloutCommand::Promote(at) => {
            Prepared::Step(endpoint::ROLLOUT_PROMOTE, action(at, author, String::new()))
        }
        RolloutCommand::Abort { at, reason } => {
            Prepared::Step(endpoint::ROLLOUT_ABORT, action(at, author, reason))
        }
    })
}

/// Sends a prepared rollout command and prints the answer.
pub async fn run(api: &ApiClient, command: Prepared, json: bool) -> Result<(), CliError> {
    let (name, outcome): (&str, RolloutOutcome) = match command {
        Prepared::Start(request) => (
            endpoint::ROLLOUT_START,
            api.call(endpoint::ROLLOUT_START, &request).await?,
        ),
        Prepared::Step(name, request) => (name, api.call(name, &request).await?),
    };
    if json {
        output::json(&outcome);
    } else {
        print(name, &outcome);
    }
    Ok(())
}

fn print(name: &str, outcome: &RolloutOutcome) {
    let Some(r) = &outcome.rollout else {
        println!("no rollout (stable version {})", outcome.stable_version);
        return;
    };
    println!(
        "{name}: rollout {} on {}/{}: {:?}, step {} of {} ({}%), bake {} s, stable version {}",
        r.id,
        r.namespace,
        r.environment,
        r.state,
        r.step + 1,
        r.steps.len(),
        r.percent(),
        r.bake_s,
        outcome.stable_version
    );
    output::diff(&r.diff);
    let serving = outcome.canaries.iter().filter(|m| m.candidate).count();
    println!(
        "canaries: {} ({serving} serving the candidate); control: {}",
        outcome.canaries.len(),
        outcome.control.len()
    );
    for m in &outcome.canaries {
        println!(
            "  canary  {:<24} v{} {}",
            m.instance_id,
            m.version,
            if m.candidate { "candidate" } else { "stable" }
        );
    }
    for c in &outcome.comparison {
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
        println!(
            "  {:<40} canary {:>8} control {:>8} limit {:>8} {}",
            c.rule,
            f(c.canary),
            f(c.control),
            f(c.limit),
            if c.holds { "ok" } else { "BROKEN" }
        );
    }
    if let Some(v) = &r.verdict {
        println!(
            "{} by {}: {}",
            format!("{:?}", r.state).to_lowercase(),
            v.by,
            v.reason
        );
    }
}
