//! Stage: the plan becomes a version. Its head (carrying the change set) and change event are
//! handed to the committer, and the slot's cached state moves to that version at once, so the
//! next change set of the namespace/environment validates against it while it is in flight.

use std::time::Instant;

use bytes::Bytes;
use mycosynth_subscriber::wire::{
    event_subject, ChangeEvent, ChangeMeta, ChangeOutcome, DiffEntry, Environment, EventChange,
    HeadRecord, KeyChange, Namespace, ValueRecord, EVENT_FORMAT,
};
use serde_json::Value;

use super::admit::{self, Expectation};
use super::inputs::Inputs;
use super::order::{Attribution, Order};
use super::plan::{self, Planned};
use crate::clock::meta_time;
use crate::failure::Failure;
use crate::store::committer::{HeadExpected, Receipt};
use crate::store::{Commit, KeptDocument, State};
use crate::validator::instance::Validator;

/// How the steps before the commit ended.
// Returned once per attempt and moved once: boxing the large variant would only add an
// allocation to every change set.
#[allow(clippy::large_enum_variant)]
pub enum Prepared {
    /// With this answer, nothing committed: a replay, a refusal's sibling (a dry run, an empty
    /// change set).
    Answer(ChangeOutcome),
    /// The state must be read afresh (`expected_version` against a cache that may be behind).
    Recheck,
    /// Handed to the committer.
    Staged(Staged),
}

/// A change set in the committer's hands.
pub struct Staged {
    receipt: Receipt,
    pending: Pending,
}

impl Staged {
    /// The committer's receipt, and what settling needs besides.
    pub fn into_parts(self) -> (Receipt, Pending) {
        (self.receipt, self.pending)
    }
}

/// What settling a staged change set needs: its outcome's parts and how to step back.
pub struct Pending {
    /// The version it commits.
    pub version: u64,
    /// Its metadata (change id, author, ...).
    pub meta: ChangeMeta,
    /// Its diff, for the reply.
    pub diff: Vec<DiffEntry>,
    /// How many keys it changes.
    pub keys: usize,
    /// When it was staged.
    pub started: Instant,
    /// How to step the cached state back to what it was validated against.
    pub undo: Undo,
}

/// What a staged change set replaced in the cached state.
pub struct Undo {
    /// Each changed key's record before it (None: the key was not set).
    pub replaced: Vec<(String, Option<ValueRecord>)>,
    /// The head revision, last request and pending flag before it.
    pub before: (u64, Option<(String, String)>, bool),
}

impl Validator {
    /// From the current state to a staged change set: replay or expect, document, plan, seal,
    /// stage. `cached` gets the state back (or the staged one) unless the state must be read
    /// again.
    pub(super) async fn prepare(
        &self,
        order: &Order,
        inputs: &Inputs,
        mut state: State,
        cached: &mut Option<State>,
        fresh: &mut bool,
    ) -> Result<Prepared, Failure> {
        if let Some(answer) = admit::from_head(order, &state) {
            *cached = Some(state);
            return answer.map(Prepared::Answer);
        }
        match admit::expectation(order, &state, *fresh) {
            Expectation::Met => {}
            Expectation::Recheck => {
                // Our cache may be behind another validator; check before refusing.
                *fresh = true;
                return Ok(Prepared::Recheck);
            }
            Expectation::Refused(conflict) => {
                *cached = Some(state);
                return Err(conflict);
            }
        }
        let (ns, env) = (&order.namespace, &order.environment);
        let (current, conformed) = self.document(ns, env, &mut state).await?;
        let planned = plan::plan(
            inputs,
            current,
            conformed.as_ref(),
            &order.intent,
            self.require_schema,
        );
        let mut planned = match planned {
            Ok(planned) => planned,
            Err(violations) => {
                *cached = Some(state);
                return Err(plan::refusal(inputs, violations));
            }
        };
        let schema = inputs.schema.as_deref();
        self.vault
            .seal_plan(ns, env, schema, &mut planned.plan)
            .await?;
        if order.dry_run || planned.plan.is_empty() {
            let outcome = unchanged(&mut state, planned);
            *cached = Some(state);
            return Ok(Prepared::Answer(outcome));
        }
        let staged = self.stage(order, state, planned, cached).await?;
        Ok(Prepared::Staged(staged))
    }

