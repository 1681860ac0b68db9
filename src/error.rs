//! The domain layer's error: a refusal with a stable problem code (mapped
//! 1:1 to the API's problem+json), or an infrastructure failure.

use crate::audit::AuditError;
use crate::hsm::HsmError;
use crate::pki::PkiError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request was refused; `code` is a CONTRACT §4 problem code.
    #[error("{code}: {detail}")]
    Rejected {
        code: &'static str,
        detail: String,
        attempts_left: Option<u32>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl From<diesel::result::Error> for DomainError {
    fn from(e: diesel::result::Error) -> Self {
        DomainError::Store(e.into())
    }
}

pub type DomainResult<T> = Result<T, DomainError>;

/// A refusal with a problem code.
pub fn reject(code: &'static str, detail: impl Into<String>) -> DomainError {
    DomainError::Rejected {
        code,
        detail: detail.into(),
        attempts_left: None,
    }
}

/// A refusal that reports the attempts left.
pub fn reject_with_attempts(
    code: &'static str,
    detail: impl Into<String>,
    left: u32,
) -> DomainError {
    DomainError::Rejected {
        code,
        detail: detail.into(),
        attempts_left: Some(left),
    }
}

impl DomainError {
    pub fn code(&self) -> Option<&'static str> {
        match self {
            DomainError::Rejected { code, .. } => Some(code),
            _ => None,
        }
    }
}
