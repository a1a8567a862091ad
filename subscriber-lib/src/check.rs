//! Client-side validation: the subscriber can check each new snapshot against the namespace
//! schema before serving it (defence in depth against a bad schema or a bypassed validator).
//! Compiled only with the `validation` feature; without it, nothing is checked.

use serde_json::Value;

use crate::snapshot::Snapshot;

/// A compiled namespace schema.
pub(crate) struct SchemaCheck {
    #[cfg(feature = "validation")]
    validator: jsonschema::Validator,
}

impl SchemaCheck {
    /// Compiles `schema`; None when it does not compile or the feature is off.
    #[cfg(feature = "validation")]
    pub fn compile(schema: &Value) -> Option<SchemaCheck> {
        jsonschema::validator_for(schema)
            .ok()
            .map(|validator| SchemaCheck { validator })
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
        // `required` is left to the validator: an environment may inherit a required key from
        // a parent environment, which this environment's own snapshot does not hold.
        let first = self
            .validator
            .iter_errors(&document)
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

    /// The first rule the snapshot breaks, in one line.
    #[cfg(not(feature = "validation"))]
    pub fn check(&self, _snapshot: &Snapshot) -> Result<(), String> {
        Ok(())
    }
}
