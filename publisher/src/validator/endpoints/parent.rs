//! `parent`: declaring (or removing) the environment an environment inherits from. Unknown
//! parents and cycles are refused; the declaration is a plain record under the child's prefix,
//! not a versioned change set.

use std::collections::BTreeMap;
use std::sync::Arc;

use mycosynth_subscriber::wire::{
    ApiError, Environment, ErrorKind, Namespace, ParentOutcome, ParentRecord, ParentRequest,
    Violation,
};

use super::Call;
use crate::clock::meta_time;
use crate::failure::failure;
use crate::store::{Store, StoreError};
use crate::validate::inherit::{cycle_through, MAX_CHAIN};
use crate::validator::instance::Validator;

/// Why a chain or a declaration is refused.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    /// The declared parent would make the chain come back to the child.
    #[error("environment {child:?} cannot inherit from {parent:?}: the chain {chain} is a cycle")]
    Cycle {
        /// The child.
        child: String,
        /// The declared parent.
        parent: String,
        /// The chain as `a -> b -> a`.
        chain: String,
    },
    /// The declared parent has neither config nor a parent of its own.
    #[error("environment {child:?} cannot inherit from {parent:?}: no such environment in namespace {namespace}")]
    UnknownParent {
        /// Namespace.
        namespace: String,
        /// The child.
        child: String,
        /// The declared parent.
        parent: String,
    },
    /// An environment name is malformed.
    #[error("{0}")]
    Name(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl InheritError {
    /// The violation (rule `cycle` / `unknown_parent`) or failure this error is for callers.
    pub fn to_api(&self, env: &str) -> ApiError {
        let (kind, rule) = match self {
            InheritError::Cycle { .. } => (ErrorKind::Validation, "cycle"),
            InheritError::UnknownParent { .. } => (ErrorKind::Validation, "unknown_parent"),
            InheritError::Name(_) => (ErrorKind::Validation, "name"),
            InheritError::Store(StoreError::Unavailable(m)) => {
                return failure(ErrorKind::Unavailable, m.clone())
            }
            InheritError::Store(other) => return failure(ErrorKind::Internal, other.to_string()),
        };
        let message = self.to_string();
        let violation = Violation {
            key: env.to_owned(),
            rule: rule.to_owned(),
            message: message.clone(),
        };
        ApiError {
            violations: vec![violation],
            ..failure(kind, message)
        }
    }
}

/// `parent`: declares or removes the parent of an environment.
pub async fn declare(
    validator: Arc<Validator>,
    call: Call,
    request: ParentRequest,
) -> Result<ParentOutcome, ApiError> {
    let (ns, env) = call.at.env()?;
    let store = &validator.store;
    let fail = |e: InheritError| e.to_api(env.as_str());
    let previous = store
        .parent(ns, env)
        .await
        .map_err(|e| fail(e.into()))?
        .map(|r| r.parent);
    let Some(parent) = request.parent else {
        if previous.is_some() {
            store
                .put_parent(ns, env, None)
                .await
                .map_err(|e| fail(e.into()))?;
        }
        return Ok(ParentOutcome {
            parent: None,
            changed: previous.is_some(),
            previous,
        });
    };
    let parent_env =
        Environment::new(&parent).map_err(|e| fail(InheritError::Name(e.to_string())))?;
    if previous.as_deref() == Some(parent.as_str()) {
        return Ok(ParentOutcome {
            parent: Some(parent),
            previous,
            changed: false,
        });
    }
    may_inherit(store, ns, env, &parent_env)
        .await
        .map_err(fail)?;
    let record = ParentRecord {
        parent: parent.clone(),
        author: call.caller.author(request.author),
        time: meta_time().0,
    };
    store
        .put_parent(ns, env, Some(&record))
        .await
        .map_err(|e| fail(e.into()))?;
    metrics::counter!("mycosynth_validator_parent_declarations_total").increment(1);
    tracing::info!(namespace = %ns, environment = %env, parent = %parent, "parent declared");
    Ok(ParentOutcome {
        parent: Some(parent),
        previous,
        changed: true,
    })
}

/// Ok when `env` may inherit from `parent`: the parent exists (it has config or a parent of
/// its own) and the declaration closes no cycle with the declarations along its chain.
async fn may_inherit(
    store: &Store,
    ns: &Namespace,
    env: &Environment,
    parent: &Environment,
) -> Result<(), InheritError> {
    let known =
        store.head(ns, parent).await?.is_some() || store.parent(ns, parent).await?.is_some();
    if !known {
        return Err(InheritError::UnknownParent {
            namespace: ns.to_string(),
            child: env.to_string(),
            parent: parent.to_string(),
        });
    }
    // The existing declarations along the parent's chain.
    let mut declared = BTreeMap::new();
    let mut at = parent.clone();
    for _ in 0..MAX_CHAIN {
        let Some(record) = store.parent(ns, &at).await? else {
            break;
        };
        declared.insert(at.to_string(), record.parent.clone());
        match Environment::new(&record.parent) {
            Ok(next) if &next != env => at = next,
            _ => break,
        }
    }
    match cycle_through(env.as_str(), parent.as_str(), |e| declared.get(e).cloned()) {
        Some(cycle) => Err(InheritError::Cycle {
            child: env.to_string(),
            parent: parent.to_string(),
            chain: cycle.join(" -> "),
        }),
        None => Ok(()),
    }
}
