//! The JSON records stored in KV. They are plain JSON so that `nats kv get` (or any KV client)
//! shows a person what is stored, who changed it, when and why.

use serde::{Deserialize, Serialize};

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChangeSource {
    /// `mycosynth set` / `delete`.
    #[default]
    Cli,
    /// `mycosynth apply` of a file.
    Apply,
    /// `mycosynth rollback`.
    Rollback,
    /// A program using the validator API directly.
    Api,
}

impl ChangeSource {
    /// The source as it is written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeSource::Cli => "cli",
            ChangeSource::Apply => "apply",
            ChangeSource::Rollback => "rollback",
            ChangeSource::Api => "api",
        }
    }
}

/// Who made a change, when and why: stored with every value, head and history record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeMeta {
    /// Unique id of the change set (UUIDv7, time-ordered).
    pub change_id: String,
    /// The identity that asked for the change.
    pub author: String,
    /// Commit time, RFC 3339 UTC.
    pub time: String,
    /// Commit time in microseconds since the Unix epoch (for latency measurement and sorting).
    pub time_us: i64,
    /// Free-text reason given by the author.
    #[serde(default)]
    pub reason: String,
    /// Where the change came from.
    pub source: ChangeSource,
    /// The git commit of the config files, when the change came from a git work tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// The client's idempotency key, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// An emergency override (`set --emergency`): a live change made outside the Git flow,
    /// which `mycosynth drift` flags until the files catch up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emergency: bool,
    /// The verified identities that approved the change request it came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<String>,
    /// The change request (proposal id) it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_request: Option<String>,
}

/// KV value of `_requests.<namespace>.<env>.<request id>`: the version a request produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The version the request committed.
    pub version: u64,
    /// The change set id it committed.
    pub change_id: String,
}

/// KV value of `<namespace>.<env>.<key>`: the config value and the change that last set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueRecord {
    /// The config value itself.
    pub value: serde_json::Value,
    /// The version of the namespace/environment at which this value was set.
    pub version: u64,
    /// Who set it, when and why.
    #[serde(flatten)]
    pub meta: ChangeMeta,
}

/// KV value of `<namespace>.<env>._meta.head`: the current version of a namespace/environment.
/// Every commit rewrites it with a compare-and-set on its previous revision.
///
/// The head is the commit point: it carries the change set that made its version (`changes`),
/// and the value keys, history record and idempotency record of that version are written after
/// it ("materialised"). A reader that finds some of them missing applies `changes` itself
/// ([`HeadRecord::roll_forward`]); a writer completes them before the next version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadRecord {
    /// The current version.
    pub version: u64,
    /// Number of config keys at this version.
    pub keys: u64,
    /// The change set that produced this version.
    #[serde(flatten)]
    pub meta: ChangeMeta,
    /// Every key the change set of this version changed (as in its [`ChangeSetRecord`]).
    /// Absent in heads written before the head became the commit point: those were written in
    /// one atomic batch with their values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<KeyChange>>,
}

impl HeadRecord {
    /// The value record a key set by this version holds.
    pub fn value_record(&self, value: serde_json::Value) -> ValueRecord {
        ValueRecord {
            value,
            version: self.version,
            meta: self.meta.clone(),
        }
    }

    /// The history record of this version, when the head carries its change set.
    pub fn change_set(&self, namespace: &str, environment: &str) -> Option<ChangeSetRecord> {
        Some(ChangeSetRecord {
            namespace: namespace.to_owned(),
            environment: environment.to_owned(),
            version: self.version,
            previous_version: self.version.saturating_sub(1),
            meta: self.meta.clone(),
            changes: self.changes.clone()?,
        })
    }

    /// Applies this version's change set to values read from KV at any moment after the head
    /// was committed: `set(key, value)` for each key it set, `delete(key)` for each it deleted;
    /// each says whether it changed anything. Values already materialised are rewritten with the
    /// same, so the result is this version's state whether materialisation was complete, partial
    /// or not started. Returns whether anything changed, i.e. whether materialisation was
    /// incomplete.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use mycosynth_subscriber::wire::{ChangeMeta, ChangeSource, HeadRecord, KeyChange};
    /// let head = HeadRecord {
    ///     version: 2,
    ///     keys: 1,
    ///     meta: ChangeMeta {
    ///         change_id: "c2".into(), author: "ops".into(), time: "2026-01-01T00:00:00Z".into(),
    ///         time_us: 1, reason: String::new(), source: ChangeSource::Cli, git_commit: None,
    ///         request_id: None, emergency: false, approved_by: vec![], change_request: None,
    ///     },
    ///     changes: Some(vec![KeyChange::set("a", 5.into()), KeyChange::delete("b")]),
    /// };
    /// let values = std::cell::RefCell::new(BTreeMap::from([("a", 1), ("b", 2)]));
    /// let incomplete = head.roll_forward(
    ///     |key, value| {
    ///         let new = value.as_i64().unwrap_or(0);
    ///         values.borrow_mut().insert(if key == "a" { "a" } else { "b" }, new) != Some(new)
    ///     },
    ///     |key| values.borrow_mut().remove(key).is_some(),
    /// );
    /// assert!(incomplete);
    /// assert_eq!(values.into_inner(), BTreeMap::from([("a", 5)]));
    /// ```
    pub fn roll_forward(
        &self,
        mut set: impl FnMut(&str, &serde_json::Value) -> bool,
        mut delete: impl FnMut(&str) -> bool,
    ) -> bool {
        let mut changed = false;
        for change in self.changes.iter().flatten() {
            changed |= match &change.value {
                Some(value) => set(&change.key, value),
                None => delete(&change.key),
            };
        }
        changed
    }
}

/// One key's change in a change set: a new value, or `None` for a deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyChange {
    /// The config key.
    pub key: String,
    /// The new value; absent (`null` is a value) means the key was deleted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "present_value"
    )]
    pub value: Option<serde_json::Value>,
}

impl KeyChange {
    /// Set `key` to `value`.
    pub fn set(key: impl Into<String>, value: serde_json::Value) -> KeyChange {
        KeyChange {
            key: key.into(),
            value: Some(value),
        }
    }

    /// Delete `key`.
    pub fn delete(key: impl Into<String>) -> KeyChange {
        KeyChange {
            key: key.into(),
            value: None,
        }
    }
}

/// KV value of `_history.<namespace>.<env>.<version>`: one accepted change set, for history,
/// audit and rollback. KV keeps at most 64 revisions per key, so the history is kept as one
/// key per version rather than as KV revisions of the value keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeSetRecord {
    /// Namespace of the change set.
    pub namespace: String,
    /// Environment of the change set.
    pub environment: String,
    /// The version this change set produced.
    pub version: u64,
    /// The version it was applied on (always `version - 1`).
    pub previous_version: u64,
    /// Who, when, why.
    #[serde(flatten)]
    pub meta: ChangeMeta,
    /// Every changed key, sorted by key.
    pub changes: Vec<KeyChange>,
}

/// KV value of `<namespace>` in the schema bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaRecord {
    /// The JSON Schema of the namespace's config document (an object whose property names are
    /// the config keys).
    pub schema: serde_json::Value,
    /// Who pushed it.
    pub author: String,
    /// When, RFC 3339 UTC.
    pub time: String,
}

/// Distinguishes a missing `value` (deletion) from `"value": null` (a null value).
mod present_value {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<serde_json::Value>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => v.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<serde_json::Value>, D::Error> {
        serde_json::Value::deserialize(d).map(Some)
    }
}
