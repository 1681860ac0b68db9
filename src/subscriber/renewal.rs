//! A subscriber's signing key and certificate: made new (activation), or
//! renewed (a new key, the old certificate superseded and its key destroyed).

use serde::Serialize;
use time::OffsetDateTime;

use super::keys::{self, NewKey};
use super::{lock_msisdn, require_msisdn, subject, SubscriberState};
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::clock::rfc3339_seconds;
use crate::config::KeyStorage;
use crate::error::{reject, DomainResult, Problem};
use crate::pki::lifecycle::{self, Transition};
use crate::pki::{CertInfo, EcPublicKey, Reason};
use crate::states::CertStatus;
use crate::store::certs;
use crate::store::subscribers::{self, SubscriberRow};
use crate::store::DbConn;

/// Destroys a retired key (see [`keys::destroy_best_effort`]).
pub(crate) fn destroy_key_best_effort(svc: &Services, key_hex: &str) {
    keys::destroy_best_effort(svc, key_hex);
}

/// A new subscriber key (as `hsm.key_storage` says) and its certificate.
/// `conn` only reads the current KEK; the HSM and CA work is not in a
/// transaction unless the caller's is.
pub(crate) fn new_key_and_cert(
    svc: &Services,
    conn: &mut DbConn,
    s: &SubscriberRow,
    now: OffsetDateTime,
) -> DomainResult<(NewKey, CertInfo)> {
    let key = keys::generate(svc, conn)?;
    match svc.pki.issue(
        "subscriber",
        &s.pseudonym,
        vec![],
        &EcPublicKey(key.key.point.clone()),
        now,
    ) {
        Ok(cert) => Ok((key, cert)),
        Err(e) => {
            keys::discard(svc, &key);
            Err(e.into())
        }
    }
}

/// Records a subscriber's new certificate (active) in the registry and
/// returns the events of its key and certificate becoming usable.
pub(crate) fn record_new_cert(
    c: &mut DbConn,
    actor: &Actor,
    s: &SubscriberRow,
    key: &NewKey,
    cert: &CertInfo,
    now: OffsetDateTime,
) -> DomainResult<Vec<NewEvent>> {
    let owner = subject(&s.id);
    keys::record(c, key, now.unix_timestamp())?;
    certs::insert(
        c,
        &cert.to_row(
            "issuing",
            "subscriber",
            Some(&owner),
            Some(&key.id().to_hex()),
            CertStatus::Active,
            now,
        ),
    )?;
    let serial = cert.serial_hex.clone();
    Ok(vec![
        NewEvent::of(
            actor,
            serial.clone(),
            AuditEvent::SubscriberKeyGenerated {
                subscriber: owner.clone(),
                key_id: key.id().to_hex(),
                algorithm: "ecdsa-p256",
                sensitive: true,
                // A wrapped key is extractable only as a wrap under a
                // trusted KEK (CKA_WRAP_WITH_TRUSTED).
                extractable: key.storage() == KeyStorage::Wrapped,
                storage: key.storage().as_str(),
                kek_version: key.kek_version(),
            },
        ),
        NewEvent::of(
            actor,
            serial.clone(),
            AuditEvent::SubscriberCertIssued {
                subscriber: owner.clone(),
                profile: "subscriber",
                subject_cn: cert.common_name.clone(),
                fingerprint: cert.fingerprint.clone(),
                not_after: rfc3339_seconds(cert.not_after),
            },
        ),
        NewEvent::of(
            actor,
            serial,
            AuditEvent::CertActivated { subscriber: owner },
        ),
    ])
}

#[derive(Debug, Serialize)]
pub struct Renewed {
    pub serial: String,
    pub previous_serial: Option<String>,
    pub certificate: String,
}

/// `POST …/{msisdn}/renew`: a new key and certificate; the old one is
/// revoked as `superseded` and its key destroyed. The row is locked before
/// it is read in the transaction, so a renewal never writes back a PIN
/// counter or state that changed meanwhile.
pub fn renew(svc: &Services, actor: &Actor, msisdn: &str) -> DomainResult<Renewed> {
    renew_checked(svc, actor, msisdn, None)
}

