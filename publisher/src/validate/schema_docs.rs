//! Schema evolution and documentation: what a new schema removes or adds compared with the
//! stored one, and a namespace's schema rendered as Markdown. Pure.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// The keys (`properties`) a schema defines.
pub fn keys(schema: &Value) -> BTreeSet<String> {
    properties(schema).keys().cloned().collect()
}

fn properties(schema: &Value) -> Map<String, Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Keys defined by `old` and no longer by `new`.
pub fn removed_keys(old: &Value, new: &Value) -> Vec<String> {
    keys(old).difference(&keys(new)).cloned().collect()
}

/// Keys defined by `new` and not by `old`.
pub fn added_keys(old: &Value, new: &Value) -> Vec<String> {
    keys(new).difference(&keys(old)).cloned().collect()
}

const CONSTRAINTS: &[&str] = &[
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "enum",
    "const",
    "minItems",
    "maxItems",
    "uniqueItems",
];

/// The schema of `namespace` as Markdown: a table of every key with its type, whether it is
/// required, its constraints, default and description.
pub fn markdown(namespace: &str, schema: &Value) -> String {
    let cell = |text: String| text.replace('|', "\\|").replace('\n', " ");
    let required: BTreeSet<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = format!("# Configuration of `{namespace}`\n\n");
    if let Some(description) = schema.get("description").and_then(Value::as_str) {
        out.push_str(&format!("{description}\n\n"));
    }
    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
        out.push_str("Only the keys below may be set.\n\n");
    }
    out.push_str("| key | type | required | constraints | default | description |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    let mut props: Vec<(String, Value)> = properties(schema).into_iter().collect();
    props.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, spec) in props {
        let kind = match spec.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" or "),
            _ => "any".into(),
        };
        let constraints: Vec<String> = CONSTRAINTS
            .iter()
            .filter_map(|c| spec.get(*c).map(|v| format!("{c}: {v}")))
            .collect();
        let default = spec
            .get("default")
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        let description = spec
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{key}` | {} | {} | {} | {} | {} |\n",
            cell(kind),
            if required.contains(key.as_str()) {
                "yes"
            } else {
                "no"
            },
            cell(constraints.join(", ")),
            cell(default),
            cell(description.to_owned()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evolution_and_docs() {
        let old = json!({"properties": {"a": {}, "b": {}}});
        let new = json!({"properties": {"b": {}, "c": {"default": 1}}});
        assert_eq!(removed_keys(&old, &new), ["a"]);
        assert_eq!(added_keys(&old, &new), ["c"]);
        let md = markdown(
            "ns",
            &json!({"required": ["b"], "properties": {"b": {"type": "integer", "minimum": 1, "default": 2, "description": "the b|c"}}}),
        );
        assert!(
            md.contains("| `b` | integer | yes | minimum: 1 | `2` | the b\\|c |"),
            "{md}"
        );
    }
}
