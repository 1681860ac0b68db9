//! The OCSP responder (RFC 6960) for the issuing CA. Answers are signed by
//! the delegated OCSP key in the HSM (its certificate, issued by the issuing
//! CA with id-kp-OCSPSigning and ocsp-nocheck, rides along in `certs`).
//!
//! Answers are pre-produced and kept per certificate, as large CAs do (the
//! RFC 5019 lightweight profile): a cached answer costs no HSM operation and
//! no database read. One is signed anew when the certificate's status may
//! have changed (the revocation epoch moved: at once for a change made by
//! this process, within [`EPOCH_POLL`] for one made by another node), or
//! when it reaches half its validity. A nonce is ignored by default
//! (`pki.ocsp_nonce = "ignore"`, RFC 8954 §2.1); with `echo` a request with
//! a nonce gets a fresh answer carrying it. A nonce longer than 32 bytes is
//! refused (RFC 8954 §2.1).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
use crate::store::{certs, revocation, DbConn, Store};

/// How old the database epoch this responder trusts may be.
pub const EPOCH_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// RFC 8954 §2.1: a nonce is 1 to 32 octets.
const MAX_NONCE: usize = 32;

/// `OCSPResponse { responseStatus malformedRequest }`, should encoding fail.
const MALFORMED: [u8; 5] = [0x30, 0x03, 0x0a, 0x01, 0x01];
/// `OCSPResponse { responseStatus internalError }`.
const INTERNAL_ERROR: [u8; 5] = [0x30, 0x03, 0x0a, 0x01, 0x02];

fn encode_status(r: OcspResponse, fallback: &[u8]) -> Vec<u8> {
    r.to_der().unwrap_or_else(|_| fallback.to_vec())
}

/// What to do with a request's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoncePolicy {
    /// Answer from the cache; the answer carries no nonce.
    Ignore,
    /// Sign a fresh answer that carries the nonce.
    Echo,
}

/// One pre-signed answer.
struct Presigned {
    der: Arc<Vec<u8>>,
    /// The revocation epoch its status was read at.
    epoch: i64,
    /// Re-sign from this time on (half the validity).
    refresh_at: OffsetDateTime,
}

/// The responder: issuer hashes computed once, pre-signed answers by
/// CertID, and the revocation epoch they were made at.
pub struct Responder {
    issuer: IssuerIds,
    validity: Duration,
    nonce: NoncePolicy,
    cache: quick_cache::sync::Cache<Vec<u8>, Arc<Presigned>>,
    /// The database epoch as last read, and when.
    epoch: AtomicI64,
    polled: Mutex<Option<Instant>>,
    /// `revocation::local_changes()` when the epoch was last read.
    seen_local: AtomicU64,
    /// Answers signed (cache misses, nonce echoes, multi-certificate requests).
    pub signed: prometheus::IntCounter,
    pub served_cached: prometheus::IntCounter,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("nonce", &self.nonce)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// A request decoded, and whether the cache can answer it.
pub struct Parsed {
    req: OcspRequest,
    /// The single CertID's DER when the cache may answer.
    key: Option<Vec<u8>>,
}

/// The outcome of the cheap, in-memory first look at a request.
pub enum Lookup {
    /// The answer, DER.
    Answer(Arc<Vec<u8>>),
    /// Needs the database or the HSM: call [`Responder::produce`] off the executor.
    Produce(Box<Parsed>),
}

impl Responder {
    pub fn new(pki: &Pki, validity: Duration, nonce: NoncePolicy) -> Result<Responder, PkiError> {
        Ok(Responder {
            issuer: IssuerIds::of(pki)?,
            validity,
            nonce,
            cache: quick_cache::sync::Cache::new(100_000),
            epoch: AtomicI64::new(i64::MIN),
            polled: Mutex::new(None),
            seen_local: AtomicU64::new(0),
            signed: prometheus::IntCounter::new(
                "tmcs_ocsp_signed_total",
                "OCSP answers signed (pre-produced or fresh)",
            )
            .map_err(|e| PkiError::Invalid(e.to_string()))?,
            served_cached: prometheus::IntCounter::new(
                "tmcs_ocsp_cached_total",
                "OCSP answers served from the pre-signed cache",
            )
            .map_err(|e| PkiError::Invalid(e.to_string()))?,
        })
    }

