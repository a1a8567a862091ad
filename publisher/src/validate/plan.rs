//! The one validation of change sets, used by the validator service and by offline tools: naming
//! and size rules, then the namespace schema against the whole resulting document. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use mycosynth_subscriber::wire::{
    ConfigKey, DiffEntry, Environment, KeyChange, NameError, Namespace, Violation,
    MAX_CHANGES_PER_SET, MAX_VALUE_LEN,
};
use serde_json::Value;

use super::schema::Schema;

/// A validated change set, ready to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Only the keys whose value actually changes, sorted by key.
    pub changes: Vec<KeyChange>,
    /// Old and new value of each changed key.
    pub diff: Vec<DiffEntry>,
    /// The full document after the change.
    pub document: BTreeMap<String, Value>,
}

impl Plan {
    /// Nothing would change.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Turns a name error into a violation.
pub fn name_violation(err: &NameError) -> Violation {
    let key = match err {
        NameError::Empty { name, .. }
        | NameError::TooLong { name, .. }
        | NameError::BadCharacter { name, .. }
        | NameError::Reserved { name, .. } => name.clone(),
    };
    Violation {
        key,
        rule: err.rule().to_owned(),
        message: err.to_string(),
    }
}

/// Checks a namespace and environment name.
pub fn names(
    namespace: &str,
    environment: &str,
) -> Result<(Namespace, Environment), Vec<Violation>> {
    let ns = Namespace::new(namespace).map_err(|e| vec![name_violation(&e)])?;
    let env = Environment::new(environment).map_err(|e| vec![name_violation(&e)])?;
    Ok((ns, env))
}

/// Validates `changes` on top of `current` (taken, and changed in place: a change set costs
/// what it touches, not the size of the namespace) and computes what would change.
///
/// `replace`: keys of `current` absent from `changes` are deleted. `schema`: the namespace's
/// schema, if any; `require_schema` refuses a namespace without one. Every violation is
/// reported, not just the first. The whole document is checked against the schema.
pub fn plan(
    current: BTreeMap<String, Value>,
    changes: &[KeyChange],
    replace: bool,
    schema: Option<&Schema>,
    require_schema: bool,
) -> Result<Plan, Vec<Violation>> {
    plan_on(current, changes, replace, schema, require_schema, false)
}

/// [`plan`], told whether `current` is known to conform to `schema`: then a schema whose rules
/// apply key by key checks only the keys the change set changes, and the required keys
/// ([`Schema::change_violations`]), with the same verdicts as checking the whole document.
pub fn plan_on(
    current: BTreeMap<String, Value>,
    changes: &[KeyChange],
    replace: bool,
    schema: Option<&Schema>,
    require_schema: bool,
    current_conforms: bool,
) -> Result<Plan, Vec<Violation>> {
    let mut violations = Vec::new();
    if changes.len() > MAX_CHANGES_PER_SET {
        violations.push(Violation {
            key: "(change set)".into(),
            rule: "max_changes".into(),
            message: format!(
                "a change set holds at most {MAX_CHANGES_PER_SET} keys, this one {}",
                changes.len()
            ),
        });
    }
    let mut seen = BTreeSet::new();
    for change in changes {
        if let Err(err) = ConfigKey::new(change.key.as_str()) {
            violations.push(name_violation(&err));
            continue;
        }
        if !seen.insert(change.key.as_str()) {
            violations.push(Violation {
                key: change.key.clone(),
                rule: "duplicate".into(),
                message: format!(
                    "key {:?} appears more than once in the change set",
                    change.key
                ),
            });
        }
        if let Some(value) = &change.value {
            let size = serde_json::to_vec(value)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_VALUE_LEN {
                violations.push(Violation {
                    key: change.key.clone(),
                    rule: "max_size".into(),
                    message: format!(
                        "key {:?}: value of {size} bytes is larger than {MAX_VALUE_LEN} bytes",
                        change.key
                    ),
                });
            }
        }
    }
    if schema.is_none() && require_schema {
        violations.push(Violation {
            key: "(namespace)".into(),
            rule: "schema_required".into(),
            message: "this validator requires a schema and the namespace has none; push one with `mycosynth schema push`"
                .into(),
        });
    }
    if !violations.is_empty() {
        return Err(violations);
    }

    let (document, changes, diff) = if replace {
        let mut document = BTreeMap::new();
        for change in changes {
            if let Some(value) = &change.value {
                document.insert(change.key.clone(), value.clone());
            }
        }
        let (changes, diff) = difference(&current, &document);
        (document, changes, diff)
    } else {
        apply_in_place(current, changes)
    };
    if let Some(schema) = schema {
        let by_key = (current_conforms && !replace)
            .then(|| schema.change_violations(&document, &changes))
            .flatten();
        let scope = if by_key.is_some() { "keys" } else { "document" };
        metrics::counter!("mycosynth_validator_schema_checks_total", "scope" => scope).increment(1);
        let found = match by_key {
            Some(found) => found,
            None => schema.violations(&Value::Object(
                document
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )),
        };
        if !found.is_empty() {
            return Err(found);
        }
    }
    Ok(Plan {
        changes,
        diff,
        document,
    })
}

/// `changes` (each key once) applied to `document`, with the change set and diff they make,
/// sorted by key: only their keys can differ, so only they are compared.
fn apply_in_place(
    mut document: BTreeMap<String, Value>,
    changes: &[KeyChange],
) -> (BTreeMap<String, Value>, Vec<KeyChange>, Vec<DiffEntry>) {
    let mut by_key: Vec<&KeyChange> = changes.iter().collect();
    by_key.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let (mut made, mut diff) = (Vec::new(), Vec::new());
    for change in by_key {
        let old = match &change.value {
            Some(value) => document.insert(change.key.clone(), value.clone()),
            None => document.remove(&change.key),
        };
        if old != change.value {
            made.push(change.clone());
            diff.push(DiffEntry {
                key: change.key.clone(),
                old,
                new: change.value.clone(),
            });
        }
    }
    (document, made, diff)
}

/// The change set and diff that turn `from` into `to`, sorted by key.
pub fn difference(
    from: &BTreeMap<String, Value>,
    to: &BTreeMap<String, Value>,
) -> (Vec<KeyChange>, Vec<DiffEntry>) {
    let keys: BTreeSet<&String> = from.keys().chain(to.keys()).collect();
    let mut changes = Vec::new();
    let mut diff = Vec::new();
    for key in keys {
        let (old, new) = (from.get(key), to.get(key));
        if old != new {
            changes.push(KeyChange {
                key: key.clone(),
                value: new.cloned(),
            });
            diff.push(DiffEntry {
                key: key.clone(),
                old: old.cloned(),
                new: new.cloned(),
            });
        }
    }
    (changes, diff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(key: &str, value: Value) -> KeyChange {
        KeyChange {
            key: key.into(),
            value: Some(value),
        }
    }

    fn current() -> BTreeMap<String, Value> {
        BTreeMap::from([("a".to_string(), json!(1)), ("b".to_string(), json!(2))])
    }

    #[test]
    fn unchanged_values_make_no_change() {
        let plan = plan(current(), &[set("a", json!(1))], false, None, false).unwrap();
        assert!(plan.is_empty());
        let plan = plan_ok(&[
            set("a", json!(5)),
            KeyChange {
                key: "b".into(),
                value: None,
            },
        ]);
        assert_eq!(plan.changes.len(), 2);
        assert_eq!(plan.document, BTreeMap::from([("a".to_string(), json!(5))]));
    }

    /// Changing a document in place finds exactly what comparing the whole of it would.
    #[test]
    fn a_change_set_is_diffed_by_its_own_keys_as_by_the_whole_document() {
        let current: BTreeMap<String, Value> =
            (0..50).map(|i| (format!("k{i:02}"), json!(i))).collect();
        let changes = [
            set("k07", json!(7)),
            set("k03", json!("three")),
            set("new", json!({"a": 1})),
            KeyChange {
                key: "k10".into(),
                value: None,
            },
            KeyChange {
                key: "missing".into(),
                value: None,
            },
        ];
        let plan = plan(current.clone(), &changes, false, None, false).unwrap();
        let (made, diff) = difference(&current, &plan.document);
        assert_eq!((plan.changes, plan.diff), (made, diff));
        assert_eq!(plan.document.len(), 50);
        assert_eq!(plan.document["k03"], json!("three"));
        assert!(!plan.document.contains_key("k10"));
    }

    fn plan_ok(changes: &[KeyChange]) -> Plan {
        plan(current(), changes, false, None, false).unwrap()
    }

    #[test]
    fn replace_deletes_what_is_not_named() {
        let plan = plan(current(), &[set("c", json!(3))], true, None, false).unwrap();
        let deleted: Vec<_> = plan
            .changes
            .iter()
            .filter(|c| c.value.is_none())
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(deleted, ["a", "b"]);
    }

    #[test]
    fn every_violation_is_reported() {
        let big = Value::String("x".repeat(MAX_VALUE_LEN));
        let errs = plan(
            current(),
            &[
                set("_meta.x", json!(1)),
                set("ok", big),
                set("a", json!(1)),
                set("a", json!(2)),
            ],
            false,
            None,
            false,
        )
        .unwrap_err();
        let rules: Vec<_> = errs
            .iter()
            .map(|v| (v.key.as_str(), v.rule.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                ("_meta.x", "reserved_prefix"),
                ("ok", "max_size"),
                ("a", "duplicate")
            ]
        );
        let errs = plan(current(), &[], false, None, true).unwrap_err();
        assert_eq!(errs[0].rule, "schema_required");
    }

    #[test]
    fn schema_sees_the_whole_document() {
        let schema =
            Schema::compile(json!({"required": ["a"], "properties": {"b": {"type": "integer"}}}))
                .unwrap();
        let errs = plan(
            current(),
            &[KeyChange {
                key: "a".into(),
                value: None,
            }],
            false,
            Some(&schema),
            false,
        )
        .unwrap_err();
        assert_eq!(
            (errs[0].key.as_str(), errs[0].rule.as_str()),
            ("a", "required")
        );
        assert!(plan(
            current(),
            &[set("b", json!(7))],
            false,
            Some(&schema),
            false
        )
        .is_ok());
    }
}
