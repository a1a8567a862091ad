//! The validator's access control: the stored policy (bucket `mycosynth-policy`, written only
//! by the validator, and followed by every instance with a KV watch so that all enforce the
//! same one without a KV read per request), its bootstrap, authentication of each request, and
//! what the `policy-get`/`policy-set` endpoints do.
//!
//! A policy stored by one instance is enforced by it at once (it records its own write) and by
//! the others when their watch delivers it (milliseconds); while a watch is not caught up
//! (start, reconnect), every request reads the policy from KV as before.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use async_nats::jetstream::kv;
use mycosynth_subscriber::wire::{
    ErrorKind, Grant, IdentityRecord, Policy, Role, POLICY_BUCKET, POLICY_KEY,
};

use super::caller::Caller;
use super::policy;
use super::signing::{authenticate, AuthMode, Nonces};
use crate::failure::{failure, invalid, Failure};
use crate::store::{ensure_bucket, BucketOptions, Store, StoreError, Watched};

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
    /// The policy key followed in memory (None in open mode).
    watch: Option<Watched>,
    /// The last policy parsed, with the bytes it was parsed from.
    parsed: Mutex<Option<(Bytes, Arc<Policy>)>>,
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
                watch: None,
                parsed: Mutex::new(None),
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
            watch: Some(Watched::start(js.clone(), POLICY_BUCKET, POLICY_KEY)),
            parsed: Mutex::new(None),
            nonces: Nonces::default(),
        })
    }

    /// The stored policy (empty when none is stored): from the watch when it is caught up,
    /// else from KV; parsed once per stored version.
    async fn load(&self) -> Result<Arc<Policy>, Failure> {
        let Some(bucket) = &self.policy else {
            return Ok(Arc::new(Policy::default()));
        };
        let stored = match self.watch.as_ref().and_then(|w| w.get(POLICY_KEY)) {
            Some(known) => known,
            None => bucket.get(POLICY_KEY).await.map_err(unavailable)?,
        };
        match stored {
            None => Ok(Arc::new(Policy::default())),
            Some(bytes) => self.parse(bytes),
        }
    }

    /// `bytes` as a policy, reusing the last parse when they are the same bytes.
    fn parse(&self, bytes: Bytes) -> Result<Arc<Policy>, Failure> {
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, policy)) = parsed.as_ref() {
            if *known == bytes {
                return Ok(Arc::clone(policy));
            }
        }
        let policy: Policy = serde_json::from_slice(&bytes).map_err(|e| {
            failure(
                ErrorKind::Internal,
                format!("the stored access policy is damaged: {e}"),
            )
        })?;
        let policy = Arc::new(policy);
        *parsed = Some((bytes, Arc::clone(&policy)));
        Ok(policy)
    }

    /// Who sent `message` (see [`authenticate`]), with the policy that decides
    /// what they may do during this request.
    pub async fn authenticate(&self, message: &async_nats::Message) -> Result<Caller, Failure> {
        if self.mode == AuthMode::Open {
            return Ok(Caller::unverified());
        }
        let policy = self.load().await?;
        let caller = authenticate(self.mode, &policy, &self.nonces, message)?;
        Ok(caller.with_policy(policy))
    }

    /// `policy-get`: the stored policy (the endpoint table lets only admins ask).
    pub async fn policy_get(&self) -> Result<Policy, Failure> {
        self.require_signed()?;
        Ok(self.load().await?.as_ref().clone())
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
        let bytes = Bytes::from(bytes);
        bucket
            .put(POLICY_KEY, bytes.clone())
            .await
            .map_err(unavailable)?;
        // Enforced here at once, before this instance's watch delivers it.
        if let Some(watch) = &self.watch {
            watch.record(POLICY_KEY, Some(bytes));
        }
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
