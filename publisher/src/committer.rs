//! Group commit. Change sets that are ready at the same time are written as ONE JetStream atomic
//! batch: the server's cost of a batch (staging it, then applying it under the stream's lock) is
//! paid once for the group instead of once per change set.
//!
//! - Different namespaces/environments: each change set in a group keeps its own
//!   compare-and-set on its head (and on its idempotency record), so a group is all-or-nothing
//!   like a single change set.
//! - One namespace/environment: the validator may stage version v+1 while v is still in flight
//!   ([`HeadExpected::AfterPrevious`]). The committer then writes v+1 in the same batch as v
//!   (whose compare-and-set covers both), or in the next batch with the head revision v's
//!   acknowledgement gave; if v failed, v+1 fails too, and the validator reloads and retries.
//!
//! When a group fails on a compare-and-set, nobody can tell from the error whose it was: its
//! halves are committed again, down to single change sets, each getting its own answer. Change events are
//! published here, right after the acknowledgement and in commit order, so subscribers receive
//! versions in order even when several commits of one namespace are in flight. A lone change set
//! is committed at once: grouping never adds waiting, it only uses the time a batch is in flight.
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

use crate::store::StoreError;

/// JetStream's limit on messages in one atomic batch.
pub const MAX_BATCH_MESSAGES: usize = 1000;
/// How long the committer remembers a head's last revision for change sets staged after it.
const HEAD_MEMORY: Duration = Duration::from_secs(60);

/// One message of a staged change set.
#[derive(Debug)]
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
}

impl Committer {
    /// Starts the committer task on the current runtime.
    pub fn start(client: async_nats::Client, js: jetstream::Context) -> Committer {
        let (jobs, rx) = mpsc::channel(4096);
        tokio::spawn(run(rx, client, js));
        Committer { jobs }
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

async fn run(mut jobs: mpsc::Receiver<Job>, client: async_nats::Client, js: jetstream::Context) {
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
        let results = commit_splitting(&client, &js, &mut heads, &staged).await;
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
    let batch_id = nuid::next().to_string();
    let total: usize = group.iter().map(Staged::len).sum();
    // Batch sequence (1-based) of each change set's head.
    let mut heads = Vec::with_capacity(group.len());
    let mut sequence = 0usize;
    for (staged, head_cas) in group.iter().zip(head_expected) {
        let head = Message {
            subject: staged.head.0.clone(),
            payload: staged.head.1.clone(),
            deleted: false,
            expected_last_subject_sequence: *head_cas,
        };
        for message in staged.messages.iter().chain(std::iter::once(&head)) {
            sequence += 1;
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_BATCH_ID, batch_id.as_str());
            headers.insert(header::NATS_BATCH_SEQUENCE, sequence.to_string().as_str());
            if message.deleted {
                headers.insert("KV-Operation", "DEL");
            }
            if let Some(expected) = message.expected_last_subject_sequence {
                headers.insert(
                    header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    expected.to_string().as_str(),
                );
            }
            let (subject, payload) = (message.subject.clone(), message.payload.clone());
            if sequence < total {
                client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                continue;
            }
            headers.insert(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
            let ack = js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
                .await
                .map_err(|e| match e.kind() {
                    PublishErrorKind::WrongLastSequence => StoreError::Conflict,
                    PublishErrorKind::TimedOut
                    | PublishErrorKind::BrokenPipe
                    | PublishErrorKind::StreamNotFound => StoreError::Unavailable(e.to_string()),
                    _ => StoreError::Refused(e.to_string()),
                })?;
            heads.push(sequence);
            // A batch is stored as one contiguous run ending at the acknowledged sequence.
            let first = (ack.sequence + 1).saturating_sub(total as u64);
            return Ok(heads.into_iter().map(|h| first + h as u64 - 1).collect());
        }
        heads.push(sequence);
    }
    Err(StoreError::Refused("empty commit".into()))
}
