//! What the sidecar says, as bytes: the revision that ETags and event ids carry, and the JSON
//! bodies of the runtime API, OFREP and the change stream. Pure: no I/O, no clocks.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use mycosynth_subscriber::{ChangeNotice, NoticeCause, Subscriber, ValueSource};
use serde::Serialize;
use serde_json::Value;

/// Everything a read can return depends on these versions: the environment's own and, when it
/// inherits, each parent's (nearest first). A parent's change moves the effective values
/// without moving the own version, so an ETag of the own version alone would answer 304 over
/// a changed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The environment's own version.
    pub own: u64,
    /// The parents' versions, nearest first (usually none).
    pub parents: Vec<u64>,
}

impl Revision {
    /// The revision the subscriber serves now.
    pub fn of(subscriber: &Subscriber) -> Revision {
        Revision {
            own: subscriber.version(),
            parents: subscriber.parent_versions(),
        }
    }

    /// The `ETag` header value: the revision in quotes (`"42"`, or `"42.7"` with a parent).
    pub fn etag(&self) -> String {
        format!("\"{self}\"")
    }

    /// Whether an `If-None-Match` header value names this revision: `*`, or a list of
    /// entity tags, weak (`W/"42"`) or strong, compared by their text.
    pub fn matches(&self, if_none_match: &str) -> bool {
        let current = self.to_string();
        if_none_match.split(',').map(str::trim).any(|tag| {
            tag == "*"
                || tag
                    .strip_prefix("W/")
                    .unwrap_or(tag)
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    == Some(current.as_str())
        })
    }
}

/// `42`, or `42.7.3` with parents: the SSE event id, and the ETag without its quotes.
impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.own)?;
        for parent in &self.parents {
            write!(f, ".{parent}")?;
        }
        Ok(())
    }
}

/// The effective values at one revision, with the bodies rendered from them once.
#[derive(Debug)]
pub struct Rendered {
    /// The revision they are of.
    pub revision: Revision,
    /// `GET /v1/config/{ns}/{env}`, and the data of a `state` event.
    pub config: Bytes,
    /// The bulk OFREP evaluation of every key.
    pub bulk: Bytes,
}

/// `GET /v1/config/{ns}/{env}` and the `state` event.
#[derive(Serialize)]
struct ConfigBody<'a> {
    namespace: &'a str,
    environment: &'a str,
    version: u64,
    /// `"42.7"`: only for an environment that inherits.
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    values: BTreeMap<&'a str, &'a Value>,
}

impl Rendered {
    /// Renders `effective` (the values at `revision`) for `namespace`/`environment`;
    /// `events` is the path of the OFREP change stream.
    pub fn new(
        (namespace, environment): (&str, &str),
        revision: Revision,
        effective: &BTreeMap<String, (Value, ValueSource)>,
        events: &str,
    ) -> Rendered {
        let config = ConfigBody {
            namespace,
            environment,
            version: revision.own,
            revision: (!revision.parents.is_empty()).then(|| revision.to_string()),
            values: effective
                .iter()
                .map(|(k, (v, _))| (k.as_str(), v))
                .collect(),
        };
        let flags: Vec<FlagBody<'_>> = effective
            .iter()
            .map(|(key, (value, source))| FlagBody::new(key, value, *source, &revision))
            .collect();
        let bulk = serde_json::json!({
            "flags": flags,
            "metadata": {"version": revision.own, "revision": revision.to_string()},
            "eventStreams": [{"type": "sse", "endpoint": {"requestUri": events}}],
        });
        Rendered {
            config: to_bytes(&config),
            bulk: to_bytes(&bulk),
            revision,
        }
    }
}

/// `GET /v1/config/{ns}/{env}/{key}`.
#[derive(Serialize)]
pub struct KeyBody<'a> {
    /// The key.
    pub key: &'a str,
    /// Its effective value.
    pub value: &'a Value,
    /// `own`, `inherited` or `default`.
    pub source: &'static str,
    /// The parent environment an inherited value is stored in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<&'a str>,
    /// The environment's own version.
    pub version: u64,
}

