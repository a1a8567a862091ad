//! [`Validator`]: the parts one validator instance serves requests with. The dispatcher, the
//! endpoints and the change path take it; it imports none of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use mycosynth_subscriber::wire::{Environment, Namespace};

use super::affinity::Affinity;
use crate::access::limits::RateLimits;
use crate::access::vault::Vault;
use crate::access::Access;
use crate::audit::Auditor;
use crate::fleet::Fleet;
use crate::store::Store;
use crate::validate::Schema;

pub use super::slots::Slot;
use super::slots::Slots;

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
    /// its state between requests (another validator's commit shows up as a failed CAS); the
    /// least recently used idle ones are dropped past `serve --cached-states`.
    pub slots: Slots,
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
        self.slots.get(ns, env)
    }
}
