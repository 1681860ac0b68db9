//! The operator's side of a subscriber's life: registration with a one-time
//! activation code, the view, block, unblock (a new code) and disconnection.
//! Every change reads the row with its lock ([`super::lock_msisdn`]).

use serde::Serialize;

use super::{
    lock_msisdn, mask_msisdn, new_activation, renewal::destroy_key_best_effort, require_msisdn,
    subject, ts, SubscriberState,
};
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, BlockedBy, NewEvent};
use crate::clock::rfc3339_seconds;
use crate::error::{reject, DomainError, DomainResult, Problem};
use crate::pki::lifecycle::{self, Transition};
use crate::pki::Reason;
use crate::secret::OneTimeSecret;
use crate::states::CertStatus;
use crate::store::certs;
use crate::store::subscribers::{self, SubscriberRow};

#[derive(Debug, Clone)]
pub struct Registration {
    pub msisdn: String,
    pub display_name: String,
    pub kyc_ref: String,
    /// Optional iMS person id (`name@person.domain`) naming this payer.
    pub party_id: Option<String>,
}

/// `201` of `POST /v1/admin/subscribers` (the code is shown once).
#[derive(Debug, Serialize)]
pub struct Registered {
    pub subscriber_id: String,
    pub activation_code: OneTimeSecret,
    pub activation_expires_at: String,
    pub reactivated: bool,
}

/// `200` of `POST …/{msisdn}/unblock` (a new code, shown once).
#[derive(Debug, Serialize)]
pub struct Unblocked {
    pub subscriber_id: String,
    pub state: SubscriberState,
    pub activation_code: OneTimeSecret,
    pub activation_expires_at: String,
}

/// `200` of `POST …/{msisdn}/disconnect`.
#[derive(Debug, Serialize)]
pub struct Disconnected {
    pub state: SubscriberState,
    pub revoked_certificates: Vec<String>,
}

/// `200` of `POST …/{msisdn}/block`.
#[derive(Debug, Serialize)]
pub struct Blocked {
    pub state: SubscriberState,
}

/// Bidirectional overrides and isolates (Trojan Source, CVE-2021-42574):
/// they make a name display as something else.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Characters that take no room: a name of only these shows as nothing.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}'
        )
}

