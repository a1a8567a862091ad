//! How the commands print their outcomes: a line per thing for people, one JSON value with
//! `--json`. Sealed (sensitive) values are shown as `<redacted>`.

use mycosynth_subscriber::wire::{
    is_sealed, ChangeOutcome, DiffEntry, GetOutcome, HistoryOutcome, InstanceState,
    ProposalOutcome, ProposalRecord, ProposalState, SchemaPushOutcome, SchemaRecord, StatusOutcome,
    REDACTED,
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
    if let Some(proposed) = &outcome.proposed {
        if outcome.committed {
            println!(
                "committed version {} (was {}) as an emergency change; review {} opened",
                outcome.version, outcome.previous_version, proposed.id
            );
        } else {
            let when = proposed
                .at_us
                .map(|at| format!(", applies at {}", when(at)))
                .unwrap_or_default();
            println!(
                "change request {} {}: needs {} approval(s){when}; nothing committed (still at version {})",
                proposed.id,
                proposed.state.as_str(),
                proposed.required,
                outcome.version
            );
        }
        return;
    }
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
            "{}{}{}",
            if set.meta.emergency {
                ", EMERGENCY"
            } else {
                ""
            },
            set.meta
                .git_commit
                .as_deref()
                .map(|c| format!(", git {c}"))
                .unwrap_or_default(),
            approvals(&set.meta)
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

/// One line per change request (`scheduled`: with its time first).
pub fn proposals(records: &[ProposalRecord], scheduled: bool) {
    if records.is_empty() {
        println!("no change requests");
    }
    for record in records {
        let at = record.at_us.map(when);
        match (scheduled, at) {
            (true, Some(when)) => println!("{when}  {}", summary(record)),
            (_, Some(when)) => println!("{}  at {when}", summary(record)),
            (_, None) => println!("{}", summary(record)),
        }
    }
}

fn summary(record: &ProposalRecord) -> String {
    let reason = if record.reason.is_empty() {
        String::new()
    } else {
        format!(" — {}", record.reason)
    };
    format!(
        "{}  {:<10} {}/{}  {} by {}  approvals {}/{}{reason}",
        record.id,
        record.state.as_str(),
        record.namespace,
        record.environment,
        match record.kind {
            mycosynth_subscriber::wire::ProposalKind::Change => "change",
            mycosynth_subscriber::wire::ProposalKind::Review => "review",
        },
        record.author,
        record.approved_by().len(),
        record.required
    )
}

/// A change request after a step: its summary, approvals, state and what it changes.
pub fn proposal(outcome: &ProposalOutcome, as_json: bool) {
    if as_json {
        json(outcome);
        return;
    }
    let record = &outcome.request;
    println!("{}", summary(record));
    println!(
        "  base version {}, content {}",
        record.base_version, record.content_hash
    );
    for approval in &record.approvals {
        let comment = if approval.comment.is_empty() {
            String::new()
        } else {
            format!(": {}", approval.comment)
        };
        println!(
            "  approved by {} at {}{comment}",
            approval.identity, approval.time
        );
    }
    if let Some(at) = record.at_us {
        println!("  scheduled for {} (grace {} s)", when(at), record.grace_s);
    }
    if let Some(closed) = &record.closed {
        println!(
            "  {} by {} at {}: {}",
            record.state.as_str(),
            closed.identity,
            closed.time,
            closed.reason
        );
    }
    if let Some(applied) = &record.applied {
        println!(
            "  applied as version {} by {} at {}",
            applied.version, applied.by, applied.time
        );
    }
    let shown = if outcome.diff_now.is_empty() || record.state == ProposalState::Applied {
        &record.diff
    } else {
        &outcome.diff_now
    };
    diff(shown);
    if !outcome.conflicts.is_empty() {
        println!(
            "  conflicts: {} changed since version {}; `requests rebase {}` to go on",
            outcome.conflicts.join(", "),
            record.base_version,
            record.id
        );
    }
}

/// `, approved by bob, carol (request <id>)` when a change came from a change request.
fn approvals(meta: &mycosynth_subscriber::wire::ChangeMeta) -> String {
    let by = if meta.approved_by.is_empty() {
        String::new()
    } else {
        format!(", approved by {}", meta.approved_by.join(", "))
    };
    let request = meta
        .change_request
        .as_deref()
        .map(|id| format!(" (request {id})"))
        .unwrap_or_default();
    format!("{by}{request}")
}

/// A time in µs since the epoch, as RFC 3339 (the number when out of range).
fn when(us: i64) -> String {
    crate::clock::rfc3339_us(us).unwrap_or_else(|| us.to_string())
}
