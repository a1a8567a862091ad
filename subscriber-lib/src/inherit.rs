//! Environment inheritance in the subscriber: an environment that declares a parent
//! (`production-eu` -> `production` -> `base`) reads its own value first, then each parent's,
//! then the schema default. Each parent is followed by its own inner subscriber (its own
//! events, gaps and resyncs), so a parent's change reaches the child as fast as the parent's
//! own subscribers see it; reads stay lock-free (one snapshot load per environment tried).
//!
//! Everything read sits under the namespace's own prefixes: the declarations
//! (`<ns>.<env>._meta.parent`), the parents' values and the parents' event subjects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::builder::SubscriberBuilder;
use crate::updater::{now_us, ChangeNotice, NoticeCause, Shared};
use crate::wire::{parent_key, Environment, Namespace, ParentRecord, CONFIG_BUCKET};
use crate::{Error, Resolved, Subscriber, ValueSource};

/// Longest parent chain followed.
const MAX_CHAIN: usize = 16;

/// The declared parents of `env`, nearest first. A read failure or a damaged record ends the
/// chain there (with a warning): the child still serves its own values.
async fn parent_chain(
    client: &async_nats::Client,
    ns: &Namespace,
    env: &Environment,
    timeout: Duration,
) -> Result<Vec<Environment>, String> {
    let js = async_nats::jetstream::new(client.clone());
    let kv = tokio::time::timeout(timeout, js.get_key_value(CONFIG_BUCKET))
        .await
        .map_err(|_| "opening the config bucket timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut chain: Vec<Environment> = Vec::new();
    let mut at = env.clone();
    while chain.len() < MAX_CHAIN {
        let key = parent_key(ns, &at);
        let entry = tokio::time::timeout(timeout, kv.get(&key))
            .await
            .map_err(|_| format!("reading {key} timed out"))?
            .map_err(|e| e.to_string())?;
        let Some(payload) = entry else { break };
        let record: ParentRecord = match serde_json::from_slice(&payload) {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(key, error = %err, "ignoring a damaged parent declaration");
                break;
            }
        };
        let Ok(parent) = Environment::new(record.parent) else {
            break;
        };
        if &parent == env || chain.contains(&parent) {
            tracing::warn!(%ns, %env, "the parent chain is a cycle; cut at the repeat");
            break;
        }
        chain.push(parent.clone());
        at = parent;
    }
    Ok(chain)
}

/// Connects an inner subscriber for each parent of `child` and forwards the parents' changes
/// that the child does not shadow as the child's change notices. Returns the parents and the
/// forwarding tasks (owned by the child's lifetime).
pub(crate) async fn attach(
    child: &Subscriber,
    builder: &SubscriberBuilder,
) -> Result<(Arc<[Subscriber]>, Vec<JoinHandle<()>>), Error> {
    let shared = &child.shared;
    let chain = match parent_chain(
        &shared.client,
        &shared.namespace,
        &shared.environment,
        builder.load_timeout,
    )
    .await
    {
        Ok(chain) => chain,
        Err(message) => {
            metrics::counter!("mycosynth_subscriber_parent_chain_errors_total").increment(1);
            tracing::warn!(error = %message, "cannot read the parent chain; serving own values only");
            Vec::new()
        }
    };
    let mut parents = Vec::with_capacity(chain.len());
    for env in &chain {
        let mut inner = builder.clone();
        inner.environment = env.to_string();
        inner.inherit = false;
        inner.receipts = false;
        inner.cache_dir = None;
        inner.start_policy = crate::StartPolicy::FailFast;
        parents.push(Box::pin(inner.connect()).await?);
    }
    if !chain.is_empty() {
        tracing::info!(namespace = %shared.namespace, environment = %shared.environment, parents = ?chain.iter().map(|e| e.as_str()).collect::<Vec<_>>(), "inheriting");
    }
    let nearer: Vec<Arc<Shared>> = parents.iter().map(|p| Arc::clone(&p.shared)).collect();
    let tasks = parents
        .iter()
        .enumerate()
        .map(|(i, parent)| {
            let shadows: Vec<Arc<Shared>> = std::iter::once(Arc::clone(shared))
                .chain(nearer[..i].iter().cloned())
                .collect();
            tokio::spawn(forward(
                parent.subscribe(),
                Arc::clone(shared),
                shadows,
                parent.shared.environment.to_string(),
            ))
        })
        .collect();
    Ok((parents.into(), tasks))
}

