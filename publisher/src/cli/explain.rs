//! `get --explain`: resolves keys the way a subscriber does (own value, the parent chain, the
//! schema default; `client::explain` does the resolving) and shows where each value comes from.

use std::time::Duration;

use serde_json::Value;

use super::exit::{self, CliError};
use super::output;
use crate::client::explain::{Chain, Explained, Resolution, Source};
use crate::client::ApiClient;

/// `get NS ENV [KEY] --explain`.
pub async fn explain(
    api: &ApiClient,
    namespace: &str,
    env: &str,
    key: Option<&str>,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let explained = Explained::read(api, namespace, env, budget).await?;
    let resolved: Vec<Resolution> = match key {
        Some(key) => vec![explained.resolve(key)],
        None => explained.resolve_all(),
    };
    if json {
        output::json(&resolved);
    } else {
        print(namespace, env, &explained.chain, &resolved);
    }
    match (key, resolved.first()) {
        (Some(key), Some(r)) if r.source == Source::Unset => Err(CliError::Local(
            exit::NOT_FOUND,
            format!(
                "key {key:?} is not set in {namespace}/{env}, its parents or the schema defaults"
            ),
        )),
        _ => Ok(()),
    }
}

fn print(namespace: &str, env: &str, chain: &Chain, resolved: &[Resolution]) {
    let path: Vec<&str> = chain.iter().map(|(e, _)| e.as_str()).collect();
    println!(
        "{namespace}/{env}: resolution order {} -> schema default",
        path.join(" -> ")
    );
    for r in resolved {
        let value = r
            .value
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_else(|| "(not set)".into());
        let origin = match (&r.environment, &r.record) {
            (Some(e), Some(rec)) => format!(
                "{} {e} (v{} by {} at {})",
                if r.source == Source::Own {
                    "set in"
                } else {
                    "inherited from"
                },
                rec.version,
                rec.meta.author,
                rec.meta.time
            ),
            _ if r.source == Source::SchemaDefault => "schema default".to_owned(),
            _ => "no value and no default".to_owned(),
        };
        println!("{} = {value}  <- {origin}", r.key);
    }
}
