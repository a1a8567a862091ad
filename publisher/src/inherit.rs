//! Environment inheritance on the validator's side: declaring a parent (refusing unknown
//! parents and cycles), walking the parent chain, and validating a child's document together
//! with what it inherits (so a key the schema requires may come from a parent).

use std::collections::BTreeMap;

use mycosynth_subscriber::wire::{
    ApiError, Environment, ErrorKind, Namespace, ParentOutcome, ParentRecord, ParentRequest,
    Violation,
};
use serde_json::Value;

use crate::schema::Schema;
use crate::store::{Store, StoreError};
use crate::validate;

/// Longest parent chain followed; a longer one is treated as a cycle.
pub const MAX_CHAIN: usize = 16;

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
                return api_error(ErrorKind::Unavailable, m.clone(), Vec::new())
            }
            InheritError::Store(other) => {
                return api_error(ErrorKind::Internal, other.to_string(), Vec::new())
            }
        };
        let message = self.to_string();
        let violation = Violation {
            key: env.to_owned(),
            rule: rule.to_owned(),
            message: message.clone(),
        };
        api_error(kind, message, vec![violation])
    }
}

fn api_error(kind: ErrorKind, message: String, violations: Vec<Violation>) -> ApiError {
    ApiError {
        kind,
        message,
        violations,
        current_version: None,
    }
}

/// Checks a declaration `child -> parent` against the existing declarations (`parent_of`),
/// pure: returns the cycle it would close, if any.
pub fn cycle_through(
    child: &str,
    parent: &str,
    parent_of: impl Fn(&str) -> Option<String>,
) -> Option<Vec<String>> {
    let mut chain = vec![child.to_owned(), parent.to_owned()];
    let mut at = parent.to_owned();
    while at != child {
        if chain.len() > MAX_CHAIN {
            return Some(chain);
        }
        match parent_of(&at) {
            Some(next) => {
                chain.push(next.clone());
                at = next;
            }
            None => return None,
        }
    }
    Some(chain)
}

/// The parents of `env`, nearest first (empty when it declares none). A stored cycle (which
/// the validator never writes) is cut at the first repeat.
pub async fn chain(
    store: &Store,
    ns: &Namespace,
    env: &Environment,
) -> Result<Vec<Environment>, StoreError> {
    let mut out: Vec<Environment> = Vec::new();
    let mut at = env.clone();
    while out.len() < MAX_CHAIN {
        let Some(record) = store.parent(ns, &at).await? else {
            break;
        };
        let Ok(parent) = Environment::new(&record.parent) else {
            break;
        };
        if &parent == env || out.contains(&parent) {
            break;
        }
        out.push(parent.clone());
        at = parent;
    }
    Ok(out)
}

/// Validates a planned document of a child together with what it inherits: the schema sees
/// the effective document (inherited values shadowed by the child's own).
pub fn schema_violations(
    schema: &Schema,
    inherited: &BTreeMap<String, Value>,
    own: &BTreeMap<String, Value>,
) -> Vec<Violation> {
    let mut effective = inherited.clone();
    effective.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    schema.violations(&Value::Object(effective.into_iter().collect()))
}

/// Serves a [`ParentRequest`]: declares or removes the parent of an environment.
pub async fn declare(store: &Store, request: ParentRequest) -> Result<ParentOutcome, ApiError> {
    let (ns, env) = validate::names(&request.namespace, &request.environment).map_err(|v| {
        api_error(
            ErrorKind::Validation,
            v.first().map(|v| v.message.clone()).unwrap_or_default(),
            v,
        )
    })?;
    let fail = |e: InheritError| e.to_api(env.as_str());
    let previous = store
        .parent(&ns, &env)
        .await
        .map_err(|e| fail(e.into()))?
        .map(|r| r.parent);
    let Some(parent) = request.parent else {
        if previous.is_some() {
            store
                .put_parent(&ns, &env, None)
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
    let known = store
        .head(&ns, &parent_env)
        .await
        .map_err(|e| fail(e.into()))?
        .is_some()
        || store
            .parent(&ns, &parent_env)
            .await
            .map_err(|e| fail(e.into()))?
            .is_some();
    if !known {
        return Err(fail(InheritError::UnknownParent {
            namespace: ns.to_string(),
            child: env.to_string(),
            parent,
        }));
    }
    // The existing declarations along the parent's chain.
    let mut declared = BTreeMap::new();
    let mut at = parent_env.clone();
    for _ in 0..MAX_CHAIN {
        let Some(record) = store.parent(&ns, &at).await.map_err(|e| fail(e.into()))? else {
            break;
        };
        declared.insert(at.to_string(), record.parent.clone());
        match Environment::new(&record.parent) {
            Ok(next) if next != env => at = next,
            _ => break,
        }
    }
    if let Some(cycle) = cycle_through(env.as_str(), &parent, |e| declared.get(e).cloned()) {
        return Err(fail(InheritError::Cycle {
            child: env.to_string(),
            parent,
            chain: cycle.join(" -> "),
        }));
    }
    let record = ParentRecord {
        parent: parent.clone(),
        author: request.author,
        time: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    };
    store
        .put_parent(&ns, &env, Some(&record))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found() {
        let declared = BTreeMap::from([
            ("production".to_string(), "base".to_string()),
            ("base".to_string(), "production-eu".to_string()),
        ]);
        let lookup = |e: &str| declared.get(e).cloned();
        assert_eq!(
            cycle_through("production-eu", "production", lookup),
            Some(vec![
                "production-eu".into(),
                "production".into(),
                "base".into(),
                "production-eu".into()
            ])
        );
        assert_eq!(cycle_through("staging", "production", lookup), None);
        assert!(cycle_through("a", "a", |_| None).is_some(), "self-parent");
    }
}
