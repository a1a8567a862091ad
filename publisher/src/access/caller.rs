//! [`Caller`]: who an authenticated request comes from, with the policy that decides it, and
//! the one check every authorization goes through ([`Caller::may`]).

use std::sync::Arc;

use mycosynth_subscriber::wire::{ApprovalRule, ErrorKind, Policy, Role};

use super::policy::{is_among, Scope};
use crate::failure::{failure, Failure};

/// The caller of one request, as established by [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The verified identity's name (None in open mode: nobody is verified).
    pub identity: Option<String>,
    /// The public key that signed the request, or the session token (None in open mode).
    pub public_key: Option<String>,
    /// The identity that relayed the request with the caller's session token (a console).
    pub via: Option<String>,
    /// The policy that decides this request (the same one throughout it).
    policy: Arc<Policy>,
}

impl Caller {
    /// The caller in open mode.
    pub fn unverified() -> Caller {
        Caller {
            identity: None,
            public_key: None,
            via: None,
            policy: Arc::default(),
        }
    }

    /// The same caller, judged by `policy`.
    pub fn with_policy(self, policy: Arc<Policy>) -> Caller {
        Caller { policy, ..self }
    }

    /// Ok if the caller holds `role` on `scope`; else an `access_denied` failure naming the
    /// identity, the `action` and the missing permission. Unverified callers (open mode) may do
    /// everything.
    pub fn may(&self, action: &str, role: Role, scope: Scope<'_>) -> Result<(), Failure> {
        match &self.identity {
            None => Ok(()),
            Some(identity) => super::policy::check(&self.policy, identity, action, role, scope)
                .inspect_err(|denied| {
                    tracing::warn!(identity = %identity, action, reason = %denied.message, "request denied by the policy");
                }),
        }
    }

    /// Whether the caller holds `role` on `scope`, without logging or counting a denial (for
    /// filtering what a listing shows).
    pub fn may_quietly(&self, role: Role, scope: Scope<'_>) -> bool {
        match &self.identity {
            None => true,
            Some(identity) => super::policy::role_of(&self.policy, identity, scope)
                .is_some_and(|held| held >= role),
        }
    }

    /// The name to record as author: the verified identity, else what the request declared.
    pub fn author(&self, declared: String) -> String {
        self.identity.clone().unwrap_or(declared)
    }

    /// How denials and logs name the caller.
    pub fn name(&self) -> &str {
        self.identity.as_deref().unwrap_or("anonymous")
    }
}

impl Caller {
    /// A caller whose signature proved `identity` (its policy is attached by
    /// [`Caller::with_policy`]).
    pub fn verified(identity: String, public_key: String) -> Caller {
        Caller {
            identity: Some(identity),
            public_key: Some(public_key),
            via: None,
            policy: Arc::default(),
        }
    }

    /// The same caller, its request relayed by the identity `via` (with its session token).
    pub fn relayed_by(self, via: String) -> Caller {
        Caller {
            via: Some(via),
            ..self
        }
    }
}

impl Caller {
    /// The approval rule deciding changes to `namespace`/`environment` (none in open mode).
    pub fn approval_rule(&self, namespace: &str, environment: &str) -> Option<&ApprovalRule> {
        super::policy::approval_rule(&self.policy, namespace, environment)
    }

    /// Ok if the caller may approve (or reject) change requests of `namespace`/`environment`
    /// under `rule` (with no rule, like `--propose` where none applies: anyone who may write
    /// there). Open mode: everyone.
    pub fn may_approve(
        &self,
        rule: Option<&ApprovalRule>,
        namespace: &str,
        environment: &str,
    ) -> Result<(), Failure> {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        match rule {
            Some(rule) if is_among(&self.policy, identity, &rule.approvers, namespace, environment) => Ok(()),
            Some(rule) => Err(denied("approve", format!(
                "identity {identity:?} may not approve change requests of {namespace}/{environment}: the approval rule for {}/{} names the approvers {:?}",
                rule.namespace, rule.environment, rule.approvers
            ))),
            None => self.may("approve change requests of", Role::Write, Scope::Env(namespace, environment)),
        }
    }

    /// Ok if the caller may commit at once with `--emergency` where `rule` requires approval.
    pub fn may_take_emergency(
        &self,
        rule: &ApprovalRule,
        namespace: &str,
        environment: &str,
    ) -> Result<(), Failure> {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        if is_among(
            &self.policy,
            identity,
            &rule.emergency,
            namespace,
            environment,
        ) {
            return Ok(());
        }
        Err(denied("emergency", format!(
            "identity {identity:?} may not take the emergency path in {namespace}/{environment}: the approval rule for {}/{} allows {:?}; propose the change instead",
            rule.namespace, rule.environment, rule.emergency
        )))
    }
}

fn denied(action: &'static str, message: String) -> Failure {
    metrics::counter!("mycosynth_validator_denials_total", "action" => action).increment(1);
    tracing::warn!(reason = %message, "request denied by the approval rule");
    failure(ErrorKind::AccessDenied, message)
}
