//! Client-side validation: the subscriber can check each new snapshot against the namespace
//! schema before serving it (defence in depth against a bad schema or a bypassed validator).
//! Compiled only with the `validation` feature; without it, nothing is checked.
//!
//! Under a schema whose rules apply key by key ([`crate::wire::per_key_schema`]), a change to a
//! snapshot that passed is checked on the keys it sets ([`SchemaCheck::check_changes`]), not by
//! validating every key of the namespace again on every event.

use serde_json::Value;

use crate::next_values::Change;
use crate::snapshot::Snapshot;

/// A compiled namespace schema.
pub(crate) struct SchemaCheck {
    #[cfg(feature = "validation")]
    validator: jsonschema::Validator,
    /// The schema without `required`, when its rules apply key by key.
    #[cfg(feature = "validation")]
    per_key: Option<jsonschema::Validator>,
}

impl SchemaCheck {
    /// Compiles `schema`; None when it does not compile or the feature is off.
    #[cfg(feature = "validation")]
    pub fn compile(schema: &Value) -> Option<SchemaCheck> {
        let validator = jsonschema::validator_for(schema).ok()?;
        let per_key = crate::wire::per_key_schema(schema)
            .and_then(|form| jsonschema::validator_for(&form.without_required).ok());
        Some(SchemaCheck { validator, per_key })
    }

    /// Compiles `schema`; None when it does not compile or the feature is off.
    #[cfg(not(feature = "validation"))]
    pub fn compile(_schema: &Value) -> Option<SchemaCheck> {
        None
    }

    /// The first rule the snapshot breaks, in one line.
    #[cfg(feature = "validation")]
    pub fn check(&self, snapshot: &Snapshot) -> Result<(), String> {
        let document = Value::Object(
            snapshot
                .iter()
                .map(|(k, v)| (k.to_owned(), v.clone()))
                .collect(),
        );
        first_break(&self.validator, &document)
    }

    /// The first rule `changes` break, applied to a snapshot that passed [`SchemaCheck::check`]
    /// (or this): the verdict of checking the whole next snapshot, at the cost of the keys set.
    /// `None` when the schema is not checked key by key.
    #[cfg(feature = "validation")]
    pub fn check_changes(&self, changes: &[Change]) -> Option<Result<(), String>> {
        let per_key = self.per_key.as_ref()?;
        let set = Value::Object(
            changes
                .iter()
                .filter_map(|(key, value)| value.as_ref().map(|v| (key.to_string(), (**v).clone())))
                .collect(),
        );
        Some(first_break(per_key, &set))
    }

    /// Not checked key by key without the feature (nothing is checked).
    #[cfg(not(feature = "validation"))]
    pub fn check_changes(&self, _changes: &[Change]) -> Option<Result<(), String>> {
        None
    }

    /// The first rule the snapshot breaks, in one line.
    #[cfg(not(feature = "validation"))]
    pub fn check(&self, _snapshot: &Snapshot) -> Result<(), String> {
        Ok(())
    }
}

/// The first rule `document` breaks, in one line. `required` is left to the validator: an
/// environment may inherit a required key from a parent environment, which this environment's
/// own snapshot does not hold.
#[cfg(feature = "validation")]
fn first_break(validator: &jsonschema::Validator, document: &Value) -> Result<(), String> {
    let first = validator
        .iter_errors(document)
        .find(|err| {
            !matches!(
                err.kind(),
                jsonschema::error::ValidationErrorKind::Required { .. }
            )
        })
        .map(|err| format!("{err} (at {})", err.instance_path()));
    match first {
        None => Ok(()),
        Some(reason) => Err(reason),
    }
}

#[cfg(all(test, feature = "validation"))]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    #[test]
    fn an_event_is_judged_on_its_keys_as_the_whole_snapshot_would_be() {
        let schema = json!({
            "type": "object",
            "properties": {
                "db.pool": {"type": "integer", "minimum": 1},
                "db.host": {"type": "string"}
            },
            "patternProperties": {"^flag\\.": {"type": "boolean"}},
            "required": ["db.host"],
            "additionalProperties": false
        });
        let check = SchemaCheck::compile(&schema).unwrap();
        let before = [("db.host", json!("a")), ("db.pool", json!(5))];
        assert!(check
            .check(&Snapshot::from_values(1, before.clone()))
            .is_ok());
        let set = |k: &str, v| (Arc::from(k), Some(Arc::new(v)));
        let cases: Vec<Vec<Change>> = vec![
            vec![set("db.pool", json!(6))],
            vec![set("db.pool", json!(0))],
            vec![set("flag.x", json!("yes"))],
            vec![set("typo", json!(1))],
            vec![set("flag.y", json!(true)), (Arc::from("db.host"), None)],
        ];
        for changes in cases {
            let mut values: std::collections::BTreeMap<String, Value> = before
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            for (key, value) in &changes {
                match value {
                    Some(v) => values.insert(key.to_string(), (**v).clone()),
                    None => values.remove(key.as_ref()),
                };
            }
            let whole = check.check(&Snapshot::from_values(2, values));
            assert_eq!(check.check_changes(&changes), Some(whole), "{changes:?}");
        }
        let across = SchemaCheck::compile(&json!({"minProperties": 2})).unwrap();
        assert_eq!(across.check_changes(&[set("a", json!(1))]), None);
    }
}
