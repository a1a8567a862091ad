//! Plan: the change set validated against the document it applies to, with its diff. Pure:
//! the inputs were gathered before, and nothing here reads or writes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use mycosynth_subscriber::wire::{is_sealed, KeyChange, Violation};
use serde_json::Value;

use super::inputs::Inputs;
use super::order::Intent;
use crate::access::vault::redact_violations;
use crate::failure::{invalid, Failure};
use crate::validate::{self, inherit, Plan, Schema};

/// A validated change set, and what the next change set may reuse of it.
pub struct Planned {
    /// The change set, its diff and the resulting document.
    pub plan: Plan,
    /// The schema the resulting document was checked against (none for a child environment,
    /// which is checked with what it inherits).
    pub conforms_to: Option<Weak<Schema>>,
    /// Whether the resulting document is the state's in clear, so the next change set can
    /// start from it: not when a value came in already sealed (it stays sealed in the plan's
    /// document, unlike the opened copy of the stored record).
    pub reusable: bool,
}

/// Validates `intent` on top of `current` (the state's document in clear, which the last
/// change set left conforming to `conformed`, if it did) with `inputs`.
pub fn plan(
    inputs: &Inputs,
    current: BTreeMap<String, Value>,
    conformed: Option<&Weak<Schema>>,
    intent: &Intent,
    require_schema: bool,
) -> Result<Planned, Vec<Violation>> {
    let (changes, replace): (Cow<'_, [KeyChange]>, bool) = match intent {
        Intent::Changes { changes, replace } => (Cow::Borrowed(changes), *replace),
        Intent::Restore(target) => (Cow::Owned(validate::difference(&current, target).0), false),
    };
    // A child environment is validated together with what it inherits.
    let own_schema = inputs
        .schema
        .as_ref()
        .filter(|_| inputs.inherited.is_empty());
    let conforms = match (own_schema, conformed) {
        (Some(own), Some(to)) => std::ptr::eq(to.as_ptr(), Arc::as_ptr(own)),
        _ => false,
    };
    let conforms_to = own_schema.map(Arc::downgrade);
    let plan = validate::plan_on(
        current,
        &changes,
        replace,
        own_schema.map(Arc::as_ref),
        require_schema,
        conforms,
    )?;
    if let Some(schema) = inputs
        .schema
        .as_deref()
        .filter(|_| !inputs.inherited.is_empty())
    {
        let found = inherit::schema_violations(schema, &inputs.inherited, &plan.document);
        if !found.is_empty() {
            return Err(found);
        }
    }
    let reusable = !plan
        .changes
        .iter()
        .any(|c| c.value.as_ref().is_some_and(is_sealed));
    Ok(Planned {
        plan,
        conforms_to,
        reusable,
    })
}

/// The answer to a refused change set: its violations, with sensitive values kept out of the
/// messages; counted and logged.
pub fn refusal(inputs: &Inputs, violations: Vec<Violation>) -> Failure {
    let violations = redact_violations(inputs.schema.as_deref(), violations);
    for v in &violations {
        metrics::counter!("mycosynth_validator_rejections_total", "reason" => v.rule.clone())
            .increment(1);
    }
    let first = violations.first().map_or("", |v| v.message.as_str());
    tracing::info!(violations = violations.len(), first, "change set refused");
    invalid(violations)
}
