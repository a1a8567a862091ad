//! Access: who is asking and what they may do.
//!
//! - `control.rs`: [`Access`], the validator's access control: the policy bucket, its
//!   bootstrap, authentication of each request, the `policy-get`/`policy-set` endpoints.
//! - [`signing`]: signed requests ([`sign`] for clients, [`authenticate`] for the validator).
//! - [`caller`]: [`Caller`], the authenticated party and [`Caller::may`], the one check every
//!   authorization goes through.
//! - [`policy`]: the policy's rules (pure).
//! - [`envelope`]: who a request is recorded as ([`Requester`]), for the audit log and limits.
//! - [`limits`]: per-identity rate limits. [`vault`]: sensitive values (data keys, sealing).
//!
//! Imports run one way: `control` → `signing` → `caller` → `policy`; `limits` → `envelope`.

pub mod caller;
mod control;
pub mod envelope;
pub mod limits;
pub mod policy;
pub mod signing;
pub mod vault;

pub use caller::Caller;
pub use control::{Access, SecurityConfig};
pub use envelope::{requester, Envelope, Requester};
pub use policy::Scope;
pub use signing::{authenticate, sign, AuthMode};
