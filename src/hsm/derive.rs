//! ECDH on P-256 for PIN blocks (CONTRACT §7): `CKM_ECDH1_DERIVE` into a
//! short-lived session secret whose value (the x-coordinate `Z`) is read once
//! and the object destroyed at once.

use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use zeroize::Zeroizing;

use super::{Hsm, HsmError, KeyId};

impl Hsm {
    /// `Z` = x-coordinate of d·P for the private key `key` and the peer's
    /// uncompressed point `peer` (65 bytes). The caller wipes it (it is zeroizing).
    pub fn ecdh_p256(&self, key: &KeyId, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if peer.len() != 65 || peer.first() != Some(&0x04) {
            return Err(HsmError::BadInput(
                "peer point must be 65-byte uncompressed P-256",
            ));
        }
        // Not every module checks that the point is on the curve (SoftHSM2
        // does not); an off-curve point would leak bits of the private key.
        if !on_p256(peer) {
            return Err(HsmError::BadInput("peer point is not on P-256"));
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        self.pool.run("ecdh_derive", |lease| {
            let h = lease.handle(key, ObjectClass::PRIVATE_KEY)?;
            let params = Ecdh1DeriveParams::new(EcKdf::null(), peer);
            let session = lease.session()?;
            let secret = session.derive_key(&Mechanism::Ecdh1Derive(params), h, &template)?;
            let read = session.get_attributes(secret, &[AttributeType::Value]);
            let destroyed = session.destroy_object(secret);
            let mut z = None;
            for a in read? {
                if let Attribute::Value(v) = a {
                    z = Some(Zeroizing::new(v));
                }
            }
            destroyed?;
            match z {
                Some(z) if z.len() == 32 => Ok(z),
                _ => Err(HsmError::Unexpected("ECDH result is not 32 bytes".into()).into()),
            }
        })
    }
}

fn on_p256(point: &[u8]) -> bool {
    use openssl::bn::BigNumContext;
    use openssl::ec::{EcGroup, EcPoint};
    use openssl::nid::Nid;
    let Ok(group) = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1) else {
        return false;
    };
    let Ok(mut ctx) = BigNumContext::new() else {
        return false;
    };
    match EcPoint::from_bytes(&group, point, &mut ctx) {
        Ok(p) => !p.is_infinity(&group) && p.is_on_curve(&group, &mut ctx).unwrap_or(false),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::on_p256;
    use openssl::bn::BigNumContext;
    use openssl::ec::{EcGroup, EcKey, PointConversionForm};
    use openssl::nid::Nid;

    #[test]
    fn off_curve_points_are_refused() {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let mut p = key
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        assert!(on_p256(&p));
        p[64] ^= 1;
        assert!(!on_p256(&p));
        assert!(!on_p256(&[0u8; 65]));
    }
}
