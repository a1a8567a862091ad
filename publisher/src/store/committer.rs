//! Group commit. Change sets that are ready at the same time are committed together:
//!
//! - **Heads apart** (each change set of the group has its own version head): each is committed
//!   by its head alone, one put with a compare-and-set, the head carrying the change set; the
//!   heads of a group are in flight together. Then the change events go out, then each version's
//!   materialisation (history, idempotency record, values), every message conditional on its head
//!   ([`materialise`]). A plain put costs about a tenth of an atomic batch on a single node, where
//!   the server stages every batch in a temporary file store.
//! - **Several versions of one head**: the validator may stage version v+1 while v is still in
//!   flight ([`HeadExpected::AfterPrevious`]). Such a group is written as ONE JetStream atomic
//!   batch, materialisation and head of each change set together, each head with its own
//!   compare-and-set (v+1's is covered by v's in the same batch, or is the revision v's ack gave);
//!   if v failed, v+1 fails too, and the validator reloads and retries.
//!
//! When a batch fails on a compare-and-set, nobody can tell from the error whose it was: its
//! halves are committed again, down to single change sets, each getting its own answer. Change
//! events are published here, right after the commit and in commit order, so subscribers receive
//! versions in order even when several commits of one namespace are in flight. A lone change set
//! is committed at once: grouping never adds waiting, it only uses the time a commit is in
//! flight. A group is answered, and the next one taken, only once its versions are materialised:
//! this validator never commits v+1 of a head before v is complete.
//!
//! One committer task per validator process; it ends when the last `Store` handle is dropped.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;

/// JetStream's limit on messages in one atomic batch.
pub const MAX_BATCH_MESSAGES: usize = 1000;
/// How long the committer remembers a head's last revision for change sets staged after it.
const HEAD_MEMORY: Duration = Duration::from_secs(60);

/// One message of a staged change set.
#[derive(Debug, Clone)]
pub struct Message {
    /// Stream subject (`$KV.<bucket>.<key>`).
    pub subject: String,
    /// Record bytes (empty for a deletion).
    pub payload: Bytes,
    /// A KV delete marker.
    pub deleted: bool,
    /// `Nats-Expected-Last-Subject-Sequence`, when this message is a compare-and-set.
    pub expected_last_subject_sequence: Option<u64>,
}

/// What the head of a staged change set must find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadExpected {
    /// The head's KV revision the change set was validated against (0: no head yet).
    Revision(u64),
    /// The head written by the previous change set staged for the same head, still in flight.
    AfterPrevious,
}

/// One change set, ready to be written.
#[derive(Debug)]
pub struct Staged {
    /// Values, history and idempotency record; the head is `head`, written after them.
    pub messages: Vec<Message>,
    /// The version head record: subject and bytes.
    pub head: (String, Bytes),
    /// The head's compare-and-set.
    pub head_expected: HeadExpected,
    /// The change event to publish once the change set is stored: subject and bytes.
    pub event: Option<(String, Bytes)>,
    /// `Nats-Msg-Id` of a head written on its own (the idempotency record's key): within the
    /// stream's duplicate window a retry of an applied request is never stored twice, even
    /// before the first one's idempotency record is materialised.
    pub dedup_id: Option<String>,
}

impl Staged {
    fn len(&self) -> usize {
        self.messages.len() + 1
    }
}

/// The answer to a staged change set: the KV revision of its head.
pub type Receipt = oneshot::Receiver<Result<u64, StoreError>>;

type Job = (Staged, oneshot::Sender<Result<u64, StoreError>>);

/// Handle on the committer task.
#[derive(Debug, Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
    replicated: bool,
}

impl Committer {
    /// Starts the committer task on the current runtime. `replicated`: the config stream has
    /// more than one replica (see [`materialise`]).
    pub fn start(
        client: async_nats::Client,
        js: jetstream::Context,
        replicated: bool,
    ) -> Committer {
        let (jobs, rx) = mpsc::channel(4096);
        tokio::spawn(run(rx, client, js, replicated));
        Committer { jobs, replicated }
    }

