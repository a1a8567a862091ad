//! Which namespace schemas can be checked key by key: the validator checks a change set on the
//! keys it changes, and a validating subscriber a change event on its keys, only under such a
//! schema, and both decide it here.

use serde_json::Value;

/// The top-level keywords whose rules apply to each key on its own (or say nothing), so that a
/// schema made of them alone can be checked key by key.
pub const PER_KEY_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "type",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "required",
];

/// A namespace schema whose rules all apply key by key, split for checking changes: a
/// document that conformed still conforms with some keys changed when each changed key passes
/// `without_required` and every key of `required` is still there.
#[derive(Debug, Clone, PartialEq)]
pub struct PerKeySchema {
    /// The schema without `required`: it checks only the keys present in what it is given
    /// (`$ref`s still resolve, the root is the same).
    pub without_required: Value,
    /// The keys the schema requires.
    pub required: Vec<String>,
}

/// The key-by-key form of `schema`, when every rule at its top is one of [`PER_KEY_KEYWORDS`]
/// (and `type`, if given, is `object`); `None` for a schema with a rule across keys (`allOf`,
/// `if`, `dependentRequired`, `minProperties`, ...).
///
/// ```
/// use mycosynth_subscriber::wire::per_key_schema;
/// use serde_json::json;
///
/// let schema = json!({"properties": {"a": {"type": "integer"}}, "required": ["a"]});
/// let form = per_key_schema(&schema).unwrap();
/// assert_eq!(form.required, ["a"]);
/// assert_eq!(form.without_required, json!({"properties": {"a": {"type": "integer"}}}));
/// assert!(per_key_schema(&json!({"minProperties": 1})).is_none());
/// ```
pub fn per_key_schema(schema: &Value) -> Option<PerKeySchema> {
    let root = schema.as_object()?;
    if !root.keys().all(|k| PER_KEY_KEYWORDS.contains(&k.as_str())) {
        return None;
    }
    if root.get("type").is_some_and(|t| t != "object") {
        return None;
    }
    let required = match root.get("required") {
        None => Vec::new(),
        Some(Value::Array(keys)) => keys
            .iter()
            .map(|k| k.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?,
        Some(_) => return None,
    };
    let mut without_required = root.clone();
    without_required.remove("required");
    Some(PerKeySchema {
        without_required: Value::Object(without_required),
        required,
    })
}
