//! The domain layer's error: a refusal with a stable [`Problem`] (mapped
//! 1:1 to the API's problem+json), an internal fault, or an
//! infrastructure failure. Every infrastructure error says whether it is
//! transient ([`DomainError::is_transient`]): an outage of the HSM or the
//! database is answered 503 with `Retry-After`, never 500.

use crate::audit::AuditError;
use crate::hsm::HsmError;
use crate::pki::PkiError;
pub use crate::problem::Problem;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request was refused with a CONTRACT §4 problem.
    #[error("{problem}: {detail}")]
    Rejected {
        problem: Problem,
        detail: String,
        attempts_left: Option<u32>,
    },
    /// Too many attempts from this source: try again after `retry_after`.
    #[error("rate.limited: {detail}")]
    Throttled {
        detail: String,
        retry_after: std::time::Duration,
    },
    /// A fault of ours (inconsistent stored data, a broken invariant). The
    /// detail goes to the log only; the caller gets `internal`.
    #[error("internal: {0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The bank did not answer a call that cannot wait in the outbox (an
    /// instrument's reservation): 503, try again.
    #[error("the bank: {0}")]
    Bank(String),
}

impl From<diesel::result::Error> for DomainError {
    fn from(e: diesel::result::Error) -> Self {
        DomainError::Store(e.into())
    }
}

pub type DomainResult<T> = Result<T, DomainError>;

/// A refusal with a problem code.
pub fn reject(problem: Problem, detail: impl Into<String>) -> DomainError {
    DomainError::Rejected {
        problem,
        detail: detail.into(),
        attempts_left: None,
    }
}

/// A refusal that reports the attempts left.
pub fn reject_with_attempts(problem: Problem, detail: impl Into<String>, left: u32) -> DomainError {
    DomainError::Rejected {
        problem,
        detail: detail.into(),
        attempts_left: Some(left),
    }
}

/// An internal fault (answered `internal`, detail logged).
pub fn internal(detail: impl Into<String>) -> DomainError {
    DomainError::Internal(detail.into())
}

impl DomainError {
    /// The refusal's problem, if this is a refusal.
    pub fn problem(&self) -> Option<Problem> {
        match self {
            DomainError::Rejected { problem, .. } => Some(*problem),
            DomainError::Throttled { .. } => Some(Problem::TooManyRequests),
            _ => None,
        }
    }

    /// An outage that may pass: retrying later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            DomainError::Rejected { .. }
            | DomainError::Throttled { .. }
            | DomainError::Internal(_) => false,
            DomainError::Store(e) => e.is_transient(),
            DomainError::Hsm(e) => e.is_transient(),
            DomainError::Pki(e) => e.is_transient(),
            DomainError::Audit(e) => e.is_transient(),
            DomainError::Bank(_) => true,
        }
    }

    /// Which dependency failed, for the 503 detail.
    pub fn dependency(&self) -> &'static str {
        match self {
            DomainError::Hsm(_) | DomainError::Pki(PkiError::Hsm(_)) => "HSM",
            DomainError::Bank(_) => "the bank",
            _ => "database",
        }
    }
}
