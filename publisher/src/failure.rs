//! A failed request, before it is written as a reply: the validator's one error type towards
//! callers (the wire's [`ApiError`], whose [`ErrorKind`] the CLI maps to exit codes and the HTTP
//! layers to statuses). Low in the house: every part may build one, and it imports no part.

use mycosynth_subscriber::wire::{ApiError, ErrorKind, Violation};

/// A failed request.
pub type Failure = ApiError;

/// A failure of `kind` with a one-line message.
pub fn failure(kind: ErrorKind, message: impl Into<String>) -> Failure {
    ApiError {
        kind,
        message: message.into(),
        violations: Vec::new(),
        current_version: None,
    }
}

/// A validation failure listing every broken rule; its message is the first one's.
pub fn invalid(violations: Vec<Violation>) -> Failure {
    let message = match violations.as_slice() {
        [] => "invalid request".to_owned(),
        [one] => one.message.clone(),
        many => format!("{} rules broken; first: {}", many.len(), many[0].message),
    };
    ApiError {
        kind: ErrorKind::Validation,
        message,
        violations,
        current_version: None,
    }
}