/// `tmcs hsm migrate-keys` for one subscriber: its token key `old_key`
/// replaced by a new key as `hsm.key_storage` says (wrapped), with a
/// renewed certificate. False when the subscriber is not active or its key
/// changed meanwhile (nothing done).
pub(crate) fn migrate(svc: &Services, msisdn: &str, old_key: &str) -> DomainResult<bool> {
    match renew_checked(svc, &Actor::System, msisdn, Some(old_key)) {
        Ok(_) => Ok(true),
        Err(e) if e.problem() == Some(Problem::SubscriberNotActive) => Ok(false),
        Err(e) => Err(e),
    }
}

fn renew_checked(
    svc: &Services,
    actor: &Actor,
    msisdn: &str,
    migrating: Option<&str>,
) -> DomainResult<Renewed> {
    require_msisdn(msisdn)?;
    let not_active = || {
        reject(
            Problem::SubscriberNotActive,
            "only an active subscriber can be renewed",
        )
    };
    let now = svc.clock.now();
    let s = super::read_msisdn(svc, msisdn)?;
    if s.state != SubscriberState::Active {
        return Err(not_active());
    }
    // The HSM and the CA work happen outside the transaction.
    let (key, cert) = svc.store.read(|c| new_key_and_cert(svc, c, &s, now))?;
    let result = svc.store.write(|c| -> DomainResult<Option<String>> {
        let mut cur = lock_msisdn(c, msisdn)?;
        if cur.state != SubscriberState::Active {
            return Err(not_active());
        }
        if cur.cert_serial != s.cert_serial {
            return Err(reject(
                Problem::SubscriberNotActive,
                "the subscriber changed meanwhile; try again",
            ));
        }
        if migrating.is_some() && cur.key_id.as_deref() != migrating {
            return Err(reject(
                Problem::SubscriberNotActive,
                "the subscriber's key changed meanwhile",
            ));
        }
        let mut events = record_new_cert(c, actor, &cur, &key, &cert, now)?;
        let old_key = cur.key_id.clone();
        if let Some(old) = migrating {
            events.push(NewEvent::of(
                actor,
                subject(&cur.id),
                AuditEvent::KeyMigrated {
                    subscriber: subject(&cur.id),
                    old_key_id: old.to_string(),
                    new_key_id: key.id().to_hex(),
                    new_certificate: cert.serial_hex.clone(),
                },
            ));
        }
        if let Some(old) = cur.cert_serial.clone() {
            let revoked = certs::get(c, &old)?.is_some_and(|r| r.status == CertStatus::Revoked);
            if !revoked {
                let (_, ev) = lifecycle::transition(
                    c,
                    actor,
                    &old,
                    Transition::Revoke(Reason::Superseded),
                    now,
                )?;
                events.push(ev);
            }
            certs::set_superseded_by(c, &old, &cert.serial_hex)?;
            events.push(NewEvent::of(
                actor,
                old,
                AuditEvent::CertRenewed {
                    subscriber: subject(&cur.id),
                    new_serial: cert.serial_hex.clone(),
                },
            ));
        }
        cur.key_id = Some(key.id().to_hex());
        cur.cert_serial = Some(cert.serial_hex.clone());
        cur.updated_at = now.unix_timestamp();
        subscribers::save(c, &cur)?;
        audit::append_all(c, now, events)?;
        Ok(old_key)
    });
    match result {
        Ok(old_key) => {
            if let Some(k) = old_key {
                destroy_key_best_effort(svc, &k);
            }
            Ok(Renewed {
                serial: cert.serial_hex,
                previous_serial: s.cert_serial,
                certificate: cert.pem,
            })
        }
        Err(e) => {
            keys::discard(svc, &key);
            Err(e)
        }
    }
}
