//! Canaries (docs/rollouts.md): this instance's part in a rollout of its namespace/environment.
//! A task follows the rollout record (read at start and every few seconds, and the notice of
//! every write in between); while this instance is in the cohort it serves stable + candidate
//! as one [`Snapshot`], built aside and swapped in whole, rebuilt when stable moves on, and
//! dropped at once when the rollout ends. Reads check one flag first, so an instance outside
//! every rollout pays a relaxed atomic load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_nats::jetstream;
use futures::StreamExt;
use tokio::sync::watch;

use crate::reporter::ReportState;
use crate::snapshot::Snapshot;
use crate::updater::Shared;
use crate::wire::{rollout_key, rollout_notice_subject, RolloutHold, RolloutRecord, CONFIG_BUCKET};

/// A health signal's current value.
pub(crate) type Signal = Arc<dyn Fn() -> f64 + Send + Sync>;
/// A service's own check of a candidate before serving it.
pub(crate) type CandidateCheck = Arc<dyn Fn(&Snapshot) -> Result<(), String> + Send + Sync>;

/// How often the record is read again (a notice missed during a reconnect is caught up).
const REREAD: Duration = Duration::from_secs(2);

/// This instance's identity in rollouts, and the candidate it serves.
pub(crate) struct Canary {
    /// Stable instance id: seeds cohort membership.
    pub instance_id: String,
    /// Matched by a rollout's `--target`.
    pub labels: BTreeMap<String, String>,
    /// Set while `candidate` holds a snapshot: the one thing a read checks.
    pub serving: AtomicBool,
    /// Stable + candidate, while a member.
    pub candidate: ArcSwapOption<Snapshot>,
    /// Registered health signals, reported in every receipt.
    pub signals: Mutex<Vec<(String, Signal)>>,
    /// The service's own check of a candidate.
    pub check: Mutex<Option<CandidateCheck>>,
    /// What the receipts say about the rollout.
    pub hold: Mutex<Option<RolloutHold>>,
}

impl Canary {
    pub fn new(instance_id: String, labels: BTreeMap<String, String>) -> Canary {
        Canary {
            instance_id,
            labels,
            serving: AtomicBool::new(false),
            candidate: ArcSwapOption::empty(),
            signals: Mutex::default(),
            check: Mutex::default(),
            hold: Mutex::default(),
        }
    }

    /// The current value of every signal (non-finite values are left out).
    pub fn health(&self) -> BTreeMap<String, f64> {
        let signals: Vec<(String, Signal)> = lock(&self.signals).clone();
        signals
            .into_iter()
            .map(|(name, signal)| (name, signal()))
            .filter(|(_, v)| v.is_finite())
            .collect()
    }

    pub fn hold(&self) -> Option<RolloutHold> {
        lock(&self.hold).clone()
    }

