//! The value map of the next snapshot, built from the snapshot before the current one when no
//! reader holds it anymore, instead of by copying the current map whole.
//!
//! Copying the current map costs the size of the namespace on every change (about 0.3 ms at
//! 10,000 keys, in every subscriber); a change should cost the keys it touches. After version n
//! is published, the snapshot of version n-1 (the "spare") is out of the `ArcSwap` readers load
//! from, so once the last reader drops it, its map is ours: bringing it forward by the changes
//! of version n, then applying those of n+1, yields the map of n+1 without touching the rest.
//! `Arc::try_unwrap` is an exact test of "no reader holds it": arc-swap pays its readers'
//! outstanding guards into the reference count when it replaces a value.
//!
//! When a reader still holds the spare, when there is none (first event, after a resync or a
//! schema reload) or when its version does not lead to the current one, the current map is
//! copied as before. Pure data: no I/O, so it is tested without a server.
//!
//! Memory: the spare keeps the previous snapshot alive between changes: one more map table (its
//! keys and values are `Arc`s shared with the current snapshot, so not the keys and values
//! themselves), and its section index if a reader built one.

use std::sync::Arc;

use serde_json::Value;

use crate::snapshot::{FastMap, Snapshot};

/// One key set to a value, or removed (`None`).
pub(crate) type Change = (Arc<str>, Option<Arc<Value>>);

/// Where the map of the next snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The spare's own map, brought forward in place.
    Spare,
    /// A full copy of the current map (counted: each one costs the size of the namespace).
    Copy,
}

/// The snapshot that was current when the last event was applied, and that event's changes.
struct Spare {
    snapshot: Arc<Snapshot>,
    /// What turned `snapshot` into version `leads_to`.
    changes: Vec<Change>,
    leads_to: u64,
}

/// Builds the value maps of successive snapshots; holds at most one spare.
#[derive(Default)]
pub(crate) struct NextValues {
    spare: Option<Spare>,
}

impl NextValues {
    /// The values of `current` with `changes` applied: the spare's map brought forward when it
    /// leads to `current` and nobody reads it anymore, else a copy of `current`'s. The spare is
    /// used up either way; [`NextValues::keep`] sets the next one once the result is published.
    pub fn after(
        &mut self,
        current: &Snapshot,
        changes: &[Change],
    ) -> (FastMap<Arc<Value>>, Source) {
        let (mut values, source) = match self.brought_forward(current) {
            Some(values) => (values, Source::Spare),
            None => (current.values().clone(), Source::Copy),
        };
        apply(&mut values, changes);
        (values, source)
    }

    /// Remembers `previous` (the snapshot that was current) and the `changes` that turned it
    /// into the published version `leads_to`, for the next [`NextValues::after`].
    pub fn keep(&mut self, previous: Arc<Snapshot>, changes: Vec<Change>, leads_to: u64) {
        self.spare = Some(Spare {
            snapshot: previous,
            changes,
            leads_to,
        });
    }

    /// Drops the spare: the current snapshot was published by something other than
    /// `after` + `keep` (a resync, a schema reload), so the spare's changes no longer lead to it.
    pub fn forget(&mut self) {
        self.spare = None;
    }

    /// The spare's map at `current`'s version, if the spare leads there and nobody holds it.
    fn brought_forward(&mut self, current: &Snapshot) -> Option<FastMap<Arc<Value>>> {
        let spare = self.spare.take()?;
        if spare.leads_to != current.version() {
            return None;
        }
        // A reader still holding it keeps it, unchanged; dropping our reference here lets the
        // reader's be the last.
        let snapshot = Arc::try_unwrap(spare.snapshot).ok()?;
        let mut values = snapshot.into_values();
        apply(&mut values, &spare.changes);
        Some(values)
    }
}