    /// Whether the config stream is replicated.
    pub fn replicated(&self) -> bool {
        self.replicated
    }

    /// Queues one change set; the receipt resolves once it is stored (or refused).
    pub async fn enqueue(&self, staged: Staged) -> Result<Receipt, StoreError> {
        if staged.len() > MAX_BATCH_MESSAGES {
            return Err(StoreError::Refused(format!(
                "a change set must be at most {MAX_BATCH_MESSAGES} messages, not {}",
                staged.len()
            )));
        }
        let (reply, receipt) = oneshot::channel();
        self.jobs
            .send((staged, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the committer has stopped".into()))?;
        Ok(receipt)
    }
}

/// Waits for a receipt.
pub async fn outcome(receipt: Receipt) -> Result<u64, StoreError> {
    receipt
        .await
        .map_err(|_| StoreError::Unavailable("the committer has stopped".into()))?
}

/// The last outcome per head subject, for change sets staged after one still in flight.
#[derive(Default)]
struct Heads(HashMap<String, (Option<u64>, Instant)>);

impl Heads {
    fn record(&mut self, subject: &str, revision: Option<u64>) {
        self.0
            .insert(subject.to_owned(), (revision, Instant::now()));
        if self.0.len() > 10_000 {
            self.0.retain(|_, (_, at)| at.elapsed() < HEAD_MEMORY);
        }
    }

    /// The compare-and-set for a change set's head, given the heads earlier in its batch;
    /// `Err` when it follows a change set that failed (or one no longer remembered).
    fn expected(&self, staged: &Staged, in_batch: &HashSet<&str>) -> Result<Option<u64>, ()> {
        match staged.head_expected {
            HeadExpected::Revision(revision) => Ok(Some(revision)),
            // Covered by the compare-and-set of the earlier change set in the same batch.
            HeadExpected::AfterPrevious if in_batch.contains(staged.head.0.as_str()) => Ok(None),
            HeadExpected::AfterPrevious => match self.0.get(&staged.head.0) {
                Some((Some(revision), _)) => Ok(Some(*revision)),
                _ => Err(()),
            },
        }
    }
}

async fn run(
    mut jobs: mpsc::Receiver<Job>,
    client: async_nats::Client,
    js: jetstream::Context,
    replicated: bool,
) {
    let mut carried: Option<Job> = None;
    let mut heads = Heads::default();
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut size = first.0.len();
        let mut group = vec![first];
        // Whatever queued up while the previous batch was in flight joins this one.
        while let Ok(job) = jobs.try_recv() {
            if size + job.0.len() > MAX_BATCH_MESSAGES {
                carried = Some(job);
                break;
            }
            size += job.0.len();
            group.push(job);
        }
        metrics::histogram!("mycosynth_validator_commit_group_size").record(group.len() as f64);
        let (staged, replies): (Vec<Staged>, Vec<_>) = group.into_iter().unzip();
        let results = if heads_apart(&staged) {
            commit_heads_first(&client, &js, &mut heads, &staged, replicated).await
        } else {
            commit_splitting(&client, &js, &mut heads, &staged).await
        };
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// Each change set's outcome, in order (boxed: the split recurses).
type Splitting<'a> = Pin<Box<dyn Future<Output = Vec<Result<u64, StoreError>>> + Send + 'a>>;

/// Commits `group`; when it fails on a compare-and-set, commits its halves (in order, so a
/// change set chained on one in the first half sees its outcome), down to single change sets:
/// one stale change set costs about 2·log2(n) batches, not n.
fn commit_splitting<'a>(
    client: &'a async_nats::Client,
    js: &'a jetstream::Context,
    heads: &'a mut Heads,
    group: &'a [Staged],
) -> Splitting<'a> {
    Box::pin(async move {
        match commit_group(client, js, heads, group).await {
            Ok(revisions) => revisions.into_iter().map(Ok).collect(),
            Err(StoreError::Conflict) if group.len() > 1 => {
                metrics::counter!("mycosynth_validator_commit_group_splits_total").increment(1);
                let (first, second) = group.split_at(group.len() / 2);
                let mut results = commit_splitting(client, js, heads, first).await;
                results.extend(commit_splitting(client, js, heads, second).await);
                results
            }
            Err(err) => vec![Err(err); group.len()],
        }
    })
}

/// Commits `group` as one batch, remembers its heads, publishes its events; returns each change
/// set's head revision. A change set that follows a failed one fails the group with `Conflict`.
async fn commit_group(
    client: &async_nats::Client,
    js: &jetstream::Context,
    heads: &mut Heads,
    group: &[Staged],
) -> Result<Vec<u64>, StoreError> {
    let mut in_batch = HashSet::new();
    let mut expected = Vec::with_capacity(group.len());
    for staged in group {
        match heads.expected(staged, &in_batch) {
            Ok(cas) => expected.push(cas),
            // Its predecessor's failure is already recorded.
            Err(()) => return Err(StoreError::Conflict),
        }
        in_batch.insert(staged.head.0.as_str());
    }
    match publish_batch(client, js, group, &expected).await {
        Ok(revisions) => {
            for (staged, revision) in group.iter().zip(&revisions) {
                heads.record(&staged.head.0, Some(*revision));
                if let Some((subject, event)) = &staged.event {
                    // A lost event is repaired by subscribers (gap or anti-entropy resync), so
                    // a failure here does not undo the commit.
                    if let Err(err) = client.publish(subject.clone(), event.clone()).await {
                        tracing::warn!(error = %err, subject, "could not publish the change event");
                    }
                }
            }
            Ok(revisions)
        }
        Err(err) => {
            for staged in group {
                heads.record(&staged.head.0, None);
            }
            Err(err)
        }
    }
}

/// Publishes the change sets as one atomic batch; returns each one's head revision.
async fn publish_batch(
    client: &async_nats::Client,
    js: &jetstream::Context,
    group: &[Staged],
    head_expected: &[Option<u64>],
) -> Result<Vec<u64>, StoreError> {
    let mut batch = Vec::with_capacity(group.iter().map(Staged::len).sum());
    // Position (0-based) of each change set's head in the batch.
    let mut heads = Vec::with_capacity(group.len());
    for (staged, head_cas) in group.iter().zip(head_expected) {
        batch.extend(staged.messages.iter().map(Message::clone));
        heads.push(batch.len());
        batch.push(Message {
            subject: staged.head.0.clone(),
            payload: staged.head.1.clone(),
            deleted: false,
            expected_last_subject_sequence: *head_cas,
        });
    }
    let ack = publish_atomic(client, js, &batch, own_conditions)
        .await?
        .map_err(|e| store_error(&e))?;
    // A batch is stored as one contiguous run ending at the acknowledged sequence.
    let first = (ack.sequence + 1).saturating_sub(batch.len() as u64);
    Ok(heads.into_iter().map(|h| first + h as u64).collect())
}

/// A message's own headers: the KV delete marker and its compare-and-set.
fn own_conditions(message: &Message) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if message.deleted {
        headers.insert("KV-Operation", "DEL");
    }
    if let Some(expected) = message.expected_last_subject_sequence {
        headers.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
    }
    headers
}

