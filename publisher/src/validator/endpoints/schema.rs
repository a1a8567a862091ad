//! `schema-push`: store a namespace's schema once every environment's live config (with what
//! it inherits) passes it, unless forced.

use std::sync::Arc;

use bytes::Bytes;
use mycosynth_subscriber::wire::{
    schema_subject, Environment, Namespace, SchemaPushOutcome, SchemaPushRequest, SchemaRecord,
    Violation,
};
use serde_json::Value;

use super::Call;
use crate::clock::meta_time;
use crate::failure::{invalid, Failure};
use crate::validate::{inherit, schema_docs, Schema};
use crate::validator::instance::Validator;

/// `schema-push`.
pub async fn push(
    validator: Arc<Validator>,
    call: Call,
    request: SchemaPushRequest,
) -> Result<SchemaPushOutcome, Failure> {
    let ns = call.at.namespace()?;
    let schema = Schema::compile(request.schema.clone()).map_err(|v| invalid(vec![v]))?;
    let previous = validator.store.schema(ns).await?;
    let old = previous.as_ref().map(|r| &r.schema).unwrap_or(&Value::Null);
    let removed = schema_docs::removed_keys(old, &request.schema);
    let mut violations = Vec::new();
    for env in validator.store.environments(ns).await? {
        violations.extend(live_violations(&validator, ns, &env, &schema, &removed).await?);
    }
    if !violations.is_empty() && !request.force {
        let mut err = invalid(violations);
        err.message = format!(
            "live config violates the new schema ({}); use --force to push anyway",
            err.message
        );
        return Err(err);
    }
    let added_keys = schema_docs::added_keys(old, &request.schema);
    let record = SchemaRecord {
        schema: request.schema,
        author: call.caller.author(request.author),
        time: meta_time().0,
    };
    let stored = validator.store.put_schema(ns, &record).await?;
    validator
        .schemas
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(ns.clone(), (stored, Arc::new(schema)));
    if let Err(err) = validator
        .store
        .client()
        .publish(schema_subject(ns), Bytes::new())
        .await
    {
        tracing::warn!(error = %err, "could not announce the schema change");
    }
    tracing::info!(namespace = %ns, forced = !violations.is_empty(), "schema pushed");
    Ok(SchemaPushOutcome {
        forced_violations: violations,
        added_keys,
        removed_keys: removed,
    })
}

/// How the live config of `env` (with what it inherits; own values win) breaks `schema`,
/// each message prefixed with the environment. Removing a key that is set live is
/// incompatible even when the new schema allows unknown keys.
async fn live_violations(
    validator: &Validator,
    ns: &Namespace,
    env: &Environment,
    schema: &Schema,
    removed: &[String],
) -> Result<Vec<Violation>, Failure> {
    let state = validator.store.load_state(ns, env).await?;
    let inherited = validator.inherited(ns, env).await?;
    let clear = validator
        .vault
        .open_document(ns, env, state.documents())
        .await?;
    let found = inherit::schema_violations(schema, &inherited, &clear);
    let removed_live = removed
        .iter()
        .filter(|k| state.values.contains_key(*k) && !found.iter().any(|v| &v.key == *k))
        .map(|k| Violation {
            key: k.clone(),
            rule: "removed_key".into(),
            message: format!("key {k:?} is set live but the new schema removes it"),
        })
        .collect::<Vec<_>>();
    Ok(found
        .into_iter()
        .chain(removed_live)
        .map(|v| Violation {
            message: format!("{env}: {}", v.message),
            ..v
        })
        .collect())
}
