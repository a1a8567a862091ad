//! The validator service: the only writer. It serves the API endpoints over NATS
//! request/reply, validates each change set, commits it and publishes one change event.
//!
//! - `serve.rs`: [`run`]: opening the parts, registering the endpoints, shutdown.
//! - `instance.rs`: [`Validator`], the parts one instance serves with.
//! - `dispatch.rs`: every request's way in: routing to the owner, authentication, the rate
//!   limit, the audit record.
//! - [`endpoints`]: the table of endpoints (request type, permission, flags, handler) and the
//!   handlers.
//! - [`change`]: the change path as named steps, and its driver.
//! - [`requests`]: change requests (proposals): review, approval, application, the scheduler.
//! - [`rollouts`]: canary rollouts: steps, bake, promotion or rollback on fleet signals.
//! - [`affinity`]: which instance writes which namespace/environment.
//! - `http.rs`: `/metrics` and `/health`.
//!
//! Imports run one way: `serve` → `dispatch` → `endpoints` → `rollouts` → `requests` → `change` →
//! `instance` → `slots`.

pub mod affinity;
pub mod change;
mod dispatch;
pub mod endpoints;
pub mod http;
mod instance;
pub mod requests;
pub mod rollouts;
mod serve;
pub mod slots;

pub use instance::Validator;
pub use serve::{run, ServeError, ValidatorConfig};
