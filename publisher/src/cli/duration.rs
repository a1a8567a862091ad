//! Durations as the CLI takes them (`30s`, `5m`, `7d`).

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
