//! [`Validator`]: the parts one validator instance serves requests with. The dispatcher, the
//! endpoints and the change path take it; it imports none of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use mycosynth_subscriber::wire::{Environment, Namespace};
use tokio::sync::Mutex as AsyncMutex;

use super::affinity::Affinity;
use crate::access::limits::RateLimits;
use crate::access::vault::Vault;
use crate::access::Access;
use crate::audit::Auditor;
use crate::fleet::Fleet;
use crate::store::{State, Store};
use crate::validate::Schema;

/// The cached state of one namespace/environment, behind the lock that serializes this
/// instance's commits to it.
pub type Slot = Arc<AsyncMutex<Option<State>>>;

/// One validator instance.
pub struct Validator {
    /// The connection requests are forwarded on.
    pub client: async_nats::Client,
    /// Which instance writes which namespace/environment.
    pub affinity: Affinity,
    /// The buckets.
    pub store: Store,
    /// Who may do what (the stored policy) and who is asking.
    pub access: Access,
    /// What subscriber instances reported.
    pub fleet: Arc<Fleet>,
    /// Refuse changes to namespaces without a schema.
    pub require_schema: bool,
    /// One slot per namespace/environment: serializes this instance's commits to it and caches
    /// its state between requests (another validator's commit shows up as a failed CAS).
    pub slots: Mutex<HashMap<(Namespace, Environment), Slot>>,
    /// Compiled schemas by namespace, with the stored record (bytes) each was compiled from.
    pub schemas: Mutex<HashMap<Namespace, (Bytes, Arc<Schema>)>>,
    /// Namespaces/environments where another writer won a compare-and-set recently, until when:
    /// their commits are not pipelined.
    pub contended: Mutex<HashMap<(Namespace, Environment), Instant>>,
    /// The audit log every request is recorded in.
    pub audit: Auditor,
    /// Per-identity rate limits on change requests.
    pub limits: RateLimits,
    /// Data keys of sensitive values.
    pub vault: Vault,
    /// The lag of the watched site replicas.
    pub sites: crate::site::lag::SiteLags,
}

impl Validator {
    /// The slot of `ns`/`env`, created on first use.
    pub fn slot(&self, ns: &Namespace, env: &Environment) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry((ns.clone(), env.clone())).or_default())
    }
}
