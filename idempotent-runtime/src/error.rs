//! [`IdempotencyError`]: why the life cycle refused a call, for doors whose
//! answers are not HTTP responses (the function form and the consumers
//! built on it). It wraps the same catalogue the HTTP answers come from.

use std::fmt;
use std::time::Duration;

use crate::problem::{ErrorKind, Problem};

/// A call the life cycle refused, or could not finish: in progress, key
/// reused with another payload, invalid key, store unavailable, result too
/// large, … ([`kind`](Self::kind) says which).
///
/// An `#[idempotent(key = …)]` function returns its refusals through its own
/// error type `E`, which must implement `From<IdempotencyError>`:
///
/// ```
/// use idempotent_runtime::{ErrorKind, IdempotencyError};
///
/// #[derive(Debug)]
/// enum OrderError {
///     Refused(IdempotencyError),
///     OutOfStock,
/// }
///
/// impl From<IdempotencyError> for OrderError {
///     fn from(e: IdempotencyError) -> Self {
///         OrderError::Refused(e)
///     }
/// }
///
/// // What a consumer does with a refusal: redeliver later, or give up.
/// fn redeliver(e: &OrderError) -> bool {
///     match e {
///         OrderError::Refused(e) => e.is_transient(),
///         OrderError::OutOfStock => false,
///     }
/// }
/// # let _ = redeliver;
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyError {
    problem: Problem,
}

impl IdempotencyError {
    /// What kind of refusal this is.
    pub fn kind(&self) -> ErrorKind {
        self.problem.error_kind()
    }

    /// Whether the same call may succeed later, so that a consumer should
    /// have the message redelivered (with [`retry_after`](Self::retry_after)
    /// as its delay): a duplicate still running, or a store that is
    /// unreachable, full or shutting down.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::InProgress | ErrorKind::Unavailable)
    }

    /// How long to wait before trying again, where trying again makes sense.
    pub fn retry_after(&self) -> Option<Duration> {
        self.problem
            .retry_after
            .map(|secs| Duration::from_secs(u64::from(secs)))
    }

    /// The same refusal as the HTTP doors answer it (status, type, detail),
    /// e.g. for a function also served over HTTP.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// The refusal as a problem.
    pub fn into_problem(self) -> Problem {
        self.problem
    }
}

impl From<Problem> for IdempotencyError {
    fn from(problem: Problem) -> Self {
        IdempotencyError { problem }
    }
}

impl fmt::Display for IdempotencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.problem.title, self.problem.detail)
    }
}

impl fmt::Debug for IdempotencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyError")
            .field("kind", &self.kind())
            .field("problem", &self.problem.kind)
            .field("detail", &self.problem.detail)
            .finish()
    }
}

impl std::error::Error for IdempotencyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn kinds_follow_the_catalogue() {
        let e = IdempotencyError::from(Problem::request_in_progress(false));
        assert_eq!(e.kind(), ErrorKind::InProgress);
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        let e = IdempotencyError::from(Problem::store(&StoreError::Timeout));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_transient());
        let e = IdempotencyError::from(Problem::key_reused());
        assert_eq!(e.kind(), ErrorKind::KeyReused);
        assert!(!e.is_transient());
        assert_eq!(e.retry_after(), None);
        assert_eq!(
            IdempotencyError::from(Problem::transaction_response_too_large(10)).kind(),
            ErrorKind::TooLarge
        );
        assert_eq!(
            IdempotencyError::from(Problem::transaction_escaped()).kind(),
            ErrorKind::Failed
        );
        assert!(e.to_string().starts_with("Idempotency key reused: "));
    }
}
