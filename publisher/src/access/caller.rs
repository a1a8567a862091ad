//! [`Caller`]: who an authenticated request comes from, with the policy that decides it, and
//! the one check every authorization goes through ([`Caller::may`]).

use std::sync::Arc;

use mycosynth_subscriber::wire::{Policy, Role};

use super::policy::Scope;
use crate::failure::Failure;

/// The caller of one request, as established by [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The verified identity's name (None in open mode: nobody is verified).
    pub identity: Option<String>,
    /// The public key that signed the request (None in open mode).
    pub public_key: Option<String>,
    /// The policy that decides this request (the same one throughout it).
    policy: Arc<Policy>,
}

impl Caller {
    /// The caller in open mode.
    pub fn unverified() -> Caller {
        Caller {
            identity: None,
            public_key: None,
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
            policy: Arc::default(),
        }
    }
}