/// Forwards one parent's notices to the child, keeping only keys that neither the child nor a
/// nearer parent sets itself.
async fn forward(
    mut notices: broadcast::Receiver<Arc<ChangeNotice>>,
    child: Arc<Shared>,
    shadows: Vec<Arc<Shared>>,
    parent: String,
) {
    loop {
        let notice = match notices.recv().await {
            Ok(notice) => notice,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let keys: Vec<String> = notice
            .keys
            .iter()
            .filter(|key| {
                shadows
                    .iter()
                    .all(|s| !matches!(s.snapshot.load().raw(key), Some((_, ValueSource::Stored))))
            })
            .cloned()
            .collect();
        if keys.is_empty() {
            continue;
        }
        let version = child.snapshot.load().version();
        metrics::counter!("mycosynth_subscriber_inherited_changes_total").increment(1);
        tracing::debug!(parent, keys = keys.len(), "inherited change");
        let _ = child.notices.send(Arc::new(ChangeNotice {
            version,
            previous_version: version,
            keys,
            author: notice.author.clone(),
            reason: notice.reason.clone(),
            change_id: notice.change_id.clone(),
            approved_by: notice.approved_by.clone(),
            change_request: notice.change_request.clone(),
            committed_at_us: notice.committed_at_us,
            applied_at_us: now_us(),
            cause: NoticeCause::Inherited,
        }));
    }
}

/// Calls `read` with the value of `key` resolved over own value, parents (nearest first) and
/// the schema default, with where it came from.
#[inline]
pub(crate) fn resolve<R>(
    own: &Subscriber,
    parents: &[Subscriber],
    key: &str,
    read: impl FnOnce(Option<Resolved<'_>>) -> R,
) -> R {
    let snapshot = own.shared.snapshot.load();
    if let Some((value, ValueSource::Stored)) = snapshot.raw(key) {
        return read(Some(Resolved {
            value,
            source: ValueSource::Stored,
            environment: own.shared.environment.as_str(),
        }));
    }
    for parent in parents {
        let inherited = parent.shared.snapshot.load();
        if let Some((value, ValueSource::Stored)) = inherited.raw(key) {
            return read(Some(Resolved {
                value,
                source: ValueSource::Inherited,
                environment: parent.shared.environment.as_str(),
            }));
        }
    }
    read(snapshot.raw(key).map(|(value, source)| Resolved {
        value,
        source,
        environment: own.shared.environment.as_str(),
    }))
}

/// Every key with a value: own values, then inherited ones not shadowed (nearest parent
/// first), then schema defaults of keys set nowhere.
pub(crate) fn effective(
    own: &Subscriber,
    parents: &[Subscriber],
) -> BTreeMap<String, (Value, ValueSource)> {
    let snapshot = own.shared.snapshot.load();
    let mut values: BTreeMap<String, (Value, ValueSource)> = BTreeMap::new();
    for parent in parents.iter().rev() {
        let inherited = parent.shared.snapshot.load();
        values.extend(
            inherited
                .iter()
                .map(|(k, v)| (k.to_owned(), (v.clone(), ValueSource::Inherited))),
        );
    }
    values.extend(
        snapshot
            .iter()
            .map(|(k, v)| (k.to_owned(), (v.clone(), ValueSource::Stored))),
    );
    for (key, value) in snapshot.defaults().iter() {
        values
            .entry(key.to_string())
            .or_insert_with(|| (value.clone(), ValueSource::SchemaDefault));
    }
    values
}

/// The child's snapshot with every inherited key added (own values win), for section reads.
pub(crate) fn merged(own: &Subscriber, parents: &[Subscriber]) -> crate::Snapshot {
    let snapshot = own.shared.snapshot.load_full();
    let mut values: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    for parent in parents.iter().rev() {
        let inherited = parent.shared.snapshot.load();
        values.extend(inherited.iter().map(|(k, v)| (k.to_owned(), v.clone())));
    }
    values.extend(snapshot.iter().map(|(k, v)| (k.to_owned(), v.clone())));
    snapshot.with_values(values)
}
