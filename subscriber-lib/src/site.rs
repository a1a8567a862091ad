//! Subscribers at a site: where change events come from when the config is read from a site's
//! mirror rather than from the hub (see [`crate::wire::site_head_subject`]).

use crate::wire::{
    event_subject, schema_subject, site_head_subject, site_schema_subject, ChangeEvent,
    Environment, EventChange, HeadRecord, Namespace, EVENT_FORMAT,
};

/// Where a subscriber hears about new versions; see [`SubscriberBuilder::events_from`].
///
/// [`SubscriberBuilder::events_from`]: crate::SubscriberBuilder::events_from
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use mycosynth_subscriber::{EventSource, Subscriber};
/// // A service in a region connects to its site's leaf node: reads come from the site's
/// // mirror (the same bucket names), changes from the heads the mirror republishes.
/// let config = Subscriber::builder("payment-service", "production")
///     .nats_url("nats://site-eu.internal:4222")
///     .events_from(EventSource::SiteMirror)
///     .connect()
///     .await?;
/// println!("version {}", config.version());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventSource {
    /// The validator's change events (`mycosynth.events.<env>.<ns>`) and schema notices: a
    /// subscriber connected to the hub (or a cluster node). The default.
    #[default]
    Validator,
    /// The heads and schemas a site's mirrors republish (`mycosynth.site.heads.<env>.<ns>`,
    /// `mycosynth.site.schemas.<ns>`): a subscriber connected to a site's leaf node, which
    /// then follows its replica alone. Events and reads come from the same mirror, so after
    /// an outage of the hub the mirror's catch-up arrives in version order, and the local
    /// reads a resync makes hold what the events said. Needs `mycosynth site init` at the site.
    SiteMirror,
}

impl EventSource {
    /// The subjects of (change events, schema notices) for `ns`/`env`.
    pub(crate) fn subjects(self, ns: &Namespace, env: &Environment) -> (String, String) {
        match self {
            EventSource::Validator => (event_subject(ns, env), schema_subject(ns)),
            EventSource::SiteMirror => (site_head_subject(ns, env), site_schema_subject(ns)),
        }
    }
}

/// What a republished head means to the updater.
pub(crate) enum SiteMessage {
    /// The change event of the head's version (rkyv bytes, as the validator would publish).
    Event(Vec<u8>),
    /// A head that does not carry its change set (written before heads did): reload.
    Resync,
    /// A delete or purge marker, or an empty message: nothing to apply.
    Ignore,
}

/// Turns a head republished by a site's mirror into the change event of its version.
pub(crate) fn head_event(
    ns: &Namespace,
    env: &Environment,
    payload: &[u8],
) -> Result<SiteMessage, String> {
    if payload.is_empty() {
        return Ok(SiteMessage::Ignore);
    }
    let head: HeadRecord =
        serde_json::from_slice(payload).map_err(|e| format!("republished head: {e}"))?;
    let Some(changes) = head.changes else {
        return Ok(SiteMessage::Resync);
    };
    let changes = changes
        .into_iter()
        .map(|change| EventChange {
            value_json: change.value.map(|v| v.to_string()),
            key: change.key,
        })
        .collect();
    let event = ChangeEvent {
        format: EVENT_FORMAT,
        namespace: ns.to_string(),
        environment: env.to_string(),
        version: head.version,
        previous_version: head.version.saturating_sub(1),
        changes,
        change_id: head.meta.change_id,
        author: head.meta.author,
        reason: head.meta.reason,
        source: head.meta.source.as_str().to_owned(),
        committed_at_us: head.meta.time_us,
        approved_by: head.meta.approved_by,
        change_request: head.meta.change_request,
    };
    Ok(SiteMessage::Event(event.encode()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ChangeMeta, ChangeSource, KeyChange};

    fn head(changes: Option<Vec<KeyChange>>) -> Vec<u8> {
        let head = HeadRecord {
            version: 4,
            keys: 1,
            meta: ChangeMeta {
                change_id: "c4".into(),
                author: "alice".into(),
                time: "2026-01-01T00:00:00Z".into(),
                time_us: 7,
                reason: "r".into(),
                source: ChangeSource::Rollback,
                git_commit: None,
                request_id: None,
                emergency: false,
                approved_by: vec![],
                change_request: None,
            },
            changes,
        };
        serde_json::to_vec(&head).unwrap()
    }

    #[test]
    fn a_republished_head_is_the_event_of_its_version() {
        let (ns, env) = (
            Namespace::new("payments").unwrap(),
            Environment::new("prod").unwrap(),
        );
        let bytes = head(Some(vec![
            KeyChange::set("a", serde_json::json!({"x": 1})),
            KeyChange::delete("b"),
        ]));
        let Ok(SiteMessage::Event(event)) = head_event(&ns, &env, &bytes) else {
            panic!("not an event")
        };
        let event = ChangeEvent::decode(&event).unwrap();
        assert_eq!((event.version, event.previous_version), (4, 3));
        assert_eq!(event.changes[0].value_json.as_deref(), Some(r#"{"x":1}"#));
        assert_eq!(event.changes[1].value_json, None);
        assert_eq!(
            (event.source.as_str(), event.committed_at_us),
            ("rollback", 7)
        );
        assert!(matches!(
            head_event(&ns, &env, &head(None)),
            Ok(SiteMessage::Resync)
        ));
        assert!(matches!(
            head_event(&ns, &env, b""),
            Ok(SiteMessage::Ignore)
        ));
        assert!(head_event(&ns, &env, b"{not json").is_err());
    }
}
