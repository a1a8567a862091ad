//! A namespace's JSON Schema, compiled, and its verdicts turned into per-key violations.
//!
//! A namespace's config document is one JSON object whose property names are the config keys
//! (`{"database.pool_size": 20, ...}`), so a schema's `properties`, `required`, `default`,
//! `additionalProperties` and the usual constraints apply key by key.
//!
//! Most schemas say nothing but that: each key's rules depend on its name and value alone, plus
//! which keys are required. For those, a change set applied to a document that already conformed
//! is checked on the keys it sets and on the required keys being present ([`Schema::change_violations`]),
//! not by validating the whole namespace again: a one-key change to 10,000 keys costs what one
//! key costs. A schema with any other rule at its top (`allOf`, `if`, `dependentRequired`,
//! `minProperties`, ...) is checked on the whole document every time.

use std::collections::{BTreeMap, BTreeSet};

use jsonschema::error::ValidationErrorKind;
use mycosynth_subscriber::wire::{per_key_schema, KeyChange, Violation};
use serde_json::Value;

/// A compiled namespace schema.
pub struct Schema {
    raw: Value,
    validator: jsonschema::Validator,
    per_key: Option<PerKey>,
    /// The keys it marks sensitive, read once rather than from `raw` on every change set.
    sensitive: BTreeSet<String>,
}

/// A schema whose rules all apply key by key: the same schema without `required` (it checks
/// only the keys present in what it is given), and the required keys.
struct PerKey {
    validator: jsonschema::Validator,
    required: Vec<String>,
}

/// The key-by-key form of `raw` ([`per_key_schema`]), compiled.
fn per_key(raw: &Value) -> Option<PerKey> {
    let form = per_key_schema(raw)?;
    let validator = jsonschema::validator_for(&form.without_required).ok()?;
    Some(PerKey {
        validator,
        required: form.required,
    })
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("raw", &self.raw).finish()
    }
}

impl Schema {
    /// Compiles `raw`; an invalid schema is one violation naming what is wrong. References
    /// to files or URLs are not followed (the crate is built without resolvers).
    pub fn compile(raw: Value) -> Result<Schema, Violation> {
        if !raw.is_object() {
            return Err(Violation {
                key: "schema".into(),
                rule: "schema".into(),
                message: "a namespace schema must be a JSON object".into(),
            });
        }
        match jsonschema::validator_for(&raw) {
            Ok(validator) => {
                let per_key = per_key(&raw);
                let sensitive = mycosynth_subscriber::wire::sensitive_keys(&raw);
                Ok(Schema {
                    raw,
                    validator,
                    per_key,
                    sensitive,
                })
            }
            Err(err) => Err(Violation {
                key: "schema".into(),
                rule: "schema".into(),
                message: format!("not a valid JSON Schema: {err}"),
            }),
        }
    }

    /// The schema as pushed.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The keys the schema marks sensitive (`x-mycosynth-sensitive`).
    pub fn sensitive_keys(&self) -> &BTreeSet<String> {
        &self.sensitive
    }

    /// Every rule the config document breaks, one violation per key and rule.
    pub fn violations(&self, document: &Value) -> Vec<Violation> {
        verdicts(&self.validator, document)
    }

    /// The rules broken by `document`, which is a document that conformed to this schema with
    /// `changes` (the keys whose values changed) applied: the same verdicts as
    /// [`Schema::violations`] of the whole document, at the cost of the changed keys. `None`
    /// when this schema cannot be checked key by key.
    pub fn change_violations(
        &self,
        document: &BTreeMap<String, Value>,
        changes: &[KeyChange],
    ) -> Option<Vec<Violation>> {
        let per_key = self.per_key.as_ref()?;
        let set: serde_json::Map<String, Value> = changes
            .iter()
            .filter_map(|c| c.value.as_ref().map(|v| (c.key.clone(), v.clone())))
            .collect();
        let mut out = verdicts(&per_key.validator, &Value::Object(set));
        for key in &per_key.required {
            if !document.contains_key(key) {
                out.push(Violation {
                    key: key.clone(),
                    rule: "required".into(),
                    message: format!("key {key:?} is required by the schema"),
                });
            }
        }
        out.sort_by(|a, b| (&a.key, &a.rule).cmp(&(&b.key, &b.rule)));
        out.dedup();
        Some(out)
    }
}

/// Every rule `document` breaks under `validator`, one violation per key and rule, sorted.
fn verdicts(validator: &jsonschema::Validator, document: &Value) -> Vec<Violation> {
    let mut out: Vec<Violation> = validator
        .iter_errors(document)
        .map(|err| {
            let rule = err
                .schema_path()
                .as_str()
                .rsplit('/')
                .next()
                .unwrap_or("schema")
                .to_owned();
            let key = match err.kind() {
                ValidationErrorKind::Required { property } => property
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| property.to_string()),
                ValidationErrorKind::AdditionalProperties { unexpected } => unexpected.join(", "),
                _ => top_level_key(err.instance_path().as_str()),
            };
            let message = match err.kind() {
                ValidationErrorKind::AdditionalProperties { .. } => {
                    format!("key {key:?} is not defined by the namespace schema")
                }
                ValidationErrorKind::Required { .. } => {
                    format!("key {key:?} is required by the schema")
                }
                _ => format!("key {key:?}: {err}"),
            };
            Violation { key, rule, message }
        })
        .collect();
    out.sort_by(|a, b| (&a.key, &a.rule).cmp(&(&b.key, &b.rule)));
    out.dedup();
    out
}

