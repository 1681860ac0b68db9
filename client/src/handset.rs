//! A handset simulator with the real handset-side crypto of CONTRACT §7:
//! a device key, the device-signature header, and PIN blocks to the
//! transport key. Used by `tmcs demo`, the benchmark and the tests.
//!
//! PIN-block plaintexts (§7; the PIN change is an addition, `docs/api.md`):
//! `v1|activate|<msisdn>|<code>|<PIN>`, `v1|auth|<request_id>|<nonce>|<dtbs_sha256>|<PIN>`,
//! `v1|pin-old|<msisdn>|<PIN>`, `v1|pin-new|<msisdn>|<PIN>`.

use base64::Engine;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde_json::{json, Value};

use crate::pinblock;

pub struct Handset {
    pub msisdn: String,
    device: PKey<Private>,
    /// The transport public key (uncompressed point) from `/pki/transport.pem`.
    transport_point: Vec<u8>,
}

type Result<T> = std::result::Result<T, openssl::error::ErrorStack>;

/// What the device key signs for the `TMCS-Device` header (CONTRACT §7):
/// `tmcs-dev-v1\n<METHOD>\n<path>\n<msisdn>\n<ts>\n`.
pub fn device_message(method: &str, path: &str, msisdn: &str, ts: i64) -> String {
    format!("tmcs-dev-v1\n{method}\n{path}\n{msisdn}\n{ts}\n")
}

/// The `tmcs-dev-v2` message (an addition to CONTRACT §7): the v1 lines,
/// then the base64url (no padding) SHA-256 of the request body.
pub fn device_message_v2(method: &str, path: &str, msisdn: &str, ts: i64, body: &[u8]) -> String {
    let digest =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(openssl::sha::sha256(body));
    format!("tmcs-dev-v2\n{method}\n{path}\n{msisdn}\n{ts}\n{digest}\n")
}

/// `s` replaced by `n − s` when it is in the upper half (the low-S form
/// that `tmcs-dev-v2` requires), DER encoded.
fn low_s(der: &[u8]) -> Result<Vec<u8>> {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ecdsa::EcdsaSig;
    let sig = EcdsaSig::from_der(der)?;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let mut ctx = BigNumContext::new()?;
    let mut n = BigNum::new()?;
    group.order(&mut n, &mut ctx)?;
    let mut half = BigNum::new()?;
    half.rshift1(&n)?;
    let s = sig.s().to_owned()?;
    let s = if s > half {
        let mut low = BigNum::new()?;
        low.checked_sub(&n, &s)?;
        low
    } else {
        s
    };
    EcdsaSig::from_private_components(sig.r().to_owned()?, s)?.to_der()
}

/// The uncompressed P-256 point of a PEM certificate's key.
pub fn point_of_cert_pem(pem: &[u8]) -> Result<Vec<u8>> {
    let x = openssl::x509::X509::from_pem(pem)?;
    let key = x.public_key()?.ec_key()?;
    let mut ctx = openssl::bn::BigNumContext::new()?;
    key.public_key().to_bytes(
        key.group(),
        openssl::ec::PointConversionForm::UNCOMPRESSED,
        &mut ctx,
    )
}

