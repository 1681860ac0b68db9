//! rcgen's remote-key hooks for an HSM key: rcgen builds the TBS bytes,
//! the custodian (the HSM) signs them (SHA-256 in software, then `CKM_ECDSA`).

use std::sync::Mutex;

use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey, PKCS_ECDSA_P256_SHA256};

use crate::hsm::{Custody, HsmError, KeyId};

pub struct HsmSigner<'a> {
    hsm: &'a dyn Custody,
    key: KeyId,
    point: Vec<u8>,
    last_error: Mutex<Option<HsmError>>,
}

impl<'a> HsmSigner<'a> {
    /// `point` is the key's uncompressed public point.
    pub fn new(hsm: &'a dyn Custody, key: KeyId, point: Vec<u8>) -> Self {
        HsmSigner {
            hsm,
            key,
            point,
            last_error: Mutex::new(None),
        }
    }

    /// The HSM error behind rcgen's `RemoteKeyError`, if any.
    pub fn take_error(&self) -> Option<HsmError> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl PublicKeyData for HsmSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for HsmSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.hsm.sign_sha256(&self.key, msg).map_err(|e| {
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A P-256 public key given as an uncompressed point (e.g. from the HSM).
pub struct EcPublicKey(pub Vec<u8>);

impl PublicKeyData for EcPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}
