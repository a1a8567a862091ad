//! Why a store operation failed, and what a caller of the validator is told.

use mycosynth_subscriber::kv_scan::ScanError;
use mycosynth_subscriber::wire::ErrorKind;

use crate::failure::{failure, Failure};

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The head moved since it was read: another change set was committed first.
    #[error("the namespace/environment changed concurrently")]
    Conflict,
    /// NATS or JetStream did not answer, or answered that it cannot serve now.
    #[error("config store unavailable: {0}")]
    Unavailable(String),
    /// A stored record is not what this build can read.
    #[error("stored record {key} is damaged: {message}")]
    Damaged {
        /// The KV key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Anything else JetStream refused.
    #[error("config store refused the operation: {0}")]
    Refused(String),
}

impl From<ScanError> for StoreError {
    fn from(err: ScanError) -> Self {
        StoreError::Unavailable(err.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Failure {
        match err {
            StoreError::Conflict => failure(
                ErrorKind::Conflict,
                "the namespace/environment changed concurrently",
            ),
            StoreError::Unavailable(m) => failure(ErrorKind::Unavailable, m),
            other => failure(ErrorKind::Internal, other.to_string()),
        }
    }
}
