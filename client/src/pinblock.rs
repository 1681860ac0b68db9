//! Sealing PIN blocks the way a handset does (CONTRACT §7): ECIES on P-256
//! to the transport key.
//!
//! A PIN block is `b64(E ‖ N ‖ CT)`:
//! - `E`: a fresh ephemeral P-256 public key, uncompressed SEC1 (65 bytes);
//! - `Z`: the ECDH x-coordinate of the ephemeral key with the transport key;
//! - `T`: the transport public key, uncompressed SEC1;
//! - `K` = HKDF-SHA256(ikm `Z`, salt `E ‖ T`, info `tmcs-pinblock-v1`, 32 bytes);
//! - `N`: 12 random bytes;
//! - `CT` = AES-256-GCM(`K`, `N`, plaintext, aad `tmcs-pinblock-v1`), tag appended.

use base64::Engine;
use openssl::bn::BigNumContext;
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::symm::{encrypt_aead, Cipher};
use zeroize::Zeroizing;

/// HKDF info and AES-GCM associated data.
pub const INFO: &[u8] = b"tmcs-pinblock-v1";
const N_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// HKDF-SHA256 (RFC 5869), one 32-byte output block.
pub(crate) fn hkdf_sha256(
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ErrorStack> {
    let prk_key = PKey::hmac(salt)?;
    let mut s = Signer::new(MessageDigest::sha256(), &prk_key)?;
    s.update(ikm)?;
    let prk = Zeroizing::new(s.sign_to_vec()?);
    let okm_key = PKey::hmac(&prk)?;
    let mut s = Signer::new(MessageDigest::sha256(), &okm_key)?;
    s.update(info)?;
    s.update(&[1u8])?;
    Ok(Zeroizing::new(s.sign_to_vec()?))
}

/// Seals `plaintext` to the transport key `transport_point` (uncompressed
/// SEC1, from `/pki/transport.pem`); returns the base64 PIN block.
pub fn seal(transport_point: &[u8], plaintext: &str) -> Result<String, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let mut ctx = BigNumContext::new()?;
    let eph = EcKey::generate(&group)?;
    let e = eph
        .public_key()
        .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)?;
    let t_point = EcPoint::from_bytes(&group, transport_point, &mut ctx)?;
    let t = PKey::from_ec_key(EcKey::from_public_key(&group, &t_point)?)?;
    let eph = PKey::from_ec_key(eph)?;
    let mut d = Deriver::new(&eph)?;
    d.set_peer(&t)?;
    let z = Zeroizing::new(d.derive_to_vec()?);
    let mut salt = e.clone();
    salt.extend_from_slice(transport_point);
    let k = hkdf_sha256(&z, &salt, INFO)?;
    let mut nonce = [0u8; N_LEN];
    openssl::rand::rand_bytes(&mut nonce)?;
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        &k,
        Some(&nonce),
        INFO,
        plaintext.as_bytes(),
        &mut tag,
    )?;
    let mut out = e;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::Private;
    use openssl::symm::decrypt_aead;

    #[test]
    fn hkdf_matches_rfc5869_case_1_first_block() {
        let ikm = [0x0bu8; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hkdf_sha256(&ikm, &salt, &info).unwrap();
        assert_eq!(
            hex::encode(&okm[..]),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }

    /// The server's side of §7 with a software transport key.
    fn open(transport: &EcKey<Private>, block: &str) -> String {
        let group = transport.group();
        let mut ctx = BigNumContext::new().unwrap();
        let t = transport
            .public_key()
            .to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(block)
            .unwrap();
        let (e, rest) = raw.split_at(65);
        let (n, ct_tag) = rest.split_at(N_LEN);
        let (ct, tag) = ct_tag.split_at(ct_tag.len() - TAG_LEN);
        let e_point = EcPoint::from_bytes(group, e, &mut ctx).unwrap();
        let e_key = PKey::from_ec_key(EcKey::from_public_key(group, &e_point).unwrap()).unwrap();
        let t_key = PKey::from_ec_key(transport.clone()).unwrap();
        let mut d = Deriver::new(&t_key).unwrap();
        d.set_peer(&e_key).unwrap();
        let z = d.derive_to_vec().unwrap();
        assert_eq!(z.len(), 32);
        let mut salt = e.to_vec();
        salt.extend_from_slice(&t);
        let k = hkdf_sha256(&z, &salt, INFO).unwrap();
        let plain = decrypt_aead(Cipher::aes_256_gcm(), &k, Some(n), INFO, ct, tag).unwrap();
        String::from_utf8(plain).unwrap()
    }

    #[test]
    fn sealed_blocks_open_with_the_transport_key() {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let transport = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let t = transport
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        let plain = "v1|auth|rid|nonce|digest|4826";
        let a = seal(&t, plain).unwrap();
        let b = seal(&t, plain).unwrap();
        assert_ne!(a, b, "fresh ephemeral key and nonce each time");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(raw.len(), 65 + N_LEN + plain.len() + TAG_LEN);
        assert_eq!(raw[0], 0x04, "E is an uncompressed point");
        assert_eq!(open(&transport, &a), plain);
        assert!(seal(b"not a point", plain).is_err());
    }
}