    /// Hands the planned version to the committer and moves the cached state to it.
    async fn stage(
        &self,
        order: &Order,
        state: State,
        planned: Planned,
        cached: &mut Option<State>,
    ) -> Result<Staged, Failure> {
        let (ns, env) = (&order.namespace, &order.environment);
        let attribution = &order.attribution;
        let meta = new_meta(attribution);
        let version = state.version + 1;
        let head = HeadRecord {
            version,
            keys: planned.plan.document.len() as u64,
            meta: meta.clone(),
            changes: Some(planned.plan.changes.clone()),
        };
        let head_expected = if state.pending {
            HeadExpected::AfterPrevious
        } else {
            HeadExpected::Revision(state.head_revision)
        };
        let event = change_event(ns, env, version, &planned.plan.changes, &meta);
        let started = Instant::now();
        let staged = self
            .store
            .stage(&Commit {
                namespace: ns,
                environment: env,
                head_expected,
                head: head.clone(),
                request_id: attribution.request_id.as_deref(),
                event: Some(event),
            })
            .await;
        let receipt = staged.inspect_err(|err| {
            let request_id = attribution.request_id.as_deref().unwrap_or("");
            tracing::warn!(error = %err, version, request_id, "commit failed");
        })?;
        let Planned {
            plan,
            conforms_to,
            reusable,
        } = planned;
        let kept = reusable.then_some(KeptDocument {
            values: plan.document,
            conforms_to,
        });
        let (next, undo) = advance(state, &head, &plan.changes, kept, attribution);
        *cached = Some(next);
        let (keys, diff) = (plan.changes.len(), plan.diff);
        Ok(Staged {
            receipt,
            pending: Pending {
                version,
                meta,
                diff,
                keys,
                started,
                undo,
            },
        })
    }
}

/// The answer to a dry run or a change set that changes nothing; such a change set leaves the
/// document it was checked on for the next one (when reusable).
fn unchanged(state: &mut State, planned: Planned) -> ChangeOutcome {
    let version = state.version;
    if planned.plan.is_empty() && planned.reusable {
        state.document = Some(KeptDocument {
            values: planned.plan.document,
            conforms_to: planned.conforms_to,
        });
    }
    ChangeOutcome {
        version,
        previous_version: version,
        committed: false,
        change_id: None,
        diff: planned.plan.diff,
        replayed: false,
        proposed: None,
    }
}

/// `state` moved to `head`'s version by `changes` (pending until its commit is acknowledged),
/// keeping `kept` as its document, and what it replaced.
fn advance(
    mut state: State,
    head: &HeadRecord,
    changes: &[KeyChange],
    kept: Option<KeptDocument>,
    attribution: &Attribution,
) -> (State, Undo) {
    let before = (
        state.head_revision,
        state.last_request.clone(),
        state.pending,
    );
    let mut replaced = Vec::with_capacity(changes.len());
    for change in changes {
        let old = match &change.value {
            Some(value) => state
                .values
                .insert(change.key.clone(), head.value_record(value.clone())),
            None => state.values.remove(&change.key),
        };
        replaced.push((change.key.clone(), old));
    }
    state.version = head.version;
    state.pending = true;
    state.document = kept;
    state.last_request = attribution
        .request_id
        .clone()
        .map(|id| (id, head.meta.change_id.clone()));
    (state, Undo { replaced, before })
}

/// The metadata of a new change set.
fn new_meta(attribution: &Attribution) -> ChangeMeta {
    let (time, time_us) = meta_time();
    ChangeMeta {
        change_id: uuid::Uuid::now_v7().to_string(),
        author: attribution.author.clone(),
        time,
        time_us,
        reason: attribution.reason.clone(),
        source: attribution.source,
        git_commit: attribution.git_commit.clone(),
        request_id: attribution.request_id.clone(),
        emergency: attribution.emergency,
        approved_by: attribution.approved_by.clone(),
        change_request: attribution.change_request.clone(),
    }
}

/// The change event of a committed change set: subject and rkyv bytes.
fn change_event(
    ns: &Namespace,
    env: &Environment,
    version: u64,
    changes: &[KeyChange],
    meta: &ChangeMeta,
) -> (String, Bytes) {
    let event = ChangeEvent {
        format: EVENT_FORMAT,
        namespace: ns.to_string(),
        environment: env.to_string(),
        version,
        previous_version: version - 1,
        changes: changes
            .iter()
            .map(|c| EventChange {
                key: c.key.clone(),
                value_json: c.value.as_ref().map(Value::to_string),
            })
            .collect(),
        change_id: meta.change_id.clone(),
        author: meta.author.clone(),
        reason: meta.reason.clone(),
        source: meta.source.as_str().to_owned(),
        committed_at_us: meta.time_us,
        approved_by: meta.approved_by.clone(),
        change_request: meta.change_request.clone(),
    };
    (event_subject(ns, env), Bytes::from(event.encode()))
}