fn check_text(field: &str, v: &str, max: usize) -> DomainResult<()> {
    let bad = v.chars().all(is_invisible)
        || v.chars().count() > max
        || v.chars().any(|c| c.is_control() || is_bidi_control(c));
    if bad {
        return Err(reject(
            Problem::RequestInvalid,
            format!("{field} must be 1-{max} printable characters, without bidirectional controls"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_show_what_they_are() {
        assert!(check_text("n", "Anna Müller", 128).is_ok());
        assert!(check_text("n", "علي", 128).is_ok());
        for bad in [
            "",
            "   ",
            "\u{200B}\u{200C}",
            "\u{FEFF}",
            "abc\u{202E}fed",
            "x\u{2066}y",
            "tab\there",
        ] {
            assert!(check_text("n", bad, 128).is_err(), "{bad:?}");
        }
    }
}

/// `POST /v1/admin/subscribers`: registers, or reactivates an archived
/// subscriber with a new code (Y.2741 alternative steps 3a–3b).
pub fn register(svc: &Services, actor: &Actor, reg: Registration) -> DomainResult<Registered> {
    require_msisdn(&reg.msisdn)?;
    check_text("display_name", &reg.display_name, 128)?;
    check_text("kyc_ref", &reg.kyc_ref, 128)?;
    if let Some(alias) = &reg.party_id {
        let ok = alias
            .parse::<crate::ims::PartyId>()
            .is_ok_and(|p| p.role() == Some(crate::ims::PartyRole::Person));
        if !ok {
            return Err(reject(
                Problem::RequestInvalid,
                "party_id must be a person id: name@person.domain",
            ));
        }
    }
    let exists = || {
        reject(
            Problem::SubscriberExists,
            "the MSISDN is already registered",
        )
    };
    let now = svc.clock.now();
    let t = now.unix_timestamp();
    // The id (an archived subscriber keeps its own) is needed for the code's hash.
    let id = match svc.store.read(|c| subscribers::by_msisdn(c, &reg.msisdn))? {
        Some(s) if s.state != SubscriberState::Archived => return Err(exists()),
        Some(s) => s.id,
        None => uuid::Uuid::new_v4().to_string(),
    };
    let code = new_activation(svc, &id, now)?;
    let unique = |e: crate::store::StoreError| {
        if e.is_unique_violation() {
            reject(
                Problem::SubscriberExists,
                "the MSISDN or party_id is already registered",
            )
        } else {
            DomainError::from(e)
        }
    };
    let reactivated = svc.store.write(|c| -> DomainResult<bool> {
        let reactivated = match subscribers::lock_by_msisdn(c, &reg.msisdn)? {
            Some(s) if s.state != SubscriberState::Archived || s.id != id => return Err(exists()),
            Some(mut s) => {
                code.apply(&mut s, t);
                s.display_name = reg.display_name.clone();
                s.kyc_ref = reg.kyc_ref.clone();
                if reg.party_id.is_some() {
                    s.alias = reg.party_id.clone();
                }
                subscribers::save(c, &s).map_err(unique)?;
                true
            }
            None => {
                let mut row = SubscriberRow {
                    id: id.clone(),
                    msisdn: reg.msisdn.clone(),
                    pseudonym: format!("sub-{}", &uuid::Uuid::new_v4().simple().to_string()[..20]),
                    display_name: reg.display_name.clone(),
                    kyc_ref: reg.kyc_ref.clone(),
                    state: SubscriberState::PendingActivation,
                    activation_hash: None,
                    activation_expires_at: None,
                    attempts: 0,
                    pin_salt: None,
                    pin_verifier: None,
                    device_spki: None,
                    key_id: None,
                    cert_serial: None,
                    created_at: t,
                    updated_at: t,
                    alias: reg.party_id.clone(),
                };
                code.apply(&mut row, t);
                subscribers::insert(c, &row).map_err(unique)?;
                false
            }
        };
        let (msisdn, kyc_ref, party_id, activation_expires_at) = (
            mask_msisdn(&reg.msisdn),
            reg.kyc_ref.clone(),
            reg.party_id.clone(),
            rfc3339_seconds(code.expires),
        );
        let event = if reactivated {
            AuditEvent::SubscriberReactivated {
                msisdn,
                kyc_ref,
                party_id,
                activation_expires_at,
            }
        } else {
            AuditEvent::SubscriberRegistered {
                msisdn,
                kyc_ref,
                party_id,
                activation_expires_at,
            }
        };
        audit::append(c, now, NewEvent::of(actor, subject(&id), event))?;
        Ok(reactivated)
    })?;
    Ok(Registered {
        subscriber_id: id,
        activation_code: OneTimeSecret::new(code.code),
        activation_expires_at: rfc3339_seconds(code.expires),
        reactivated,
    })
}

#[derive(Debug, Serialize)]
pub struct CertView {
    pub serial: String,
    pub status: CertStatus,
    pub revocation_reason: Option<String>,
    pub not_before: String,
    pub not_after: String,
    pub current: bool,
}

#[derive(Debug, Serialize)]
pub struct SubscriberView {
    pub subscriber_id: String,
    pub msisdn: String,
    pub pseudonym: String,
    pub display_name: String,
    pub kyc_ref: String,
    pub state: SubscriberState,
    pub attempts_left: u32,
    pub activation_expires_at: Option<String>,
    pub device_registered: bool,
    pub pin_set: bool,
    pub certificates: Vec<CertView>,
}

/// `GET /v1/admin/subscribers/{msisdn}`: state and certificates, no secrets.
pub fn view(svc: &Services, msisdn: &str) -> DomainResult<SubscriberView> {
    require_msisdn(msisdn)?;
    let max = svc.pins.settings.max_attempts;
    svc.store.read(|c| {
        let s = subscribers::by_msisdn(c, msisdn)?.ok_or_else(|| {
            reject(
                Problem::SubscriberNotFound,
                "no subscriber with this MSISDN",
            )
        })?;
        let certificates = certs::by_owner(c, &subject(&s.id))?
            .into_iter()
            .map(|r| CertView {
                current: s.cert_serial.as_deref() == Some(r.serial.as_str()),
                serial: r.serial,
                status: r.status,
                revocation_reason: r.revocation_reason,
                not_before: ts(r.not_before),
                not_after: ts(r.not_after),
            })
            .collect();
        Ok(SubscriberView {
            attempts_left: max.saturating_sub(u32::try_from(s.attempts).unwrap_or(0)),
            activation_expires_at: (s.state == SubscriberState::PendingActivation)
                .then_some(s.activation_expires_at)
                .flatten()
                .map(ts),
            device_registered: s.device_spki.is_some(),
            pin_set: s.pin_verifier.is_some(),
            subscriber_id: s.id,
            msisdn: s.msisdn,
            pseudonym: s.pseudonym,
            display_name: s.display_name,
            kyc_ref: s.kyc_ref,
            state: s.state,
            certificates,
        })
    })
}

/// `POST …/{msisdn}/block`: no signing, no PIN checks, until unblocked.
pub fn block(svc: &Services, actor: &Actor, msisdn: &str) -> DomainResult<Blocked> {
    require_msisdn(msisdn)?;
    let now = svc.clock.now();
    svc.store.write(|c| {
        let mut s = lock_msisdn(c, msisdn)?;
        match s.state {
            SubscriberState::Active | SubscriberState::PendingActivation => {}
            SubscriberState::Blocked => {
                return Err(reject(
                    Problem::SubscriberBlocked,
                    "the subscriber is already blocked",
                ))
            }
            SubscriberState::Archived => {
                return Err(reject(
                    Problem::SubscriberNotActive,
                    "the subscriber is disconnected",
                ))
            }
        }
        s.state = SubscriberState::Blocked;
        s.updated_at = now.unix_timestamp();
        subscribers::save(c, &s)?;
        audit::append(
            c,
            now,
            NewEvent::of(
                actor,
                subject(&s.id),
                AuditEvent::SubscriberBlocked {
                    by: BlockedBy::Operator,
                    max_attempts: None,
                },
            ),
        )?;
        Ok(Blocked {
            state: SubscriberState::Blocked,
        })
    })
}

/// `POST …/{msisdn}/unblock`: a new activation code; the PIN must be set again.
pub fn unblock(svc: &Services, actor: &Actor, msisdn: &str) -> DomainResult<Unblocked> {
    require_msisdn(msisdn)?;
    let not_blocked = || {
        reject(
            Problem::SubscriberNotActive,
            "only a blocked subscriber can be unblocked",
        )
    };
    let now = svc.clock.now();
    let current = super::read_msisdn(svc, msisdn)?;
    if current.state != SubscriberState::Blocked {
        return Err(not_blocked());
    }
    let code = new_activation(svc, &current.id, now)?;
    svc.store.write(|c| {
        let mut s = lock_msisdn(c, msisdn)?;
        if s.state != SubscriberState::Blocked || s.id != current.id {
            return Err(not_blocked());
        }
        let device = s.device_spki.take();
        code.apply(&mut s, now.unix_timestamp());
        // Unblocking keeps the registered handset; only the PIN is set anew.
        s.device_spki = device;
        subscribers::save(c, &s)?;
        audit::append(
            c,
            now,
            NewEvent::of(
                actor,
                subject(&s.id),
                AuditEvent::SubscriberUnblocked {
                    activation_expires_at: rfc3339_seconds(code.expires),
                    pin_reset: true,
                },
            ),
        )?;
        Ok(())
    })?;
    Ok(Unblocked {
        subscriber_id: current.id,
        state: SubscriberState::PendingActivation,
        activation_code: OneTimeSecret::new(code.code),
        activation_expires_at: rfc3339_seconds(code.expires),
    })
}

/// `POST …/{msisdn}/disconnect`: archive; every certificate revoked
/// (cessationOfOperation); the PIN, device and code forgotten; the keys
/// destroyed.
pub fn disconnect(svc: &Services, actor: &Actor, msisdn: &str) -> DomainResult<Disconnected> {
    require_msisdn(msisdn)?;
    let now = svc.clock.now();
    let (revoked, keys) = svc
        .store
        .write(|c| -> DomainResult<(Vec<String>, Vec<String>)> {
            let mut s = lock_msisdn(c, msisdn)?;
            if s.state == SubscriberState::Archived {
                return Err(reject(
                    Problem::SubscriberNotActive,
                    "the subscriber is already disconnected",
                ));
            }
            let mut events = Vec::new();
            let mut revoked = Vec::new();
            let mut keys = Vec::new();
            for cert in certs::by_owner(c, &subject(&s.id))? {
                if let Some(k) = &cert.key_id {
                    keys.push(k.clone());
                }
                if cert.status == CertStatus::Revoked {
                    continue;
                }
                let (_, ev) = lifecycle::transition(
                    c,
                    actor,
                    &cert.serial,
                    Transition::Revoke(Reason::CessationOfOperation),
                    now,
                )?;
                events.push(ev);
                revoked.push(cert.serial);
            }
            s.state = SubscriberState::Archived;
            s.activation_hash = None;
            s.activation_expires_at = None;
            s.pin_salt = None;
            s.pin_verifier = None;
            s.device_spki = None;
            s.key_id = None;
            s.cert_serial = None;
            s.attempts = 0;
            s.updated_at = now.unix_timestamp();
            subscribers::save(c, &s)?;
            events.push(NewEvent::of(
                actor,
                subject(&s.id),
                AuditEvent::SubscriberDisconnected {
                    certificates_revoked: revoked.clone(),
                },
            ));
            audit::append_all(c, now, events)?;
            Ok((revoked, keys))
        })?;
    // The keys can never sign again; remove them from the token.
    for k in keys {
        destroy_key_best_effort(svc, &k);
    }
    Ok(Disconnected {
        state: SubscriberState::Archived,
        revoked_certificates: revoked,
    })
}
