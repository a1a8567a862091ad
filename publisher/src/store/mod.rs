//! The validator's side of NATS JetStream: creating the buckets, reading state, history and
//! schemas, and staging change sets for the committer. All KV keys and subjects come from the
//! wire contract (`mycosynth_subscriber::wire`).
//!
//! The commit point of a change set is its version head, written with a compare-and-set on the
//! head's previous revision and carrying the whole change set: two validators racing on one
//! namespace/environment cannot both win. The value keys, the history record and the idempotency
//! record of that version are its materialisation: written with the head (one atomic batch) or
//! right after it, conditional on the head still being that version. Readers roll a head's
//! change set forward over whatever of it is not materialised yet, and a writer completes it
//! ([`Store::complete`]) before committing the next version, so at most the newest version is
//! ever incomplete. See [`committer`] for when each way is used.
//!
//! - `buckets.rs`: [`Store`], the handle on the buckets: opening them, and the reads and writes
//!   of single records (heads, history, schemas, parent declarations, idempotency records).
//! - `state.rs`: [`State`], one namespace/environment as the validator holds it, and loading,
//!   catching up and completing it.
//! - `commit.rs`: [`Commit`], what a change set writes, and staging it for the committer.
//! - [`committer`]: the group-commit task. `watched.rs`: records kept in memory by a KV watch.
//! - `proposals.rs`: change requests, each step a compare-and-set on its record.
//! - `rollouts.rs`: the rollout record of each namespace/environment, by compare-and-set.
//! - `records.rs`: reading and writing one JSON record. `error.rs`: [`StoreError`].
//!
//! Imports run one way: `buckets`/`state`/`commit`/`proposals`/`rollouts` → `records` → `committer` → `error`.

mod buckets;
mod commit;
pub mod committer;
mod error;
mod proposals;
mod records;
mod rollouts;
mod state;
mod watched;

pub use buckets::{ensure_bucket, BucketOptions, Store, KV_HISTORY, MAX_MESSAGE_BYTES};
pub use commit::{materialised_records, Commit};
pub use error::StoreError;
pub use proposals::Stored;
pub use records::parse_schema;
pub use rollouts::StoredRollout;
pub use state::{state_at, KeptDocument, State};
pub use watched::Watched;
