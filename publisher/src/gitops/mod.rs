//! Config as code: a Git repository of config files is the source of truth, and these modules
//! turn it into validations, deploys and drift reports.
//!
//! Repository convention (any directory, usually a git work tree):
//!
//! ```text
//! config/<namespace>/<environment>.yaml   flat `dotted.key: value` mappings; `_meta.parent: <env>`
//!                                         declares the environment this one inherits from
//! schemas/<namespace>.schema.json         the namespace's JSON Schema (optional)
//! ```
//!
//! - [`repo`]: reading the files (with the YAML line of every key) and the git commit.
//! - [`check`]: offline validation with the same rules as the validator ([`crate::validate`]).
//! - [`drift`]: live state against the files, and the YAML edits that bring files to live.

pub mod check;
pub mod drift;
pub mod repo;
