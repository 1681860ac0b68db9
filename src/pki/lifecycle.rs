//! Certificate lifecycle transitions (X.1122): active → suspended ⇄ active
//! → revoked, renewal by a new key and certificate. Every transition moves
//! the revocation epoch (CRL/OCSP follow at once) and is an audit event.

use serde_json::json;
use time::OffsetDateTime;

use super::{names, Reason};
use crate::audit::{Actor, NewEvent};
use crate::error::{reject, DomainResult};
use crate::store::certs::{self, CertRow};
use crate::store::schema::{clients, parties};
use crate::store::DbConn;
use diesel::prelude::*;

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

/// Applies `t` to certificate `serial` inside the caller's transaction and
/// returns the updated row plus the audit event to append.
pub fn transition(
    conn: &mut DbConn,
    actor: &Actor,
    serial: &str,
    t: Transition,
    now: OffsetDateTime,
) -> DomainResult<(CertRow, NewEvent)> {
    let row = certs::get(conn, serial)?
        .ok_or_else(|| reject("certificate.not_found", "no certificate with this serial"))?;
    if SERVER_PURPOSES.contains(&row.purpose.as_str()) {
        return Err(reject(
            "certificate.invalid_transition",
            "server certificates are managed by `tmcs init`",
        ));
    }
    if row.status == "revoked" {
        return Err(reject(
            "certificate.revoked",
            "the certificate is already revoked",
        ));
    }
    let at = now.unix_timestamp();
    let (status, reason, revoked_at, action) = match t {
        Transition::Suspend if row.status == "active" => (
            "suspended",
            Some(Reason::CertificateHold.name()),
            Some(at),
            "cert.suspended",
        ),
        Transition::Resume if row.status == "suspended" => ("active", None, None, "cert.resumed"),
        Transition::Revoke(Reason::CertificateHold) => {
            return Err(reject(
                "request.invalid",
                "certificateHold is a suspension: use …/suspend",
            ))
        }
        Transition::Revoke(r) => ("revoked", Some(r.name()), Some(at), "cert.revoked"),
        Transition::Suspend | Transition::Resume => {
            return Err(reject(
                "certificate.invalid_transition",
                format!("a certificate that is {} cannot do that", row.status),
            ))
        }
    };
    certs::set_status(conn, serial, status, reason, revoked_at)?;
    mirror_identity_status(conn, serial, status)?;
    let updated = certs::get(conn, serial)?
        .ok_or_else(|| reject("certificate.not_found", "certificate vanished"))?;
    let ev = NewEvent::new(
        actor,
        action,
        Some(serial.to_string()),
        json!({ "purpose": row.purpose, "owner": row.owner, "from": row.status, "to": status, "reason": reason }),
    );
    Ok((updated, ev))
}

/// mTLS identities and parties follow their certificate's state.
fn mirror_identity_status(conn: &mut DbConn, serial: &str, status: &str) -> DomainResult<()> {
    diesel::update(clients::table.filter(clients::serial.eq(serial)))
        .set(clients::status.eq(status))
        .execute(conn)?;
    diesel::update(parties::table.filter(parties::cert_serial.eq(serial)))
        .set(parties::status.eq(status))
        .execute(conn)?;
    Ok(())
}

/// The single check the signing path calls: the certificate is active and
/// inside its validity period.
pub fn require_usable(row: &CertRow, now: OffsetDateTime) -> DomainResult<()> {
    let t = now.unix_timestamp();
    match row.status.as_str() {
        "active" if t >= row.not_before && t <= row.not_after => Ok(()),
        "active" => Err(reject(
            "certificate.not_active",
            "the certificate is expired or not yet valid",
        )),
        "revoked" => Err(reject("certificate.revoked", "the certificate is revoked")),
        other => Err(reject(
            "certificate.not_active",
            format!("the certificate is {other}"),
        )),
    }
}

/// Marks active certificates past their notAfter `expired`, each with a
/// `cert.expired` event (run periodically while serving). Returns how many.
pub fn expire_certificates(app: &crate::app::App) -> DomainResult<usize> {
    let now = app.clock.now();
    let t = now.unix_timestamp();
    let rows = app.store.read(|c| certs::past_not_after(c, t, 500))?;
    let mut n = 0;
    for row in rows {
        let done = app.store.write(|c| -> DomainResult<bool> {
            let Some(cur) = certs::get(c, &row.serial)? else {
                return Ok(false);
            };
            if cur.status != "active" || cur.not_after >= t {
                return Ok(false);
            }
            certs::set_status(c, &row.serial, "expired", None, None)?;
            mirror_identity_status(c, &row.serial, "expired")?;
            crate::audit::append(
                c,
                now,
                NewEvent::new(
                    &Actor::System,
                    "cert.expired",
                    Some(row.serial.clone()),
                    json!({ "purpose": row.purpose, "owner": row.owner }),
                ),
            )?;
            Ok(true)
        })?;
        n += usize::from(done);
    }
    Ok(n)
}
