//! The OCSP responder (RFC 6960) for the issuing CA. Answers are signed by
//! the delegated OCSP key in the HSM (its certificate, issued by the issuing
//! CA with id-kp-OCSPSigning and ocsp-nocheck, rides along in `certs`) and
//! follow the certificate registry at once: no cache between a status
//! change and the answer.

use const_oid::db::{rfc5912, rfc6960::ID_PKIX_OCSP_NONCE};
use der::asn1::{BitString, GeneralizedTime, OctetString};
use der::{Decode, Encode};
use openssl::hash::{hash, MessageDigest};
use openssl::x509::X509;
use spki::AlgorithmIdentifierOwned;
use time::{Duration, OffsetDateTime};
use x509_cert::ext::pkix::CrlReason;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseData, RevokedInfo, SingleResponse,
};

use super::cert::normalize_serial;
use super::crl::{standing, Standing, ISSUER};
use super::{Pki, PkiError, Reason};
use crate::store::{certs, DbConn, Store};

/// `OCSPResponse { responseStatus malformedRequest }`, should encoding fail.
const MALFORMED: [u8; 5] = [0x30, 0x03, 0x0a, 0x01, 0x01];
/// `OCSPResponse { responseStatus internalError }`.
const INTERNAL_ERROR: [u8; 5] = [0x30, 0x03, 0x0a, 0x01, 0x02];

fn encode_status(r: OcspResponse, fallback: &[u8]) -> Vec<u8> {
    r.to_der().unwrap_or_else(|_| fallback.to_vec())
}

/// Answers one DER `OCSPRequest` with a DER `OCSPResponse`: always a
/// response, `malformedRequest` for input that does not decode and
/// `internalError` when the database or HSM fails (the cause goes to the log).
pub fn respond(
    pki: &Pki,
    store: &Store,
    request_der: &[u8],
    now: OffsetDateTime,
    validity: Duration,
) -> Vec<u8> {
    let req = match OcspRequest::from_der(request_der) {
        Ok(r) if !r.tbs_request.request_list.is_empty() => r,
        Ok(_) => {
            tracing::debug!("OCSP request without any certificate");
            return encode_status(OcspResponse::malformed_request(), &MALFORMED);
        }
        Err(e) => {
            tracing::debug!(error = %e, "malformed OCSP request");
            return encode_status(OcspResponse::malformed_request(), &MALFORMED);
        }
    };
    match answer(pki, store, &req, now, validity) {
        Ok(der) => der,
        Err(e) => {
            tracing::error!(error = %e, "OCSP response failed");
            encode_status(OcspResponse::internal_error(), &INTERNAL_ERROR)
        }
    }
}

fn der_err(what: &'static str) -> impl FnOnce(der::Error) -> PkiError {
    move |e| PkiError::Invalid(format!("OCSP {what}: {e}"))
}

fn gtime(t: OffsetDateTime) -> Result<OcspGeneralizedTime, PkiError> {
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| PkiError::Invalid(format!("time before 1970: {t}")))?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map(OcspGeneralizedTime)
        .map_err(der_err("time"))
}

/// What a CertID must hash to for the issuing CA.
struct IssuerIds {
    /// DER of the issuing CA's subject Name.
    name_der: Vec<u8>,
    /// Contents of its subjectPublicKey BIT STRING (the EC point).
    key_bits: Vec<u8>,
}

impl IssuerIds {
    fn of(pki: &Pki) -> Result<IssuerIds, PkiError> {
        let ca = X509::from_der(&pki.issuing.info.der)?;
        Ok(IssuerIds {
            name_der: ca.subject_name().to_der()?,
            key_bits: pki.issuing.point.clone(),
        })
    }

    /// True when `id` names the issuing CA, hashed with the CertID's own algorithm.
    fn matches(&self, id: &CertId) -> Result<bool, PkiError> {
        let oid = id.hash_algorithm.oid;
        let md = if oid == rfc5912::ID_SHA_1 {
            MessageDigest::sha1()
        } else if oid == rfc5912::ID_SHA_256 {
            MessageDigest::sha256()
        } else if oid == rfc5912::ID_SHA_384 {
            MessageDigest::sha384()
        } else if oid == rfc5912::ID_SHA_512 {
            MessageDigest::sha512()
        } else {
            return Ok(false);
        };
        Ok(
            *hash(md, &self.name_der)? == *id.issuer_name_hash.as_bytes()
                && *hash(md, &self.key_bits)? == *id.issuer_key_hash.as_bytes(),
        )
    }
}