/// Publishes `messages` as one JetStream atomic batch, each with the headers `headers` gives.
/// The outer error: it could not be sent; the inner: JetStream's answer to the commit.
async fn publish_atomic(
    client: &async_nats::Client,
    js: &jetstream::Context,
    messages: &[Message],
    headers: impl Fn(&Message) -> HeaderMap,
) -> Result<Result<jetstream::publish::PublishAck, jetstream::context::PublishError>, StoreError> {
    let batch_id = nuid::next().to_string();
    let Some((last, rest)) = messages.split_last() else {
        return Err(StoreError::Refused("empty commit".into()));
    };
    let numbered = |message: &Message, sequence: usize| {
        let mut headers = headers(message);
        headers.insert(header::NATS_BATCH_ID, batch_id.as_str());
        headers.insert(header::NATS_BATCH_SEQUENCE, sequence.to_string().as_str());
        headers
    };
    for (i, message) in rest.iter().enumerate() {
        client
            .publish_with_headers(
                message.subject.clone(),
                numbered(message, i + 1),
                message.payload.clone(),
            )
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    }
    let mut commit = numbered(last, messages.len());
    commit.insert(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
    let ack = js
        .publish_with_headers(last.subject.clone(), commit, last.payload.clone())
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(ack.await)
}

/// Whether every change set of `group` has a head of its own: then each can be committed by its
/// head alone. Two versions of one head in a group need the batch (the second's
/// compare-and-set is on the first, whose revision is not known before its ack).
fn heads_apart(group: &[Staged]) -> bool {
    let mut seen = HashSet::with_capacity(group.len());
    group
        .iter()
        .all(|staged| seen.insert(staged.head.0.as_str()))
}

/// Commits each change set of `group` by its head alone, the head carrying the change set: one
/// put with a compare-and-set, about a tenth of an atomic batch's cost on a single node. The
/// heads of the group are in flight together. Then the change events go out, and then the
/// materialisation (history, idempotency record, values), conditional on each head still being
/// the one just written. The committer takes the next group only after that, so a version is
/// always materialised before the next one of its head is committed (by this validator; another
/// one completes it first, see `Store::complete`).
async fn commit_heads_first(
    client: &async_nats::Client,
    js: &jetstream::Context,
    heads: &mut Heads,
    group: &[Staged],
    replicated: bool,
) -> Vec<Result<u64, StoreError>> {
    metrics::counter!("mycosynth_validator_head_commits_total").increment(group.len() as u64);
    let none = HashSet::new();
    let mut pending = Vec::with_capacity(group.len());
    for staged in group {
        let Ok(expected) = heads.expected(staged, &none) else {
            pending.push(None);
            continue;
        };
        let mut headers = HeaderMap::new();
        if let Some(expected) = expected {
            headers.insert(
                header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string().as_str(),
            );
        }
        if let Some(id) = &staged.dedup_id {
            headers.insert(header::NATS_MESSAGE_ID, id.as_str());
        }
        let (subject, payload) = staged.head.clone();
        pending.push(Some(
            js.publish_with_headers(subject, headers, payload).await,
        ));
    }
    let mut results = Vec::with_capacity(group.len());
    for (staged, sent) in group.iter().zip(pending) {
        let result = match sent {
            // It follows a change set that failed.
            None => Err(StoreError::Conflict),
            Some(Err(err)) => Err(StoreError::Unavailable(err.to_string())),
            Some(Ok(ack)) => match ack.await {
                // A retry of a request whose head is stored: not stored twice.
                Ok(ack) if ack.duplicate => Err(StoreError::Conflict),
                Ok(ack) => Ok(ack.sequence),
                Err(err) => Err(store_error(&err)),
            },
        };
        heads.record(&staged.head.0, result.as_ref().ok().copied());
        if let (Ok(_), Some((subject, event))) = (&result, &staged.event) {
            // A lost event is repaired by subscribers (gap or anti-entropy resync), so a failure
            // here does not undo the commit.
            if let Err(err) = client.publish(subject.clone(), event.clone()).await {
                tracing::warn!(error = %err, subject, "could not publish the change event");
            }
        }
        results.push(result);
    }
    // The events leave in a write of their own: queued with the materialisation behind them,
    // the server would read and hand on both before flushing the events to subscribers (about
    // 25 µs of propagation, examples/stages). Bounded, and its failure ignored: with the
    // connection in trouble, the materialisation below reports it.
    let _ = tokio::time::timeout(EVENT_FLUSH_TIMEOUT, client.flush()).await;
    for (staged, result) in group.iter().zip(results.iter_mut()) {
        let Ok(revision) = *result else { continue };
        if let Err(err) = materialise(
            client,
            js,
            &staged.head.0,
            revision,
            &staged.messages,
            replicated,
        )
        .await
        {
            // Committed but not materialised: whoever commits next on this head must complete
            // it first. Answer "unavailable" (a retry with the idempotency key is replayed) and
            // forget the revision, so nothing is chained on it.
            tracing::warn!(error = %err, head = staged.head.0, "committed, but could not materialise");
            heads.record(&staged.head.0, None);
            *result = Err(err);
        }
    }
    results
}

/// Writes a committed head's materialisation (`messages`, in order), each conditional on the
/// head being at `head_revision`. A message refused because the head moved on is fine: whoever
/// moved it completed this version first.
///
/// On a single node the messages are pipelined. A replicated stream refuses a second message
/// conditional on a subject while the first is still being replicated ("wrong last sequence"
/// without a number), so there they go as one atomic batch, which a replicated stream stages in
/// memory and checks the condition once for.
pub async fn materialise(
    client: &async_nats::Client,
    js: &jetstream::Context,
    head_subject: &str,
    head_revision: u64,
    messages: &[Message],
    replicated: bool,
) -> Result<(), StoreError> {
    let conditional = |message: &Message| {
        // Its own compare-and-set (an idempotency record's "must not exist") gives way to the
        // head's: a completed head's records are written whatever they were.
        let mut headers = own_conditions(&Message {
            expected_last_subject_sequence: None,
            ..message.clone()
        });
        headers.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            head_revision.to_string().as_str(),
        );
        headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT, head_subject);
        headers
    };
    if replicated && messages.len() > 1 {
        return settle(|| publish_atomic(client, js, messages, conditional)).await;
    }
    let mut acks = Vec::with_capacity(messages.len());
    for message in messages {
        let ack = js
            .publish_with_headers(
                message.subject.clone(),
                conditional(message),
                message.payload.clone(),
            )
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        acks.push((message, ack));
    }
    let mut retry = Vec::new();
    for (message, ack) in acks {
        match ack.await {
            Ok(_) => {}
            Err(err) if is_moved_on(&err) => {}
            Err(err) if is_in_process(&err) => retry.push(message),
            Err(err) => return Err(store_error(&err)),
        }
    }
    // Refused only because an earlier one was still in process: one at a time.
    for message in retry {
        settle(|| async {
            Ok(js
                .publish_with_headers(
                    message.subject.clone(),
                    conditional(message),
                    message.payload.clone(),
                )
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
                .await)
        })
        .await?;
    }
    Ok(())
}

