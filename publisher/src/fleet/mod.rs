//! The fleet view: which subscriber instances hold which version.
//!
//! - `view.rs`: [`Fleet`], receipts by instance, states, expiry, convergence, the fleet metrics.
//! - `signals.rs`: the health signals of the last hour, a version's impact (pure).
//! - [`track`]: the task that follows every receipt and exports the gauges.

mod signals;
pub mod track;
mod view;

pub use view::{Fleet, FleetOptions};
