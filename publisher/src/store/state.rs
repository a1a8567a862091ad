//! The state of one namespace/environment as the validator holds it between change sets, and
//! how it is read from KV: loaded with the head rolled forward, caught up with another
//! validator's version, or completed where a writer died between its head and its values.

use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use mycosynth_subscriber::kv_scan::scan;
use mycosynth_subscriber::wire::{
    classify_state_key, head_key, history_key, kv_subject, state_filter, value_key,
    ChangeSetRecord, Environment, HeadRecord, Namespace, StateEntry, ValueRecord, CONFIG_BUCKET,
};
use serde_json::Value;

use super::buckets::Store;
use super::commit::materialisation;
use super::committer;
use super::error::StoreError;
use super::records::{get_record, parse};

/// The state of one namespace/environment as the validator sees it.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Current version (0: nothing committed yet).
    pub version: u64,
    /// KV revision of the head record (0: no head yet); the compare-and-set of the next commit.
    pub head_revision: u64,
    /// The state includes change sets staged but not yet acknowledged: the next commit's head
    /// compare-and-set is on theirs ([`HeadExpected::AfterPrevious`]), not on `head_revision`.
    pub pending: bool,
    /// Current values with their records.
    pub values: BTreeMap<String, ValueRecord>,
    /// The idempotency key and change id of the change set that made `version`, if it had a key:
    /// a retry of it is answered from here even before its idempotency record is written.
    pub last_request: Option<(String, String)>,
    /// The head's change set was not (completely) materialised when this state was read: `values`
    /// include it (rolled forward), and [`Store::complete`] must write it before the next commit.
    pub incomplete: Option<Box<HeadRecord>>,
    /// `values` as the next change set is validated against them, left by the commit path
    /// after its last change set, so that a change set costs what it touches rather than a copy
    /// of the namespace. `None` when not known (it is then built from `values`); whatever
    /// changes `values` other than the commit path clears it.
    pub document: Option<KeptDocument>,
}

/// The opened values (sealed values in the clear) of a [`State`], with the schema they are
/// known to conform to.
#[derive(Debug, Clone)]
pub struct KeptDocument {
    /// Each key's value.
    pub values: BTreeMap<String, serde_json::Value>,
    /// The schema `values` were checked against and conform to, if any (only its identity
    /// matters, so it is held weakly): the next change set is then checked on the keys it
    /// changes ([`crate::validate::plan_on`]).
    pub conforms_to: Option<std::sync::Weak<crate::validate::Schema>>,
}

impl State {
    /// Moves this state to `head` (stored at `revision`), applying the head's change set to
    /// the values (`HeadRecord::roll_forward`). Returns whether that changed any value, i.e.
    /// whether the values read were missing part of the head's change set.
    pub fn follow(&mut self, head: &HeadRecord, revision: u64) -> bool {
        self.document = None;
        self.version = head.version;
        self.head_revision = revision;
        self.pending = false;
        self.last_request = head
            .meta
            .request_id
            .clone()
            .map(|id| (id, head.meta.change_id.clone()));
        let values = std::cell::RefCell::new(&mut self.values);
        head.roll_forward(
            |key, value| {
                let record = head.value_record(value.clone());
                let old = values.borrow_mut().insert(key.to_owned(), record.clone());
                old.as_ref() != Some(&record)
            },
            |key| values.borrow_mut().remove(key).is_some(),
        )
    }

    /// Just the values, as stored (sealed values sealed): a copy of the whole namespace.
    pub fn documents(&self) -> BTreeMap<String, serde_json::Value> {
        self.values
            .iter()
            .map(|(k, r)| (k.clone(), r.value.clone()))
            .collect()
    }
}

/// The document at `version`, folded from the change sets 1..=version. Err(v): version v is
/// missing from the history.
pub fn state_at(history: &[ChangeSetRecord], version: u64) -> Result<BTreeMap<String, Value>, u64> {
    let mut document = BTreeMap::new();
    let mut expected = 1;
    for set in history.iter().take_while(|s| s.version <= version) {
        if set.version != expected {
            return Err(expected);
        }
        for change in &set.changes {
            match &change.value {
                Some(value) => document.insert(change.key.clone(), value.clone()),
                None => document.remove(&change.key),
            };
        }
        expected += 1;
    }
    if expected != version + 1 {
        return Err(expected);
    }
    Ok(document)
}

impl Store {
    /// Reads the current state of `ns`/`env` from KV.
    pub async fn load_state(&self, ns: &Namespace, env: &Environment) -> Result<State, StoreError> {
        let entries = scan(
            &self.js,
            CONFIG_BUCKET,
            &state_filter(ns, env),
            self.read_timeout,
        )
        .await?;
        let mut state = State::default();
        let mut head = None;
        for entry in entries.iter().filter(|e| !e.deleted) {
            match classify_state_key(ns, env, &entry.key) {
                Some(StateEntry::Value(key)) => {
                    let record = parse::<ValueRecord>(&entry.key, &entry.payload)?;
                    state.values.insert(key.to_owned(), record);
                }
                Some(StateEntry::Head) => {
                    head = Some((
                        parse::<HeadRecord>(&entry.key, &entry.payload)?,
                        entry.revision,
                    ));
                }
                Some(StateEntry::OtherMeta) | None => {}
            }
        }
        // The head is the commit point: apply its change set to values not yet materialised.
        if let Some((head, revision)) = head {
            if state.follow(&head, revision) {
                state.incomplete = Some(Box::new(head));
            }
        }
        Ok(state)
    }

