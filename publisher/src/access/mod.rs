//! Access: who is asking and what they may do.
//!
//! - `control.rs`: [`Access`], the validator's access control: the policy bucket, its
//!   bootstrap, authentication of each request, the `policy-get`/`policy-set` endpoints.
//! - [`signing`]: signed requests ([`sign`] for clients, [`authenticate`] for the validator).
//! - [`session`]: console sessions: a person's short-lived token for one console
//!   ([`session_token`]), checked by [`authenticate`] when a request carries one.
//! - [`caller`]: [`Caller`], the authenticated party and [`Caller::may`], the one check every
//!   authorization goes through.
//! - [`policy`]: the policy's rules (pure).
//! - [`envelope`]: who a request is recorded as ([`Requester`]), for the audit log and limits.
//! - [`limits`]: per-identity rate limits. [`vault`]: sensitive values (data keys, sealing).
//!
//! Imports run one way: `control` → `signing` → (`session`, `caller`) → `policy`; `limits` →
//! `envelope`.

pub mod caller;
mod control;
pub mod envelope;
pub mod limits;
pub mod policy;
pub mod session;
pub mod signing;
pub mod vault;

pub use caller::Caller;
pub use control::{Access, SecurityConfig};
pub use envelope::{requester, Envelope, Requester};
pub use policy::Scope;
pub use session::{session_token, SessionError};
pub use signing::{authenticate, sign, sign_with_session, AuthMode};
