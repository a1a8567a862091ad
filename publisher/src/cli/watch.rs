//! `mycosynth watch`: a subscriber of its own (with its cache, receipts and client-side
//! validation), printing each change it applies.

use std::collections::BTreeMap;
use std::time::Duration;

use mycosynth_subscriber::{NoticeCause, Subscriber};
use serde_json::Value;

use super::exit::{self, CliError};
use super::output;
use super::requests::validation;

/// Follows `namespace`/`env` until Ctrl-C, printing the loaded state and every change.
pub async fn watch(
    nats_url: &str,
    (namespace, env): (&str, &str),
    creds: mycosynth_subscriber::Credentials,
    cache_dir: Option<std::path::PathBuf>,
    heartbeat: Duration,
    json: bool,
) -> Result<(), CliError> {
    let mut builder = Subscriber::builder(namespace, env)
        .credentials(creds)
        .nats_url(nats_url)
        .client_name("mycosynth-watch")
        .receipts(true, heartbeat)
        .validate_against_schema(true);
    if let Some(dir) = cache_dir {
        builder = builder.cache_dir(dir);
    }
    let config = builder.connect().await.map_err(|e| match e {
        mycosynth_subscriber::Error::InvalidName(err) => {
            CliError::Api(validation(&err.to_string(), err.rule(), err.to_string()))
        }
        other => CliError::Local(exit::UNAVAILABLE, other.to_string()),
    })?;
    let mut changes = config.subscribe();
    let snapshot = config.snapshot();
    if json {
        let origin = format!("{:?}", config.status().origin).to_lowercase();
        output::json(&serde_json::json!({
            "version": snapshot.version(),
            "values": snapshot.to_json(),
            "cause": "load",
            "origin": origin,
        }));
    } else {
        println!(
            "watching {namespace}/{env} at version {} ({} keys); Ctrl-C to stop",
            snapshot.version(),
            snapshot.len()
        );
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            notice = changes.recv() => {
                let notice = match notice {
                    Ok(notice) => notice,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                };
                let snapshot = config.snapshot();
                let values: BTreeMap<&str, Option<Value>> = match notice.cause {
                    // Inherited keys are not in this environment's own snapshot.
                    NoticeCause::Inherited => notice.keys.iter().map(|k| (k.as_str(), config.get::<Value>(k).ok())).collect(),
                    _ => notice.keys.iter().map(|k| (k.as_str(), snapshot.raw(k).map(|(v, _)| v.clone()))).collect(),
                };
                let delay_us = (notice.committed_at_us > 0).then(|| notice.applied_at_us - notice.committed_at_us);
                if json {
                    output::json(&serde_json::json!({
                        "version": notice.version,
                        "previous_version": notice.previous_version,
                        "values": values,
                        "author": notice.author,
                        "reason": notice.reason,
                        "change_id": notice.change_id,
                        "cause": match notice.cause { NoticeCause::Event => "event", NoticeCause::Resync => "resync", NoticeCause::Inherited => "inherited" },
                        "committed_at_us": notice.committed_at_us,
                        "applied_at_us": notice.applied_at_us,
                        "delay_us": delay_us,
                    }));
                } else {
                    let delay = delay_us.map(|d| format!(", {:.2} ms after commit", d as f64 / 1000.0)).unwrap_or_default();
                    println!("v{} (from v{}) by {}{delay}", notice.version, notice.previous_version, if notice.author.is_empty() { "resync" } else { &notice.author });
                    for (key, value) in values {
                        match value {
                            Some(value) => println!("    {key} = {value}"),
                            None => println!("    {key} deleted"),
                        }
                    }
                }
            }
        }
    }
}
