//! Rollouts (docs/rollouts.md): a change set drafted through the change path and served to a
//! canary cohort first, baked step by step, promoted as one version or rolled back by itself.
//!
//! - `judge.rs`: cohorts from the fleet's receipts, the health rules on them, what is due. Pure.
//! - `steps.rs`: start, every step as a compare-and-set on the record, promotion through the
//!   change path, notices, counters, the driver's audit records.
//! - `status.rs`: the status answer (the record, who holds which, the comparison).
//! - `external.rs`: the Prometheus signal (`--prometheus`): the query over HTTP, its answer.
//! - [`drive`]: the owner's task that judges and moves running rollouts.
//!
//! Imports run one way: `drive`/`status` → `steps` → `judge`; `drive`/`status` → `external`.

pub mod drive;
mod external;
mod judge;
mod status;
mod steps;

pub use steps::{check_start, live, verdict};
