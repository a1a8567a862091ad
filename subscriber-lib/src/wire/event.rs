//! The change event: one rkyv-encoded message per accepted change set, published by the
//! validator on [`event_subject`](super::event_subject). It carries the whole change set, so a
//! subscriber applies it as one step and readers never see half of it.

use rkyv::rancor;

/// The event format this build writes and reads. Bumped on any change to [`ChangeEvent`].
pub const EVENT_FORMAT: u32 = 2;

/// Largest event this build accepts from the network (values are at most 1 MiB each and a
/// change set is bounded by the server's max payload).
pub const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// One key's new value in a change event.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EventChange {
    /// The config key.
    pub key: String,
    /// The new value as compact JSON text, or `None` when the key was deleted.
    pub value_json: Option<String>,
}

/// An accepted change set, as published to subscribers.
///
/// ```
/// use mycosynth_subscriber::wire::{ChangeEvent, EventChange, EVENT_FORMAT};
/// let event = ChangeEvent {
///     format: EVENT_FORMAT,
///     namespace: "payment-service".into(),
///     environment: "production".into(),
///     version: 8,
///     previous_version: 7,
///     changes: vec![EventChange { key: "database.pool_size".into(), value_json: Some("50".into()) }],
///     change_id: "0190".into(),
///     author: "alice".into(),
///     reason: "peak traffic".into(),
///     source: "cli".into(),
///     committed_at_us: 1_700_000_000_000_000,
///     approved_by: vec!["bob".into()],
///     change_request: Some("payment-service.production.0193f2a7c1d4".into()),
/// };
/// let bytes = event.encode();
/// assert_eq!(ChangeEvent::decode(&bytes).unwrap(), event);
/// assert!(ChangeEvent::decode(&bytes[..bytes.len() - 3]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ChangeEvent {
    /// Always [`EVENT_FORMAT`] when written by this build.
    pub format: u32,
    /// Namespace of the change set.
    pub namespace: String,
    /// Environment of the change set.
    pub environment: String,
    /// The version the change set produced.
    pub version: u64,
    /// The version it was applied on; a subscriber holding another version has a gap.
    pub previous_version: u64,
    /// Every changed key, sorted by key.
    pub changes: Vec<EventChange>,
    /// Unique id of the change set.
    pub change_id: String,
    /// Who made it.
    pub author: String,
    /// Why.
    pub reason: String,
    /// Where it came from (`cli`, `apply`, `rollback`, `api`).
    pub source: String,
    /// When it was committed, microseconds since the Unix epoch.
    pub committed_at_us: i64,
    /// Who approved the change request it came from (empty when it needed none).
    pub approved_by: Vec<String>,
    /// The change request it came from, if any.
    pub change_request: Option<String>,
}

/// Why bytes could not be read as a [`ChangeEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_EVENT_BYTES`].
    #[error("event of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// Not a valid archive (truncated, corrupted, or not an event at all).
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A valid archive of another event format.
    #[error("event format {0} is not supported (this build reads format {EVENT_FORMAT})")]
    UnsupportedFormat(u32),
}

impl ChangeEvent {
    /// Encodes the event with rkyv.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain owned data into a growable buffer has no failure mode other than
        // allocation failure, which aborts anyway.
        rkyv::to_bytes::<rancor::Error>(self)
            .map(|bytes| bytes.to_vec())
            .unwrap_or_default()
    }

    /// Decodes and validates untrusted bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<ChangeEvent, DecodeError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        // rkyv reads archives in place and needs them aligned; network buffers are not.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let event = rkyv::from_bytes::<ChangeEvent, rancor::Error>(&aligned)
            .map_err(|err| DecodeError::Malformed(err.to_string()))?;
        if event.format != EVENT_FORMAT {
            return Err(DecodeError::UnsupportedFormat(event.format));
        }
        Ok(event)
    }
}

/// A change event's bytes, copied once into an aligned buffer so that it can be read in place:
/// a subscriber takes the few fields it needs without copying every string of the event out.
/// Each [`EventBytes::read`] checks the archive first, so untrusted bytes never panic.
///
/// ```
/// use mycosynth_subscriber::wire::{ChangeEvent, EventBytes, EventChange, EVENT_FORMAT};
/// let event = ChangeEvent {
///     format: EVENT_FORMAT,
///     namespace: "payment-service".into(),
///     environment: "production".into(),
///     version: 8,
///     previous_version: 7,
///     changes: vec![EventChange { key: "database.pool_size".into(), value_json: Some("50".into()) }],
///     change_id: "0190".into(),
///     author: "alice".into(),
///     reason: "peak traffic".into(),
///     source: "cli".into(),
///     committed_at_us: 1_700_000_000_000_000,
///     approved_by: vec!["bob".into()],
///     change_request: Some("payment-service.production.0193f2a7c1d4".into()),
/// };
/// let bytes = EventBytes::copy_from(&event.encode()).unwrap();
/// let first_key = bytes.read(|e| e.changes[0].key.as_str().to_owned()).unwrap();
/// assert_eq!(first_key, "database.pool_size");
/// assert!(EventBytes::copy_from(b"not an event").unwrap().read(|e| e.version.to_native()).is_err());
/// ```
pub struct EventBytes(rkyv::util::AlignedVec<16>);

impl EventBytes {
    /// Copies `bytes` (untrusted) into an aligned buffer; only their size is checked here.
    pub fn copy_from(bytes: &[u8]) -> Result<EventBytes, DecodeError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        Ok(EventBytes(aligned))
    }

    /// Checks the archive and its format, then hands the event, read in place, to `read`.
    pub fn read<R>(&self, read: impl FnOnce(&ArchivedChangeEvent) -> R) -> Result<R, DecodeError> {
        let event = rkyv::access::<ArchivedChangeEvent, rancor::Error>(&self.0)
            .map_err(|err| DecodeError::Malformed(err.to_string()))?;
        let format = event.format.to_native();
        if format != EVENT_FORMAT {
            return Err(DecodeError::UnsupportedFormat(format));
        }
        Ok(read(event))
    }
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ChangeEvent {
        ChangeEvent {
            format: EVENT_FORMAT,
            namespace: "payment-service".into(),
            environment: "production".into(),
            version: 9,
            previous_version: 8,
            changes: vec![
                EventChange {
                    key: "a.b".into(),
                    value_json: Some("[1,2,3]".into()),
                },
                EventChange {
                    key: "c".into(),
                    value_json: None,
                },
            ],
            change_id: "id".into(),
            author: "alice".into(),
            reason: "why".into(),
            source: "cli".into(),
            committed_at_us: 42,
            approved_by: vec!["bob".into()],
            change_request: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = ChangeEvent::decode(&bytes);
            if let Ok(event) = EventBytes::copy_from(&bytes) {
                let _ = event.read(|e| e.changes.len());
            }
        }

        #[test]
        fn mangled_events_never_panic(cut in 0usize..300, flip in 0usize..300, bit in 0u8..8) {
            let mut bytes = sample().encode();
            if flip < bytes.len() { bytes[flip] ^= 1 << bit; }
            bytes.truncate(cut.min(bytes.len()));
            let _ = ChangeEvent::decode(&bytes);
            if let Ok(event) = EventBytes::copy_from(&bytes) {
                let _ = event.read(|e| e.changes.iter().map(|c| c.key.len()).sum::<usize>());
            }
        }
    }
}
