//! The validator's access control: the stored policy (bucket `mycosynth-policy`, written only
//! by the validator, read by every instance on every request so all enforce the same one), its
//! bootstrap, authentication of each request, and what the `policy-get`/`policy-set` endpoints
//! do.

use std::sync::Arc;

use async_nats::jetstream::kv;
use mycosynth_subscriber::wire::{
    ErrorKind, Grant, IdentityRecord, Policy, Role, POLICY_BUCKET, POLICY_KEY,
};

use super::caller::Caller;
use super::policy;
use super::signing::{authenticate, AuthMode, Nonces};
use crate::failure::{failure, invalid, Failure};
use crate::store::{ensure_bucket, BucketOptions, Store, StoreError};

/// How the validator authenticates and authorizes.
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// Open (nobody verified, everything allowed) or signed requests checked against the policy.
    pub mode: AuthMode,
    /// Identities (name, public nkey) made administrators when no policy is stored yet.
    pub bootstrap_admins: Vec<(String, String)>,
    /// The validator's own NATS credentials.
    pub credentials: mycosynth_subscriber::Credentials,
}

/// Access control of one validator instance.
pub struct Access {
    mode: AuthMode,
    /// The policy bucket (None in open mode).
    policy: Option<kv::Store>,
    nonces: Nonces,
}

fn unavailable(e: impl std::fmt::Display) -> Failure {
    failure(ErrorKind::Unavailable, format!("access policy: {e}"))
}

impl Access {
    /// Opens (and in signed mode creates and bootstraps) the policy bucket.
    pub async fn open(
        store: &Store,
        config: &SecurityConfig,
        options: BucketOptions,
    ) -> Result<Access, StoreError> {
        if config.mode == AuthMode::Open {
            tracing::warn!("open mode (--auth open): requests are not authenticated and every caller may do everything; for local tinkering only");
            return Ok(Access {
                mode: AuthMode::Open,
                policy: None,
                nonces: Nonces::default(),
            });
        }
        let js = store.jetstream();
        ensure_bucket(js, POLICY_BUCKET, "Mycosynth access policy", false, options).await?;
        let bucket = js
            .get_key_value(POLICY_BUCKET)
            .await
            .map_err(|e| StoreError::Unavailable(format!("bucket {POLICY_BUCKET}: {e}")))?;
        let stored = bucket
            .get(POLICY_KEY)
            .await
            .map_err(|e| StoreError::Unavailable(format!("bucket {POLICY_BUCKET}: {e}")))?;
        if stored.is_none() && !config.bootstrap_admins.is_empty() {
            let policy = bootstrap(&config.bootstrap_admins);
            let bytes = serde_json::to_vec(&policy).unwrap_or_default();
            // create: if another instance bootstrapped a moment ago, theirs stays.
            match bucket.create(POLICY_KEY, bytes.into()).await {
                Ok(_) => {
                    tracing::info!(admins = ?policy.identities.keys().collect::<Vec<_>>(), "bootstrapped the access policy")
                }
                Err(err) => {
                    tracing::info!(error = %err, "a policy was stored meanwhile; keeping it")
                }
            }
        } else if stored.is_none() {
            tracing::warn!("no access policy is stored and no --admin was given: every request is denied until one is");
        } else if !config.bootstrap_admins.is_empty() {
            tracing::info!("a policy is stored already; --admin is ignored");
        }
        tracing::info!("signed mode: every request must be signed by an identity of the policy");
        Ok(Access {
            mode: AuthMode::Signed,
            policy: Some(bucket),
            nonces: Nonces::default(),
        })
    }

    /// The stored policy (empty when none is stored).
    async fn load(&self) -> Result<Policy, Failure> {
        let Some(bucket) = &self.policy else {
            return Ok(Policy::default());
        };
        match bucket.get(POLICY_KEY).await.map_err(unavailable)? {
            None => Ok(Policy::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                failure(
                    ErrorKind::Internal,
                    format!("the stored access policy is damaged: {e}"),
                )
            }),
        }
    }

    /// Who sent `message` (see [`authenticate`]), with the policy that decides
    /// what they may do during this request.
    pub async fn authenticate(&self, message: &async_nats::Message) -> Result<Caller, Failure> {
        if self.mode == AuthMode::Open {
            return Ok(Caller::unverified());
        }
        let policy = Arc::new(self.load().await?);
        let caller = authenticate(self.mode, &policy, &self.nonces, message)?;
        Ok(caller.with_policy(policy))
    }

    /// `policy-get`: the stored policy (the endpoint table lets only admins ask).
    pub async fn policy_get(&self) -> Result<Policy, Failure> {
        self.require_signed()?;
        self.load().await
    }

    /// `policy-set`: replaces the policy with a valid one (the endpoint table lets only admins
    /// ask); `by` names the caller in the log.
    pub async fn policy_set(&self, by: &str, policy: Policy) -> Result<Policy, Failure> {
        self.require_signed()?;
        let violations = policy::violations(&policy);
        if !violations.is_empty() {
            return Err(invalid(violations));
        }
        let Some(bucket) = &self.policy else {
            return Err(failure(ErrorKind::Internal, "no policy bucket"));
        };
        let bytes =
            serde_json::to_vec(&policy).map_err(|e| failure(ErrorKind::Internal, e.to_string()))?;
        bucket
            .put(POLICY_KEY, bytes.into())
            .await
            .map_err(unavailable)?;
        metrics::counter!("mycosynth_validator_policy_changes_total").increment(1);
        tracing::info!(
            identity = by,
            identities = policy.identities.len(),
            grants = policy.grants.len(),
            "access policy replaced"
        );
        Ok(policy)
    }

    fn require_signed(&self) -> Result<(), Failure> {
        match self.mode {
            AuthMode::Signed => Ok(()),
            AuthMode::Open => Err(failure(
                ErrorKind::BadRequest,
                "this validator runs in open mode (--auth open): there is no policy",
            )),
        }
    }
}

/// The first policy: these identities, each admin on everything.
fn bootstrap(admins: &[(String, String)]) -> Policy {
    Policy {
        identities: admins
            .iter()
            .map(|(name, key)| {
                (
                    name.clone(),
                    IdentityRecord {
                        public_key: key.clone(),
                    },
                )
            })
            .collect(),
        grants: admins
            .iter()
            .map(|(name, _)| Grant {
                identity: name.clone(),
                role: Role::Admin,
                namespace: "*".into(),
                environment: "*".into(),
            })
            .collect(),
        approvals: Vec::new(),
    }
}