/// One successful OFREP evaluation: every config key is a flag with one static value, and the
/// variant is the revision that value belongs to.
#[derive(Serialize)]
pub struct FlagBody<'a> {
    key: &'a str,
    /// Absent for a JSON `null`: OFREP's "code default" (the caller's default applies).
    #[serde(skip_serializing_if = "Value::is_null")]
    value: &'a Value,
    reason: &'static str,
    variant: String,
    metadata: FlagMetadata,
}

/// OFREP flag metadata holds only booleans, strings and numbers.
#[derive(Serialize)]
struct FlagMetadata {
    source: &'static str,
    version: u64,
}

impl<'a> FlagBody<'a> {
    /// The evaluation of `key`, whose value came from `source`, at `revision`.
    pub fn new(
        key: &'a str,
        value: &'a Value,
        source: ValueSource,
        revision: &Revision,
    ) -> FlagBody<'a> {
        FlagBody {
            key,
            value,
            reason: "STATIC",
            variant: revision.to_string(),
            metadata: FlagMetadata {
                source: source.as_str(),
                version: revision.own,
            },
        }
    }
}

/// The data of a `change` event: one applied change set (or an inherited change, or a resync
/// that spans several), with the effective values of its keys after it.
#[derive(Serialize)]
struct ChangeBody<'a> {
    namespace: &'a str,
    environment: &'a str,
    version: u64,
    previous_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    /// `event`, `resync` or `inherited`.
    cause: &'static str,
    keys: &'a [String],
    /// The effective value of each key that still has one.
    values: BTreeMap<&'a str, Value>,
    /// Keys that no longer have a value anywhere (not in this environment, a parent, or the
    /// schema defaults).
    deleted: Vec<&'a str>,
    author: &'a str,
    reason: &'a str,
    change_id: &'a str,
    /// Who approved the change request it came from (empty: none needed, or a resync).
    approved_by: &'a [String],
    /// The change request it came from (`null`: a direct change, or a resync).
    change_request: Option<&'a str>,
    committed_at_us: i64,
    applied_at_us: i64,
}

fn cause_name(cause: NoticeCause) -> &'static str {
    match cause {
        NoticeCause::Event => "event",
        NoticeCause::Resync => "resync",
        NoticeCause::Inherited => "inherited",
    }
}

/// One frame of the change stream, in both of its renderings, shared by every client.
#[derive(Debug)]
pub struct Frame {
    /// The revision after it (the SSE `id`); `None` for a heartbeat.
    pub revision: Option<Revision>,
    /// The Mycosynth rendering: `event: change` or `event: state` with values.
    pub mycosynth: Bytes,
    /// The OFREP rendering (ADR 0008): `event: message`, data `{"type":"refetchEvaluation"}`
    /// with the ETag, so an OFREP provider re-fetches its bulk evaluation.
    pub ofrep: Bytes,
}

impl Frame {
    /// A comment line: keeps proxies and clients' read timeouts from closing an idle stream.
    pub fn heartbeat() -> Frame {
        let text = Bytes::from_static(b": heartbeat\n\n");
        Frame {
            revision: None,
            mycosynth: text.clone(),
            ofrep: text,
        }
    }

    /// The whole current state as one `state` event (on connect, on resume from an older
    /// event id, and when several versions went by before their events could be rendered).
    pub fn state(rendered: &Rendered, last_modified_s: i64) -> Frame {
        Frame::new(
            &rendered.revision,
            "state",
            &rendered.config,
            last_modified_s,
        )
    }

    fn new(revision: &Revision, event: &str, data: &[u8], last_modified_s: i64) -> Frame {
        let id = revision.to_string();
        let mut mycosynth = Vec::with_capacity(data.len() + id.len() + 32);
        mycosynth.extend_from_slice(format!("id: {id}\nevent: {event}\ndata: ").as_bytes());
        mycosynth.extend_from_slice(data);
        mycosynth.extend_from_slice(b"\n\n");
        let refetch = serde_json::json!({
            "type": "refetchEvaluation",
            "etag": revision.etag(),
            "lastModified": last_modified_s,
        });
        let ofrep = format!("id: {id}\nevent: message\ndata: {refetch}\n\n");
        Frame {
            revision: Some(revision.clone()),
            mycosynth: Bytes::from(mycosynth),
            ofrep: Bytes::from(ofrep),
        }
    }
}

