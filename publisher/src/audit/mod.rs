//! The audit log: every request the validator handles, accepted or refused, appended as one
//! hash-chained [`AuditRecord`] to the JetStream stream [`AUDIT_STREAM`].
//!
//! Several validator instances append to one chain. Each append names the sequence it extends
//! (`Nats-Expected-Last-Sequence`; records after the first of a pipelined group also the
//! previous record's hash as `Nats-Expected-Last-Msg-Id`); an instance that lost the race reads
//! the new last record and tries again, so the chain stays a single line. The stream denies deletes and purges;
//! what the server admin can still do (lift that, delete or forge records) is caught by
//! [`chain::verify`].

pub mod chain;
pub mod entry;

use std::time::Duration;

use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::{
    self,
    consumer::{pull::OrderedConfig, DeliverPolicy},
    context::PublishErrorKind,
    stream,
};
use bytes::Bytes;
use futures::StreamExt;
use mycosynth_subscriber::wire::{
    audit_subject, ApiError, AuditOutcome, AuditRecord, AuditRequest, AuditVerifyOutcome,
    ErrorKind, AUDIT_STREAM, AUDIT_SUBJECTS, GENESIS_HASH,
};
use tokio::sync::{oneshot, Mutex as AsyncMutex};

/// Why the audit log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// JetStream did not answer or refused.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// A query was malformed (e.g. an unreadable `since`).
    #[error("{0}")]
    BadQuery(String),
}

/// How long an append keeps retrying after other instances appended first (an instance whose
/// peer appends in a tight loop can lose several races in a row).
const APPEND_BUDGET: Duration = Duration::from_secs(10);
/// How long reading the whole log may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an append waits for JetStream's acknowledgement: like a commit, a failing-over
/// stream must not hold the reply of every request for long.
const APPEND_ACK_TIMEOUT: Duration = Duration::from_millis(1500);

/// The JetStream context the audit log uses (short acks).
pub fn context(client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .ack_timeout(APPEND_ACK_TIMEOUT)
        .build(client.clone())
}

/// The end of the chain as this instance last saw it.
#[derive(Debug, Clone)]
struct Tip {
    seq: u64,
    hash: String,
}

/// Appends to and reads the audit stream.
#[derive(Debug)]
pub struct Auditor {
    js: jetstream::Context,
    /// Serializes this instance's appends; `None` until read from the stream.
    tip: AsyncMutex<Option<Tip>>,
    /// Records waiting for the tip; whoever holds it next appends them all.
    queue: std::sync::Mutex<Vec<Waiting>>,
    /// The stream has more than one replica: a group is appended as one atomic batch (staged in
    /// memory there). On one node a batch is staged in a temporary file store (milliseconds),
    /// so a group is pipelined instead, each record chained on the previous one by the server
    /// (see [`Auditor::publish_chained`]).
    replicated: bool,
}

/// A record waiting to be appended, and where its sequence goes.
type Waiting = (AuditRecord, oneshot::Sender<Result<u64, AuditError>>);

impl Auditor {
    /// Opens the audit stream, creating it (file storage, deletes and purges denied) on first use.
    pub async fn open(js: jetstream::Context, replicas: usize) -> Result<Auditor, AuditError> {
        let mut stream = js
            .get_or_create_stream(stream::Config {
                name: AUDIT_STREAM.to_owned(),
                description: Some(
                    "Mycosynth audit log: one hash-chained record per request".into(),
                ),
                subjects: vec![AUDIT_SUBJECTS.to_owned()],
                storage: stream::StorageType::File,
                num_replicas: replicas.max(1),
                deny_delete: true,
                deny_purge: true,
                allow_direct: true,
                // Records waiting together are appended as one atomic batch (see `append`).
                allow_atomic_publish: true,
                // Records carry their hash as message id only to chain pipelined appends (the
                // server checks the previous message's id); nothing needs deduplication.
                duplicate_window: Duration::from_secs(1),
                ..Default::default()
            })
            .await
            .map_err(|e| AuditError::Unavailable(format!("stream {AUDIT_STREAM}: {e}")))?;
        let replicated = stream
            .info()
            .await
            .map_err(|e| AuditError::Unavailable(format!("stream {AUDIT_STREAM}: {e}")))?
            .config
            .num_replicas
            > 1;
        Ok(Auditor {
            js,
            tip: AsyncMutex::new(None),
            queue: std::sync::Mutex::new(Vec::new()),
            replicated,
        })
    }

