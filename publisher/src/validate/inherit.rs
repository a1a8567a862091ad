//! Environment inheritance, the pure part shared by the validator and the offline tools: the
//! longest chain followed, finding the cycle a declaration would close, and validating a
//! child's document together with what it inherits (so a key the schema requires may come from
//! a parent).

use std::collections::BTreeMap;

use mycosynth_subscriber::wire::Violation;
use serde_json::Value;

use super::schema::Schema;

/// Longest parent chain followed; a longer one is treated as a cycle.
pub const MAX_CHAIN: usize = 16;

/// Checks a declaration `child -> parent` against the existing declarations (`parent_of`),
/// pure: returns the cycle it would close, if any.
pub fn cycle_through(
    child: &str,
    parent: &str,
    parent_of: impl Fn(&str) -> Option<String>,
) -> Option<Vec<String>> {
    let mut chain = vec![child.to_owned(), parent.to_owned()];
    let mut at = parent.to_owned();
    while at != child {
        if chain.len() > MAX_CHAIN {
            return Some(chain);
        }
        match parent_of(&at) {
            Some(next) => {
                chain.push(next.clone());
                at = next;
            }
            None => return None,
        }
    }
    Some(chain)
}
/// Validates a planned document of a child together with what it inherits: the schema sees
/// the effective document (inherited values shadowed by the child's own).
pub fn schema_violations(
    schema: &Schema,
    inherited: &BTreeMap<String, Value>,
    own: &BTreeMap<String, Value>,
) -> Vec<Violation> {
    let mut effective = inherited.clone();
    effective.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    schema.violations(&Value::Object(effective.into_iter().collect()))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found() {
        let declared = BTreeMap::from([
            ("production".to_string(), "base".to_string()),
            ("base".to_string(), "production-eu".to_string()),
        ]);
        let lookup = |e: &str| declared.get(e).cloned();
        assert_eq!(
            cycle_through("production-eu", "production", lookup),
            Some(vec![
                "production-eu".into(),
                "production".into(),
                "base".into(),
                "production-eu".into()
            ])
        );
        assert_eq!(cycle_through("staging", "production", lookup), None);
        assert!(cycle_through("a", "a", |_| None).is_some(), "self-parent");
    }
}
