//! Offline validation of a config repository, for CI: the same naming, size and schema rules
//! as the validator ([`crate::validate::plan`] on each file as a whole document), plus the
//! repository's own rules (layout, parents). No server.

use std::collections::{BTreeMap, BTreeSet};

use super::repo::{ConfigRepo, EnvFile, Finding, PARENT_KEY};
use crate::validate;
use crate::validate::inherit::cycle_through;
use crate::validate::Schema;
use mycosynth_subscriber::wire::{KeyChange, Violation};

/// Every rule the repository breaks (empty: it passes). `require_schema` makes a namespace
/// without a schema file a finding, as `serve --require-schema` refuses it.
pub fn check(repo: &ConfigRepo, require_schema: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut schemas: BTreeMap<&str, Schema> = BTreeMap::new();
    for (namespace, file) in &repo.schemas {
        match Schema::compile(file.raw.clone()) {
            Ok(schema) => {
                schemas.insert(namespace.as_str(), schema);
            }
            Err(v) => findings.push(Finding {
                file: file.path.clone(),
                key: "(schema)".into(),
                line: None,
                rule: v.rule,
                message: v.message,
            }),
        }
    }
    for file in &repo.files {
        let finding = |v: Violation| Finding {
            file: file.path.clone(),
            line: file.line_of(&v.key),
            key: v.key,
            rule: v.rule,
            message: v.message,
        };
        if let Err(violations) = validate::names(&file.namespace, &file.environment) {
            findings.extend(violations.into_iter().map(finding));
            continue;
        }
        let schema = schemas.get(file.namespace.as_str());
        if require_schema && !repo.schemas.contains_key(&file.namespace) {
            findings.push(finding(Violation {
                key: "(namespace)".into(),
                rule: "schema_required".into(),
                message: format!(
                    "namespace {} has no schemas/{}.schema.json",
                    file.namespace, file.namespace
                ),
            }));
        }
        let parents = match parent_chain(repo, file) {
            Ok(parents) => parents,
            Err(v) => {
                findings.push(finding(v));
                continue;
            }
        };
        // Own rules on the file alone; the schema on what the environment will hold
        // (inherited values shadowed by its own), as the validator checks it.
        let changes: Vec<KeyChange> = file
            .values
            .iter()
            .map(|(k, v)| KeyChange::set(k.clone(), v.clone()))
            .collect();
        let own_schema = schema.filter(|_| parents.is_empty());
        match validate::plan(BTreeMap::new(), &changes, true, own_schema, false) {
            Err(violations) => findings.extend(violations.into_iter().map(finding)),
            Ok(plan) => {
                if let (Some(schema), false) = (schema, parents.is_empty()) {
                    let mut inherited = BTreeMap::new();
                    for parent in parents.iter().rev() {
                        inherited.extend(parent.values.clone());
                    }
                    // Values a parent sets are reported on the parent's file.
                    let own = |v: &Violation| {
                        v.rule == "required"
                            || v.key.split(", ").any(|k| file.values.contains_key(k))
                    };
                    findings.extend(
                        crate::validate::inherit::schema_violations(
                            schema,
                            &inherited,
                            &plan.document,
                        )
                        .into_iter()
                        .filter(own)
                        .map(finding),
                    );
                }
            }
        }
    }
    findings
}

/// The parent files of `file`, nearest first; a violation when a parent has no file in the
/// namespace or the chain is a cycle.
pub fn parent_chain<'a>(
    repo: &'a ConfigRepo,
    file: &'a EnvFile,
) -> Result<Vec<&'a EnvFile>, Violation> {
    let Some(parent) = &file.parent else {
        return Ok(Vec::new());
    };
    let in_ns = |env: &str| {
        repo.files
            .iter()
            .find(|f| f.namespace == file.namespace && f.environment == env)
    };
    let declared: BTreeMap<&str, &str> = repo
        .files
        .iter()
        .filter(|f| f.namespace == file.namespace)
        .filter_map(|f| Some((f.environment.as_str(), f.parent.as_deref()?)))
        .collect();
    if let Some(cycle) = cycle_through(&file.environment, parent, |e| {
        declared.get(e).map(|p| (*p).to_owned())
    }) {
        return Err(Violation {
            key: PARENT_KEY.into(),
            rule: "cycle".into(),
            message: format!(
                "environment {:?} cannot inherit from {parent:?}: the chain {} is a cycle",
                file.environment,
                cycle.join(" -> ")
            ),
        });
    }
    let mut chain = Vec::new();
    let mut seen = BTreeSet::new();
    let mut at = Some(parent.as_str());
    while let Some(env) = at {
        if !seen.insert(env) {
            break;
        }
        let Some(parent_file) = in_ns(env) else {
            return Err(Violation {
                key: PARENT_KEY.into(),
                rule: "unknown_parent".into(),
                message: format!(
                    "parent {env:?} has no file config/{}/{env}.yaml",
                    file.namespace
                ),
            });
        };
        chain.push(parent_file);
        at = parent_file.parent.as_deref();
    }
    Ok(chain)
}

/// The files in deploy order: parents before children, otherwise by (namespace, environment).
pub fn deploy_order(repo: &ConfigRepo) -> Vec<&EnvFile> {
    let mut ordered: Vec<(usize, &EnvFile)> = repo
        .files
        .iter()
        .map(|f| (parent_chain(repo, f).map(|c| c.len()).unwrap_or(0), f))
        .collect();
    ordered.sort_by(|(da, a), (db, b)| {
        (&a.namespace, da, &a.environment).cmp(&(&b.namespace, db, &b.environment))
    });
    ordered.into_iter().map(|(_, f)| f).collect()
}
