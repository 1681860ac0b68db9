//! Parsed public keys by a stable name (a certificate fingerprint or the
//! hash of an SPKI): parsing PEM/DER with OpenSSL 3 is costly and the same
//! few party and device keys sign every request.

use std::sync::Arc;

use openssl::pkey::{PKey, Public};

/// A parsed certificate's key and validity period (unix seconds).
#[derive(Clone)]
pub struct CachedKey {
    pub key: PKey<Public>,
    pub not_before: i64,
    pub not_after: i64,
}

/// Bounded: at most `capacity` keys, the rarely used ones evicted first
/// (quick_cache, S3-FIFO).
pub struct KeyCache {
    cache: quick_cache::sync::Cache<String, Arc<CachedKey>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("capacity", &self.cache.capacity())
            .field("len", &self.cache.len())
            .finish()
    }
}

impl KeyCache {
    pub fn new(capacity: usize) -> KeyCache {
        KeyCache {
            cache: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// The cached entry for `name`, or `load()`'s, remembered. The name must
    /// identify the content (a fingerprint), so entries never go stale.
    /// Concurrent callers for the same name wait for one load; an error is
    /// not remembered.
    pub fn get_or_load<E>(
        &self,
        name: &str,
        load: impl FnOnce() -> Result<CachedKey, E>,
    ) -> Result<Arc<CachedKey>, E> {
        self.cache.get_or_insert_with(name, || load().map(Arc::new))
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// A certificate's key and validity from PEM.
pub fn from_cert_pem(pem: &str) -> Result<CachedKey, openssl::error::ErrorStack> {
    let x = openssl::x509::X509::from_pem(pem.as_bytes())?;
    let t = |a: &openssl::asn1::Asn1TimeRef| {
        crate::pki::cert::asn1_to_time(a)
            .map(|t| t.unix_timestamp())
            .unwrap_or(0)
    };
    Ok(CachedKey {
        not_before: t(x.not_before()),
        not_after: t(x.not_after()),
        key: x.public_key()?,
    })
}

/// An SPKI DER public key (no validity period).
pub fn from_spki_der(der: &[u8]) -> Result<CachedKey, openssl::error::ErrorStack> {
    Ok(CachedKey {
        key: PKey::public_key_from_der(der)?,
        not_before: i64::MIN,
        not_after: i64::MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_and_bounds() {
        let c = KeyCache::new(2);
        let key = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let der = PKey::from_ec_key(key).unwrap().public_key_to_der().unwrap();
        let mut loads = 0;
        for _ in 0..3 {
            c.get_or_load("a", || {
                loads += 1;
                from_spki_der(&der)
            })
            .unwrap();
        }
        assert_eq!(loads, 1);
        c.get_or_load("b", || from_spki_der(&der)).unwrap();
        c.get_or_load("c", || from_spki_der(&der)).unwrap();
        assert!(c.len() <= 2);
        assert!(c.get_or_load("x", || from_spki_der(b"junk")).is_err());
        // Many distinct keys never grow it past its capacity.
        let c = KeyCache::new(100);
        for i in 0..1000 {
            c.get_or_load(&format!("k{i}"), || from_spki_der(&der))
                .unwrap();
            assert!(c.len() <= 100, "{} entries", c.len());
        }
        assert!(!c.is_empty());
    }
}
