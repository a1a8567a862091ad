//! The fleet view: which subscriber instances hold which version.
//!
//! - `view.rs`: [`Fleet`], receipts by instance, states, expiry, convergence, the fleet metrics.
//! - [`track`]: the task that follows every receipt and exports the gauges.

pub mod track;
mod view;

pub use view::{Fleet, FleetOptions};