    /// Whether the epoch this responder holds may still be trusted: no
    /// local change since it was read, and read within [`EPOCH_POLL`].
    fn epoch_is_current(&self) -> bool {
        let polled = *self.polled.lock().unwrap_or_else(|p| p.into_inner());
        polled.is_some_and(|t| t.elapsed() < EPOCH_POLL)
            && self.seen_local.load(Ordering::SeqCst) == revocation::local_changes()
    }

    /// Reads the epoch from the database.
    fn refresh_epoch(&self, store: &Store) -> Result<i64, PkiError> {
        let local = revocation::local_changes();
        let (epoch, _) = store.read(revocation::state)?;
        self.epoch.store(epoch, Ordering::SeqCst);
        self.seen_local.store(local, Ordering::SeqCst);
        *self.polled.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(epoch)
    }

    fn cached(&self, key: &[u8], epoch: i64, now: OffsetDateTime) -> Option<Arc<Vec<u8>>> {
        let hit = self.cache.get(key)?;
        (hit.epoch == epoch && now < hit.refresh_at).then(|| hit.der.clone())
    }

    /// The in-memory first look (no database, no HSM): a malformed request's
    /// answer, a pre-signed answer, or what must be produced.
    pub fn lookup(&self, request_der: &[u8], now: OffsetDateTime) -> Lookup {
        let req = match OcspRequest::from_der(request_der) {
            Ok(r) if !r.tbs_request.request_list.is_empty() => r,
            Ok(_) => {
                tracing::debug!("OCSP request without any certificate");
                return Lookup::Answer(Arc::new(encode_status(
                    OcspResponse::malformed_request(),
                    &MALFORMED,
                )));
            }
            Err(e) => {
                tracing::debug!(error = %e, "malformed OCSP request");
                return Lookup::Answer(Arc::new(encode_status(
                    OcspResponse::malformed_request(),
                    &MALFORMED,
                )));
            }
        };
        let nonce = nonce_of(&req);
        if nonce.as_ref().is_some_and(|n| n.len() > MAX_NONCE) {
            tracing::debug!("OCSP nonce longer than 32 bytes");
            return Lookup::Answer(Arc::new(encode_status(
                OcspResponse::malformed_request(),
                &MALFORMED,
            )));
        }
        let cacheable = req.tbs_request.request_list.len() == 1
            && (nonce.is_none() || self.nonce == NoncePolicy::Ignore);
        let key = cacheable
            .then(|| req.tbs_request.request_list.first())
            .flatten()
            .and_then(|r| r.req_cert.to_der().ok());
        if let Some(k) = &key {
            if self.epoch_is_current() {
                if let Some(der) = self.cached(k, self.epoch.load(Ordering::SeqCst), now) {
                    self.served_cached.inc();
                    return Lookup::Answer(der);
                }
            }
        }
        Lookup::Produce(Box::new(Parsed { req, key }))
    }

    /// Answers what [`Self::lookup`] could not (blocking: database, HSM):
    /// always an `OCSPResponse`, `internalError` when the database or the
    /// HSM fails (the cause goes to the log).
    pub fn produce(
        &self,
        pki: &Pki,
        store: &Store,
        parsed: &Parsed,
        now: OffsetDateTime,
    ) -> Arc<Vec<u8>> {
        match self.produce_inner(pki, store, parsed, now) {
            Ok(der) => der,
            Err(e) => {
                tracing::error!(error = %e, "OCSP response failed");
                Arc::new(encode_status(
                    OcspResponse::internal_error(),
                    &INTERNAL_ERROR,
                ))
            }
        }
    }

