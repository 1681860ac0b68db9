//! Key custody: a PKCS#11 token reached through `cryptoki`.
//!
//! * one process-wide context per module ([`context`]), initialised once;
//! * a bounded pool of read/write sessions plus one *anchor* session that
//!   keeps the application logged in ([`pool`]);
//! * key handles cached by `CKA_ID`, forgotten whenever the pool is rebuilt;
//! * recovery by itself when a session or the login is lost, counted in
//!   `tmcs_hsm_recoveries_total`;
//! * one file per operation family: [`keygen`], [`sign`], [`derive`], [`mac`],
//!   [`wrap`] (subscriber keys wrapped under a trusted KEK).
//!
//! Every method blocks; callers run them off the async executor.

mod context;
mod custody;
mod derive;
mod error;
mod keygen;
mod mac;
mod metrics;
mod pool;
mod sign;
#[cfg(test)]
pub mod soft;
pub mod softhsm;
mod wrap;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use secrecy::SecretString;

pub use context::prepare_process_env;
pub use custody::Custody;
pub use error::HsmError;
pub use keygen::{EcUsage, GeneratedKey};
pub use metrics::HsmMetrics;
pub use pool::Lease;
pub use wrap::{create_trusted_kek, ExportProbe};

use pool::Pool;

/// The DER encoding of the P-256 curve OID, as `CKA_EC_PARAMS` wants it.
pub(crate) const P256_OID_DER: [u8; 10] =
    [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// SubjectPublicKeyInfo prefix for an uncompressed P-256 point (id-ecPublicKey, prime256v1).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A key's `CKA_ID`: random bytes chosen at generation, kept in the DB.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyId(Vec<u8>);

impl KeyId {
    pub fn random() -> Result<KeyId, HsmError> {
        let mut b = vec![0u8; 16];
        openssl::rand::rand_bytes(&mut b)
            .map_err(|e| HsmError::Unexpected(format!("random: {e}")))?;
        Ok(KeyId(b))
    }
    pub fn from_hex(s: &str) -> Result<KeyId, HsmError> {
        let b = hex::decode(s).map_err(|_| HsmError::Config(format!("bad key id {s:?}")))?;
        if b.is_empty() || b.len() > 64 {
            return Err(HsmError::Config(format!("bad key id {s:?}")));
        }
        Ok(KeyId(b))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// How to reach the token.
#[derive(Clone)]
pub struct HsmSettings {
    pub module: String,
    pub token_label: String,
    pub pin: SecretString,
    pub sessions: usize,
    pub session_timeout: Duration,
    /// SoftHSM2 only: the config file the module must read.
    pub softhsm_conf: Option<PathBuf>,
}

impl std::fmt::Debug for HsmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmSettings")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"[redacted]")
            .field("sessions", &self.sessions)
            .field("session_timeout", &self.session_timeout)
            .field("softhsm_conf", &self.softhsm_conf)
            .finish()
    }
}

/// Security-relevant attributes of a private or secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAttributes {
    pub token: bool,
    pub private: bool,
    pub sensitive: bool,
    pub extractable: bool,
    pub never_extractable: bool,
    pub always_sensitive: bool,
}

/// A logged-in token. Cheap to clone.
#[derive(Clone)]
pub struct Hsm {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("token", &self.pool.label)
            .finish()
    }
}

impl Hsm {
    /// Loads the module (once per process), finds the token by label and logs in.
    pub fn open(settings: &HsmSettings, metrics: HsmMetrics) -> Result<Hsm, HsmError> {
        let ctx = context::context(&settings.module, settings.softhsm_conf.as_deref())?;
        let pool = Pool::open(ctx, settings, metrics)?;
        Ok(Hsm {
            pool: Arc::new(pool),
        })
    }

    pub fn metrics(&self) -> &HsmMetrics {
        &self.pool.metrics
    }

    pub fn token_label(&self) -> &str {
        &self.pool.label
    }

    /// Proves the token answers and the login holds (for `/readyz`).
    pub fn check(&self) -> Result<(), HsmError> {
        self.pool.run("health", |lease| lease.check_logged_in())
    }

    /// Whether a private or secret key with this id exists.
    pub fn key_exists(&self, id: &KeyId) -> Result<bool, HsmError> {
        self.pool.run("find", |lease| {
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
                match lease.handle(id, class) {
                    Ok(_) => return Ok(true),
                    Err(pool::OpError::Hsm(HsmError::KeyNotFound(_))) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(false)
        })
    }

    /// The security attributes of the private (or secret) key `id`.
    pub fn key_attributes(&self, id: &KeyId) -> Result<KeyAttributes, HsmError> {
        self.pool.run("attributes", |lease| {
            let h = match lease.handle(id, ObjectClass::PRIVATE_KEY) {
                Ok(h) => h,
                Err(pool::OpError::Hsm(HsmError::KeyNotFound(_))) => {
                    lease.handle(id, ObjectClass::SECRET_KEY)?
                }
                Err(e) => return Err(e),
            };
            let attrs = lease.session()?.get_attributes(
                h,
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                ],
            )?;
            let mut a = KeyAttributes {
                token: false,
                private: false,
                sensitive: false,
                extractable: true,
                never_extractable: false,
                always_sensitive: false,
            };
            for attr in attrs {
                match attr {
                    Attribute::Token(v) => a.token = v,
                    Attribute::Private(v) => a.private = v,
                    Attribute::Sensitive(v) => a.sensitive = v,
                    Attribute::Extractable(v) => a.extractable = v,
                    Attribute::NeverExtractable(v) => a.never_extractable = v,
                    Attribute::AlwaysSensitive(v) => a.always_sensitive = v,
                    _ => {}
                }
            }
            Ok(a)
        })
    }