    fn serve(&self, candidate: Option<Arc<Snapshot>>) {
        self.serving.store(candidate.is_some(), Ordering::Release);
        self.candidate.store(candidate);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stable + the candidate's changes, at stable's version.
fn overlay(stable: &Snapshot, record: &RolloutRecord) -> Snapshot {
    let mut values = stable.values().clone();
    for change in &record.changes {
        match &change.value {
            Some(value) => {
                values.insert(Arc::from(change.key.as_str()), Arc::new(value.clone()));
            }
            None => {
                values.remove(change.key.as_str());
            }
        }
    }
    Snapshot::new(
        stable.version(),
        values,
        stable.defaults().clone(),
        stable.committed_at_us(),
    )
}

/// The follower's memory: the newest record, and what was built from it.
struct Follower {
    shared: Arc<Shared>,
    canary: Arc<Canary>,
    reports: Option<watch::Sender<ReportState>>,
    record: Option<RolloutRecord>,
    /// (rollout id, stable version) the current candidate (or rejection) was made for.
    built: Option<(String, u64)>,
    /// Why the service refused the candidate of the current rollout.
    rejected: Option<String>,
}

impl Follower {
    /// Whether stable's moves matter: a live rollout, or a candidate still served.
    fn live(&self) -> bool {
        self.built.is_some() || self.record.as_ref().is_some_and(|r| r.state.is_live())
    }

    /// Takes `record` if it is newer than the one held.
    fn offer(&mut self, record: RolloutRecord) {
        let ours = record.namespace == self.shared.namespace.as_str()
            && record.environment == self.shared.environment.as_str();
        let newer = self.record.as_ref().is_none_or(|held| {
            record.created_us > held.created_us
                || (record.id == held.id && record.updates > held.updates)
        });
        if ours && newer {
            self.record = Some(record);
        }
    }

    /// Serves what the record says, and reports a change of standing at once.
    fn settle(&mut self) {
        let Some(record) = self.record.clone() else {
            return;
        };
        let stable = self.shared.snapshot.load_full();
        let canary = Arc::clone(&self.canary);
        let member = record.holds_candidate(&canary.instance_id, &canary.labels);
        // After a promotion, keep the candidate until the promoted version is here, so a
        // member never steps back to the old values in between.
        let promoted_pending = record
            .promoted_version
            .is_some_and(|v| stable.version() < v)
            && self.built.as_ref().is_some_and(|(id, _)| *id == record.id);
        if member || promoted_pending {
            let key = (record.id.clone(), stable.version());
            if self.built.as_ref() != Some(&key) {
                self.build(&record, &stable, key);
            }
        } else {
            if canary.serving.load(Ordering::Acquire) {
                tracing::info!(rollout = %record.id, state = ?record.state, "back on the stable version");
            }
            canary.serve(None);
            self.built = None;
            self.rejected = None;
        }
        let hold =
            (record.state.is_live() && record.targets(&canary.labels)).then(|| RolloutHold {
                id: record.id.clone(),
                candidate: canary.serving.load(Ordering::Acquire),
                rejected: self.rejected.clone(),
            });
        let mut held = lock(&canary.hold);
        if *held != hold {
            *held = hold;
            drop(held);
            if let Some(reports) = &self.reports {
                reports.send_modify(|_| {});
            }
        }
    }

    /// Builds the candidate snapshot and serves it, unless the service's check refuses it.
    fn build(&mut self, record: &RolloutRecord, stable: &Snapshot, key: (String, u64)) {
        let next = overlay(stable, record);
        let check = lock(&self.canary.check).clone();
        self.built = Some(key);
        match check.map_or(Ok(()), |check| check(&next)) {
            Ok(()) => {
                tracing::info!(rollout = %record.id, stable = stable.version(), "serving the rollout's candidate");
                self.canary.serve(Some(Arc::new(next)));
                self.rejected = None;
            }
            Err(reason) => {
                metrics::counter!("mycosynth_subscriber_rejected_candidates_total").increment(1);
                tracing::warn!(rollout = %record.id, %reason, "refusing the rollout's candidate; serving stable");
                self.canary.serve(None);
                self.rejected = Some(reason);
            }
        }
    }
}

/// Reads the rollout record of this subscriber's namespace/environment.
async fn read(js: &jetstream::Context, shared: &Shared) -> Option<RolloutRecord> {
    let kv = js.get_key_value(CONFIG_BUCKET).await.ok()?;
    let key = rollout_key(&shared.namespace, &shared.environment);
    let bytes = tokio::time::timeout(Duration::from_secs(2), kv.get(&key))
        .await
        .ok()?
        .ok()??;
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Option<RolloutRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| tracing::debug!(error = %e, "ignoring a damaged rollout record"))
        .ok()
}

/// Follows the rollouts of the subscriber's namespace/environment until `shutdown`.
pub(crate) fn spawn_follower(
    shared: Arc<Shared>,
    canary: Arc<Canary>,
    reports: Option<watch::Sender<ReportState>>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = shared.client.clone();
        let js = jetstream::new(client.clone());
        let subject = rollout_notice_subject(&shared.namespace, &shared.environment);
        let mut notices = match client.subscribe(subject).await {
            Ok(notices) => notices,
            Err(err) => {
                tracing::warn!(error = %err, "cannot follow rollouts");
                return;
            }
        };
        let mut versions = shared.version.subscribe();
        let mut follower = Follower {
            shared: Arc::clone(&shared),
            canary,
            reports,
            record: None,
            built: None,
            rejected: None,
        };
        let mut reread = tokio::time::interval(REREAD);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                notice = notices.next() => match notice {
                    Some(message) => {
                        if let Some(record) = parse(&message.payload) {
                            follower.offer(record);
                        }
                    }
                    None => break,
                },
                // Only while a rollout is live here: otherwise a change costs this task nothing.
                changed = versions.changed(), if follower.live() => if changed.is_err() { break },
                _ = reread.tick() => {
                    if let Some(record) = read(&js, &shared).await {
                        follower.offer(record);
                    }
                }
            }
            follower.settle();
        }
    })
}