fn status_of(c: &mut DbConn, issuer: &IssuerIds, id: &CertId) -> Result<CertStatus, PkiError> {
    if !issuer.matches(id)? {
        return Ok(CertStatus::unknown());
    }
    let Some(serial) = normalize_serial(&hex::encode(id.serial_number.as_bytes())) else {
        return Ok(CertStatus::unknown());
    };
    let Some(row) = certs::get(c, &serial)? else {
        return Ok(CertStatus::unknown());
    };
    if row.issuer != ISSUER {
        return Ok(CertStatus::unknown());
    }
    Ok(match standing(&row) {
        Standing::Good => CertStatus::good(),
        Standing::Revoked { at, reason } => {
            let at = OffsetDateTime::from_unix_timestamp(at)
                .map_err(|e| PkiError::Invalid(format!("revocation time {at}: {e}")))?;
            CertStatus::revoked(RevokedInfo {
                revocation_time: gtime(at)?,
                revocation_reason: reason.map(crl_reason),
            })
        }
    })
}

fn crl_reason(r: Reason) -> CrlReason {
    match r {
        Reason::Unspecified => CrlReason::Unspecified,
        Reason::KeyCompromise => CrlReason::KeyCompromise,
        Reason::CaCompromise => CrlReason::CaCompromise,
        Reason::AffiliationChanged => CrlReason::AffiliationChanged,
        Reason::Superseded => CrlReason::Superseded,
        Reason::CessationOfOperation => CrlReason::CessationOfOperation,
        Reason::CertificateHold => CrlReason::CertificateHold,
        Reason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        Reason::AaCompromise => CrlReason::AaCompromise,
    }
}

fn answer(
    pki: &Pki,
    store: &Store,
    req: &OcspRequest,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<Vec<u8>, PkiError> {
    let issuer = IssuerIds::of(pki)?;
    let this_update = gtime(now)?;
    let next_update = gtime(
        now.checked_add(validity)
            .ok_or_else(|| PkiError::Invalid("OCSP next update out of range".into()))?,
    )?;
    let responses = store.read(|c| -> Result<Vec<SingleResponse>, PkiError> {
        req.tbs_request
            .request_list
            .iter()
            .map(|r| {
                Ok(SingleResponse {
                    cert_id: r.req_cert.clone(),
                    cert_status: status_of(c, &issuer, &r.req_cert)?,
                    this_update,
                    next_update: Some(next_update),
                    single_extensions: None,
                })
            })
            .collect()
    })?;
    // The nonce goes back exactly as it came (RFC 6960 §4.4.1).
    let nonce: Vec<_> = req
        .tbs_request
        .request_extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == ID_PKIX_OCSP_NONCE)
        .take(1)
        .cloned()
        .collect();
    let key_hash = hash(MessageDigest::sha1(), &pki.ocsp.point)?;
    let tbs = ResponseData {
        version: Default::default(),
        responder_id: ResponderId::ByKey(
            OctetString::new(key_hash.to_vec()).map_err(der_err("key hash"))?,
        ),
        produced_at: this_update,
        responses,
        response_extensions: (!nonce.is_empty()).then_some(nonce),
    };
    let tbs_der = tbs.to_der().map_err(der_err("response data"))?;
    let sig = pki.custody.sign_sha256(&pki.keys.ocsp, &tbs_der)?;
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        },
        signature: BitString::from_bytes(&sig).map_err(der_err("signature"))?,
        certs: Some(vec![
            Certificate::from_der(&pki.ocsp.info.der).map_err(der_err("responder certificate"))?
        ]),
    };
    OcspResponse::successful(basic)
        .and_then(|r| r.to_der())
        .map_err(der_err("response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_statuses_are_valid_der() {
        let m = OcspResponse::from_der(&MALFORMED).unwrap();
        assert_eq!(m, OcspResponse::malformed_request());
        let i = OcspResponse::from_der(&INTERNAL_ERROR).unwrap();
        assert_eq!(i, OcspResponse::internal_error());
    }
}
