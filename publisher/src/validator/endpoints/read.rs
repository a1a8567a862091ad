//! The reads: `get`, `reveal`, `history`, `status`, `schema-get`, `namespaces`.

use std::sync::Arc;

use mycosynth_subscriber::wire::{
    EnvironmentSummary, ErrorKind, GetOutcome, GetRequest, HistoryOutcome, HistoryRequest,
    NamespacesOutcome, NamespacesRequest, Role, SchemaGetRequest, SchemaRecord, StatusOutcome,
    StatusRequest, ValueRecord,
};

use super::Call;
use crate::access::Scope;
use crate::clock::now_us;
use crate::failure::{failure, Failure};
use crate::validator::instance::Validator;

/// `get`: current values (sealed values stay sealed).
pub async fn get(
    validator: Arc<Validator>,
    call: Call,
    request: GetRequest,
) -> Result<GetOutcome, Failure> {
    read_values(&validator, &call, request, false).await
}

/// `reveal`: current values with sensitive values in clear (the row needs admin).
pub async fn reveal(
    validator: Arc<Validator>,
    call: Call,
    request: GetRequest,
) -> Result<GetOutcome, Failure> {
    read_values(&validator, &call, request, true).await
}

async fn read_values(
    validator: &Validator,
    call: &Call,
    request: GetRequest,
    reveal: bool,
) -> Result<GetOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    let mut state = validator.store.load_state(ns, env).await?;
    if reveal {
        let mut clear = validator
            .vault
            .open_document(ns, env, state.documents())
            .await?;
        for (key, record) in state.values.iter_mut() {
            if let Some(value) = clear.remove(key) {
                record.value = value;
            }
        }
        tracing::info!(identity = %call.caller.name(), namespace = %ns, environment = %env, "sensitive values revealed");
    }
    let values: Vec<(String, ValueRecord)> = match &request.key {
        Some(key) => match state.values.get(key) {
            Some(record) => vec![(key.clone(), record.clone())],
            None => {
                return Err(failure(
                    ErrorKind::NotFound,
                    format!("key {key:?} is not set in {ns}/{env}"),
                ))
            }
        },
        None => state.values.into_iter().collect(),
    };
    let parent = validator.store.parent(ns, env).await?.map(|r| r.parent);
    Ok(GetOutcome {
        version: state.version,
        values,
        parent,
    })
}

/// `history`: change sets, newest first.
pub async fn history(
    validator: Arc<Validator>,
    call: Call,
    request: HistoryRequest,
) -> Result<HistoryOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    let mut sets = validator.store.history(ns, env).await?;
    if let Some(key) = &request.key {
        sets.retain(|s| s.changes.iter().any(|c| &c.key == key));
    }
    sets.reverse();
    sets.truncate(request.limit.unwrap_or(100));
    Ok(HistoryOutcome { change_sets: sets })
}

/// `status`: the fleet view of a namespace/environment.
pub async fn status(
    validator: Arc<Validator>,
    call: Call,
    _request: StatusRequest,
) -> Result<StatusOutcome, Failure> {
    let (ns, env) = call.at.env()?;
    let head = validator.store.head(ns, env).await?;
    let (version, committed) = head.map_or((0, 0), |h| (h.version, h.meta.time_us));
    let mut status =
        validator
            .fleet
            .status(ns.as_str(), env.as_str(), version, committed, now_us());
    status.sites = validator.sites.snapshot();
    Ok(status)
}

/// `schema-get`: the stored schema of a namespace.
pub async fn schema_get(
    validator: Arc<Validator>,
    call: Call,
    _request: SchemaGetRequest,
) -> Result<SchemaRecord, Failure> {
    let ns = call.at.namespace()?;
    validator
        .store
        .schema(ns)
        .await?
        .ok_or_else(|| failure(ErrorKind::NotFound, format!("namespace {ns} has no schema")))
}

/// `namespaces`: every namespace/environment with a version that the caller may read (the
/// row's finer check: each is listed only to its readers), sorted by names.
pub async fn namespaces(
    validator: Arc<Validator>,
    call: Call,
    _request: NamespacesRequest,
) -> Result<NamespacesOutcome, Failure> {
    let mut environments: Vec<EnvironmentSummary> = validator
        .store
        .heads()
        .await?
        .into_iter()
        .filter(|(ns, env, _)| {
            call.caller
                .may_quietly(Role::Read, Scope::Env(ns.as_str(), env.as_str()))
        })
        .map(|(ns, env, head)| EnvironmentSummary {
            namespace: ns.to_string(),
            environment: env.to_string(),
            version: head.version,
            keys: head.keys,
            last: head.meta,
        })
        .collect();
    environments
        .sort_by(|a, b| (&a.namespace, &a.environment).cmp(&(&b.namespace, &b.environment)));
    Ok(NamespacesOutcome { environments })
}
