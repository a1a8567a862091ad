//! The steps of a rollout: start (the candidate drafted through the change path, stored),
//! pause, resume, advance, promote (the candidate committed as one version), abort. Every step
//! is a compare-and-set on the record, followed by its notice (the record) on
//! `mycosynth.rollouts.<env>.<ns>`, a counter, and (for the driver's own steps) an audit record.

use bytes::Bytes;
use mycosynth_subscriber::wire::{
    check_steps, is_sealed, rollout_notice_subject, Environment, ErrorKind, HealthRule, Namespace,
    RolloutRecord, RolloutStartRequest, RolloutState, RolloutVerdict, Violation,
};
use sha2::{Digest, Sha256};

use crate::access::envelope::{ChangedKey, Envelope};
use crate::clock::now_us;
use crate::failure::{failure, invalid, Failure};
use crate::store::{StoreError, StoredRollout};
use crate::validate::Plan;
use crate::validator::change::{Attribution, Base, Intent, Order};
use crate::validator::instance::Validator;

/// How often a step is retried after losing a compare-and-set to another writer.
const STEP_ATTEMPTS: usize = 5;

/// Who the driver's own steps are recorded as.
pub const DRIVER: &str = "driver";

fn violation(key: &str, rule: &str, message: String) -> Violation {
    Violation {
        key: key.into(),
        rule: rule.into(),
        message,
    }
}

