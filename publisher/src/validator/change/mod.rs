//! The change path: every change set the validator commits (a change, a rollback, a deploy's
//! change set) goes through the same named steps, each a function that reads alone:
//!
//! 1. **admit** (`admit.rs`): the idempotency key is well formed and not applied already;
//! 2. **gather** (`inputs.rs`): the schema and what the environment inherits, read before the
//!    slot's lock and together; then, under the lock, the current [`State`] (cached, or loaded
//!    and completed);
//! 3. **replay or expect** (`admit.rs`): a retry of the change set that made the current head
//!    is answered with its outcome; `expected_version` is checked;
//! 4. **plan** (`plan.rs`, pure): validate the resulting document and diff it;
//! 5. **seal** (the vault): sensitive values are sealed once validated in clear;
//! 6. **stage** (`stage.rs`): the head, its change event, and the hand-over to the committer,
//!    which commits the head, publishes the event and materialises the version;
//! 7. **settle** (`settle.rs`): the reply; after a lost race the state steps back to what it
//!    was validated against, catches up with the winner, and the driver tries again.
//!
//! [`Validator::commit`] is the driver over them; [`Validator::draft`] (`draft.rs`) takes the
//! steps up to the seal and hands back the validated change set, which is how a change becomes
//! a change request. What a change asks for is an [`Order`]; the
//! approved and scheduled change requests are orders too (with a [`Base`] condition and their
//! approvers), so they take the same steps and the same checks.

mod admit;
mod draft;
mod driver;
mod inputs;
mod order;
mod plan;
mod settle;
mod stage;

pub use admit::moved_since;
pub use draft::Draft;
pub use inputs::Inputs;
pub use order::{Attribution, Base, Intent, Order};
