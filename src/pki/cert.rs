//! Facts about one certificate, read with OpenSSL.

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::X509;
use time::OffsetDateTime;

use super::PkiError;
use crate::store::certs::CertRow;

#[derive(Debug, Clone)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub pem: String,
    /// Lowercase hex of the serial number.
    pub serial_hex: String,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub spki_der: Vec<u8>,
    pub common_name: String,
}

pub fn asn1_to_time(t: &Asn1TimeRef) -> Result<OffsetDateTime, PkiError> {
    let epoch = Asn1Time::from_unix(0)?;
    let d = epoch.diff(t)?;
    let secs = i64::from(d.days) * 86_400 + i64::from(d.secs);
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| PkiError::Invalid(e.to_string()))
}

/// Normalises a serial given by a user (any case, optional colons or leading zeros).
pub fn normalize_serial(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.is_empty() || hex.len() > 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        return Some("0".into());
    }
    // Whole bytes, as serials are stored.
    Some(if trimmed.len() % 2 == 1 {
        format!("0{trimmed}")
    } else {
        trimmed.to_string()
    })
}

impl CertInfo {
    pub fn from_x509(x: &X509) -> Result<CertInfo, PkiError> {
        let der = x.to_der()?;
        let pem = String::from_utf8(x.to_pem()?).map_err(|e| PkiError::Invalid(e.to_string()))?;
        let serial = x
            .serial_number()
            .to_bn()?
            .to_hex_str()?
            .to_ascii_lowercase();
        let fingerprint = hex::encode(x.digest(MessageDigest::sha256())?);
        let common_name = x
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok())
            .unwrap_or_default();
        Ok(CertInfo {
            serial_hex: normalize_serial(&serial).unwrap_or(serial),
            fingerprint,
            not_before: asn1_to_time(x.not_before())?,
            not_after: asn1_to_time(x.not_after())?,
            spki_der: x.public_key()?.public_key_to_der()?,
            common_name,
            der,
            pem,
        })
    }

    pub fn from_der(der: &[u8]) -> Result<CertInfo, PkiError> {
        Self::from_x509(&X509::from_der(der)?)
    }

    pub fn from_pem(pem: &str) -> Result<CertInfo, PkiError> {
        Self::from_x509(&X509::from_pem(pem.as_bytes())?)
    }

    /// The registry row for this certificate.
    pub fn to_row(
        &self,
        issuer: &str,
        purpose: &str,
        owner: Option<&str>,
        key_id: Option<&str>,
        status: crate::states::CertStatus,
        now: OffsetDateTime,
    ) -> CertRow {
        CertRow {
            serial: self.serial_hex.clone(),
            issuer: issuer.to_string(),
            purpose: purpose.to_string(),
            owner: owner.map(str::to_string),
            key_id: key_id.map(str::to_string),
            pem: self.pem.clone(),
            fingerprint: self.fingerprint.clone(),
            not_before: self.not_before.unix_timestamp(),
            not_after: self.not_after.unix_timestamp(),
            status,
            revocation_reason: None,
            revoked_at: None,
            superseded_by: None,
            created_at: now.unix_timestamp(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalise() {
        assert_eq!(normalize_serial("0A:BC").as_deref(), Some("0abc"));
        assert_eq!(normalize_serial("00ABC").as_deref(), Some("0abc"));
        assert_eq!(normalize_serial("4f00").as_deref(), Some("4f00"));
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(""), None);
    }
}