/// Sends (each time `send` is called) until JetStream stores it or answers that the head moved
/// on (both fine), trying again while a replicated stream answers "in process".
async fn settle<F, Sent>(mut send: F) -> Result<(), StoreError>
where
    F: FnMut() -> Sent,
    Sent: Future<
        Output = Result<
            Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
            StoreError,
        >,
    >,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match send().await? {
            Ok(_) => return Ok(()),
            Err(err) if is_moved_on(&err) => return Ok(()),
            Err(err) if is_in_process(&err) && attempt < MATERIALISE_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(err) => return Err(store_error(&err)),
        }
    }
}

/// How often a materialisation message refused as "in process" is tried again.
const MATERIALISE_ATTEMPTS: u32 = 50;
/// How long the committer waits for the change events to be written out before materialising.
const EVENT_FLUSH_TIMEOUT: Duration = Duration::from_millis(100);

/// The compare-and-set of a message on another subject's last sequence (here: the head's).
const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// JetStream's "wrong last sequence" without the sequence in its text, which a clustered stream
/// answers (async-nats only names 10071).
const WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;

/// A compare-and-set that failed, in either of JetStream's two spellings.
fn wrong_last_sequence(err: &jetstream::context::PublishError) -> bool {
    is_moved_on(err) || is_in_process(err)
}

/// The compared subject's last sequence is another one (the number is in the error).
fn is_moved_on(err: &jetstream::context::PublishError) -> bool {
    err.kind() == PublishErrorKind::WrongLastSequence
}

/// A replicated stream cannot tell yet: a message conditional on the same subject is still being
/// replicated (or the subject was already written in the same batch).
fn is_in_process(err: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code().0 == WRONG_LAST_SEQUENCE_CONSTANT)
}

fn store_error(err: &jetstream::context::PublishError) -> StoreError {
    if wrong_last_sequence(err) {
        return StoreError::Conflict;
    }
    match err.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound => StoreError::Unavailable(err.to_string()),
        _ => StoreError::Refused(err.to_string()),
    }
}
