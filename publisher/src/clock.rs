//! The validator's clock: the times it records (RFC 3339 text and microseconds since the epoch),
//! and durations as people write them (`30s`, `5m`, `7d`).

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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    now_us() / 1000
}

/// `ms` (milliseconds since the Unix epoch) as RFC 3339 text, or the number if out of range.
pub fn rfc3339_ms(ms: i64) -> String {
    rfc3339_us(ms.saturating_mul(1000)).unwrap_or_else(|| ms.to_string())
}

/// `us` (microseconds since the Unix epoch) as RFC 3339 text (None: out of range).
pub fn rfc3339_us(us: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// A duration as `N`, `Ns`, `Nm`, `Nh` or `Nd`: seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: use a whole number with s, m, h or d (e.g. 7d)"))?;
    let per = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use s, m, h or d)"
            ))
        }
    };
    count
        .checked_mul(per)
        .ok_or_else(|| format!("{text:?} is too long"))
}