    /// Seals `record` (sequence, previous hash, hash) onto the end of the chain and stores it.
    /// Returns its sequence.
    ///
    /// Records that arrive while another append is in flight wait in a queue; the next holder
    /// of the tip appends all of them as one atomic batch (chained in queue order, the first
    /// one conditional on the stream's last sequence), so concurrent requests share one
    /// round trip instead of queueing for one each.
    pub async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let (sender, answer) = oneshot::channel();
        self.lock_queue().push((record, sender));
        {
            let mut tip = self.tip.lock().await;
            let group = std::mem::take(&mut *self.lock_queue());
            if !group.is_empty() {
                metrics::histogram!("mycosynth_audit_append_group_size").record(group.len() as f64);
            }
            match group.len() {
                0 => {} // an earlier holder appended ours
                1 => {
                    for (record, sender) in group {
                        let _ = sender.send(self.append_one(&mut tip, record).await);
                    }
                }
                _ => self.append_group(&mut tip, group).await,
            }
        }
        answer
            .await
            .map_err(|_| AuditError::Unavailable("the audit append was dropped".into()))?
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `group` as one atomic batch; on a lost race re-reads the tip and tries again; if
    /// the stream refuses batches (created before they were enabled), one record at a time.
    async fn append_group(&self, tip: &mut Option<Tip>, group: Vec<Waiting>) {
        let deadline = tokio::time::Instant::now() + APPEND_BUDGET;
        let (mut records, mut senders): (Vec<AuditRecord>, Vec<_>) = group.into_iter().unzip();
        let result = loop {
            if tokio::time::Instant::now() >= deadline {
                break Err(AuditError::Unavailable(
                    "the audit log is being appended to too fast; gave up".into(),
                ));
            }
            let current = match tip.take() {
                Some(current) => current,
                None => match self.read_tip().await {
                    Ok(current) => current,
                    Err(err) => break Err(err),
                },
            };
            let mut last = current.clone();
            for record in records.iter_mut() {
                record.seq = last.seq + 1;
                record.prev_hash = last.hash.clone();
                record.hash = record.compute_hash();
                last = Tip {
                    seq: record.seq,
                    hash: record.hash.clone(),
                };
            }
            let published = if self.replicated {
                self.publish_batch(&records, current.seq).await
            } else {
                match self.publish_chained(&records, current.seq).await {
                    Ok(stored) if stored < records.len() => {
                        // The first `stored` are in the chain; the rest lost a race and are
                        // chained again on whatever is last now.
                        metrics::counter!("mycosynth_audit_append_races_total").increment(1);
                        let done: Vec<AuditRecord> = records.drain(..stored).collect();
                        for (record, sender) in done.into_iter().zip(senders.drain(..stored)) {
                            metrics::counter!("mycosynth_audit_records_total", "outcome" => record.outcome)
                                .increment(1);
                            let _ = sender.send(Ok(record.seq));
                        }
                        continue;
                    }
                    Ok(_) => Ok(last.seq),
                    Err(err) => Err(err),
                }
            };
            match published {
                Ok(acked) if acked == last.seq => {
                    *tip = Some(last);
                    for record in &records {
                        metrics::counter!("mycosynth_audit_records_total", "outcome" => record.outcome.clone())
                            .increment(1);
                    }
                    break Ok(());
                }
                // Stored, but not where we chained it: the next append re-reads the tip.
                Ok(_) => break Ok(()),
                Err(Some(PublishErrorKind::WrongLastSequence)) => {
                    metrics::counter!("mycosynth_audit_append_races_total").increment(1);
                }
                Err(_) => {
                    // Not a race: append them one by one, each with its own answer.
                    *tip = Some(current);
                    for (record, sender) in records.into_iter().zip(senders) {
                        let _ = sender.send(self.append_one(tip, record).await);
                    }
                    return;
                }
            }
        };
        for (record, sender) in records.iter().zip(senders) {
            let _ = sender.send(match &result {
                Ok(()) => Ok(record.seq),
                Err(err) => Err(AuditError::Unavailable(err.to_string())),
            });
        }
    }