/// The config key a JSON pointer into the document points into: its first segment.
fn top_level_key(pointer: &str) -> String {
    let first = pointer
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    if first.is_empty() {
        "(document)".into()
    } else {
        first.replace("~1", "/").replace("~0", "~")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::compile(json!({
            "type": "object",
            "properties": {
                "database.pool_size": {"type": "integer", "minimum": 1, "maximum": 1000},
                "database.host": {"type": "string", "pattern": "^[a-z0-9.-]+$"},
                "limits": {"type": "object", "properties": {"rps": {"type": "integer"}}}
            },
            "required": ["database.host"],
            "additionalProperties": false
        }))
        .unwrap()
    }

    fn rules(doc: Value) -> Vec<(String, String)> {
        schema()
            .violations(&doc)
            .into_iter()
            .map(|v| (v.key, v.rule))
            .collect()
    }

    #[test]
    fn each_rule_names_its_key() {
        let ok = json!({"database.host": "db1", "database.pool_size": 5});
        assert!(rules(ok).is_empty());
        assert_eq!(
            rules(json!({"database.host": "db1", "database.pool_size": "x"})),
            [("database.pool_size".into(), "type".into())]
        );
        assert_eq!(
            rules(json!({"database.host": "db1", "database.pool_size": 0})),
            [("database.pool_size".into(), "minimum".into())]
        );
        assert_eq!(
            rules(json!({"database.host": "DB!"})),
            [("database.host".into(), "pattern".into())]
        );
        assert_eq!(
            rules(json!({})),
            [("database.host".into(), "required".into())]
        );
        assert_eq!(
            rules(json!({"database.host": "a", "typo": 1})),
            [("typo".into(), "additionalProperties".into())]
        );
        assert_eq!(
            rules(json!({"database.host": "a", "limits": {"rps": "many"}})),
            [("limits".into(), "type".into())]
        );
    }

    fn set(key: &str, value: Value) -> KeyChange {
        KeyChange::set(key, value)
    }

    /// `changes` applied to `document`, as the validator's plan applies them.
    fn applied(document: &Value, changes: &[KeyChange]) -> BTreeMap<String, Value> {
        let mut out: BTreeMap<String, Value> = document
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for change in changes {
            match &change.value {
                Some(value) => out.insert(change.key.clone(), value.clone()),
                None => out.remove(&change.key),
            };
        }
        out
    }

    /// Whether `schema` answers key by key (`change_violations` is `Some`).
    fn checks_per_key(schema: &Schema) -> bool {
        schema.change_violations(&BTreeMap::new(), &[]).is_some()
    }

    #[test]
    fn a_change_is_judged_on_its_keys_as_the_whole_document_would_be() {
        let schema = schema();
        assert!(checks_per_key(&schema));
        let conforming =
            json!({"database.host": "db1", "database.pool_size": 5, "limits": {"rps": 1}});
        assert!(schema.violations(&conforming).is_empty());
        let cases = [
            vec![set("database.pool_size", json!(6))],
            vec![set("database.pool_size", json!(0))],
            vec![set("database.pool_size", json!("x")), set("typo", json!(1))],
            vec![KeyChange::delete("database.host")],
            vec![KeyChange::delete("database.pool_size")],
            vec![
                set("database.host", json!("DB!")),
                KeyChange::delete("limits"),
            ],
            vec![set("limits", json!({"rps": "many"}))],
        ];
        for changes in cases {
            let after = applied(&conforming, &changes);
            let whole = schema.violations(&serde_json::to_value(&after).unwrap());
            let by_key = schema.change_violations(&after, &changes).unwrap();
            assert_eq!(by_key, whole, "{changes:?}");
        }
    }

    #[test]
    fn schemas_with_rules_across_keys_are_not_judged_key_by_key() {
        for rule in [
            json!({"minProperties": 2}),
            json!({"dependentRequired": {"a": ["b"]}}),
            json!({"if": {"required": ["a"]}, "then": {"required": ["b"]}}),
            json!({"allOf": [{"required": ["a"]}]}),
            json!({"type": "array"}),
        ] {
            let schema = Schema::compile(rule.clone()).unwrap();
            assert!(!checks_per_key(&schema), "{rule}");
            let document = BTreeMap::from([("a".to_owned(), json!(1))]);
            assert!(schema
                .change_violations(&document, &[set("a", json!(1))])
                .is_none());
        }
        let refs = json!({
            "$defs": {"port": {"type": "integer", "maximum": 65535}},
            "properties": {"http.port": {"$ref": "#/$defs/port"}},
            "additionalProperties": false
        });
        let schema = Schema::compile(refs).unwrap();
        assert!(checks_per_key(&schema));
        let after = BTreeMap::from([("http.port".to_owned(), json!(70000))]);
        let found = schema
            .change_violations(&after, &[set("http.port", json!(70000))])
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].key.as_str(), found[0].rule.as_str()),
            ("http.port", "maximum")
        );
    }

    #[test]
    fn invalid_schemas_are_refused() {
        assert!(Schema::compile(json!([1])).is_err());
        assert!(Schema::compile(json!({"type": "no-such-type"})).is_err());
        assert!(Schema::compile(json!({"$ref": "http://example.com/s.json"})).is_err());
    }
}