    /// Brings `state` (complete at its version, nothing in flight) up to the current head when
    /// the head is exactly one version ahead and carries its change set, which is the usual case
    /// after losing a race to another validator: one direct get instead of a full reload. The
    /// head's materialisation is completed first if its last key is not written yet (the other
    /// validator may have died; if it is still writing, the same records are written twice).
    /// `None` when the state cannot be caught up this way (reload it).
    pub async fn catch_up(
        &self,
        ns: &Namespace,
        env: &Environment,
        mut state: State,
    ) -> Result<Option<State>, StoreError> {
        let key = head_key(ns, env);
        let entry = tokio::time::timeout(self.read_timeout, self.config.entry(&key))
            .await
            .map_err(|_| StoreError::Unavailable(format!("reading {key} timed out")))?
            .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let head = parse::<HeadRecord>(&key, &entry.value)?;
        let Some(last) = head.changes.as_ref().and_then(|c| c.last()).cloned() else {
            return Ok(None);
        };
        if head.version != state.version + 1 {
            return Ok(None);
        }
        state.follow(&head, entry.revision);
        let written = get_record::<ValueRecord>(
            &self.config,
            &value_key(ns, env, &last.key),
            self.read_timeout,
        )
        .await?;
        let complete = match (&last.value, written) {
            (Some(_), Some(record)) => record.meta.change_id == head.meta.change_id,
            (None, None) => true,
            _ => false,
        };
        if !complete {
            state.incomplete = Some(Box::new(head));
            match self.complete(ns, env, &mut state).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => return Ok(None),
                Err(err) => return Err(err),
            }
        }
        metrics::counter!("mycosynth_validator_catch_ups_total").increment(1);
        Ok(Some(state))
    }

    /// Makes sure the change set of `state`'s head is materialised (values, history record,
    /// idempotency record) before a change set is committed on top of it: the writer before us
    /// may have died between its commit and its materialisation. Cheap when nothing is missing
    /// (one direct get of the history record). `Conflict` when the head moved meanwhile.
    pub async fn complete(
        &self,
        ns: &Namespace,
        env: &Environment,
        state: &mut State,
    ) -> Result<(), StoreError> {
        let head = match state.incomplete.take() {
            Some(head) => *head,
            None if state.version == 0 => return Ok(()),
            None => {
                let history = history_key(ns, env, state.version);
                let Some(head) = self.head(ns, env).await? else {
                    return Ok(());
                };
                if head.changes.is_none()
                    || head.version != state.version
                    || get_record::<ChangeSetRecord>(&self.config, &history, self.read_timeout)
                        .await?
                        .is_some()
                {
                    return Ok(());
                }
                head
            }
        };
        metrics::counter!("mycosynth_validator_materialisations_completed_total").increment(1);
        tracing::info!(namespace = %ns, environment = %env, version = head.version, "completing the materialisation of a committed change set");
        let messages = materialisation(ns, env, &head, None)?;
        committer::materialise(
            &self.client,
            &self.js,
            &kv_subject(CONFIG_BUCKET, &head_key(ns, env)),
            state.head_revision,
            &messages,
            self.committer.replicated(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::{ChangeMeta, ChangeSource, KeyChange};
    use serde_json::json;

    fn set(version: u64, changes: Vec<KeyChange>) -> ChangeSetRecord {
        ChangeSetRecord {
            namespace: "ns".into(),
            environment: "e".into(),
            version,
            previous_version: version - 1,
            meta: ChangeMeta {
                change_id: String::new(),
                author: String::new(),
                time: String::new(),
                time_us: 0,
                reason: String::new(),
                source: ChangeSource::Cli,
                git_commit: None,
                request_id: None,
                emergency: false,
                approved_by: Vec::new(),
                change_request: None,
            },
            changes,
        }
    }

    #[test]
    fn state_at_folds_history() {
        let history = vec![
            set(
                1,
                vec![KeyChange {
                    key: "a".into(),
                    value: Some(json!(1)),
                }],
            ),
            set(
                2,
                vec![KeyChange {
                    key: "b".into(),
                    value: Some(json!(2)),
                }],
            ),
            set(
                3,
                vec![KeyChange {
                    key: "a".into(),
                    value: None,
                }],
            ),
        ];
        assert_eq!(state_at(&history, 0).unwrap(), BTreeMap::new());
        assert_eq!(
            state_at(&history, 2).unwrap(),
            BTreeMap::from([("a".into(), json!(1)), ("b".into(), json!(2))])
        );
        assert_eq!(
            state_at(&history, 3).unwrap(),
            BTreeMap::from([("b".into(), json!(2))])
        );
        assert_eq!(
            state_at(&history[1..], 3),
            Err(1),
            "a hole in history is reported"
        );
    }
}
