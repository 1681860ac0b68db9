//! The issuing CA's CRL (RFC 5280 §5): built from the certificate registry,
//! signed in the HSM, cached per node and shared between nodes through the
//! `crls` table. It is rebuilt when the revocation epoch moves (any status
//! change) or when half of its validity has passed, never per request.

use crate::states::CertStatus;
use std::sync::{Arc, RwLock};

use base64::Engine;
use openssl::x509::X509;
use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::cert::normalize_serial;
use super::{signing_error, Pki, PkiError, Reason};
use crate::store::certs::{self, CertRow};
use crate::store::revocation::{self, CrlRow};
use crate::store::{DbConn, Store};

/// The CA whose CRL this is (value of `certificates.issuer`).
pub const ISSUER: &str = "issuing";

/// How a certificate stands with its CA, from its registry row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Good,
    /// Revoked (or on hold, reason `certificateHold`) since `at` (unix seconds).
    /// `reason` is `None` when unspecified.
    Revoked {
        at: i64,
        reason: Option<Reason>,
    },
}

/// `suspended` → on hold; `revoked` → revoked with its stored reason; any
/// other state (`active`, `issued`, `expired`, …) → good unless the row
/// carries a revocation reason (e.g. expired after being revoked).
pub fn standing(row: &CertRow) -> Standing {
    // Without a recorded time, the conservative answer is "since issuance".
    let at = row.revoked_at.unwrap_or(row.created_at);
    let stored_reason = || {
        let r = row.revocation_reason.as_deref().and_then(|s| {
            let parsed = Reason::parse(s);
            if parsed.is_none() {
                tracing::warn!(serial = %row.serial, reason = s, "unknown revocation reason stored");
            }
            parsed
        });
        r.filter(|r| *r != Reason::Unspecified)
    };
    match row.status {
        CertStatus::Suspended => Standing::Revoked {
            at,
            reason: Some(Reason::CertificateHold),
        },
        CertStatus::Revoked => Standing::Revoked {
            at,
            reason: stored_reason(),
        },
        _ if row.revocation_reason.is_some() => Standing::Revoked {
            at,
            reason: stored_reason(),
        },
        _ => Standing::Good,
    }
}

fn rcgen_reason(r: Reason) -> RevocationReason {
    match r {
        Reason::Unspecified => RevocationReason::Unspecified,
        Reason::KeyCompromise => RevocationReason::KeyCompromise,
        Reason::CaCompromise => RevocationReason::CaCompromise,
        Reason::AffiliationChanged => RevocationReason::AffiliationChanged,
        Reason::Superseded => RevocationReason::Superseded,
        Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
        Reason::CertificateHold => RevocationReason::CertificateHold,
        Reason::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
        Reason::AaCompromise => RevocationReason::AaCompromise,
    }
}

fn unix(t: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(t).map_err(|e| PkiError::Invalid(format!("time {t}: {e}")))
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Serial bytes of a registry row.
pub(crate) fn serial_bytes(serial: &str) -> Result<Vec<u8>, PkiError> {
    normalize_serial(serial)
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| PkiError::Invalid(format!("stored serial {serial:?} is not hex")))
}

/// The CRL entry of a listed certificate (revoked or on hold), or `None`.
pub fn crl_entry(row: &CertRow) -> Result<Option<RevokedCertParams>, PkiError> {
    let Standing::Revoked { at, reason } = standing(row) else {
        return Ok(None);
    };
    Ok(Some(RevokedCertParams {
        serial_number: SerialNumber::from_slice(&serial_bytes(&row.serial)?),
        revocation_time: unix(at)?,
        reason_code: reason.map(rcgen_reason),
        invalidity_date: None,
    }))
}