    /// The public key of EC key `id` as SubjectPublicKeyInfo DER.
    pub fn public_key_spki(&self, id: &KeyId) -> Result<Vec<u8>, HsmError> {
        let point = self.public_point(id)?;
        Ok(spki_from_point(&point))
    }

    /// The public key of EC key `id` as an uncompressed SEC1 point (65 bytes).
    pub fn public_point(&self, id: &KeyId) -> Result<Vec<u8>, HsmError> {
        self.pool.run("public_key", |lease| {
            let h = lease.handle(id, ObjectClass::PUBLIC_KEY)?;
            let attrs = lease
                .session()?
                .get_attributes(h, &[AttributeType::EcPoint])?;
            for a in attrs {
                if let Attribute::EcPoint(p) = a {
                    return Ok(unwrap_ec_point(&p)?);
                }
            }
            Err(HsmError::Unexpected("public key has no CKA_EC_POINT".into()).into())
        })
    }

    /// Destroys the key pair (or secret key) `id`. Used when a half-finished
    /// operation must not leave a key behind.
    pub fn destroy_key(&self, id: &KeyId) -> Result<(), HsmError> {
        self.pool.run("destroy", |lease| {
            let template = [Attribute::Id(id.as_bytes().to_vec())];
            let found = lease.session()?.find_objects(&template)?;
            for h in found {
                lease.session()?.destroy_object(h)?;
            }
            lease.forget(id);
            Ok(())
        })
    }

    /// Test support: borrows one pooled session until the lease is dropped.
    #[doc(hidden)]
    pub fn hold_session(&self) -> Result<Lease<'_>, HsmError> {
        self.pool.checkout()
    }

    /// Test support: drops every session of this process on the token (which
    /// also ends the login), as a crashed or restarted HSM would.
    #[doc(hidden)]
    pub fn simulate_session_loss(&self) -> Result<(), HsmError> {
        self.pool.simulate_session_loss()
    }
}

/// `CKA_EC_POINT` comes wrapped in a DER OCTET STRING (`04 41 04…`); some
/// modules return the raw point. Either way, return the 65-byte point.
fn unwrap_ec_point(p: &[u8]) -> Result<Vec<u8>, HsmError> {
    match p {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 && rest.first() == Some(&0x04) => {
            Ok(rest.to_vec())
        }
        [0x04, ..] if p.len() == 65 => Ok(p.to_vec()),
        _ => Err(HsmError::Unexpected(format!(
            "unexpected EC point encoding ({} bytes)",
            p.len()
        ))),
    }
}

/// SubjectPublicKeyInfo DER for an uncompressed P-256 point.
pub fn spki_from_point(point: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(P256_SPKI_PREFIX.len() + point.len());
    v.extend_from_slice(&P256_SPKI_PREFIX);
    v.extend_from_slice(point);
    v
}

/// The uncompressed point inside a P-256 SubjectPublicKeyInfo, if it is one.
pub fn point_from_spki(spki: &[u8]) -> Option<&[u8]> {
    let rest = spki.strip_prefix(&P256_SPKI_PREFIX[..])?;
    (rest.len() == 65 && rest.first() == Some(&0x04)).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_unwrapping() {
        let mut raw = vec![0x04u8];
        raw.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend(&raw);
        assert_eq!(unwrap_ec_point(&wrapped).unwrap(), raw);
        assert_eq!(unwrap_ec_point(&raw).unwrap(), raw);
        assert!(unwrap_ec_point(&[0x04, 0x01, 0x02]).is_err());
        let spki = spki_from_point(&raw);
        assert_eq!(point_from_spki(&spki), Some(&raw[..]));
        // The prefix is a real SPKI: openssl parses it.
        let k = openssl::pkey::PKey::public_key_from_der(&{
            let g =
                openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
            let key = openssl::ec::EcKey::generate(&g).unwrap();
            let mut ctx = openssl::bn::BigNumContext::new().unwrap();
            let pt = key
                .public_key()
                .to_bytes(&g, openssl::ec::PointConversionForm::UNCOMPRESSED, &mut ctx)
                .unwrap();
            spki_from_point(&pt)
        });
        assert!(k.is_ok());
    }

    #[test]
    fn key_id_hex_round_trip() {
        let id = KeyId::random().unwrap();
        assert_eq!(KeyId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(KeyId::from_hex("zz").is_err());
        assert!(KeyId::from_hex("").is_err());
    }
}