    /// Publishes `records` as one atomic batch, the first conditional on the stream's last
    /// sequence being `after`. Returns the acknowledged (last) sequence.
    async fn publish_batch(
        &self,
        records: &[AuditRecord],
        after: u64,
    ) -> Result<u64, Option<PublishErrorKind>> {
        let client = self.js.client();
        let batch_id = nuid::next().to_string();
        for (index, record) in records.iter().enumerate() {
            let payload: Bytes = serde_json::to_vec(record).map_err(|_| None)?.into();
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_BATCH_ID, batch_id.as_str());
            headers.insert(
                header::NATS_BATCH_SEQUENCE,
                (index + 1).to_string().as_str(),
            );
            if index == 0 {
                headers.insert(
                    header::NATS_EXPECTED_LAST_SEQUENCE,
                    after.to_string().as_str(),
                );
            }
            let subject = audit_subject(&record.action);
            if index + 1 < records.len() {
                client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|_| None)?;
                continue;
            }
            headers.insert(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
            let ack = self
                .js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| Some(e.kind()))?
                .await
                .map_err(|e| Some(e.kind()))?;
            return Ok(ack.sequence);
        }
        Err(None)
    }

    /// Publishes `records` one after the other without waiting (one node: the server handles
    /// them in order), each carrying its hash as message id. The first is conditional on the
    /// stream's last sequence being `after`, each next one also on the last message id being
    /// the previous record's hash: if another instance's record slips in between, every record
    /// after it is refused, never stored on a broken link. Returns how many were stored (a
    /// prefix); `Err` when one failed for another reason than a lost race.
    async fn publish_chained(
        &self,
        records: &[AuditRecord],
        after: u64,
    ) -> Result<usize, Option<PublishErrorKind>> {
        let mut acks = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let payload: Bytes = serde_json::to_vec(record).map_err(|_| None)?.into();
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_MESSAGE_ID, record.hash.as_str());
            headers.insert(
                header::NATS_EXPECTED_LAST_SEQUENCE,
                (after + index as u64).to_string().as_str(),
            );
            if let Some(previous) = index.checked_sub(1).and_then(|i| records.get(i)) {
                headers.insert(
                    header::NATS_EXPECTED_LAST_MESSAGE_ID,
                    previous.hash.as_str(),
                );
            }
            let ack = self
                .js
                .publish_with_headers(audit_subject(&record.action), headers, payload)
                .await
                .map_err(|e| Some(e.kind()))?;
            acks.push(ack);
        }
        let mut stored = 0;
        let mut failure = None;
        for ack in acks {
            match ack.await {
                Ok(ack) if failure.is_none() && !ack.duplicate => stored += 1,
                Ok(_) => {}
                Err(err) => {
                    failure.get_or_insert(err.kind());
                }
            }
        }
        match failure {
            None => Ok(stored),
            Some(PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId) => {
                Ok(stored)
            }
            // Unknown whether it was stored (a lost ack): the chain's last record says how far
            // ours got.
            Some(kind) => match self.read_tip().await {
                Ok(tip) => records
                    .iter()
                    .position(|r| r.hash == tip.hash)
                    .map(|last| last + 1)
                    .filter(|&n| n > stored)
                    .ok_or(Some(kind)),
                Err(_) => Err(Some(kind)),
            },
        }
    }

    /// Appends one record, conditional on the stream's last sequence; retries lost races.
    async fn append_one(
        &self,
        tip: &mut Option<Tip>,
        mut record: AuditRecord,
    ) -> Result<u64, AuditError> {
        let deadline = tokio::time::Instant::now() + APPEND_BUDGET;
        while tokio::time::Instant::now() < deadline {
            let current = match tip.take() {
                Some(current) => current,
                None => self.read_tip().await?,
            };
            record.seq = current.seq + 1;
            record.prev_hash = current.hash.clone();
            record.hash = record.compute_hash();
            let payload = serde_json::to_vec(&record)
                .map_err(|e| AuditError::Unavailable(format!("encoding a record: {e}")))?;
            let mut headers = HeaderMap::new();
            headers.insert(
                header::NATS_EXPECTED_LAST_SEQUENCE,
                current.seq.to_string().as_str(),
            );
            let sent = self
                .js
                .publish_with_headers(audit_subject(&record.action), headers, payload.into())
                .await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(err) => Err(err),
            };
            match acked {
                Ok(ack) => {
                    *tip = Some(Tip {
                        seq: ack.sequence,
                        hash: record.hash,
                    });
                    metrics::counter!("mycosynth_audit_records_total", "outcome" => record.outcome)
                        .increment(1);
                    return Ok(ack.sequence);
                }
                Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {
                    // Another instance appended first: read its record and link to it.
                    metrics::counter!("mycosynth_audit_append_races_total").increment(1);
                    continue;
                }
                Err(err) => return Err(AuditError::Unavailable(err.to_string())),
            }
        }
        Err(AuditError::Unavailable(
            "the audit log is being appended to too fast; gave up".into(),
        ))
    }

    /// The last record of the stream (walking back over removed ones).
    async fn read_tip(&self) -> Result<Tip, AuditError> {
        let mut stream = self.stream().await?;
        let info = stream
            .info()
            .await
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut seq = last;
        while seq >= first.max(1) {
            if let Ok(message) = stream.get_raw_message(seq).await {
                let hash = serde_json::from_slice::<AuditRecord>(&message.payload)
                    .map(|r| r.hash)
                    // An unreadable last record: link to nothing; `audit verify` reports it.
                    .unwrap_or_default();
                return Ok(Tip { seq: last, hash });
            }
            seq -= 1;
        }
        Ok(Tip {
            seq: last,
            hash: if last == 0 {
                GENESIS_HASH.to_owned()
            } else {
                String::new()
            },
        })
    }

    async fn stream(&self) -> Result<stream::Stream, AuditError> {
        self.js
            .get_stream(AUDIT_STREAM)
            .await
            .map_err(|e| AuditError::Unavailable(format!("stream {AUDIT_STREAM}: {e}")))
    }

    /// Every stored message (sequence, payload) from `policy` on, and the stream's last sequence.
    async fn read(&self, policy: DeliverPolicy) -> Result<(Vec<(u64, Bytes)>, u64), AuditError> {
        tokio::time::timeout(READ_TIMEOUT, self.read_inner(policy))
            .await
            .map_err(|_| AuditError::Unavailable("reading the audit log timed out".into()))?
    }

    async fn read_inner(
        &self,
        policy: DeliverPolicy,
    ) -> Result<(Vec<(u64, Bytes)>, u64), AuditError> {
        let unavailable = |e: String| AuditError::Unavailable(e);
        let mut stream = self.stream().await?;
        let last_seq = stream
            .info()
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .state
            .last_sequence;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: policy,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let name = consumer.cached_info().name.clone();
        let mut remaining = consumer.cached_info().num_pending;
        let mut out = Vec::new();
        if remaining > 0 {
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| unavailable(e.to_string()))?;
                let info = message.info().map_err(|e| unavailable(e.to_string()))?;
                remaining = info.pending;
                let seq = info.stream_sequence;
                if seq > last_seq {
                    break;
                }
                out.push((seq, message.payload.clone()));
                if remaining == 0 || seq == last_seq {
                    break;
                }
            }
        }
        let _ = stream.delete_consumer(&name).await;
        Ok((out, last_seq))
    }

    /// The records matching `request`, oldest first (unreadable records are skipped: `audit
    /// verify` reports them).
    pub async fn query(&self, request: &AuditRequest) -> Result<AuditOutcome, AuditError> {
        let since_us = match &request.since {
            Some(text) => Some(parse_time_us(text)?),
            None => None,
        };
        let policy = match since_us {
            Some(us) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
                    .map_err(|e| AuditError::BadQuery(format!("since: {e}")))?,
            },
            None => DeliverPolicy::All,
        };
        let (messages, _) = self.read(policy).await?;
        let keep =
            |wanted: &Option<String>, actual: &str| wanted.as_deref().is_none_or(|w| w == actual);
        let mut records: Vec<AuditRecord> = messages
            .iter()
            .filter_map(|(_, payload)| serde_json::from_slice::<AuditRecord>(payload).ok())
            .filter(|r| {
                keep(&request.namespace, &r.namespace)
                    && keep(&request.environment, &r.environment)
                    && keep(&request.identity, &r.identity)
                    && since_us.is_none_or(|since| r.time_us >= since)
            })
            .collect();
        if let Some(limit) = request.limit {
            let skip = records.len().saturating_sub(limit);
            records.drain(..skip);
        }
        Ok(AuditOutcome { records })
    }

    /// Checks the whole chain.
    pub async fn verify(&self) -> Result<AuditVerifyOutcome, AuditError> {
        let (messages, last_seq) = self.read(DeliverPolicy::All).await?;
        let problems = chain::verify(&messages, last_seq);
        if !problems.is_empty() {
            metrics::counter!("mycosynth_audit_chain_breaks_total")
                .increment(problems.len() as u64);
            tracing::error!(first_bad_seq = problems[0].seq, problem = %problems[0].message, "audit chain broken");
        }
        Ok(AuditVerifyOutcome {
            records: messages.len() as u64,
            last_seq,
            problems,
        })
    }
}

/// Parses an RFC 3339 instant into microseconds since the Unix epoch.
pub fn parse_time_us(text: &str) -> Result<i64, AuditError> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            AuditError::BadQuery(format!("since {text:?} is not an RFC 3339 time: {e}"))
        })?;
    i64::try_from(at.unix_timestamp_nanos() / 1000)
        .map_err(|_| AuditError::BadQuery(format!("since {text:?} is out of range")))
}

impl Auditor {
    /// Answers the `audit` endpoint.
    pub async fn answer_query(&self, request: &AuditRequest) -> Result<AuditOutcome, ApiError> {
        self.query(request).await.map_err(to_api)
    }

    /// Answers the `audit-verify` endpoint.
    pub async fn answer_verify(&self) -> Result<AuditVerifyOutcome, ApiError> {
        self.verify().await.map_err(to_api)
    }
}

fn to_api(err: AuditError) -> ApiError {
    let kind = match err {
        AuditError::Unavailable(_) => ErrorKind::Unavailable,
        AuditError::BadQuery(_) => ErrorKind::BadRequest,
    };
    ApiError {
        kind,
        message: err.to_string(),
        violations: Vec::new(),
        current_version: None,
    }
}