/// The `change` event of `notice`, with the effective values read from `subscriber` (which
/// holds `revision`, the state right after the notice's change).
pub fn change_event(
    (namespace, environment): (&str, &str),
    notice: &ChangeNotice,
    subscriber: &Subscriber,
    revision: &Revision,
) -> Frame {
    let mut values = BTreeMap::new();
    let mut deleted = Vec::new();
    for key in &notice.keys {
        match subscriber.read_raw(key, |found| found.map(|r| r.value.clone())) {
            Some(value) => {
                values.insert(key.as_str(), value);
            }
            None => deleted.push(key.as_str()),
        }
    }
    let body = ChangeBody {
        namespace,
        environment,
        version: notice.version,
        previous_version: notice.previous_version,
        revision: (!revision.parents.is_empty()).then(|| revision.to_string()),
        cause: cause_name(notice.cause),
        keys: &notice.keys,
        values,
        deleted,
        author: &notice.author,
        reason: &notice.reason,
        change_id: &notice.change_id,
        approved_by: &notice.approved_by,
        change_request: notice.change_request.as_deref(),
        committed_at_us: notice.committed_at_us,
        applied_at_us: notice.applied_at_us,
    };
    Frame::new(
        revision,
        "change",
        &to_bytes(&body),
        notice.committed_at_us.max(notice.applied_at_us) / 1_000_000,
    )
}

/// Compact JSON. Serializing these types cannot fail (string keys, no custom serializers);
/// should it ever, the body is `null` rather than a panic.
pub fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn revision(own: u64, parents: &[u64]) -> Revision {
        Revision {
            own,
            parents: parents.to_vec(),
        }
    }

    #[test]
    fn etags_and_event_ids_carry_every_version_a_read_depends_on() {
        assert_eq!(revision(42, &[]).etag(), "\"42\"");
        assert_eq!(revision(42, &[7, 3]).to_string(), "42.7.3");
        assert_ne!(revision(42, &[7]), revision(42, &[8]));
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_star() {
        let r = revision(42, &[]);
        for header in ["\"42\"", "W/\"42\"", "\"41\", \"42\"", "*"] {
            assert!(r.matches(header), "{header}");
        }
        for header in ["\"41\"", "42", "\"42.1\"", "", "W/42"] {
            assert!(!r.matches(header), "{header}");
        }
        assert!(revision(42, &[7]).matches("\"42.7\""));
    }

    #[test]
    fn bodies_name_values_sources_and_the_event_stream() {
        let effective = BTreeMap::from([
            ("a".to_owned(), (json!(1), ValueSource::Stored)),
            ("b".to_owned(), (json!(null), ValueSource::SchemaDefault)),
        ]);
        let rendered = Rendered::new(("ns", "prod"), revision(3, &[]), &effective, "/w");
        let config: Value = serde_json::from_slice(&rendered.config).unwrap();
        assert_eq!(
            config,
            json!({"namespace": "ns", "environment": "prod", "version": 3, "values": {"a": 1, "b": null}})
        );
        let bulk: Value = serde_json::from_slice(&rendered.bulk).unwrap();
        assert_eq!(
            bulk["flags"][0],
            json!({"key": "a", "value": 1, "reason": "STATIC", "variant": "3", "metadata": {"source": "own", "version": 3}})
        );
        assert!(
            bulk["flags"][1].get("value").is_none(),
            "null is the code default"
        );
        assert_eq!(
            bulk["eventStreams"],
            json!([{"type": "sse", "endpoint": {"requestUri": "/w"}}])
        );
    }

    #[test]
    fn frames_are_one_sse_event_each_in_both_renderings() {
        let rendered = Rendered::new(("ns", "prod"), revision(3, &[1]), &BTreeMap::new(), "/w");
        let frame = Frame::state(&rendered, 1_700_000_000);
        let text = std::str::from_utf8(&frame.mycosynth).unwrap();
        assert!(text.starts_with("id: 3.1\nevent: state\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n") && text.matches('\n').count() == 4);
        let ofrep = std::str::from_utf8(&frame.ofrep).unwrap();
        let data = ofrep
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(data).unwrap(),
            json!({"type": "refetchEvaluation", "etag": "\"3.1\"", "lastModified": 1_700_000_000})
        );
        assert!(ofrep.contains("\nevent: message\n"));
    }
}