    fn produce_inner(
        &self,
        pki: &Pki,
        store: &Store,
        parsed: &Parsed,
        now: OffsetDateTime,
    ) -> Result<Arc<Vec<u8>>, PkiError> {
        // The epoch first: a status read after it can only be as new or newer.
        let epoch = if self.epoch_is_current() {
            self.epoch.load(Ordering::SeqCst)
        } else {
            self.refresh_epoch(store)?
        };
        if let Some(k) = &parsed.key {
            if let Some(der) = self.cached(k, epoch, now) {
                self.served_cached.inc();
                return Ok(der);
            }
        }
        let echo = match &parsed.key {
            Some(_) => None,
            None => nonce_extension(&parsed.req),
        };
        let ids: Vec<&CertId> = parsed
            .req
            .tbs_request
            .request_list
            .iter()
            .map(|r| &r.req_cert)
            .collect();
        let (der, _) = answer(pki, store, &self.issuer, &ids, echo, now, self.validity)?;
        let der = Arc::new(der);
        self.signed.inc();
        if let Some(k) = &parsed.key {
            let half = self.validity / 2;
            self.cache.insert(
                k.clone(),
                Arc::new(Presigned {
                    der: der.clone(),
                    epoch,
                    refresh_at: now.checked_add(half).unwrap_or(now),
                }),
            );
        }
        Ok(der)
    }

    /// A fresh answer for one certificate of the issuing CA, signed now and
    /// never taken from the cache: the record of its status at the moment a
    /// signature is made, kept with the request (CONTRACT §13). The CertID
    /// uses SHA-1, as `openssl ocsp` and RFC 5019 clients ask. Returns the
    /// DER and whether the status is good. One HSM signature (OCSP key).
    pub fn fresh_for_certificate(
        &self,
        pki: &Pki,
        store: &Store,
        cert_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<(Vec<u8>, bool), PkiError> {
        let cert = Certificate::from_der(cert_der).map_err(der_err("certificate"))?;
        let (_, name, key) = self
            .issuer
            .hashes
            .iter()
            .find(|(oid, _, _)| *oid == rfc5912::ID_SHA_1)
            .ok_or_else(|| PkiError::Invalid("no SHA-1 issuer hashes".into()))?;
        let id = CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: rfc5912::ID_SHA_1,
                parameters: Some(der::asn1::Null.into()),
            },
            issuer_name_hash: OctetString::new(name.clone()).map_err(der_err("name hash"))?,
            issuer_key_hash: OctetString::new(key.clone()).map_err(der_err("key hash"))?,
            serial_number: cert.tbs_certificate.serial_number.clone(),
        };
        let (der, statuses) = answer(pki, store, &self.issuer, &[&id], None, now, self.validity)?;
        self.signed.inc();
        let good = matches!(statuses.as_slice(), [CertStatus::Good(_)]);
        Ok((der, good))
    }

    /// Both steps at once (for callers already off the executor).
    pub fn respond(
        &self,
        pki: &Pki,
        store: &Store,
        request_der: &[u8],
        now: OffsetDateTime,
    ) -> Arc<Vec<u8>> {
        match self.lookup(request_der, now) {
            Lookup::Answer(der) => der,
            Lookup::Produce(p) => self.produce(pki, store, &p, now),
        }
    }
}

/// The request's nonce value (the content of its OCTET STRING), if any.
fn nonce_of(req: &OcspRequest) -> Option<Vec<u8>> {
    let ext = nonce_extension(req)?;
    // extnValue holds the DER of an OCTET STRING (RFC 8954); older clients
    // put the raw bytes there. Either way, measure the nonce itself.
    let raw = ext.extn_value.as_bytes();
    Some(
        OctetString::from_der(raw)
            .map(|o| o.as_bytes().to_vec())
            .unwrap_or_else(|_| raw.to_vec()),
    )
}

