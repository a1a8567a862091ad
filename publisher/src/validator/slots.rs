//! The slots of the namespaces/environments this instance writes: one per
//! namespace/environment, serializing this instance's commits to it and caching its state
//! between requests. At most `cap` are kept: past that, the least recently used idle ones are
//! dropped with their cached state (read again from KV at their next change), so that memory
//! follows the namespaces in use, not every one ever touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mycosynth_subscriber::wire::{Environment, Namespace};
use tokio::sync::Mutex as AsyncMutex;

use crate::store::State;

/// How many slots a validator keeps by default (`serve --cached-states`).
pub const DEFAULT_CACHED_STATES: usize = 1000;

/// The cached state of one namespace/environment, behind the lock that serializes this
/// instance's commits to it.
pub type Slot = Arc<AsyncMutex<Option<State>>>;

/// The slots, each with the tick of its last use.
pub struct Slots {
    inner: Mutex<Inner>,
    cap: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<(Namespace, Environment), (Slot, u64)>,
    tick: u64,
}

impl Slots {
    /// Slots keeping at most `cap` (at least 1) cached states.
    pub fn new(cap: usize) -> Slots {
        Slots {
            inner: Mutex::new(Inner::default()),
            cap: cap.max(1),
        }
    }

    /// The slot of `ns`/`env`, created on first use; evicts idle ones past the cap.
    pub fn get(&self, ns: &Namespace, env: &Environment) -> Slot {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner
            .map
            .entry((ns.clone(), env.clone()))
            .or_insert_with(|| (Slot::default(), tick));
        entry.1 = tick;
        let slot = Arc::clone(&entry.0);
        if inner.map.len() > self.cap {
            evict(&mut inner, self.cap);
        }
        slot
    }

    /// How many slots are kept now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// No slot is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the least recently used idle slots (held by no request: only the map has them) until
/// a tenth below `cap`, so that evictions come in rounds rather than at every new slot.
fn evict(inner: &mut Inner, cap: usize) {
    let target = cap - cap / 10;
    let mut idle: Vec<(u64, (Namespace, Environment))> = inner
        .map
        .iter()
        .filter(|(_, (slot, _))| Arc::strong_count(slot) == 1)
        .map(|(key, (_, tick))| (*tick, key.clone()))
        .collect();
    idle.sort_unstable_by_key(|(tick, _)| *tick);
    let excess = inner.map.len().saturating_sub(target);
    let mut evicted = 0u64;
    for (_, key) in idle.into_iter().take(excess) {
        inner.map.remove(&key);
        evicted += 1;
    }
    metrics::counter!("mycosynth_validator_states_evicted_total").increment(evicted);
    metrics::gauge!("mycosynth_validator_cached_states").set(inner.map.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(i: usize) -> (Namespace, Environment) {
        (
            Namespace::new(format!("ns-{i}")).unwrap(),
            Environment::new("prod").unwrap(),
        )
    }

    #[test]
    fn idle_slots_past_the_cap_go_least_recently_used_first_and_held_ones_stay() {
        let slots = Slots::new(10);
        let (ns0, env) = names(0);
        let held = slots.get(&ns0, &env);
        for i in 1..10 {
            let (ns, env) = names(i);
            drop(slots.get(&ns, &env));
        }
        // ns-1 is used again: the least recently used idle one is now ns-2.
        let (ns1, _) = names(1);
        drop(slots.get(&ns1, &env));
        assert_eq!(slots.len(), 10);
        let (ns10, _) = names(10);
        drop(slots.get(&ns10, &env));
        // 11 > 10: evicted down to 9, oldest idle first; the held ns-0 and the new ns-10 stay.
        assert_eq!(slots.len(), 9);
        let again = slots.get(&ns0, &env);
        assert!(Arc::ptr_eq(&held, &again), "a held slot is never dropped");
        let inner = slots.inner.lock().unwrap();
        let kept: Vec<String> = {
            let mut k: Vec<String> = inner.map.keys().map(|(ns, _)| ns.to_string()).collect();
            k.sort();
            k
        };
        assert!(
            !kept.contains(&"ns-2".to_owned()) && !kept.contains(&"ns-3".to_owned()),
            "{kept:?}"
        );
        assert!(
            kept.contains(&"ns-1".to_owned()) && kept.contains(&"ns-10".to_owned()),
            "{kept:?}"
        );
    }
}
