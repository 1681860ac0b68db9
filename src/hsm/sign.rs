//! ECDSA P-256 signing. There is no `CKM_ECDSA_SHA256` in SoftHSM2, and
//! `CKM_ECDSA` signs whatever it is given, so the message is always hashed
//! here first; the raw `r‖s` answer becomes a DER `Ecdsa-Sig-Value`.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;

use super::{Hsm, HsmError, KeyId};

impl Hsm {
    /// ECDSA P-256 over SHA-256(`msg`), DER encoded.
    pub fn sign_sha256(&self, key: &KeyId, msg: &[u8]) -> Result<Vec<u8>, HsmError> {
        let digest = openssl::sha::sha256(msg);
        self.sign_digest(key, &digest)
    }

    /// ECDSA P-256 over a SHA-256 digest, DER encoded.
    pub fn sign_digest(&self, key: &KeyId, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        let raw = self.pool.run("ecdsa_sign", |lease| {
            let h = lease.handle(key, ObjectClass::PRIVATE_KEY)?;
            Ok(lease.session()?.sign(&Mechanism::Ecdsa, h, digest)?)
        })?;
        raw_to_der(&raw)
    }
}

/// `r‖s` (64 bytes for P-256) to DER.
pub(crate) fn raw_to_der(raw: &[u8]) -> Result<Vec<u8>, HsmError> {
    if raw.len() != 64 {
        return Err(HsmError::Unexpected(format!(
            "ECDSA signature of {} bytes",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(32);
    let conv =
        |e: openssl::error::ErrorStack| HsmError::Unexpected(format!("signature encoding: {e}"));
    let sig = EcdsaSig::from_private_components(
        BigNum::from_slice(r).map_err(conv)?,
        BigNum::from_slice(s).map_err(conv)?,
    )
    .map_err(conv)?;
    sig.to_der().map_err(conv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_signature_becomes_der() {
        let mut raw = vec![0u8; 64];
        raw[31] = 1;
        raw[63] = 2;
        let der = raw_to_der(&raw).unwrap();
        assert_eq!(der, vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]);
        assert!(raw_to_der(&raw[..63]).is_err());
    }
}
