//! A namespace's JSON Schema, compiled, and its verdicts turned into per-key violations.
//!
//! A namespace's config document is one JSON object whose property names are the config keys
//! (`{"database.pool_size": 20, ...}`), so a schema's `properties`, `required`, `default`,
//! `additionalProperties` and the usual constraints apply key by key.

use jsonschema::error::ValidationErrorKind;
use mycosynth_subscriber::wire::Violation;
use serde_json::Value;

/// A compiled namespace schema.
pub struct Schema {
    raw: Value,
    validator: jsonschema::Validator,
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
            Ok(validator) => Ok(Schema { raw, validator }),
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

    /// Every rule the config document breaks, one violation per key and rule.
    pub fn violations(&self, document: &Value) -> Vec<Violation> {
        let mut out: Vec<Violation> = self
            .validator
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
                    ValidationErrorKind::AdditionalProperties { unexpected } => {
                        unexpected.join(", ")
                    }
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

    #[test]
    fn invalid_schemas_are_refused() {
        assert!(Schema::compile(json!([1])).is_err());
        assert!(Schema::compile(json!({"type": "no-such-type"})).is_err());
        assert!(Schema::compile(json!({"$ref": "http://example.com/s.json"})).is_err());
    }
}
