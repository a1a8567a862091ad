//! The dispatcher: every request goes through [`Validator::handle`], which authenticates it,
//! applies the rate limit, serves it by its row of the endpoint table (which authorizes it),
//! records it in the audit log and counts it. Before that, [`Validator::route`] sends a change
//! of a namespace another live instance owns to that instance (see `affinity.rs`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mycosynth_subscriber::wire::api_subject;

use super::affinity::{self, Forwarded};
use super::endpoints::{encode, Endpoint};
use super::instance::Validator;
use crate::access::{requester, Envelope};
use crate::clock::meta_time;

/// Sends a service request's reply.
pub async fn respond(name: &str, request: async_nats::service::Request, bytes: Bytes) {
    if let Err(err) = request.respond(Ok(bytes)).await {
        tracing::warn!(endpoint = name, error = %err, "could not send the reply");
    }
}

impl Validator {
    /// A request from the queue group: a change or rollback of a slot another live instance
    /// owns goes to that instance; everything else is served here.
    pub async fn route(self: &Arc<Self>, row: &Endpoint, request: async_nats::service::Request) {
        let name = row.name;
        // Alone, every slot is this instance's: no need to read the request for its slot.
        if affinity::routed(name) && self.affinity.peers() > 0 {
            if let Some(bytes) = self.forward_to_owner(name, &request.message).await {
                return respond(name, request, bytes).await;
            }
        }
        let bytes = self.handle(row, &request.message).await;
        respond(name, request, bytes).await;
    }

    /// The owner's answer to `message`, when another live instance owns its slot and answers;
    /// `None` to serve it here.
    async fn forward_to_owner(
        &self,
        name: &'static str,
        message: &async_nats::Message,
    ) -> Option<Bytes> {
        let envelope = Envelope::read(&message.payload);
        let owner = match (&envelope.namespace, &envelope.environment) {
            (Some(ns), Some(env)) => self.affinity.owner(ns, env),
            _ => None,
        }?;
        match affinity::forward(&self.client, &self.affinity, &owner, name, message).await {
            Forwarded::Answered(bytes) => return Some(bytes),
            Forwarded::OwnerGone => {
                tracing::info!(
                    owner,
                    endpoint = name,
                    "the owning instance is gone; serving here"
                );
            }
            Forwarded::Unanswered => {
                tracing::warn!(
                    owner,
                    endpoint = name,
                    "the owning instance stopped answering; serving here"
                );
            }
        }
        self.affinity.forget(&owner);
        None
    }

    /// A request another instance forwarded to this one, its owner: served here, whoever owns
    /// the slot by now (forwarding twice could go round in circles).
    pub async fn serve_forwarded(
        self: &Arc<Self>,
        row: &Endpoint,
        mut message: async_nats::Message,
    ) {
        let Some(reply) = message.reply.take() else {
            return;
        };
        // Signed for the queue group's subject, which is what the signature is checked against.
        message.subject = api_subject(row.name).into();
        let bytes = self.handle(row, &message).await;
        if let Err(err) = self.client.publish(reply, bytes).await {
            tracing::warn!(endpoint = row.name, error = %err, "could not send the reply");
        }
    }

    /// Serves one request by its row: authentication, the rate limit, the row (authorization
    /// and handler), the audit record, metrics. Returns the reply's bytes.
    pub async fn handle(self: &Arc<Self>, row: &Endpoint, message: &async_nats::Message) -> Bytes {
        let started = Instant::now();
        let name = row.name;
        let body = message.payload.clone();
        let envelope = Envelope::read(&body);
        let authenticated = self.access.authenticate(message).await;
        // The audit log and the rate limit know the caller by its verified identity when the
        // request is signed, else by the name it declares.
        let verified = authenticated
            .as_ref()
            .ok()
            .and_then(|c| c.identity.as_deref());
        let via = authenticated.as_ref().ok().and_then(|c| c.via.as_deref());
        let requester = requester(verified, &envelope).relayed_by(via);
        let limited = row
            .flags
            .limited
            .then(|| self.limits.refusal(name, &requester))
            .flatten();
        let (bytes, outcome) = match (authenticated, limited) {
            (Err(denied), _) => {
                tracing::warn!(endpoint = name, reason = %denied.message, "request refused: authentication failed");
                encode::<()>(Err(denied))
            }
            (Ok(_), Some(refusal)) => encode::<()>(Err(refusal)),
            (Ok(caller), None) => row.serve(Arc::clone(self), caller, body).await,
        };
        if row.flags.audited {
            let record =
                crate::audit::entry::draft(name, &requester, &envelope, &bytes, meta_time());
            if let Err(err) = self.audit.append(record).await {
                metrics::counter!("mycosynth_audit_failures_total").increment(1);
                tracing::error!(endpoint = name, error = %err, "could not record the request in the audit log");
            }
        }
        metrics::counter!("mycosynth_validator_requests_total", "endpoint" => name, "outcome" => outcome).increment(1);
        metrics::histogram!("mycosynth_validator_request_seconds", "endpoint" => name)
            .record(started.elapsed().as_secs_f64());
        bytes
    }
}
