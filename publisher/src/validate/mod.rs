//! The one validation of change sets, used by the validator service and by the offline tools
//! (`mycosynth validate`, `deploy --dry-run`): pure, no I/O.
//!
//! - `plan.rs`: naming and size rules, the schema over the resulting document (or key by key),
//!   and the diff: [`plan`], [`plan_on`], [`Plan`].
//! - [`schema`]: a compiled namespace JSON Schema ([`Schema`]).
//! - [`inherit`]: parent chains and validating a child with what it inherits.
//! - [`schema_docs`]: schema evolution (added/removed keys) and its Markdown rendering.

pub mod inherit;
mod plan;
pub mod schema;
pub mod schema_docs;

pub use plan::{difference, name_violation, names, plan, plan_on, Plan};
pub use schema::Schema;