fn nonce_extension(req: &OcspRequest) -> Option<x509_cert::ext::Extension> {
    req.tbs_request
        .request_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == ID_PKIX_OCSP_NONCE)
        .cloned()
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

/// What a CertID must hash to for the issuing CA, per hash algorithm,
/// computed once (parsing the CA certificate per request cost 46 % of the
/// responder's CPU; issue #8, finding 8).
struct IssuerIds {
    /// (algorithm, hash of the subject Name DER, hash of the key bits).
    hashes: Vec<(der::asn1::ObjectIdentifier, Vec<u8>, Vec<u8>)>,
    /// SHA-1 of the responder key (the ResponderID).
    responder_key_sha1: Vec<u8>,
}

impl IssuerIds {
    fn of(pki: &Pki) -> Result<IssuerIds, PkiError> {
        let ca = X509::from_der(&pki.issuing.info.der)?;
        let name_der = ca.subject_name().to_der()?;
        let key_bits = pki.issuing.point.clone();
        let mut hashes = Vec::new();
        for (oid, md) in [
            (rfc5912::ID_SHA_1, MessageDigest::sha1()),
            (rfc5912::ID_SHA_256, MessageDigest::sha256()),
            (rfc5912::ID_SHA_384, MessageDigest::sha384()),
            (rfc5912::ID_SHA_512, MessageDigest::sha512()),
        ] {
            hashes.push((
                oid,
                hash(md, &name_der)?.to_vec(),
                hash(md, &key_bits)?.to_vec(),
            ));
        }
        Ok(IssuerIds {
            hashes,
            responder_key_sha1: hash(MessageDigest::sha1(), &pki.ocsp.point)?.to_vec(),
        })
    }

    /// True when `id` names the issuing CA, hashed with the CertID's own algorithm.
    fn matches(&self, id: &CertId) -> bool {
        self.hashes.iter().any(|(oid, name, key)| {
            *oid == id.hash_algorithm.oid
                && name.as_slice() == id.issuer_name_hash.as_bytes()
                && key.as_slice() == id.issuer_key_hash.as_bytes()
        })
    }
}

fn status_of(c: &mut DbConn, issuer: &IssuerIds, id: &CertId) -> Result<CertStatus, PkiError> {
    if !issuer.matches(id) {
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

/// Signs one answer for `ids`; also returns their statuses, in order.
#[allow(clippy::too_many_arguments)]
fn answer(
    pki: &Pki,
    store: &Store,
    issuer: &IssuerIds,
    ids: &[&CertId],
    nonce: Option<x509_cert::ext::Extension>,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<(Vec<u8>, Vec<CertStatus>), PkiError> {
    let this_update = gtime(now)?;
    let next_update = gtime(
        now.checked_add(validity)
            .ok_or_else(|| PkiError::Invalid("OCSP next update out of range".into()))?,
    )?;
    let responses = store.read(|c| -> Result<Vec<SingleResponse>, PkiError> {
        ids.iter()
            .map(|id| {
                Ok(SingleResponse {
                    cert_id: (*id).clone(),
                    cert_status: status_of(c, issuer, id)?,
                    this_update,
                    next_update: Some(next_update),
                    single_extensions: None,
                })
            })
            .collect()
    })?;
    let statuses = responses.iter().map(|r| r.cert_status).collect();
    let tbs = ResponseData {
        version: Default::default(),
        responder_id: ResponderId::ByKey(
            OctetString::new(issuer.responder_key_sha1.clone()).map_err(der_err("key hash"))?,
        ),
        produced_at: this_update,
        responses,
        // A nonce goes back exactly as it came (RFC 6960 §4.4.1).
        response_extensions: nonce.map(|n| vec![n]),
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
    let der = OcspResponse::successful(basic)
        .and_then(|r| r.to_der())
        .map_err(der_err("response"))?;
    Ok((der, statuses))
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
