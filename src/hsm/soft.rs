//! A software [`Custody`] for unit tests of domain logic (no token needed).
//! Keys live in process memory; the same checks as the HSM path apply
//! (peer points on the curve, one usage per key). Never used by the service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use openssl::bn::BigNumContext;
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use zeroize::Zeroizing;

use super::{spki_from_point, Custody, EcUsage, GeneratedKey, HsmError, KeyId};

enum SoftKey {
    Ec {
        key: EcKey<Private>,
        usage: EcUsage,
    },
    Hmac(Zeroizing<Vec<u8>>),
    /// An AES-256 key-encryption key.
    Kek(Zeroizing<Vec<u8>>),
}

#[derive(Default)]
pub struct SoftCustody {
    keys: Mutex<HashMap<KeyId, SoftKey>>,
    /// ECDSA signatures made (tests count them).
    pub signatures: AtomicU64,
}

impl std::fmt::Debug for SoftCustody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftCustody").finish_non_exhaustive()
    }
}

fn ossl(e: openssl::error::ErrorStack) -> HsmError {
    HsmError::Unexpected(e.to_string())
}

fn group() -> Result<EcGroup, HsmError> {
    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(ossl)
}

/// A new P-256 key and its uncompressed public point.
fn new_ec() -> Result<(EcKey<Private>, Vec<u8>), HsmError> {
    let g = group()?;
    let key = EcKey::generate(&g).map_err(ossl)?;
    let mut ctx = BigNumContext::new().map_err(ossl)?;
    let point = key
        .public_key()
        .to_bytes(&g, PointConversionForm::UNCOMPRESSED, &mut ctx)
        .map_err(ossl)?;
    Ok((key, point))
}

impl SoftCustody {
    pub fn new() -> SoftCustody {
        SoftCustody::default()
    }

    fn with_key<T>(
        &self,
        id: &KeyId,
        f: impl FnOnce(&SoftKey) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let k = keys
            .get(id)
            .ok_or_else(|| HsmError::KeyNotFound(id.to_hex()))?;
        f(k)
    }

    /// A key-encryption key (what `tmcs init` makes in the token).
    pub fn generate_kek(&self) -> Result<KeyId, HsmError> {
        let mut secret = Zeroizing::new(vec![0u8; 32]);
        openssl::rand::rand_bytes(&mut secret).map_err(ossl)?;
        let id = KeyId::random()?;
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), SoftKey::Kek(secret));
        Ok(id)
    }

    fn kek(&self, id: &KeyId) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.with_key(id, |k| match k {
            SoftKey::Kek(s) => Ok(s.clone()),
            _ => Err(HsmError::KeyRefused("not a key-encryption key")),
        })
    }

    /// AES-256-GCM of the PKCS#8 key: nonce ‖ ciphertext ‖ tag.
    fn wrap(&self, kek: &KeyId, key: &EcKey<Private>) -> Result<Vec<u8>, HsmError> {
        let secret = self.kek(kek)?;
        let der = Zeroizing::new(
            PKey::from_ec_key(key.clone())
                .and_then(|p| p.private_key_to_pkcs8())
                .map_err(ossl)?,
        );
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce).map_err(ossl)?;
        let mut tag = [0u8; 16];
        let ct = openssl::symm::encrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            &secret,
            Some(&nonce),
            &[],
            &der,
            &mut tag,
        )
        .map_err(ossl)?;
        Ok([&nonce[..], &ct, &tag].concat())
    }

    fn unwrap(&self, kek: &KeyId, blob: &[u8]) -> Result<EcKey<Private>, HsmError> {
        let secret = self.kek(kek)?;
        if blob.len() < 28 {
            return Err(HsmError::BadInput("wrapped key too short"));
        }
        let (nonce, rest) = blob.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let der = Zeroizing::new(
            openssl::symm::decrypt_aead(
                openssl::symm::Cipher::aes_256_gcm(),
                &secret,
                Some(nonce),
                &[],
                ct,
                tag,
            )
            .map_err(|_| HsmError::BadInput("wrapped key does not unwrap"))?,
        );
        PKey::private_key_from_pkcs8(&der)
            .and_then(|p| p.ec_key())
            .map_err(ossl)
    }

    fn ec_key(&self, id: &KeyId, usage: EcUsage) -> Result<EcKey<Private>, HsmError> {
        self.with_key(id, |k| match k {
            SoftKey::Ec { key, usage: u } if *u == usage => Ok(key.clone()),
            _ => Err(HsmError::KeyRefused("key not usable for this operation")),
        })
    }
}

