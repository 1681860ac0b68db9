//! A handset simulator with the real handset-side crypto of CONTRACT §7:
//! a device key, the device-signature header, and PIN blocks to the
//! transport key. Used by `tmcs demo`, the benchmark and the tests.

use base64::Engine;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde_json::{json, Value};

use crate::subscriber::pinblock;

pub struct Handset {
    pub msisdn: String,
    device: PKey<Private>,
    /// The transport public key (uncompressed point) from `/pki/transport.pem`.
    transport_point: Vec<u8>,
}

type Result<T> = std::result::Result<T, openssl::error::ErrorStack>;

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

    /// The `Authorization` header for `method path` at unix time `ts`.
    pub fn device_header(&self, method: &str, path: &str, ts: i64) -> Result<String> {
        let msg = format!("tmcs-dev-v1\n{method}\n{path}\n{}\n{ts}\n", self.msisdn);
        let mut s = Signer::new(MessageDigest::sha256(), &self.device)?;
        let sig = s.sign_oneshot_to_vec(msg.as_bytes())?;
        Ok(format!(
            "TMCS-Device msisdn=\"{}\",ts=\"{ts}\",sig=\"{}\"",
            self.msisdn,
            base64::engine::general_purpose::STANDARD.encode(sig)
        ))
    }
}