/// The entries of every certificate the issuing CA's CRL must list, read
/// in pages of [`CRL_PAGE`] rows in serial order (memory: the entries, not
/// the rows).
pub fn crl_entries(c: &mut DbConn) -> Result<Vec<RevokedCertParams>, PkiError> {
    let mut entries = Vec::new();
    let mut after = String::new();
    loop {
        let page = certs::listed_on_crl(c, ISSUER, &after, CRL_PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.serial.clone();
        for row in &page {
            entries.extend(crl_entry(row)?);
        }
        if page.len() < CRL_PAGE as usize {
            break;
        }
    }
    Ok(entries)
}

/// Rows read per page while a CRL is built.
pub const CRL_PAGE: i64 = 1_000;

/// A DER CRL v2 of the issuing CA listing `revoked_certs` (from
/// [`crl_entries`]), signed by the issuing CA key in the HSM.
pub fn build_crl(
    pki: &Pki,
    revoked_certs: Vec<RevokedCertParams>,
    crl_number: i64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<Vec<u8>, PkiError> {
    // rcgen writes the CRL's authority key identifier from the params, not
    // from the issuer: take it from the CA's own subjectKeyIdentifier.
    let ca = X509::from_der(&pki.issuing.info.der)?;
    let key_identifier_method = match ca.subject_key_id() {
        Some(ski) => KeyIdMethod::PreSpecified(ski.as_slice().to_vec()),
        None => KeyIdMethod::Sha256,
    };
    let params = CertificateRevocationListParams {
        this_update: whole_seconds(this_update),
        next_update: whole_seconds(next_update),
        crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method,
    };
    let signer = pki.issuing_signer();
    let issuer = Issuer::from_ca_cert_der(&pki.issuing.info.der.clone().into(), &signer)
        .map_err(|e| PkiError::Invalid(format!("issuing CA certificate: {e}")))?;
    let crl = params
        .signed_by(&issuer)
        .map_err(|e| signing_error(e, &signer))?;
    Ok(crl.der().to_vec())
}

#[derive(Debug, Clone)]
struct Cached {
    epoch: i64,
    crl_number: i64,
    next_update: OffsetDateTime,
    der: Arc<Vec<u8>>,
}

/// A CRL is reissued once half of its validity has passed.
fn fresh(next_update: OffsetDateTime, now: OffsetDateTime, validity: Duration) -> bool {
    now < next_update - validity / 2
}

/// The current CRL, cached in memory; shared by all workers of a node.
#[derive(Debug, Default)]
pub struct CrlService {
    cached: RwLock<Option<Cached>>,
}

impl CrlService {
    pub fn new() -> Self {
        Self::default()
    }

    /// The DER of the current CRL. Served from memory while the revocation
    /// state and the newest CRL number in the database are unchanged and it
    /// is fresh; else taken from the database if another node made a fresh
    /// one for this state; else built, signed and stored under the next CRL
    /// number (one transaction, so numbers only grow, across nodes too).
    pub fn current(
        &self,
        store: &Store,
        pki: &Pki,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<Arc<Vec<u8>>, PkiError> {
        let (epoch, number) = store.read(revocation::state)?;
        if let Some(c) = self
            .cached
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if c.epoch == epoch && c.crl_number == number && fresh(c.next_update, now, validity) {
                return Ok(c.der.clone());
            }
        }
        let next_update = now
            .checked_add(validity)
            .ok_or_else(|| PkiError::Invalid("CRL next update out of range".into()))?;
        let cached = store.write(|c| -> Result<Cached, PkiError> {
            revocation::lock_state(c)?;
            let (epoch, _) = revocation::state(c)?;
            if let Some(row) = revocation::latest_crl(c)? {
                let next = unix(row.next_update)?;
                if row.revocation_epoch == epoch && fresh(next, now, validity) {
                    let der = base64::engine::general_purpose::STANDARD
                        .decode(&row.der_b64)
                        .map_err(|e| {
                            PkiError::Invalid(format!("stored CRL {}: {e}", row.crl_number))
                        })?;
                    return Ok(Cached {
                        epoch,
                        crl_number: row.crl_number,
                        next_update: next,
                        der: Arc::new(der),
                    });
                }
            }
            let crl_number = revocation::next_crl_number(c)?;
            let listed = crl_entries(c)?;
            let entries = listed.len();
            let der = build_crl(pki, listed, crl_number, now, next_update)?;
            revocation::insert_crl(
                c,
                &CrlRow {
                    crl_number,
                    revocation_epoch: epoch,
                    this_update: now.unix_timestamp(),
                    next_update: next_update.unix_timestamp(),
                    der_b64: base64::engine::general_purpose::STANDARD.encode(&der),
                },
            )?;
            tracing::info!(crl_number, epoch, entries, "CRL issued");
            Ok(Cached {
                epoch,
                crl_number,
                next_update: whole_seconds(next_update),
                der: Arc::new(der),
            })
        })?;
        let der = cached.der.clone();
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Some(cached);
        Ok(der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use CertStatus::{Active, Expired, Revoked, Suspended};

    fn row(status: CertStatus, reason: Option<&str>, revoked_at: Option<i64>) -> CertRow {
        CertRow {
            serial: "4f00".into(),
            issuer: ISSUER.into(),
            purpose: "test".into(),
            owner: None,
            key_id: None,
            pem: String::new(),
            fingerprint: String::new(),
            not_before: 0,
            not_after: 0,
            status,
            revocation_reason: reason.map(str::to_string),
            revoked_at,
            superseded_by: None,
            created_at: 7,
        }
    }

    /// The CRL is read in pages: every listed certificate is on it exactly
    /// once across page boundaries, and nothing that is not listed.
    #[test]
    fn crl_entries_are_read_in_pages_and_lose_nothing() {
        let kit = crate::testkit::Kit::new();
        let n = (CRL_PAGE as usize) * 2 + 37;
        kit.svc
            .store
            .write(|c| -> Result<(), crate::store::StoreError> {
                for i in 0..n + 50 {
                    let mut r = row(
                        if i < n { Revoked } else { Active },
                        Some("keyCompromise"),
                        Some(100),
                    );
                    r.serial = format!("7e{i:08x}");
                    r.fingerprint = format!("fp{i}");
                    if i >= n {
                        r.revocation_reason = None;
                        r.revoked_at = None;
                    }
                    certs::insert(c, &r)?;
                }
                Ok(())
            })
            .unwrap();
        let entries = kit.svc.store.read(crl_entries).unwrap();
        let mut serials: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| e.serial_number.as_ref().to_vec())
            .collect();
        serials.sort();
        serials.dedup();
        assert_eq!(entries.len(), n, "every revoked certificate once");
        assert_eq!(serials.len(), n, "no serial twice");
    }

    #[test]
    fn standing_follows_the_lifecycle() {
        assert_eq!(standing(&row(Active, None, None)), Standing::Good);
        assert_eq!(standing(&row(Expired, None, None)), Standing::Good);
        assert_eq!(
            standing(&row(Suspended, None, Some(100))),
            Standing::Revoked {
                at: 100,
                reason: Some(Reason::CertificateHold)
            }
        );
        assert_eq!(
            standing(&row(Revoked, Some("keyCompromise"), Some(200))),
            Standing::Revoked {
                at: 200,
                reason: Some(Reason::KeyCompromise)
            }
        );
        assert_eq!(
            standing(&row(Expired, Some("superseded"), Some(300))),
            Standing::Revoked {
                at: 300,
                reason: Some(Reason::Superseded)
            }
        );
        // Unspecified is left out (RFC 5280 §5.3.1); no time → since issuance.
        assert_eq!(
            standing(&row(Revoked, Some("unspecified"), None)),
            Standing::Revoked {
                at: 7,
                reason: None
            }
        );
    }

    #[test]
    fn freshness_is_half_the_validity() {
        let t = OffsetDateTime::UNIX_EPOCH + Duration::days(1000);
        let v = Duration::hours(24);
        assert!(fresh(t + v, t, v));
        assert!(fresh(t + v, t + Duration::hours(11), v));
        assert!(!fresh(t + v, t + Duration::hours(12), v));
    }

    #[test]
    fn serials_decode() {
        assert_eq!(serial_bytes("4f00").unwrap(), vec![0x4f, 0]);
        assert_eq!(serial_bytes("abc").unwrap(), vec![0x0a, 0xbc]);
        assert!(serial_bytes("xyz").is_err());
    }
}
