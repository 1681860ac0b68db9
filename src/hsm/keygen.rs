//! Key generation: EC P-256 key pairs and HMAC secret keys, always token
//! objects, sensitive and never extractable, named by a random `CKA_ID`.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};

use super::{spki_from_point, unwrap_ec_point, Hsm, HsmError, KeyId, P256_OID_DER};

/// What an EC private key may do. A key does exactly one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcUsage {
    Sign,
    Derive,
}

#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub id: KeyId,
    /// SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
    /// Uncompressed SEC1 point.
    pub point: Vec<u8>,
}

impl Hsm {
    pub fn generate_ec_p256(&self, label: &str, usage: EcUsage) -> Result<GeneratedKey, HsmError> {
        let id = KeyId::random()?;
        let sign = usage == EcUsage::Sign;
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(sign),
            Attribute::Derive(false),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::EcParams(P256_OID_DER.to_vec()),
            Attribute::Id(id.as_bytes().to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(sign),
            Attribute::Derive(!sign),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Id(id.as_bytes().to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let point = self.pool.run("ec_generate", |lease| {
            let (pub_h, _priv_h) =
                lease
                    .session()?
                    .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)?;
            let attrs = lease
                .session()?
                .get_attributes(pub_h, &[AttributeType::EcPoint])?;
            for a in attrs {
                if let Attribute::EcPoint(p) = a {
                    return Ok(unwrap_ec_point(&p)?);
                }
            }
            Err(HsmError::Unexpected("generated key has no CKA_EC_POINT".into()).into())
        })?;
        Ok(GeneratedKey {
            spki: spki_from_point(&point),
            point,
            id,
        })
    }

    /// A 256-bit generic secret for HMAC-SHA256 (the PIN pepper).
    pub fn generate_hmac_key(&self, label: &str) -> Result<KeyId, HsmError> {
        let id = KeyId::random()?;
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Id(id.as_bytes().to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        self.pool.run("hmac_generate", |lease| {
            lease
                .session()?
                .generate_key(&Mechanism::GenericSecretKeyGen, &template)?;
            Ok(())
        })?;
        Ok(id)
    }
}