impl Handset {
    /// A new handset with a fresh device key; `transport_pem` is `/pki/transport.pem`.
    pub fn new(msisdn: &str, transport_pem: &[u8]) -> Result<Handset> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        Ok(Handset {
            msisdn: msisdn.to_string(),
            device: PKey::from_ec_key(EcKey::generate(&group)?)?,
            transport_point: point_of_cert_pem(transport_pem)?,
        })
    }

    /// A handset whose device key is `device` (a P-256 key the caller
    /// keeps or derives, e.g. a benchmark's payers drawn from a large population).
    pub fn with_device_key(
        msisdn: &str,
        transport_pem: &[u8],
        device: EcKey<Private>,
    ) -> Result<Handset> {
        Ok(Handset {
            msisdn: msisdn.to_string(),
            device: PKey::from_ec_key(device)?,
            transport_point: point_of_cert_pem(transport_pem)?,
        })
    }

    pub fn device_spki_b64(&self) -> Result<String> {
        Ok(base64::engine::general_purpose::STANDARD.encode(self.device.public_key_to_der()?))
    }

    /// The body of `POST /v1/handset/activate`.
    pub fn activation_body(&self, code: &str, pin: &str) -> Result<Value> {
        let block = pinblock::seal(
            &self.transport_point,
            &format!("v1|activate|{}|{code}|{pin}", self.msisdn),
        )?;
        Ok(json!({
            "msisdn": self.msisdn,
            "activation_code": code,
            "device_public_key": self.device_spki_b64()?,
            "pin_block": block,
        }))
    }

    /// The body of `POST /v1/handset/pin`.
    pub fn pin_change_body(&self, old: &str, new: &str) -> Result<Value> {
        Ok(json!({
            "old_pin_block": pinblock::seal(&self.transport_point, &format!("v1|pin-old|{}|{old}", self.msisdn))?,
            "new_pin_block": pinblock::seal(&self.transport_point, &format!("v1|pin-new|{}|{new}", self.msisdn))?,
        }))
    }

    /// A PIN block authorising request `request_id`.
    pub fn auth_pin_block(
        &self,
        request_id: &str,
        nonce: &str,
        dtbs_sha256: &str,
        pin: &str,
    ) -> Result<String> {
        pinblock::seal(
            &self.transport_point,
            &format!("v1|auth|{request_id}|{nonce}|{dtbs_sha256}|{pin}"),
        )
    }

    /// The `tmcs-dev-v2` `Authorization` header for `method path` with
    /// `body` at unix time `ts`: the signature covers the body's SHA-256
    /// and is in low-S form.
    pub fn device_header_v2(
        &self,
        method: &str,
        path: &str,
        ts: i64,
        body: &[u8],
    ) -> Result<String> {
        let msg = device_message_v2(method, path, &self.msisdn, ts, body);
        let mut s = Signer::new(MessageDigest::sha256(), &self.device)?;
        let sig = low_s(&s.sign_oneshot_to_vec(msg.as_bytes())?)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let digest =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(openssl::sha::sha256(body));
        Ok(format!(
            "TMCS-Device msisdn=\"{}\",ts=\"{ts}\",body_sha256=\"{digest}\",sig=\"{}\"",
            self.msisdn,
            b64.encode(sig)
        ))
    }

    /// The `Authorization` header for `method path` at unix time `ts`.
    pub fn device_header(&self, method: &str, path: &str, ts: i64) -> Result<String> {
        let msg = device_message(method, path, &self.msisdn, ts);
        let mut s = Signer::new(MessageDigest::sha256(), &self.device)?;
        let sig = s.sign_oneshot_to_vec(msg.as_bytes())?;
        Ok(format!(
            "TMCS-Device msisdn=\"{}\",ts=\"{ts}\",sig=\"{}\"",
            self.msisdn,
            base64::engine::general_purpose::STANDARD.encode(sig)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_header_signs_the_contract_message() {
        let ca_key = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        // A self-signed certificate stands in for /pki/transport.pem.
        let mut b = openssl::x509::X509::builder().unwrap();
        b.set_pubkey(&ca_key).unwrap();
        let now = openssl::asn1::Asn1Time::days_from_now(0).unwrap();
        let later = openssl::asn1::Asn1Time::days_from_now(1).unwrap();
        b.set_not_before(&now).unwrap();
        b.set_not_after(&later).unwrap();
        b.sign(&ca_key, MessageDigest::sha256()).unwrap();
        let pem = b.build().to_pem().unwrap();
        let h = Handset::new("+4912345678", &pem).unwrap();
        assert_eq!(h.transport_point.len(), 65);
        let hdr = h.device_header("GET", "/v1/handset/requests", 5).unwrap();
        let sig_b64 = hdr
            .strip_prefix("TMCS-Device msisdn=\"+4912345678\",ts=\"5\",sig=\"")
            .and_then(|s| s.strip_suffix('"'))
            .unwrap();
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig_b64)
            .unwrap();
        let spki = base64::engine::general_purpose::STANDARD
            .decode(h.device_spki_b64().unwrap())
            .unwrap();
        let device = PKey::public_key_from_der(&spki).unwrap();
        let msg = "tmcs-dev-v1\nGET\n/v1/handset/requests\n+4912345678\n5\n";
        assert_eq!(
            device_message("GET", "/v1/handset/requests", "+4912345678", 5),
            msg
        );
        let mut v = openssl::sign::Verifier::new(MessageDigest::sha256(), &device).unwrap();
        assert!(v.verify_oneshot(&sig, msg.as_bytes()).unwrap());
    }
}
