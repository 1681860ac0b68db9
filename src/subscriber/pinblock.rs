//! PIN blocks (CONTRACT §7): ECIES on P-256 to the transport key.
//!
//! `b64(E ‖ N ‖ CT)`; `Z` = ECDH(transport, E) computed in the HSM;
//! `K` = HKDF-SHA256(ikm Z, salt E ‖ T, info "tmcs-pinblock-v1", 32);
//! `CT` = AES-256-GCM(K, N, plaintext, aad "tmcs-pinblock-v1") with the tag
//! appended. Everything secret lives in zeroizing buffers. Sealing (the
//! handset's side) is in the `tmcs-client` crate.

use crate::problem::Problem;
use base64::Engine;
use openssl::symm::{decrypt_aead, Cipher};
use zeroize::Zeroizing;

use crate::error::{reject, DomainError, DomainResult};
use crate::hsm::{Custody, HsmError, KeyId};

pub const INFO: &[u8] = b"tmcs-pinblock-v1";
const E_LEN: usize = 65;
const N_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Plaintexts are short; anything longer is refused before any crypto.
const MAX_BLOCK_B64: usize = 1024;

/// HKDF-SHA256 (RFC 5869) for one 32-byte output block.
fn hkdf_sha256(
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
) -> Result<Zeroizing<Vec<u8>>, openssl::error::ErrorStack> {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;
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

fn invalid(detail: &str) -> DomainError {
    reject(Problem::PinblockInvalid, detail.to_string())
}

/// Decrypts a PIN block with the transport key in the HSM.
pub fn open(
    hsm: &dyn Custody,
    transport_key: &KeyId,
    transport_point: &[u8],
    block_b64: &str,
) -> DomainResult<Zeroizing<String>> {
    if block_b64.len() > MAX_BLOCK_B64 {
        return Err(invalid("PIN block too long"));
    }
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(block_b64.trim())
            .map_err(|_| invalid("PIN block is not base64"))?,
    );
    if raw.len() < E_LEN + N_LEN + TAG_LEN + 1 {
        return Err(invalid("PIN block too short"));
    }
    let (e, rest) = raw.split_at(E_LEN);
    let (nonce, ct_tag) = rest.split_at(N_LEN);
    let (ct, tag) = ct_tag.split_at(ct_tag.len() - TAG_LEN);
    let z = match hsm.ecdh_p256(transport_key, e) {
        Ok(z) => z,
        Err(HsmError::BadInput(_)) => return Err(invalid("ephemeral key is not a P-256 point")),
        Err(other) => return Err(other.into()),
    };
    let mut salt = Vec::with_capacity(E_LEN + transport_point.len());
    salt.extend_from_slice(e);
    salt.extend_from_slice(transport_point);
    let k = hkdf_sha256(&z, &salt, INFO).map_err(|_| invalid("key derivation failed"))?;
    let plain = Zeroizing::new(
        decrypt_aead(Cipher::aes_256_gcm(), &k, Some(nonce), INFO, ct, tag)
            .map_err(|_| invalid("PIN block does not decrypt with the transport key"))?,
    );
    let text =
        std::str::from_utf8(&plain).map_err(|_| invalid("PIN block plaintext is not UTF-8"))?;
    Ok(Zeroizing::new(text.to_string()))
}

/// `v1|activate|<msisdn>|<activation_code>|<new PIN>`
pub struct ActivatePlain {
    pub msisdn: String,
    pub code: Zeroizing<String>,
    pub pin: Zeroizing<String>,
}

/// `v1|auth|<request_id>|<nonce>|<dtbs_sha256>|<PIN>`
pub struct AuthPlain {
    pub request_id: String,
    pub nonce: String,
    pub dtbs_sha256: String,
    pub pin: Zeroizing<String>,
}

fn fields(plain: &str, n: usize) -> DomainResult<Vec<&str>> {
    let f: Vec<&str> = plain.split('|').collect();
    if f.len() != n || f.iter().any(|x| x.is_empty()) {
        return Err(invalid("PIN block plaintext has the wrong shape"));
    }
    Ok(f)
}

pub fn parse_activate(plain: &str) -> DomainResult<ActivatePlain> {
    match fields(plain, 5)?.as_slice() {
        ["v1", "activate", msisdn, code, pin] => Ok(ActivatePlain {
            msisdn: (*msisdn).to_string(),
            code: Zeroizing::new((*code).to_string()),
            pin: Zeroizing::new((*pin).to_string()),
        }),
        _ => Err(invalid("not an activation PIN block")),
    }
}

pub fn parse_auth(plain: &str) -> DomainResult<AuthPlain> {
    match fields(plain, 6)?.as_slice() {
        ["v1", "auth", request_id, nonce, dtbs, pin] => Ok(AuthPlain {
            request_id: (*request_id).to_string(),
            nonce: (*nonce).to_string(),
            dtbs_sha256: (*dtbs).to_string(),
            pin: Zeroizing::new((*pin).to_string()),
        }),
        _ => Err(invalid("not an authorisation PIN block")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn plaintexts_parse_strictly() {
        let a = parse_activate("v1|activate|+4912345678|12345678|4826").unwrap();
        assert_eq!(
            (a.msisdn.as_str(), a.code.as_str(), a.pin.as_str()),
            ("+4912345678", "12345678", "4826")
        );
        assert!(parse_activate("v1|activate|+49|code").is_err());
        assert!(parse_activate("v2|activate|a|b|c").is_err());
        assert!(parse_activate("v1|auth|a|b|c").is_err());
        assert!(parse_activate("v1|activate|a||c").is_err());
        let p = parse_auth("v1|auth|rid|nonce|digest|4826").unwrap();
        assert_eq!((p.request_id.as_str(), p.pin.as_str()), ("rid", "4826"));
        assert!(parse_auth("v1|auth|rid|nonce|digest|4826|extra").is_err());
        // Errors never carry the plaintext.
        let e = parse_auth("v1|auth|rid|nonce|digest").err().unwrap();
        assert!(!e.to_string().contains("digest"));
    }
}
