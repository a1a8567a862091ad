//! How the commands print their outcomes: a line per thing for people, one JSON value with
//! `--json`. Sealed (sensitive) values are shown as `<redacted>`.

use mycosynth_subscriber::wire::{
    is_sealed, ChangeOutcome, DiffEntry, GetOutcome, HistoryOutcome, InstanceState,
    SchemaPushOutcome, SchemaRecord, StatusOutcome, REDACTED,
};
use serde_json::Value;

/// Shows sealed (sensitive) values as `<redacted>`: a value comes back sealed unless `--reveal`.
pub fn redact(outcome: &mut GetOutcome) {
    for (_, record) in outcome.values.iter_mut() {
        if is_sealed(&record.value) {
            record.value = Value::String(REDACTED.into());
        }
    }
}

/// Prints `value` as one line of JSON.
pub fn json<T: serde::Serialize>(value: &T) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

/// A change or rollback: its diff and what was committed.
pub fn change(outcome: &ChangeOutcome, dry_run: bool, as_json: bool) {
    if as_json {
        json(outcome);
        return;
    }
    diff(&outcome.diff);
    if dry_run {
        println!(
            "dry run: valid; {} key(s) would change at version {}",
            outcome.diff.len(),
            outcome.version
        );
    } else if outcome.committed {
        println!(
            "committed version {} (was {})",
            outcome.version, outcome.previous_version
        );
    } else {
        println!("no change; still at version {}", outcome.version);
    }
}

/// A diff, a line per key: `+` added, `-` deleted, `~` changed.
pub fn diff(entries: &[DiffEntry]) {
    for DiffEntry { key, old, new } in entries {
        match (old, new) {
            (None, Some(new)) => println!("+ {key} = {new}"),
            (Some(old), None) => println!("- {key} (was {old})"),
            (Some(old), Some(new)) => println!("~ {key}: {old} -> {new}"),
            (None, None) => {}
        }
    }
}

/// `get`: one value, or every value with its version, author and time.
pub fn values(outcome: &GetOutcome, single: bool, as_json: bool) {
    if as_json {
        json(outcome);
    } else if single {
        for (_, record) in &outcome.values {
            println!("{}", record.value);
        }
    } else {
        println!("version {}", outcome.version);
        for (key, record) in &outcome.values {
            println!(
                "{key} = {}  (v{} by {} at {})",
                record.value, record.version, record.meta.author, record.meta.time
            );
        }
    }
}

/// `history`: each change set with its marks and changes.
pub fn history(outcome: &HistoryOutcome, as_json: bool) {
    if as_json {
        json(outcome);
    }
    for set in outcome.change_sets.iter().filter(|_| !as_json) {
        let reason = if set.meta.reason.is_empty() {
            String::new()
        } else {
            format!(" — {}", set.meta.reason)
        };
        let marks = format!(
            "{}{}",
            if set.meta.emergency {
                ", EMERGENCY"
            } else {
                ""
            },
            set.meta
                .git_commit
                .as_deref()
                .map(|c| format!(", git {c}"))
                .unwrap_or_default()
        );
        println!(
            "v{}  {}  {}  [{}{marks}]{}",
            set.version,
            set.meta.time,
            set.meta.author,
            set.meta.source.as_str(),
            reason
        );
        for change in &set.changes {
            let sealed = Value::String(REDACTED.into());
            let shown = change
                .value
                .as_ref()
                .map(|v| if is_sealed(v) { &sealed } else { v });
            match shown {
                Some(value) => println!("    {} = {value}", change.key),
                None => println!("    {} deleted", change.key),
            }
        }
    }
}

/// `schema push`: what the new schema adds and removes, and what `--force` let through.
pub fn schema_pushed(namespace: &str, outcome: &SchemaPushOutcome, as_json: bool) {
    if as_json {
        json(outcome);
    } else {
        println!("schema of {} stored", namespace);
        if !outcome.added_keys.is_empty() {
            println!("added keys: {}", outcome.added_keys.join(", "));
        }
        if !outcome.removed_keys.is_empty() {
            println!("removed keys: {}", outcome.removed_keys.join(", "));
        }
        for v in &outcome.forced_violations {
            println!(
                "warning (forced): key {:?} breaks rule {:?}: {}",
                v.key, v.rule, v.message
            );
        }
    }
}

/// `schema get`: the schema, pretty-printed.
pub fn schema(record: &SchemaRecord, as_json: bool) {
    if as_json {
        json(record);
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&record.schema).unwrap_or_default()
        );
    }
}

/// `status`: the fleet table.
pub fn fleet(status: &StatusOutcome, as_json: bool) {
    if as_json {
        json(status);
        return;
    }
    let now_us =
        i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(0);
    let ago = |us: i64| {
        if us > 0 {
            format!("{:.1}s ago", (now_us - us).max(0) as f64 / 1e6)
        } else {
            "at start".to_owned()
        }
    };
    println!(
        "{:<36} {:<16} {:>8} {:>8}  {:<9} {:<12} {:<12} reason",
        "instance", "host", "pid", "version", "state", "applied", "last seen"
    );
    for i in &status.instances {
        let state = match i.state {
            InstanceState::Current => "current",
            InstanceState::Behind => "behind",
            InstanceState::Rejected => "rejected",
            InstanceState::Stale => "stale",
        };
        let reason = i
            .receipt
            .rejected
            .as_ref()
            .map(|r| format!("refused v{}: {}", r.version, r.reason))
            .unwrap_or_default();
        println!(
            "{:<36} {:<16} {:>8} {:>8}  {:<9} {:<12} {:<12} {reason}",
            i.receipt.instance_id,
            i.receipt.host,
            i.receipt.pid,
            i.receipt.version,
            state,
            ago(i.receipt.applied_at_us),
            ago(i.last_seen_us)
        );
    }
    let converged = status
        .convergence_ms
        .map(|ms| format!("; converged {ms:.1} ms after commit"))
        .unwrap_or_default();
    println!(
        "latest version {}: {}/{} live instances hold it{converged}",
        status.latest_version,
        status.holding_latest,
        status.instances.len()
    );
    super::backup::print_sites(&status.sites);
}
