//! What one audit record says about one request: built from the caller, the request's envelope
//! and the reply. Pure. Values never enter a record: only key names, outcomes and messages.

use mycosynth_subscriber::wire::{AuditRecord, MAX_AUDITED_KEYS};
use serde::Deserialize;

use crate::access::{Envelope, Requester};

/// Longest text field kept in a record (identity, names, messages); longer ones are cut.
const MAX_FIELD_CHARS: usize = 512;

/// The part of a reply the audit log keeps: the outcome, and for refusals the message.
#[derive(Debug, Default, Deserialize)]
struct ReplyView {
    #[serde(default)]
    ok: Option<OkView>,
    #[serde(default)]
    error: Option<ErrorView>,
}

#[derive(Debug, Default, Deserialize)]
struct OkView {
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    change_id: Option<String>,
    /// A change that became a change request.
    #[serde(default)]
    proposed: Option<IdView>,
    /// A change request's step.
    #[serde(default)]
    request: Option<IdView>,
    /// A change request's commit.
    #[serde(default)]
    applied: Option<AppliedView>,
}

#[derive(Debug, Deserialize)]
struct IdView {
    id: String,
}

#[derive(Debug, Deserialize)]
struct AppliedView {
    version: u64,
    #[serde(default)]
    change_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorView {
    kind: String,
    #[serde(default)]
    message: String,
}

/// An audit record before the chain fields (`seq`, `prev_hash`, `hash`) are set.
pub fn draft(
    action: &str,
    caller: &Requester,
    envelope: &Envelope,
    reply: &[u8],
    now: (String, i64),
) -> AuditRecord {
    let mut keys: Vec<String> = envelope
        .changes
        .iter()
        .map(|c| c.key.clone())
        .chain(envelope.key.clone())
        .collect();
    let more_keys = keys.len().saturating_sub(MAX_AUDITED_KEYS) as u64;
    keys.truncate(MAX_AUDITED_KEYS);
    let keys = keys.iter().map(|k| clip(k)).collect();
    // A reply is ok, an error, or (when the validator could not encode one) unreadable.
    let view: ReplyView = serde_json::from_slice(reply).unwrap_or_default();
    let mut change_request = envelope.id.clone();
    let (outcome, reason, version, change_id) = match (view.ok, view.error) {
        (_, Some(error)) => (error.kind, error.message, None, None),
        (Some(ok), None) => {
            let opened = ok.proposed.or(ok.request).map(|p| p.id);
            change_request = change_request.or(opened);
            let (version, change_id) = match ok.applied {
                Some(applied) => (Some(applied.version), applied.change_id),
                None => (ok.version, ok.change_id),
            };
            let reason = envelope.reason.clone().unwrap_or_default();
            ("ok".to_owned(), reason, version, change_id)
        }
        (None, None) => (
            "internal".to_owned(),
            "reply not readable".to_owned(),
            None,
            None,
        ),
    };
    AuditRecord {
        seq: 0,
        identity: clip(&caller.identity),
        via: caller.via.as_deref().map(clip),
        time: now.0,
        time_us: now.1,
        action: action.to_owned(),
        namespace: clip(envelope.namespace.as_deref().unwrap_or_default()),
        environment: clip(envelope.environment.as_deref().unwrap_or_default()),
        keys,
        more_keys,
        outcome,
        reason: clip(&reason),
        version,
        change_id,
        change_request: change_request.map(|id| clip(&id)),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_FIELD_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Requester {
        Requester {
            identity: "alice".into(),
            verified: false,
            via: None,
        }
    }

    #[test]
    fn a_refusal_keeps_kind_and_message_and_no_values() {
        let body = br#"{"namespace":"ns","environment":"prod","author":"alice","changes":[{"key":"db.password","value":"hunter2"}]}"#;
        let envelope = Envelope::read(body);
        let reply = br#"{"error":{"kind":"rate_limited","message":"too many"}}"#;
        let record = draft("change", &caller(), &envelope, reply, ("t".into(), 1));
        assert_eq!(record.outcome, "rate_limited");
        assert_eq!(record.reason, "too many");
        assert_eq!(record.keys, vec!["db.password".to_owned()]);
        assert_eq!(
            (record.namespace.as_str(), record.environment.as_str()),
            ("ns", "prod")
        );
        assert!(!serde_json::to_string(&record).unwrap().contains("hunter2"));
    }

    #[test]
    fn an_accepted_change_keeps_version_and_change_id() {
        let envelope =
            Envelope::read(br#"{"namespace":"ns","environment":"e","reason":"why","changes":[]}"#);
        let reply = br#"{"ok":{"version":7,"previous_version":6,"committed":true,"change_id":"c","diff":[]}}"#;
        let record = draft("change", &caller(), &envelope, reply, ("t".into(), 1));
        assert_eq!(record.outcome, "ok");
        assert_eq!(record.reason, "why");
        assert_eq!(
            (record.version, record.change_id.as_deref()),
            (Some(7), Some("c"))
        );
    }

    #[test]
    fn a_malformed_body_is_still_recorded() {
        let envelope = Envelope::read(b"{not json");
        let reply = br#"{"error":{"kind":"bad_request","message":"malformed request"}}"#;
        let record = draft("change", &caller(), &envelope, reply, ("t".into(), 1));
        assert_eq!(record.outcome, "bad_request");
        assert!(record.namespace.is_empty() && record.keys.is_empty());
    }

    #[test]
    fn many_keys_are_counted_not_listed() {
        let changes: Vec<String> = (0..150).map(|i| format!(r#"{{"key":"k{i}"}}"#)).collect();
        let body = format!(r#"{{"changes":[{}]}}"#, changes.join(","));
        let record = draft(
            "change",
            &caller(),
            &Envelope::read(body.as_bytes()),
            b"{}",
            ("t".into(), 1),
        );
        assert_eq!(
            (record.keys.len(), record.more_keys),
            (MAX_AUDITED_KEYS, 50)
        );
        assert_eq!(record.outcome, "internal");
    }
}
