//! Form values to config values, typed by the schema: what the edit page and the compare page
//! send. A value that does not parse as its type is sent as the text it is, so that the
//! validator judges it and its own message reaches the field.

use serde_json::Value;

/// The input a schema property asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `type: integer` or `number`: a number field (with `min`/`max` when the schema has them).
    Number {
        /// `minimum`, as written.
        min: Option<String>,
        /// `maximum`, as written.
        max: Option<String>,
        /// `any` for numbers, `1` for integers.
        step: &'static str,
    },
    /// `type: boolean`: a toggle.
    Toggle,
    /// `enum`: a select of its values.
    Select(Vec<String>),
    /// Objects, arrays, or several types: a JSON editor.
    Json,
    /// Anything else: a text field.
    Text,
}

/// The input for `property` (None: no schema property, a JSON editor).
pub fn input_for(property: Option<&Value>) -> Input {
    let Some(property) = property else {
        return Input::Json;
    };
    if let Some(values) = property.get("enum").and_then(Value::as_array) {
        return Input::Select(values.iter().map(text_of).collect());
    }
    let bound = |name: &str| property.get(name).map(Value::to_string);
    match property.get("type").and_then(Value::as_str) {
        Some("integer") => Input::Number {
            min: bound("minimum"),
            max: bound("maximum"),
            step: "1",
        },
        Some("number") => Input::Number {
            min: bound("minimum"),
            max: bound("maximum"),
            step: "any",
        },
        Some("boolean") => Input::Toggle,
        Some("string") => Input::Text,
        _ => Input::Json,
    }
}

/// A value as its input shows it: strings bare, everything else as JSON.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The value `text` stands for in `input`. Text that is not of the input's type stays text
/// (the validator then names the rule it breaks).
pub fn value_of(input: &Input, text: &str) -> Value {
    let trimmed = text.trim();
    match input {
        Input::Number { step, .. } => {
            let parsed = if *step == "1" {
                trimmed.parse::<i64>().ok().map(Value::from)
            } else {
                trimmed
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            };
            parsed.unwrap_or_else(|| Value::String(text.to_owned()))
        }
        Input::Toggle => Value::Bool(trimmed == "true"),
        Input::Select(_) | Input::Text => Value::String(text.to_owned()),
        Input::Json => {
            serde_json::from_str(trimmed).unwrap_or_else(|_| Value::String(text.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_follow_the_schema_type_and_bad_text_stays_text() {
        let int = input_for(Some(
            &json!({"type": "integer", "minimum": 1, "maximum": 9}),
        ));
        assert_eq!(
            int,
            Input::Number {
                min: Some("1".into()),
                max: Some("9".into()),
                step: "1"
            }
        );
        assert_eq!(value_of(&int, " 42 "), json!(42));
        assert_eq!(value_of(&int, "4.5"), json!("4.5"));
        let num = input_for(Some(&json!({"type": "number"})));
        assert_eq!(value_of(&num, "0.25"), json!(0.25));
        let toggle = input_for(Some(&json!({"type": "boolean"})));
        assert_eq!(value_of(&toggle, "true"), json!(true));
        assert_eq!(value_of(&toggle, "false"), json!(false));
        let select = input_for(Some(&json!({"type": "string", "enum": ["a", "b"]})));
        assert_eq!(select, Input::Select(vec!["a".into(), "b".into()]));
        let json_input = input_for(None);
        assert_eq!(value_of(&json_input, r#"{"a": [1]}"#), json!({"a": [1]}));
        assert_eq!(value_of(&json_input, "not json"), json!("not json"));
        assert_eq!(value_of(&Input::Text, "<b>"), json!("<b>"));
    }
}
