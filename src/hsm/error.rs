//! The HSM layer's own error. Every PKCS#11 return code is mapped on
//! purpose; nothing secret (PIN, key material) is ever part of a message.

use cryptoki::error::{Error as CkError, RvError};

#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load PKCS#11 module {module}: {reason}")]
    ModuleLoad { module: String, reason: String },
    #[error("HSM configuration: {0}")]
    Config(String),
    #[error("token {0:?} not found")]
    TokenNotFound(String),
    #[error("HSM login failed: the PIN is incorrect")]
    PinIncorrect,
    #[error("HSM login failed: the PIN is locked")]
    PinLocked,
    #[error("HSM token PIN is not initialised")]
    PinNotInitialized,
    #[error("key {0} not found on the token")]
    KeyNotFound(String),
    #[error("no HSM session free within {0} ms")]
    PoolTimeout(u64),
    #[error("HSM session or login lost ({0})")]
    SessionLost(&'static str),
    #[error("HSM device error ({0})")]
    Device(&'static str),
    #[error("HSM rejected the input ({0})")]
    BadInput(&'static str),
    #[error("HSM refused the key for this operation ({0})")]
    KeyRefused(&'static str),
    #[error("HSM does not support the mechanism ({0})")]
    Unsupported(&'static str),
    #[error("HSM is out of resources ({0})")]
    Resources(&'static str),
    #[error("HSM returned an unexpected result: {0}")]
    Unexpected(String),
}

impl HsmError {
    /// An outage that may pass (no free session, a lost session or login,
    /// a device or resource failure): callers answer 503, not 500.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HsmError::PoolTimeout(_)
                | HsmError::SessionLost(_)
                | HsmError::Device(_)
                | HsmError::Resources(_)
        )
    }

    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HsmError::ModuleLoad { .. } => "module_load",
            HsmError::Config(_) => "config",
            HsmError::TokenNotFound(_) => "token_not_found",
            HsmError::PinIncorrect => "pin_incorrect",
            HsmError::PinLocked => "pin_locked",
            HsmError::PinNotInitialized => "pin_not_initialized",
            HsmError::KeyNotFound(_) => "key_not_found",
            HsmError::PoolTimeout(_) => "pool_timeout",
            HsmError::SessionLost(_) => "session_lost",
            HsmError::Device(_) => "device",
            HsmError::BadInput(_) => "bad_input",
            HsmError::KeyRefused(_) => "key_refused",
            HsmError::Unsupported(_) => "unsupported",
            HsmError::Resources(_) => "resources",
            HsmError::Unexpected(_) => "unexpected",
        }
    }
}

/// Errors after which the session pool is rebuilt and the login redone.
pub(crate) fn is_recoverable(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::DeviceError
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

impl From<CkError> for HsmError {
    fn from(e: CkError) -> Self {
        match e {
            CkError::Pkcs11(rv, _) => map_rv(rv),
            CkError::LibraryLoading(l) => HsmError::ModuleLoad {
                module: String::new(),
                reason: l.to_string(),
            },
            CkError::NotSupported => HsmError::Unsupported("not supported by cryptoki"),
            CkError::NullFunctionPointer | CkError::MissingSymbol(_) => {
                HsmError::Unsupported("function missing from the module")
            }
            CkError::PinNotSet => HsmError::PinNotInitialized,
            other => HsmError::Unexpected(other.to_string()),
        }
    }
}

fn map_rv(rv: RvError) -> HsmError {
    use RvError as R;
    match rv {
        R::PinIncorrect | R::PinInvalid | R::PinLenRange => HsmError::PinIncorrect,
        R::PinLocked | R::PinExpired => HsmError::PinLocked,
        R::UserPinNotInitialized => HsmError::PinNotInitialized,
        R::SessionHandleInvalid => HsmError::SessionLost("session handle invalid"),
        R::SessionClosed => HsmError::SessionLost("session closed"),
        R::UserNotLoggedIn => HsmError::SessionLost("user not logged in"),
        R::CryptokiNotInitialized => HsmError::SessionLost("library not initialised"),
        R::KeyHandleInvalid | R::ObjectHandleInvalid => {
            HsmError::SessionLost("object handle invalid")
        }
        R::DeviceRemoved | R::TokenNotPresent | R::TokenNotRecognized => {
            HsmError::Device("token removed")
        }
        R::DeviceError | R::GeneralError | R::FunctionFailed | R::FipsSelfTestFailed => {
            HsmError::Device("device failure")
        }
        R::DeviceMemory | R::HostMemory | R::SessionCount | R::BufferTooSmall => {
            HsmError::Resources("memory or sessions exhausted")
        }
        R::ArgumentsBad
        | R::DataInvalid
        | R::DataLenRange
        | R::DomainParamsInvalid
        | R::AttributeValueInvalid
        | R::PublicKeyInvalid
        | R::EncryptedDataInvalid
        | R::EncryptedDataLenRange
        | R::SignatureInvalid
        | R::SignatureLenRange => HsmError::BadInput("invalid data or parameters"),
        R::KeyTypeInconsistent
        | R::KeyFunctionNotPermitted
        | R::KeyUnextractable
        | R::KeySizeRange
        | R::KeyNotWrappable
        | R::KeyIndigestible
        | R::AttributeSensitive
        | R::ActionProhibited => HsmError::KeyRefused("key attributes forbid this"),
        R::MechanismInvalid
        | R::MechanismParamInvalid
        | R::CurveNotSupported
        | R::FunctionNotSupported
        | R::RandomNoRng
        | R::RandomSeedNotSupported => HsmError::Unsupported("mechanism or curve"),
        R::TokenWriteProtected | R::SessionReadOnly => {
            HsmError::KeyRefused("token or session is read-only")
        }
        R::TemplateIncomplete | R::TemplateInconsistent | R::AttributeTypeInvalid => {
            HsmError::Unexpected("key template rejected".into())
        }
        other => HsmError::Unexpected(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn pin_errors_are_named_and_do_not_leak() {
        let e: HsmError = CkError::Pkcs11(RvError::PinIncorrect, Function::Login).into();
        assert!(matches!(e, HsmError::PinIncorrect));
        assert_eq!(e.kind(), "pin_incorrect");
        let e: HsmError = CkError::Pkcs11(RvError::PinLocked, Function::Login).into();
        assert!(matches!(e, HsmError::PinLocked));
    }

    #[test]
    fn session_loss_is_recoverable_but_bad_input_is_not() {
        for rv in [
            RvError::SessionHandleInvalid,
            RvError::UserNotLoggedIn,
            RvError::DeviceRemoved,
            RvError::KeyHandleInvalid,
        ] {
            assert!(
                is_recoverable(&CkError::Pkcs11(rv, Function::Sign)),
                "{rv:?}"
            );
        }
        assert!(!is_recoverable(&CkError::Pkcs11(
            RvError::DataLenRange,
            Function::Sign
        )));
        assert!(!is_recoverable(&CkError::Pkcs11(
            RvError::PinIncorrect,
            Function::Login
        )));
        let e: HsmError = CkError::Pkcs11(RvError::DomainParamsInvalid, Function::DeriveKey).into();
        assert_eq!(e.kind(), "bad_input");
    }
}
