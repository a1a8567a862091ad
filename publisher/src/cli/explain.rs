//! `get --explain`: resolves keys the way a subscriber does (own value, the parent chain, the
//! schema default) and shows where each value comes from.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mycosynth_subscriber::wire::{
    endpoint, ErrorKind, SchemaGetRequest, SchemaRecord, ValueRecord,
};
use serde_json::Value;

use super::exit::{self, CliError};
use super::output;
use super::repository::live;
use crate::client::ApiClient;
use crate::validate::inherit::MAX_CHAIN;

/// Where one key's value comes from.
#[derive(Debug, serde::Serialize)]
struct Resolution {
    key: String,
    value: Option<Value>,
    /// `own`, `inherited`, `schema_default` or `unset`.
    source: &'static str,
    /// The environment that holds the value (own or a parent).
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<ValueRecord>,
}

/// An environment and its own values, nearest first.
type Chain = Vec<(String, BTreeMap<String, ValueRecord>)>;

/// `get NS ENV [KEY] --explain`.
pub async fn explain(
    api: &ApiClient,
    namespace: &str,
    env: &str,
    key: Option<&str>,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let chain = read_chain(api, namespace, env, budget).await?;
    let defaults = schema_defaults(api, namespace, budget).await?;
    let keys: Vec<String> = match key {
        Some(key) => vec![key.to_owned()],
        None => {
            let mut all: BTreeSet<String> = defaults.keys().cloned().collect();
            for (_, values) in &chain {
                all.extend(values.keys().cloned());
            }
            all.into_iter().collect()
        }
    };
    let resolved: Vec<Resolution> = keys.iter().map(|k| resolve(&chain, &defaults, k)).collect();
    if json {
        output::json(&resolved);
    } else {
        print(namespace, env, &chain, &resolved);
    }
    match (key, resolved.first()) {
        (Some(key), Some(r)) if r.source == "unset" => Err(CliError::Local(
            exit::NOT_FOUND,
            format!(
                "key {key:?} is not set in {namespace}/{env}, its parents or the schema defaults"
            ),
        )),
        _ => Ok(()),
    }
}

/// `env` and its parents with their own values, nearest first.
async fn read_chain(
    api: &ApiClient,
    namespace: &str,
    env: &str,
    budget: Duration,
) -> Result<Chain, CliError> {
    let mut chain: Chain = Vec::new();
    let mut at = Some(env.to_owned());
    while let Some(current) = at.take() {
        if chain.iter().any(|(e, _)| *e == current) || chain.len() > MAX_CHAIN {
            break;
        }
        let outcome = live(api, namespace, &current, budget).await?;
        at = outcome.parent.clone();
        chain.push((current, outcome.values.into_iter().collect()));
    }
    Ok(chain)
}

/// The `default` of every property of the namespace's schema (none without a schema).
async fn schema_defaults(
    api: &ApiClient,
    namespace: &str,
    budget: Duration,
) -> Result<BTreeMap<String, Value>, CliError> {
    let request = SchemaGetRequest {
        namespace: namespace.to_owned(),
    };
    let schema = match api
        .call_retrying::<_, SchemaRecord>(endpoint::SCHEMA_GET, &request, budget)
        .await
    {
        Ok(record) => record.schema,
        Err(err) if err.kind == ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(err) => return Err(err.into()),
    };
    Ok(schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .filter_map(|(k, p)| Some((k.clone(), p.get("default")?.clone())))
                .collect()
        })
        .unwrap_or_default())
}

/// `key` resolved over the chain, then the schema defaults.
fn resolve(chain: &Chain, defaults: &BTreeMap<String, Value>, key: &str) -> Resolution {
    for (i, (environment, values)) in chain.iter().enumerate() {
        if let Some(record) = values.get(key) {
            return Resolution {
                key: key.to_owned(),
                value: Some(record.value.clone()),
                source: if i == 0 { "own" } else { "inherited" },
                environment: Some(environment.clone()),
                record: Some(record.clone()),
            };
        }
    }
    let default = defaults.get(key).cloned();
    Resolution {
        key: key.to_owned(),
        source: if default.is_some() {
            "schema_default"
        } else {
            "unset"
        },
        value: default,
        environment: None,
        record: None,
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
                if r.source == "own" {
                    "set in"
                } else {
                    "inherited from"
                },
                rec.version,
                rec.meta.author,
                rec.meta.time
            ),
            _ if r.source == "schema_default" => "schema default".to_owned(),
            _ => "no value and no default".to_owned(),
        };
        println!("{} = {value}  <- {origin}", r.key);
    }
}
