//! The in-memory config of one namespace/environment at one version, and the read rules.
//! Pure data: no I/O, so it is tested without a server.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// The hasher of snapshot maps: fast on short string keys. Keys come from the validator, which
/// enforces the naming rules, so a non-keyed hash is no flooding risk here.
pub(crate) type FastMap<V> = HashMap<Arc<str>, V, foldhash::fast::FixedState>;

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// No stored value, no schema default, no caller default.
    #[error("config key {key:?} is not set and has no default")]
    Missing {
        /// The key.
        key: String,
    },
    /// The value exists but does not deserialize into the requested type.
    #[error("config key {key:?} does not fit the requested type: {message}")]
    WrongType {
        /// The key.
        key: String,
        /// What serde said.
        message: String,
    },
}

impl GetError {
    /// The key the read was for.
    pub fn key(&self) -> &str {
        match self {
            GetError::Missing { key } | GetError::WrongType { key, .. } => key,
        }
    }
}

/// Where a resolved value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueSource {
    /// Stored in Mycosynth for this namespace/environment.
    Stored,
    /// The `default` of the key in the namespace's JSON Schema.
    SchemaDefault,
    /// Stored in a parent environment this one inherits from (only through
    /// [`Subscriber::read_raw`](crate::Subscriber::read_raw) and
    /// [`Subscriber::effective`](crate::Subscriber::effective); a snapshot holds one
    /// environment).
    Inherited,
}

impl ValueSource {
    /// The source as written in the sidecar's JSON and in logs: `own`, `default`, `inherited`.
    ///
    /// ```
    /// assert_eq!(mycosynth_subscriber::ValueSource::SchemaDefault.as_str(), "default");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ValueSource::Stored => "own",
            ValueSource::SchemaDefault => "default",
            ValueSource::Inherited => "inherited",
        }
    }
}

/// A value read through a [`Subscriber`](crate::Subscriber) with where it came from; see
/// [`Subscriber::read_raw`](crate::Subscriber::read_raw).
///
/// ```no_run
/// # fn run(config: mycosynth_subscriber::Subscriber) {
/// let inherited = config.read_raw("http.timeout_ms", |found| {
///     found.is_some_and(|r| r.source == mycosynth_subscriber::ValueSource::Inherited)
/// });
/// # let _ = inherited; }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    /// The JSON value.
    pub value: &'a Value,
    /// Own value, inherited, or schema default.
    pub source: ValueSource,
    /// The environment whose value it is (this one for own values and schema defaults).
    pub environment: &'a str,
}

/// The config of one namespace/environment at one version. Cheap to hold: values are shared
/// between consecutive snapshots.
///
/// Resolution order of every read: the stored value, then the schema's default, then the
/// caller's default (`get_or`), then [`GetError::Missing`] naming the key.
///
/// ```
/// use mycosynth_subscriber::Snapshot;
/// let snapshot = Snapshot::from_values(3, [("database.pool_size", serde_json::json!(20))]);
/// assert_eq!(snapshot.version(), 3);
/// assert_eq!(snapshot.get::<u32>("database.pool_size").unwrap(), 20);
/// assert_eq!(snapshot.get_or("feature.dark_mode", false), false);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every accepted change set raises it by one; 0 means nothing was ever committed.
    version: u64,
    /// Stored values by key.
    values: FastMap<Arc<Value>>,
    /// Defaults from the namespace's schema, shared by all snapshots until the schema changes.
    defaults: Arc<FastMap<Value>>,
    /// Commit time of the change set that produced this version (µs since epoch; 0 if unknown).
    committed_at_us: i64,
    /// Which keys sit under each dotted prefix, built by the first `get_section` of this
    /// snapshot, so a section read touches its own keys instead of scanning them all.
    sections: OnceLock<SectionIndex>,
}

/// Every dotted prefix (`a` and `a.b` for the key `a.b.c`) to the stored or defaulted keys
/// under it.
type SectionIndex = HashMap<Box<str>, Vec<Arc<str>>, foldhash::fast::FixedState>;

