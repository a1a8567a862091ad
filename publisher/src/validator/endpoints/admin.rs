//! The admin endpoints: the access policy and the audit log (the table lets only admins on
//! `*`/`*` ask).

use std::sync::Arc;

use mycosynth_subscriber::wire::{
    AuditOutcome, AuditRequest, AuditVerifyOutcome, AuditVerifyRequest, Policy, PolicyGetRequest,
    PolicySetRequest,
};

use super::Call;
use crate::failure::Failure;
use crate::validator::instance::Validator;

/// `policy-get`.
pub async fn policy_get(
    validator: Arc<Validator>,
    _call: Call,
    _request: PolicyGetRequest,
) -> Result<Policy, Failure> {
    validator.access.policy_get().await
}

/// `policy-set`.
pub async fn policy_set(
    validator: Arc<Validator>,
    call: Call,
    request: PolicySetRequest,
) -> Result<Policy, Failure> {
    validator
        .access
        .policy_set(call.caller.name(), request.policy)
        .await
}

/// `audit`: query the audit log.
pub async fn audit(
    validator: Arc<Validator>,
    _call: Call,
    request: AuditRequest,
) -> Result<AuditOutcome, Failure> {
    validator.audit.answer_query(&request).await
}

/// `audit-verify`: check the audit log's hash chain.
pub async fn audit_verify(
    validator: Arc<Validator>,
    _call: Call,
    _request: AuditVerifyRequest,
) -> Result<AuditVerifyOutcome, Failure> {
    validator.audit.answer_verify().await
}