/// The refusals of a start request that need no state: steps and health rules.
pub fn check_start(request: &RolloutStartRequest) -> Result<(), Failure> {
    let mut violations = Vec::new();
    if let Err(message) = check_steps(&request.steps) {
        violations.push(violation("steps", "steps", message));
    }
    for rule in &request.health {
        if let Err(message) = HealthRule::parse(rule) {
            violations.push(violation("health", "health_rule", message));
        }
    }
    if let Some(Err(message)) = request.prometheus.as_ref().map(|r| r.check()) {
        violations.push(violation("prometheus", "prometheus_rule", message));
    }
    for (label, value) in &request.target {
        if label.is_empty() || value.is_empty() {
            violations.push(violation(
                "target",
                "target",
                format!("target {label:?}={value:?}: use label=value"),
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(invalid(violations))
    }
}

fn new_id(ns: &Namespace, env: &Environment) -> String {
    let seed = format!("{ns}/{env}/{}/{}", now_us(), nuid::next());
    let digest = Sha256::digest(seed.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("ro-{hex}")
}

impl Validator {
    /// Starts a rollout of `request`'s change set: refused while another runs here, and
    /// refused like `set` would refuse the change; nothing is committed.
    pub async fn start_rollout(
        &self,
        ns: &Namespace,
        env: &Environment,
        author: String,
        request: RolloutStartRequest,
    ) -> Result<RolloutRecord, Failure> {
        check_start(&request)?;
        let existing = self.store.rollout(ns, env).await?;
        if let Some((running, _)) = existing.as_ref().filter(|(r, _)| r.state.is_live()) {
            return Err(already_running(running, ns, env));
        }
        let (changes, change_request) = self.rollout_changes(ns, env, &request).await?;
        let order = Order {
            namespace: ns.clone(),
            environment: env.clone(),
            intent: Intent::Changes {
                changes,
                replace: false,
            },
            expected_version: None,
            base: None,
            attribution: Attribution {
                author: author.clone(),
                reason: request.reason.clone(),
                source: request.source,
                git_commit: None,
                request_id: None,
                emergency: false,
                approved_by: Vec::new(),
                change_request: change_request.clone(),
            },
            dry_run: true,
        };
        let draft = self.draft(&order).await?;
        refuse_candidate(&draft.plan)?;
        let now = now_us();
        let record = RolloutRecord {
            id: new_id(ns, env),
            namespace: ns.to_string(),
            environment: env.to_string(),
            state: RolloutState::Running,
            updates: 0,
            changes: draft.plan.changes,
            diff: draft.plan.diff,
            base_version: draft.base_version,
            base_keys: draft.base_keys,
            steps: request.steps,
            step: 0,
            step_started_us: now,
            bake_s: request.bake_s,
            auto_rollback: request.auto_rollback,
            health: request.health,
            target: request.target,
            prometheus: request.prometheus,
            change_request,
            author,
            reason: request.reason,
            source: request.source,
            created_us: now,
            verdict: None,
            promoted_version: None,
        };
        match self
            .store
            .put_rollout(ns, env, &record, existing.map(|(_, rev)| rev))
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict) => {
                return Err(failure(
                    ErrorKind::Conflict,
                    format!("another rollout of {ns}/{env} was started at the same time"),
                ))
            }
            Err(err) => return Err(err.into()),
        }
        metrics::counter!("mycosynth_rollouts_started_total").increment(1);
        self.announce_rollout(&record).await;
        tracing::info!(rollout = %record.id, %ns, %env, steps = ?record.steps, "rollout started");
        Ok(record)
    }

    /// The change set to roll out: the request's, or an approved change request's.
    async fn rollout_changes(
        &self,
        ns: &Namespace,
        env: &Environment,
        request: &RolloutStartRequest,
    ) -> Result<(Vec<mycosynth_subscriber::wire::KeyChange>, Option<String>), Failure> {
        let Some(id) = &request.change_request else {
            return Ok((request.changes.clone(), None));
        };
        let (changes, id) = self.approved_changes(id).await?;
        let at = id.namespace() == ns && id.environment() == env;
        if !at {
            return Err(invalid(vec![violation(
                "change_request",
                "scope",
                format!("change request {id} is not of {ns}/{env}"),
            )]));
        }
        Ok((changes, Some(id.to_string())))
    }

    /// Takes one step on the rollout of `ns`/`env`: `step` changes the record read (or refuses);
    /// written by compare-and-set, retried on a lost race, then announced.
    pub async fn rollout_step(
        &self,
        ns: &Namespace,
        env: &Environment,
        step: impl Fn(&mut RolloutRecord) -> Result<(), Failure>,
    ) -> Result<RolloutRecord, Failure> {
        for _ in 0..STEP_ATTEMPTS {
            let (mut record, revision): StoredRollout =
                self.store.rollout(ns, env).await?.ok_or_else(|| {
                    failure(ErrorKind::NotFound, format!("no rollout on {ns}/{env}"))
                })?;
            step(&mut record)?;
            record.updates += 1;
            match self
                .store
                .put_rollout(ns, env, &record, Some(revision))
                .await
            {
                Ok(_) => {
                    self.announce_rollout(&record).await;
                    return Ok(record);
                }
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(failure(
            ErrorKind::Unavailable,
            format!("the rollout of {ns}/{env} is changing too fast; try again"),
        ))
    }

    /// Ends the rollout of `ns`/`env` as aborted, by `by`, for `reason`.
    pub async fn abort_rollout(
        &self,
        ns: &Namespace,
        env: &Environment,
        by: &str,
        reason: String,
        cause: &'static str,
    ) -> Result<RolloutRecord, Failure> {
        let record = self
            .rollout_step(ns, env, |record| {
                live(record)?;
                record.state = RolloutState::Aborted;
                record.verdict = Some(verdict(by, reason.clone()));
                Ok(())
            })
            .await?;
        metrics::counter!("mycosynth_rollouts_aborted_total", "reason" => cause).increment(1);
        tracing::warn!(rollout = %record.id, %ns, %env, by, %reason, "rollout aborted");
        Ok(record)
    }

    /// Commits the candidate of the rollout of `ns`/`env` as one version (with the approvers of
    /// the change request it comes from, which is then applied), then marks it promoted. The
    /// commit's idempotency key is the rollout's id, so a retry (or a driver and an operator
    /// promoting at once) commits it once.
    pub async fn promote_rollout(
        &self,
        ns: &Namespace,
        env: &Environment,
        by: &str,
    ) -> Result<RolloutRecord, Failure> {
        let (record, _) = self
            .store
            .rollout(ns, env)
            .await?
            .ok_or_else(|| failure(ErrorKind::NotFound, format!("no rollout on {ns}/{env}")))?;
        live(&record)?;
        let mut order = promotion(&record, ns, env);
        if let Some(id) = &record.change_request {
            order.attribution.approved_by = self.approvers_of(id).await;
        }
        let committed = self.commit(order).await?;
        if let Some(id) = &record.change_request {
            self.applied_by_rollout(id, &committed, by).await;
        }
        let version = committed.version;
        let promoted = self
            .rollout_step(ns, env, |r| {
                if r.id != record.id {
                    return Err(failure(
                        ErrorKind::Conflict,
                        "another rollout replaced this one",
                    ));
                }
                r.state = RolloutState::Promoted;
                r.promoted_version = Some(version);
                r.verdict = Some(verdict(by, format!("promoted as version {version}")));
                Ok(())
            })
            .await?;
        metrics::counter!("mycosynth_rollouts_promoted_total").increment(1);
        tracing::info!(rollout = %record.id, %ns, %env, version, by, "rollout promoted");
        Ok(promoted)
    }

    /// Publishes the record as the notice of its latest step.
    pub async fn announce_rollout(&self, record: &RolloutRecord) {
        let (Ok(ns), Ok(env)) = (
            Namespace::new(record.namespace.clone()),
            Environment::new(record.environment.clone()),
        ) else {
            return;
        };
        let Ok(body) = serde_json::to_vec(record) else {
            return;
        };
        let subject = rollout_notice_subject(&ns, &env);
        if let Err(err) = self.client.publish(subject, Bytes::from(body)).await {
            tracing::warn!(error = %err, rollout = %record.id, "could not publish the rollout notice");
        }
        let _ = self.client.flush().await;
    }

    /// Records a step the driver took on its own (`rollout-step`, `-promote`, `-abort`,
    /// `-pause`) in the audit log, as this validator instance.
    pub async fn audit_rollout(&self, action: &str, record: &RolloutRecord, reason: &str) {
        let envelope = Envelope {
            namespace: Some(record.namespace.clone()),
            environment: Some(record.environment.clone()),
            id: Some(record.id.clone()),
            reason: Some(reason.to_owned()),
            changes: record
                .changes
                .iter()
                .map(|c| ChangedKey { key: c.key.clone() })
                .collect(),
            ..Envelope::default()
        };
        let reply = serde_json::to_vec(&serde_json::json!({"ok": {"rollout": record.id, "state": record.state, "step": record.step}})).unwrap_or_default();
        self.audit_own(action, &envelope, &reply).await;
    }
}

/// The refusal of a start while `running` is live on `ns`/`env`, naming it.
fn already_running(running: &RolloutRecord, ns: &Namespace, env: &Environment) -> Failure {
    failure(
        ErrorKind::Conflict,
        format!(
            "rollout {} is {} on {ns}/{env} (started by {}, step {} of {}); promote or abort it first",
            running.id,
            if running.state == RolloutState::Paused { "paused" } else { "running" },
            running.author,
            running.step + 1,
            running.steps.len()
        ),
    )
}

/// Refuses a candidate that changes nothing, or that carries a sealed value.
fn refuse_candidate(plan: &Plan) -> Result<(), Failure> {
    if plan.is_empty() {
        return Err(invalid(vec![violation(
            "changes",
            "no_op",
            "the change sets every key to the value it has: nothing to roll out".into(),
        )]));
    }
    if let Some(sealed) = plan
        .changes
        .iter()
        .find(|c| c.value.as_ref().is_some_and(is_sealed))
    {
        return Err(invalid(vec![violation(
            &sealed.key,
            "sensitive",
            format!(
                "{} is sensitive: rollouts do not carry sealed values; use set",
                sealed.key
            ),
        )]));
    }
    Ok(())
}

/// The order that commits a rollout's candidate: on its base (a key changed since refuses it).
fn promotion(record: &RolloutRecord, ns: &Namespace, env: &Environment) -> Order {
    Order {
        namespace: ns.clone(),
        environment: env.clone(),
        intent: Intent::Changes {
            changes: record.changes.clone(),
            replace: false,
        },
        expected_version: None,
        base: Some(Base {
            version: record.base_version,
            keys: record.base_keys.clone(),
        }),
        attribution: Attribution {
            author: record.author.clone(),
            reason: format!("rollout {}: {}", record.id, record.reason),
            source: record.source,
            git_commit: None,
            request_id: Some(record.id.clone()),
            emergency: false,
            approved_by: Vec::new(),
            change_request: record.change_request.clone(),
        },
        dry_run: false,
    }
}

/// Refuses a step on a rollout that already ended.
pub fn live(record: &RolloutRecord) -> Result<(), Failure> {
    if record.state.is_live() {
        Ok(())
    } else {
        Err(failure(
            ErrorKind::Conflict,
            format!(
                "rollout {} is already {}",
                record.id,
                match record.state {
                    RolloutState::Promoted => "promoted",
                    _ => "aborted",
                }
            ),
        ))
    }
}

/// A verdict by `by` now.
pub fn verdict(by: &str, reason: String) -> RolloutVerdict {
    RolloutVerdict {
        by: by.to_owned(),
        reason,
        at_us: now_us(),
    }
}