impl Snapshot {
    /// A snapshot from plain values (for tests, examples and defaults-only starts).
    pub fn from_values<K: Into<String>>(
        version: u64,
        values: impl IntoIterator<Item = (K, Value)>,
    ) -> Snapshot {
        Snapshot {
            version,
            values: values
                .into_iter()
                .map(|(k, v)| (Arc::from(k.into()), Arc::new(v)))
                .collect(),
            defaults: Arc::default(),
            committed_at_us: 0,
            sections: OnceLock::new(),
        }
    }

    pub(crate) fn new(
        version: u64,
        values: FastMap<Arc<Value>>,
        defaults: Arc<FastMap<Value>>,
        committed_at_us: i64,
    ) -> Snapshot {
        Snapshot {
            version,
            values,
            defaults,
            committed_at_us,
            sections: OnceLock::new(),
        }
    }

    /// The version this snapshot holds.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the change set that produced this version was committed, in microseconds since the
    /// Unix epoch (0 when unknown, e.g. after a load from KV).
    pub fn committed_at_us(&self) -> i64 {
        self.committed_at_us
    }

    /// Number of stored keys.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// No stored keys.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The raw JSON value of a key and where it came from (stored, then schema default).
    #[inline]
    pub fn raw(&self, key: &str) -> Option<(&Value, ValueSource)> {
        if let Some(value) = self.values.get(key) {
            return Some((value, ValueSource::Stored));
        }
        self.defaults
            .get(key)
            .map(|value| (value, ValueSource::SchemaDefault))
    }

    /// The value of `key` as `T`: stored value, else schema default, else [`GetError::Missing`].
    #[inline]
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T, GetError> {
        match self.raw(key) {
            Some((value, _)) => T::deserialize(value).map_err(|err| GetError::WrongType {
                key: key.to_owned(),
                message: err.to_string(),
            }),
            None => Err(GetError::Missing {
                key: key.to_owned(),
            }),
        }
    }

    /// The value of `key` as `T`, or `default` when it is neither stored nor defaulted by the
    /// schema. A value of the wrong type also yields `default` (and is counted in the
    /// `mycosynth_subscriber_read_type_errors_total` metric).
    #[inline]
    pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> T {
        or_default(self.get(key), default)
    }

    /// Every key under `prefix` (`prefix.rest`), stored or defaulted, as a nested object
    /// deserialized into `T`: `database.pool_size` and `database.host` under prefix `database`
    /// fill `struct Database { pool_size, host }`.
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Database { pool_size: u32, host: String }
    /// let snapshot = mycosynth_subscriber::Snapshot::from_values(1, [
    ///     ("database.pool_size", serde_json::json!(20)),
    ///     ("database.host", serde_json::json!("db1")),
    /// ]);
    /// let db: Database = snapshot.get_section("database").unwrap();
    /// assert_eq!((db.pool_size, db.host.as_str()), (20, "db1"));
    /// ```
    pub fn get_section<T: DeserializeOwned>(&self, prefix: &str) -> Result<T, GetError> {
        let section = self.section_value(prefix);
        T::deserialize(&section).map_err(|err| GetError::WrongType {
            key: prefix.to_owned(),
            message: err.to_string(),
        })
    }

    fn section_value(&self, prefix: &str) -> Value {
        let mut root = serde_json::Map::new();
        let index = self.sections.get_or_init(|| self.section_index());
        for key in index.get(prefix).map(Vec::as_slice).unwrap_or_default() {
            let stored = self.values.get(key).map(Arc::as_ref);
            if let Some(value) = stored.or_else(|| self.defaults.get(key)) {
                let rest = &key[prefix.len() + 1..];
                insert_path(&mut root, rest, value.clone());
            }
        }
        Value::Object(root)
    }

    fn section_index(&self) -> SectionIndex {
        let mut index = SectionIndex::default();
        // A key both stored and defaulted is listed once.
        let defaulted_only = self
            .defaults
            .keys()
            .filter(|k| !self.values.contains_key(*k));
        for key in self.values.keys().chain(defaulted_only) {
            for (at, _) in key.match_indices('.') {
                index
                    .entry(Box::from(&key[..at]))
                    .or_default()
                    .push(Arc::clone(key));
            }
        }
        index
    }

