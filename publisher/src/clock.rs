//! The validator's clock: the times it records (RFC 3339 text and microseconds since the epoch).

/// Now, as recorded in metadata: RFC 3339 text and microseconds since the Unix epoch.
pub fn meta_time() -> (String, i64) {
    let now = time::OffsetDateTime::now_utc();
    let text = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let micros = i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
    (text, micros)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}
