//! Change requests: a change set proposed for review, approved by others against its exact
//! content, and applied once (on request, or at its scheduled time) through the change path.
//!
//! - `records.rs`: reading and writing proposals (every step a compare-and-set), states.
//! - `propose.rs`: a validated draft becomes a proposal; an emergency change opens a review.
//! - `review.rs`: approve, reject, cancel, amend, rebase.
//! - `apply.rs`: applying an approved proposal exactly once; overlapping ones are superseded.
//! - [`schedule`]: the task that applies scheduled proposals when their time comes (on the
//!   instance owning their namespace/environment), and marks missed and expired ones.
//! - `rolled.rs`: an approved request as a rollout's candidate.
//! - `notify.rs`: the notice of each step on `mycosynth.requests.<env>.<ns>`, metrics, and the
//!   audit records of the scheduler's own steps.
//!
//! Imports run one way: `review`/`apply`/`schedule` → `propose` → `notify` → `records`.

mod apply;
mod notify;
mod propose;
mod records;
mod review;
mod rolled;
pub mod schedule;

pub use apply::SCHEDULER;
pub use propose::{parse_at, ProposalPlan};
pub use records::{effective_state, visible_to};
pub use review::Reviewer;