fn apply(values: &mut FastMap<Arc<Value>>, changes: &[Change]) {
    for (key, value) in changes {
        match value {
            Some(value) => {
                values.insert(Arc::clone(key), Arc::clone(value));
            }
            None => {
                values.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(key: &str, value: Value) -> Change {
        (Arc::from(key), Some(Arc::new(value)))
    }

    fn delete(key: &str) -> Change {
        (Arc::from(key), None)
    }

    fn snapshot(version: u64, values: FastMap<Arc<Value>>) -> Arc<Snapshot> {
        Arc::new(Snapshot::new(version, values, Arc::default(), 0))
    }

    /// What the updater did before the spare: copy the whole current map, then apply.
    fn copied(current: &Snapshot, changes: &[Change]) -> FastMap<Arc<Value>> {
        let mut values = current.values().clone();
        apply(&mut values, changes);
        values
    }

    /// One event the way the updater applies it: the next map, the next snapshot published,
    /// the previous one kept as the spare.
    fn step(
        next_values: &mut NextValues,
        current: Arc<Snapshot>,
        changes: Vec<Change>,
    ) -> (Arc<Snapshot>, Source) {
        let (values, source) = next_values.after(&current, &changes);
        let next = snapshot(current.version() + 1, values);
        next_values.keep(current, changes, next.version());
        (next, source)
    }

    /// Sets, overwrites, deletes and deletes of missing keys over many versions; the keys
    /// overlap so that each change lands on values the spare's own changes moved.
    fn events() -> Vec<Vec<Change>> {
        (0..60u64)
            .map(|n| {
                let mut changes = vec![set(&format!("k{}", n % 7), json!(n))];
                if n % 3 == 0 {
                    changes.push(delete(&format!("k{}", (n + 2) % 7)));
                }
                if n % 5 == 0 {
                    changes.push(delete(&format!("never{n}")));
                }
                if n % 4 == 0 {
                    // The same key twice in one event: the last one wins.
                    changes.push(set("twice", json!(n)));
                    changes.push(delete("twice"));
                    changes.push(set("twice", json!({"n": n})));
                }
                if n % 11 == 0 {
                    changes.push(set(&format!("k{}", (n + 1) % 7), json!([n, "overwrite"])));
                }
                changes
            })
            .collect()
    }

    #[test]
    fn the_spare_brought_forward_equals_a_full_copy_at_every_version() {
        let mut next_values = NextValues::default();
        let start: FastMap<Arc<Value>> = (0..20)
            .map(|i| (Arc::from(format!("seed{i}")), Arc::new(json!(i))))
            .collect();
        let mut current = snapshot(1, start);
        for (n, changes) in events().into_iter().enumerate() {
            let expected = copied(&current, &changes);
            let (next, source) = step(&mut next_values, current, changes);
            assert_eq!(
                next.values(),
                &expected,
                "map of version {}",
                next.version()
            );
            // Only the first event has no spare; the test holds no old snapshot after that.
            let want = if n == 0 { Source::Copy } else { Source::Spare };
            assert_eq!(source, want, "source of version {}", next.version());
            current = next;
        }
        assert!(current.values().contains_key("twice"));
        assert!(!current.values().contains_key("never0"));
    }

    #[test]
    fn a_spare_a_reader_still_holds_is_copied_around_and_left_unchanged() {
        let mut next_values = NextValues::default();
        let v1 = snapshot(1, copied(&Snapshot::default(), &[set("a", json!(1))]));
        let held = Arc::clone(&v1);
        let (v2, _) = step(
            &mut next_values,
            v1,
            vec![set("a", json!(2)), set("b", json!(true))],
        );
        let changes = vec![delete("a"), set("c", json!("x"))];
        let expected = copied(&v2, &changes);
        let (v3, source) = step(&mut next_values, v2, changes);
        assert_eq!(
            source,
            Source::Copy,
            "v1 is still read, so it must not be reused"
        );
        assert_eq!(v3.values(), &expected);
        assert_eq!(held.version(), 1);
        assert_eq!(
            held.to_json(),
            json!({"a": 1}),
            "the reader's snapshot is untouched"
        );
        // Once the reader lets go, the spare (now v2) is reused again.
        drop(held);
        let changes = vec![set("d", json!(4))];
        let expected = copied(&v3, &changes);
        let (v4, source) = step(&mut next_values, v3, changes);
        assert_eq!(source, Source::Spare);
        assert_eq!(v4.values(), &expected);
    }

    #[test]
    fn a_spare_that_does_not_lead_to_the_current_version_is_not_used() {
        let mut next_values = NextValues::default();
        let v1 = snapshot(1, copied(&Snapshot::default(), &[set("a", json!(1))]));
        let (v2, _) = step(&mut next_values, v1, vec![set("b", json!(2))]);
        // A resync-like jump: version 7 loaded whole, with other contents, while the spare
        // (version 1 and the changes to version 2) is still there.
        drop(v2);
        let v7 = snapshot(
            7,
            copied(
                &Snapshot::default(),
                &[set("z", json!(26)), set("b", json!(-2))],
            ),
        );
        let changes = vec![set("y", json!(25))];
        let (values, source) = next_values.after(&v7, &changes);
        assert_eq!(source, Source::Copy);
        assert_eq!(
            values,
            copied(&v7, &changes),
            "built on version 7, not on the spare"
        );

        // A snapshot republished at the same version (a schema reload) is not after + keep
        // either: the updater forgets the spare, and nothing is reused.
        let v1 = snapshot(1, copied(&Snapshot::default(), &[set("a", json!(1))]));
        let (v2, _) = step(&mut next_values, v1, vec![set("b", json!(2))]);
        next_values.forget();
        let (_, source) = next_values.after(&v2, &changes);
        assert_eq!(source, Source::Copy);
    }
}
