//! What every step of a change request tells the world: a [`RequestNotice`] on
//! `mycosynth.requests.<env>.<ns>` (for the console and chat bots), a metric per step and
//! state, a log line, and for the scheduler's own steps (fire, miss, fail, expire), which no
//! request carries, an audit record.

use mycosynth_subscriber::wire::{
    request_notice_subject, Environment, Namespace, ProposalRecord, RequestNotice,
};

use crate::access::envelope::ChangedKey;
use crate::access::{Envelope, Requester};
use crate::clock::meta_time;
use crate::validator::instance::Validator;

impl Validator {
    /// Announces `step` of `record` (now in its new state), taken by `by`.
    pub(super) async fn announce(
        &self,
        record: &ProposalRecord,
        step: &'static str,
        by: &str,
        version: Option<u64>,
    ) {
        metrics::counter!("mycosynth_change_requests_total", "step" => step, "state" => record.state.as_str())
            .increment(1);
        tracing::info!(id = %record.id, step, state = record.state.as_str(), by, "change request step");
        let notice = RequestNotice {
            id: record.id.clone(),
            namespace: record.namespace.clone(),
            environment: record.environment.clone(),
            step: step.to_owned(),
            state: record.state,
            by: by.to_owned(),
            version,
        };
        let (Ok(ns), Ok(env)) = (
            Namespace::new(&record.namespace),
            Environment::new(&record.environment),
        ) else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(&notice) else {
            return;
        };
        if let Err(err) = self
            .client
            .publish(request_notice_subject(&ns, &env), bytes.into())
            .await
        {
            tracing::warn!(error = %err, id = %record.id, "could not publish the change request notice");
        }
    }

    /// Records a step the scheduler took on its own (`request-fire`, `-miss`, `-fail`,
    /// `-expire`) in the audit log, as the validator instance.
    pub(super) async fn audit_step(&self, action: &str, record: &ProposalRecord, reply: &[u8]) {
        let envelope = Envelope {
            namespace: Some(record.namespace.clone()),
            environment: Some(record.environment.clone()),
            id: Some(record.id.clone()),
            reason: Some(record.reason.clone()),
            changes: record
                .changes
                .iter()
                .map(|c| ChangedKey { key: c.key.clone() })
                .collect(),
            ..Envelope::default()
        };
        self.audit_own(action, &envelope, reply).await;
    }

    /// Records a step this validator instance took on its own (a scheduler's or a rollout
    /// driver's) in the audit log, as the instance.
    pub(crate) async fn audit_own(&self, action: &str, envelope: &Envelope, reply: &[u8]) {
        let requester = Requester {
            identity: format!("validator:{}", self.affinity.own()),
            verified: true,
            via: None,
        };
        let entry = crate::audit::entry::draft(action, &requester, envelope, reply, meta_time());
        if let Err(err) = self.audit.append(entry).await {
            metrics::counter!("mycosynth_audit_failures_total").increment(1);
            tracing::error!(action, error = %err, "could not record the validator's own step in the audit log");
        }
    }
}
