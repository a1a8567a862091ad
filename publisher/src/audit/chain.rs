//! Checking the audit log's hash chain. Pure: the caller reads the stream.

use bytes::Bytes;
use mycosynth_subscriber::wire::{AuditRecord, ChainBreak, ChainProblem, GENESIS_HASH};

/// Checks records read from the audit stream: `(stream sequence, payload)` in stream order, and
/// the stream's last sequence. A hole in the sequences (including before the first record or
/// after the last one read) is a removal; a record whose `seq`, `prev_hash` or `hash` does not
/// fit is an edit or a forgery.
pub fn verify(messages: &[(u64, Bytes)], last_seq: u64) -> Vec<ChainProblem> {
    let mut problems = Vec::new();
    // The next stream sequence, and the next sequence a record should claim.
    let mut expected_seq = 1;
    let mut expected_claim = 1;
    let mut prev_hash = GENESIS_HASH.to_owned();
    for (seq, payload) in messages {
        let seq = *seq;
        let gap_from = expected_seq;
        expected_seq = seq + 1;
        let record = match serde_json::from_slice::<AuditRecord>(payload) {
            Ok(record) => record,
            Err(err) => {
                problems.push(problem(
                    seq,
                    ChainBreak::Unreadable,
                    format!("record {seq} is not an audit record: {err}"),
                ));
                // The next record cannot be linked to this one.
                prev_hash = String::new();
                expected_claim = 0;
                continue;
            }
        };
        let mut linked = true;
        if expected_claim != 0 && record.seq > expected_claim {
            // Records were taken out, whether the stream kept their sequences or was rebuilt.
            problems.push(missing(expected_claim, record.seq - 1));
            linked = false;
        } else if expected_claim != 0 && record.seq < expected_claim {
            problems.push(problem(
                seq,
                ChainBreak::WrongSequence,
                format!(
                    "record {seq} claims to be record {} (a copy, or out of place)",
                    record.seq
                ),
            ));
        } else if seq > gap_from {
            // Messages that were not chain records were removed.
            problems.push(missing(gap_from, seq - 1));
        }
        if linked && !prev_hash.is_empty() && record.prev_hash != prev_hash {
            problems.push(problem(
                seq,
                ChainBreak::BrokenLink,
                format!("record {seq} does not follow the record before it (prev_hash differs)"),
            ));
        }
        if !record.hash_is_valid() {
            problems.push(problem(
                seq,
                ChainBreak::WrongHash,
                format!("record {seq} was edited or forged: its hash does not match its content"),
            ));
        }
        expected_claim = record.seq + 1;
        prev_hash = record.hash;
    }
    if last_seq >= expected_seq {
        problems.push(missing(expected_seq, last_seq));
    }
    problems
}

fn missing(from: u64, to: u64) -> ChainProblem {
    let which = if from == to {
        format!("record {from} was removed")
    } else {
        format!("records {from} to {to} were removed")
    };
    problem(from, ChainBreak::Missing, which)
}

fn problem(seq: u64, kind: ChainBreak, message: String) -> ChainProblem {
    ChainProblem { seq, kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut record = AuditRecord {
                    seq,
                    identity: "alice".into(),
                    via: None,
                    time: String::new(),
                    time_us: 0,
                    action: "change".into(),
                    namespace: "ns".into(),
                    environment: "prod".into(),
                    keys: vec![format!("k{seq}")],
                    more_keys: 0,
                    outcome: "ok".into(),
                    reason: String::new(),
                    version: Some(seq),
                    change_id: None,
                    change_request: None,
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                record.hash = record.compute_hash();
                prev = record.hash.clone();
                record
            })
            .collect()
    }

    fn stored(records: &[AuditRecord]) -> Vec<(u64, Bytes)> {
        records
            .iter()
            .map(|r| (r.seq, Bytes::from(serde_json::to_vec(r).unwrap())))
            .collect()
    }

    #[test]
    fn an_intact_chain_has_no_problems() {
        assert_eq!(verify(&stored(&chain(5)), 5), vec![]);
        assert_eq!(verify(&[], 0), vec![]);
    }

    #[test]
    fn removals_are_reported_with_the_first_missing_sequence() {
        let mut messages = stored(&chain(5));
        messages.remove(2);
        let problems = verify(&messages, 5);
        assert_eq!(problems[0].seq, 3);
        assert_eq!(problems[0].kind, ChainBreak::Missing);
        // The first record removed, and the last one.
        let messages = stored(&chain(5));
        assert_eq!(verify(&messages[1..], 5)[0].seq, 1);
        assert_eq!(verify(&messages[..4], 5)[0].kind, ChainBreak::Missing);
        assert_eq!(verify(&messages[..4], 5)[0].seq, 5);
    }

    #[test]
    fn an_edited_record_is_reported() {
        let mut records = chain(4);
        records[1].identity = "mallory".into();
        let problems = verify(&stored(&records), 4);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            (problems[0].seq, problems[0].kind),
            (2, ChainBreak::WrongHash)
        );
    }

    #[test]
    fn a_resealed_edit_breaks_the_next_link() {
        let mut records = chain(4);
        records[1].identity = "mallory".into();
        records[1].hash = records[1].compute_hash();
        let problems = verify(&stored(&records), 4);
        assert_eq!(
            (problems[0].seq, problems[0].kind),
            (3, ChainBreak::BrokenLink)
        );
    }

    #[test]
    fn a_stream_rebuilt_without_a_record_is_reported_once() {
        let records = chain(4);
        let renumbered: Vec<(u64, Bytes)> = [&records[0], &records[2], &records[3]]
            .iter()
            .zip(1..)
            .map(|(r, seq)| (seq, Bytes::from(serde_json::to_vec(r).unwrap())))
            .collect();
        let problems = verify(&renumbered, 3);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            (problems[0].seq, problems[0].kind),
            (2, ChainBreak::Missing)
        );
    }

    #[test]
    fn a_copied_record_is_reported() {
        let records = chain(3);
        let mut messages = stored(&records);
        messages.push((4, messages[2].1.clone()));
        let problems = verify(&messages, 4);
        assert_eq!(
            (problems[0].seq, problems[0].kind),
            (4, ChainBreak::WrongSequence)
        );
    }

    #[test]
    fn garbage_is_reported() {
        let mut messages = stored(&chain(3));
        messages.push((4, Bytes::from_static(b"{not json")));
        let problems = verify(&messages, 4);
        assert_eq!(
            (problems[0].seq, problems[0].kind),
            (4, ChainBreak::Unreadable)
        );
    }
}
