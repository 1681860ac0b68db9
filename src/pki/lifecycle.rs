//! Certificate lifecycle transitions (X.1122): active → suspended ⇄ active
//! → revoked, renewal by a new key and certificate. Every transition moves
//! the revocation epoch (CRL/OCSP follow at once) and is an audit event.

use serde::Serialize;
use time::OffsetDateTime;

use super::{names, Reason};
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::error::{internal, reject, DomainResult, Problem};
use crate::states::CertStatus;
use crate::store::certs::{self, CertRow};
use crate::store::{clients, parties, DbConn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Suspend,
    Resume,
    Revoke(Reason),
}

/// Purposes tmcs manages itself (`tmcs init`); the operator API may not touch them.
const SERVER_PURPOSES: &[&str] = &[
    names::ROOT_CA,
    names::ISSUING_CA,
    names::TRANSPORT,
    names::DISPLAY,
    names::AUDIT,
    names::OCSP,
    names::TLS_SERVER,
];

/// Applies `t` to certificate `serial` inside the caller's transaction (its
/// row locked) and returns the updated row plus the audit event to append.
pub fn transition(
    conn: &mut DbConn,
    actor: &Actor,
    serial: &str,
    t: Transition,
    now: OffsetDateTime,
) -> DomainResult<(CertRow, NewEvent)> {
    let row = certs::lock(conn, serial)?.ok_or_else(|| {
        reject(
            Problem::CertificateNotFound,
            "no certificate with this serial",
        )
    })?;
    if SERVER_PURPOSES.contains(&row.purpose.as_str()) {
        return Err(reject(
            Problem::CertificateInvalidTransition,
            "server certificates are managed by `tmcs init`",
        ));
    }
    if row.status == CertStatus::Revoked {
        return Err(reject(
            Problem::CertificateRevoked,
            "the certificate is already revoked",
        ));
    }
    let at = now.unix_timestamp();
    let (status, reason, revoked_at) = match t {
        Transition::Suspend if row.status == CertStatus::Active => (
            CertStatus::Suspended,
            Some(Reason::CertificateHold.name()),
            Some(at),
        ),
        Transition::Resume if row.status == CertStatus::Suspended => {
            (CertStatus::Active, None, None)
        }
        Transition::Revoke(Reason::CertificateHold) => {
            return Err(reject(
                Problem::RequestInvalid,
                "certificateHold is a suspension: use …/suspend",
            ))
        }
        Transition::Revoke(r) => (CertStatus::Revoked, Some(r.name()), Some(at)),
        Transition::Suspend | Transition::Resume => {
            return Err(reject(
                Problem::CertificateInvalidTransition,
                format!("a certificate that is {} cannot do that", row.status),
            ))
        }
    };
    set_status(conn, serial, status, reason, revoked_at)?;
    let updated = certs::get(conn, serial)?
        .ok_or_else(|| internal(format!("certificate {serial} vanished")))?;
    let ev = NewEvent::of(
        actor,
        serial.to_string(),
        AuditEvent::CertTransition {
            purpose: row.purpose.clone(),
            owner: row.owner.clone(),
            from: row.status,
            to: status,
            reason,
        },
    );
    Ok((updated, ev))
}

/// The certificate's new status, mirrored by the mTLS identities and
/// parties that hold it (and the revocation epoch moves: CRL and OCSP
/// follow at once).
fn set_status(
    conn: &mut DbConn,
    serial: &str,
    status: CertStatus,
    reason: Option<&str>,
    revoked_at: Option<i64>,
) -> DomainResult<()> {
    certs::set_status(conn, serial, status, reason, revoked_at)?;
    clients::set_status_by_serial(conn, serial, status)?;
    parties::set_status_by_serial(conn, serial, status)?;
    Ok(())
}

/// `200` of the certificate transition routes.
#[derive(Debug, Serialize)]
pub struct CertTransitioned {
    pub serial: String,
    pub status: CertStatus,
    pub revocation_reason: Option<String>,
}

/// `POST /v1/admin/certificates/{serial}/{revoke|suspend|resume}`.
pub fn apply(
    svc: &Services,
    actor: &Actor,
    serial: &str,
    t: Transition,
) -> DomainResult<CertTransitioned> {
    let serial = super::cert::normalize_serial(serial)
        .ok_or_else(|| reject(Problem::RequestInvalid, "serial must be hex"))?;
    let now = svc.clock.now();
    let row = svc.store.write(|c| -> DomainResult<CertRow> {
        let (row, ev) = transition(c, actor, &serial, t, now)?;
        audit::append(c, now, ev)?;
        Ok(row)
    })?;
    Ok(CertTransitioned {
        serial: row.serial,
        status: row.status,
        revocation_reason: row.revocation_reason,
    })
}

/// The single check the signing path calls: the certificate is active and
/// inside its validity period.
pub fn require_usable(row: &CertRow, now: OffsetDateTime) -> DomainResult<()> {
    let t = now.unix_timestamp();
    match row.status {
        CertStatus::Active if t >= row.not_before && t <= row.not_after => Ok(()),
        CertStatus::Active => Err(reject(
            Problem::CertificateNotActive,
            "the certificate is expired or not yet valid",
        )),
        CertStatus::Revoked => Err(reject(
            Problem::CertificateRevoked,
            "the certificate is revoked",
        )),
        other => Err(reject(
            Problem::CertificateNotActive,
            format!("the certificate is {other}"),
        )),
    }
}

/// Marks active certificates past their notAfter `expired`, each with a
/// `cert.expired` event (run by the sweeper). Returns how many.
pub fn expire_certificates(svc: &Services) -> DomainResult<usize> {
    let now = svc.clock.now();
    let t = now.unix_timestamp();
    let rows = svc.store.read(|c| certs::past_not_after(c, t, 500))?;
    let mut n = 0;
    for row in rows {
        let done = svc.store.write(|c| -> DomainResult<bool> {
            let Some(cur) = certs::lock(c, &row.serial)? else {
                return Ok(false);
            };
            if cur.status != CertStatus::Active || cur.not_after >= t {
                return Ok(false);
            }
            set_status(c, &row.serial, CertStatus::Expired, None, None)?;
            audit::append(
                c,
                now,
                NewEvent::of(
                    &Actor::System,
                    row.serial.clone(),
                    AuditEvent::CertExpired {
                        purpose: row.purpose.clone(),
                        owner: row.owner.clone(),
                    },
                ),
            )?;
            Ok(true)
        })?;
        n += usize::from(done);
    }
    Ok(n)
}