impl Custody for SoftCustody {
    fn sign_digest(&self, key: &KeyId, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        let k = self.ec_key(key, EcUsage::Sign)?;
        let sig = EcdsaSig::sign(digest, &k).map_err(ossl)?;
        self.signatures.fetch_add(1, Ordering::SeqCst);
        sig.to_der().map_err(ossl)
    }

    fn sign_wrapped(
        &self,
        kek: &KeyId,
        blob: &[u8],
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, HsmError> {
        let k = self.unwrap(kek, blob)?;
        let sig = EcdsaSig::sign(digest, &k).map_err(ossl)?;
        self.signatures.fetch_add(1, Ordering::SeqCst);
        sig.to_der().map_err(ossl)
    }

    fn generate_wrapped_p256(&self, kek: &KeyId) -> Result<(GeneratedKey, Vec<u8>), HsmError> {
        let (key, point) = new_ec()?;
        let blob = self.wrap(kek, &key)?;
        Ok((
            GeneratedKey {
                id: KeyId::random()?,
                spki: spki_from_point(&point),
                point,
            },
            blob,
        ))
    }

    fn rewrap(&self, from: &KeyId, to: &KeyId, blob: &[u8]) -> Result<Vec<u8>, HsmError> {
        let key = self.unwrap(from, blob)?;
        self.wrap(to, &key)
    }

    fn hmac_sha256(&self, key: &KeyId, data: &[u8]) -> Result<[u8; 32], HsmError> {
        let secret = self.with_key(key, |k| match k {
            SoftKey::Hmac(s) => Ok(s.clone()),
            _ => Err(HsmError::KeyRefused("not an HMAC key")),
        })?;
        let pkey = PKey::hmac(&secret).map_err(ossl)?;
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey)
            .map_err(ossl)?;
        let mac = signer.sign_oneshot_to_vec(data).map_err(ossl)?;
        mac.try_into()
            .map_err(|_| HsmError::Unexpected("HMAC is not 32 bytes".into()))
    }

    fn ecdh_p256(&self, key: &KeyId, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let k = self.ec_key(key, EcUsage::Derive)?;
        let g = group()?;
        let mut ctx = BigNumContext::new().map_err(ossl)?;
        let point = EcPoint::from_bytes(&g, peer, &mut ctx)
            .map_err(|_| HsmError::BadInput("peer point is not on P-256"))?;
        let peer_key = EcKey::from_public_key(&g, &point)
            .and_then(PKey::from_ec_key)
            .map_err(|_| HsmError::BadInput("peer point is not on P-256"))?;
        let own = PKey::from_ec_key(k).map_err(ossl)?;
        let mut d = Deriver::new(&own).map_err(ossl)?;
        d.set_peer(&peer_key).map_err(ossl)?;
        Ok(Zeroizing::new(d.derive_to_vec().map_err(ossl)?))
    }

    fn generate_ec_p256(&self, _label: &str, usage: EcUsage) -> Result<GeneratedKey, HsmError> {
        let (key, point) = new_ec()?;
        let id = KeyId::random()?;
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), SoftKey::Ec { key, usage });
        Ok(GeneratedKey {
            id,
            spki: spki_from_point(&point),
            point,
        })
    }

    fn generate_hmac_key(&self, _label: &str) -> Result<KeyId, HsmError> {
        let mut secret = Zeroizing::new(vec![0u8; 32]);
        openssl::rand::rand_bytes(&mut secret).map_err(ossl)?;
        let id = KeyId::random()?;
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), SoftKey::Hmac(secret));
        Ok(id)
    }

    fn public_point(&self, id: &KeyId) -> Result<Vec<u8>, HsmError> {
        let g = group()?;
        self.with_key(id, |k| match k {
            SoftKey::Ec { key, .. } => {
                let mut ctx = BigNumContext::new().map_err(ossl)?;
                key.public_key()
                    .to_bytes(&g, PointConversionForm::UNCOMPRESSED, &mut ctx)
                    .map_err(ossl)
            }
            _ => Err(HsmError::KeyRefused("not an EC key")),
        })
    }

    fn key_exists(&self, id: &KeyId) -> Result<bool, HsmError> {
        Ok(self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id))
    }

    fn destroy_key(&self, id: &KeyId) -> Result<(), HsmError> {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    fn check(&self) -> Result<(), HsmError> {
        Ok(())
    }
}
