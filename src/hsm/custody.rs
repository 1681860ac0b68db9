//! Key custody as a small trait (rustls' `SigningKey`, smallstep's KMS):
//! what the domain asks of the place where keys live. The PKCS#11 [`Hsm`]
//! implements it for the service; a software implementation
//! ([`super::soft::SoftCustody`], tests only) lets domain logic be
//! unit-tested without a token. Every method blocks.

use zeroize::Zeroizing;

use super::{EcUsage, GeneratedKey, Hsm, HsmError, KeyId};

pub trait Custody: Send + Sync + std::fmt::Debug {
    /// ECDSA P-256 over a SHA-256 digest, DER encoded.
    fn sign_digest(&self, key: &KeyId, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError>;

    /// ECDSA P-256 over SHA-256(`msg`), DER encoded.
    fn sign_sha256(&self, key: &KeyId, msg: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.sign_digest(key, &openssl::sha::sha256(msg))
    }

    /// ECDSA P-256 over a SHA-256 digest with the key wrapped in `blob`
    /// under the key-encryption key `kek`, DER encoded.
    fn sign_wrapped(
        &self,
        kek: &KeyId,
        blob: &[u8],
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, HsmError>;

    /// A new P-256 signing key, returned wrapped under `kek` (nothing of it
    /// stays in the custodian).
    fn generate_wrapped_p256(&self, kek: &KeyId) -> Result<(GeneratedKey, Vec<u8>), HsmError>;

    /// The key wrapped in `blob` under `from`, wrapped under `to` instead.
    fn rewrap(&self, from: &KeyId, to: &KeyId, blob: &[u8]) -> Result<Vec<u8>, HsmError>;

    /// HMAC-SHA256 with the secret key `key`.
    fn hmac_sha256(&self, key: &KeyId, data: &[u8]) -> Result<[u8; 32], HsmError>;

    /// The x-coordinate of ECDH between private key `key` and the peer's
    /// uncompressed P-256 point (checked to be on the curve).
    fn ecdh_p256(&self, key: &KeyId, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError>;

    /// A new P-256 key pair that can do exactly `usage`.
    fn generate_ec_p256(&self, label: &str, usage: EcUsage) -> Result<GeneratedKey, HsmError>;

    /// A new HMAC-SHA256 secret key.
    fn generate_hmac_key(&self, label: &str) -> Result<KeyId, HsmError>;

    /// The uncompressed SEC1 point of EC key `id`.
    fn public_point(&self, id: &KeyId) -> Result<Vec<u8>, HsmError>;

    /// Whether a private or secret key with this id exists.
    fn key_exists(&self, id: &KeyId) -> Result<bool, HsmError>;

    /// Destroys the key pair (or secret key) `id`.
    fn destroy_key(&self, id: &KeyId) -> Result<(), HsmError>;

    /// Proves the custodian answers (for `/readyz`).
    fn check(&self) -> Result<(), HsmError>;
}

impl Custody for Hsm {
    fn sign_digest(&self, key: &KeyId, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        Hsm::sign_digest(self, key, digest)
    }
    fn sign_wrapped(
        &self,
        kek: &KeyId,
        blob: &[u8],
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, HsmError> {
        Hsm::sign_wrapped(self, kek, blob, digest)
    }
    fn generate_wrapped_p256(&self, kek: &KeyId) -> Result<(GeneratedKey, Vec<u8>), HsmError> {
        Hsm::generate_wrapped_p256(self, kek)
    }
    fn rewrap(&self, from: &KeyId, to: &KeyId, blob: &[u8]) -> Result<Vec<u8>, HsmError> {
        Hsm::rewrap(self, from, to, blob)
    }
    fn hmac_sha256(&self, key: &KeyId, data: &[u8]) -> Result<[u8; 32], HsmError> {
        Hsm::hmac_sha256(self, key, data)
    }
    fn ecdh_p256(&self, key: &KeyId, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        Hsm::ecdh_p256(self, key, peer)
    }
    fn generate_ec_p256(&self, label: &str, usage: EcUsage) -> Result<GeneratedKey, HsmError> {
        Hsm::generate_ec_p256(self, label, usage)
    }
    fn generate_hmac_key(&self, label: &str) -> Result<KeyId, HsmError> {
        Hsm::generate_hmac_key(self, label)
    }
    fn public_point(&self, id: &KeyId) -> Result<Vec<u8>, HsmError> {
        Hsm::public_point(self, id)
    }
    fn key_exists(&self, id: &KeyId) -> Result<bool, HsmError> {
        Hsm::key_exists(self, id)
    }
    fn destroy_key(&self, id: &KeyId) -> Result<(), HsmError> {
        Hsm::destroy_key(self, id)
    }
    fn check(&self) -> Result<(), HsmError> {
        Hsm::check(self)
    }
}