    /// Iterates over the stored keys and values (not defaults), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// The stored values as a sorted JSON object (for display and comparison).
    pub fn to_json(&self) -> Value {
        let sorted: std::collections::BTreeMap<&str, &Value> = self.iter().collect();
        serde_json::to_value(sorted).unwrap_or(Value::Null)
    }

    pub(crate) fn values(&self) -> &FastMap<Arc<Value>> {
        &self.values
    }

    /// The stored values, taken out of a snapshot nobody else holds (to bring them forward to
    /// the next version in place; see `next_values`).
    pub(crate) fn into_values(self) -> FastMap<Arc<Value>> {
        self.values
    }

    pub(crate) fn defaults(&self) -> &Arc<FastMap<Value>> {
        &self.defaults
    }

    pub(crate) fn set_defaults(&mut self, defaults: Arc<FastMap<Value>>) {
        self.defaults = defaults;
        self.sections = OnceLock::new();
    }

    /// This snapshot's version and defaults with other stored values (inheritance merges).
    pub(crate) fn with_values(
        &self,
        values: impl IntoIterator<Item = (String, Value)>,
    ) -> Snapshot {
        Snapshot {
            version: self.version,
            values: values
                .into_iter()
                .map(|(k, v)| (Arc::from(k), Arc::new(v)))
                .collect(),
            defaults: Arc::clone(&self.defaults),
            committed_at_us: self.committed_at_us,
            sections: OnceLock::new(),
        }
    }
}

/// A read's value, or `default` when the key is missing or of the wrong type (counted).
#[inline]
pub(crate) fn or_default<T>(read: Result<T, GetError>, default: T) -> T {
    match read {
        Ok(value) => value,
        Err(GetError::Missing { .. }) => default,
        Err(GetError::WrongType { .. }) => {
            metrics::counter!("mycosynth_subscriber_read_type_errors_total").increment(1);
            default
        }
    }
}

/// Puts `value` at the dotted `path` inside `root`, creating objects on the way. A value already
/// at a shorter path wins over a deeper one (`a` = 1 and `a.b` = 2 cannot both be objects).
fn insert_path(root: &mut serde_json::Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            root.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let child = root
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(map) = child {
                insert_path(map, rest, value);
            }
        }
    }
}

/// Extracts per-key defaults from a namespace schema: `properties.<key>.default`.
pub(crate) fn schema_defaults(schema: &Value) -> FastMap<Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .filter_map(|(key, prop)| {
                    prop.get("default")
                        .map(|d| (Arc::from(key.as_str()), d.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot_with_defaults() -> Snapshot {
        let mut snap = Snapshot::from_values(5, [("a", json!(1)), ("s.x", json!("hi"))]);
        snap.defaults = Arc::new(schema_defaults(&json!({
            "properties": { "a": {"default": 9}, "b": {"default": 2}, "s.y": {"default": true} }
        })));
        snap
    }

    #[test]
    fn resolution_order_is_stored_then_schema_then_caller_then_error() {
        let snap = snapshot_with_defaults();
        assert_eq!(
            snap.get::<i64>("a").unwrap(),
            1,
            "stored beats schema default"
        );
        assert_eq!(
            snap.get::<i64>("b").unwrap(),
            2,
            "schema default when not stored"
        );
        assert_eq!(snap.get_or("c", 3), 3, "caller default last");
        assert_eq!(
            snap.get::<i64>("c"),
            Err(GetError::Missing { key: "c".into() })
        );
        assert_eq!(
            snap.raw("b").map(|(_, s)| s),
            Some(ValueSource::SchemaDefault)
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let snap = snapshot_with_defaults();
        let err = snap.get::<bool>("a").unwrap_err();
        assert_eq!(err.key(), "a");
        assert!(matches!(err, GetError::WrongType { .. }));
        assert!(!snap.get_or("a", false));
    }

    #[test]
    fn sections_merge_stored_and_defaults() {
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct S {
            x: String,
            y: bool,
        }
        let snap = snapshot_with_defaults();
        assert_eq!(
            snap.get_section::<S>("s").unwrap(),
            S {
                x: "hi".into(),
                y: true
            }
        );
        let nested = Snapshot::from_values(1, [("a.b.c", json!(1)), ("a.d", json!(2))]);
        assert_eq!(nested.section_value("a"), json!({"b": {"c": 1}, "d": 2}));
    }
}
