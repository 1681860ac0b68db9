//! Handset activation (CONTRACT §7, Y.2741 6.4.2.2): the one-time code and
//! the new PIN arrive in a PIN block; the code is checked in constant time
//! against its keyed hash with the shared try counter; on success tmcs
//! stores the device key and the PIN verifier and, unless the subscriber
//! still has a usable key, generates one in the HSM and issues its certificate.

use crate::problem::Problem;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::pin::{check_in_tx, Check};
use super::renewal::{new_key_and_cert, record_new_cert};
use super::{activation_hash, pinblock, subject, SubscriberState};
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, BlockedBy, NewEvent};
use crate::error::{internal, reject, reject_with_attempts, DomainResult};
use crate::hsm::GeneratedKey;
use crate::pki::CertInfo;
use crate::states::CertStatus;
use crate::store::{certs, subscribers};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub msisdn: String,
    pub activation_code: Zeroizing<String>,
    pub device_public_key: String,
    pub pin_block: Zeroizing<String>,
}

impl std::fmt::Debug for ActivateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivateRequest")
            .field("msisdn", &super::mask_msisdn(&self.msisdn))
            .finish_non_exhaustive()
    }
}

/// `200` of `POST /v1/handset/activate`.
#[derive(Debug, serde::Serialize)]
pub struct Activated {
    pub certificate: String,
    pub chain: String,
    pub serial: String,
}

/// Decodes and checks a device public key (base64 SPKI DER, P-256).
pub fn parse_device_key(b64: &str) -> DomainResult<Vec<u8>> {
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| reject(Problem::RequestInvalid, "device_public_key is not base64"))?;
    let key = openssl::pkey::PKey::public_key_from_der(&der).map_err(|_| {
        reject(
            Problem::RequestInvalid,
            "device_public_key is not a SubjectPublicKeyInfo",
        )
    })?;
    let ok = key
        .ec_key()
        .ok()
        .and_then(|k| k.group().curve_name())
        .is_some_and(|n| n == openssl::nid::Nid::X9_62_PRIME256V1);
    if !ok {
        return Err(reject(
            Problem::RequestInvalid,
            "device_public_key must be EC P-256",
        ));
    }
    Ok(der)
}

enum Outcome {
    Done { serial: String, pem: String },
    Wrong { left: u32 },
    Blocked,
}

pub fn activate(svc: &Services, req: ActivateRequest) -> DomainResult<Activated> {
    let now = svc.clock.now();
    if !super::valid_msisdn(&req.msisdn) {
        return Err(reject(
            Problem::RequestInvalid,
            "msisdn must be E.164: + and 8-15 digits",
        ));
    }
    let device = parse_device_key(&req.device_public_key)?;
    let plain = pinblock::open(
        svc.custody.as_ref(),
        &svc.pki.keys.transport,
        &svc.pki.transport.point,
        &req.pin_block,
    )?;
    let p = pinblock::parse_activate(&plain)?;
    if p.msisdn != req.msisdn
        || !super::pin::ct_eq(p.code.as_bytes(), req.activation_code.as_bytes())
    {
        return Err(reject(
            Problem::PinblockInvalid,
            "the PIN block is not bound to this msisdn and activation code",
        ));
    }
    svc.pins.check_rules(&p.pin)?;

    let s = svc.store.read(|c| subscribers::by_msisdn(c, &req.msisdn))?;
    let s = match s {
        Some(s) if s.state == SubscriberState::PendingActivation => s,
        Some(s) if s.state == SubscriberState::Blocked => {
            return Err(reject(
                Problem::SubscriberBlocked,
                "the subscriber is blocked; ask the operator",
            ))
        }
        _ => {
            return Err(reject(
                Problem::ActivationNotPending,
                "no activation is pending for this MSISDN",
            ))
        }
    };
    if s.activation_expires_at
        .is_none_or(|t| now.unix_timestamp() > t)
    {
        return Err(reject(
            Problem::ActivationExpired,
            "the activation code has expired; ask the operator for a new one",
        ));
    }

    // Work that does not depend on the outcome, before the transaction: the
    // code's keyed hash and the PIN verifier. The key and certificate are
    // made inside it, only once the code is known to be right.
    let candidate = activation_hash(svc, &s.id, &p.code)?;
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| internal(e.to_string()))?;
    let verifier = svc.pins.verifier(svc.custody.as_ref(), &salt, &p.pin)?;

    let actor = Actor::Subscriber(s.id.clone());
    let max = svc.pins.settings.max_attempts;
    let device_b64 = req.device_public_key.trim().to_string();
    // A key made inside the transaction, to destroy if it does not commit.
    let mut fresh: Option<(GeneratedKey, CertInfo)> = None;
    let result = svc.store.write(|c| -> DomainResult<Outcome> {
        let locked = subscribers::lock_by_id(c, &s.id)?;
        let check = check_in_tx(
            c,
            &s.id,
            SubscriberState::PendingActivation,
            max,
            &candidate,
            |_| {
                Ok(locked
                    .as_ref()
                    .and_then(|r| r.activation_hash.as_deref())
                    .and_then(|h| hex::decode(h).ok()))
            },
            now.unix_timestamp(),
        )?;
        match check {
            Check::Blocked => return Ok(Outcome::Blocked),
            Check::Wrong { left } => {
                let mut events = vec![NewEvent::of(
                    &actor,
                    subject(&s.id),
                    AuditEvent::SubscriberActivationFailed {
                        attempts_left: left,
                    },
                )];
                if left == 0 {
                    events.push(NewEvent::of(
                        &Actor::System,
                        subject(&s.id),
                        AuditEvent::SubscriberBlocked {
                            by: BlockedBy::AttemptLimit,
                            max_attempts: Some(max),
                        },
                    ));
                }
                audit::append_all(c, now, events)?;
                return Ok(Outcome::Wrong { left });
            }
            Check::Correct => {}
        }
        let Some(mut cur) = locked else {
            return Err(internal("the subscriber vanished during activation"));
        };
        let mut events = Vec::new();
        // Keep a still-active key (re-activation after unblock); else make one.
        let keep_current = match &cur.cert_serial {
            Some(serial) => certs::get(c, serial)?.is_some_and(|r| r.status == CertStatus::Active),
            None => false,
        };
        if !keep_current {
            fresh = Some(new_key_and_cert(svc, &cur, now)?);
        }
        if let Some((key, cert)) = &fresh {
            events.extend(record_new_cert(c, &actor, &cur, key, cert, now)?);
            cur.key_id = Some(key.id.to_hex());
            cur.cert_serial = Some(cert.serial_hex.clone());
        }
        let serial = cur
            .cert_serial
            .clone()
            .ok_or_else(|| internal("activated subscriber without certificate"))?;
        let pem = certs::get(c, &serial)?
            .map(|r| r.pem)
            .ok_or_else(|| internal("certificate row missing"))?;
        cur.state = SubscriberState::Active;
        cur.activation_hash = None;
        cur.activation_expires_at = None;
        cur.attempts = 0;
        cur.device_spki = Some(device_b64.clone());
        cur.pin_salt = Some(hex::encode(salt));
        cur.pin_verifier = Some(hex::encode(verifier));
        cur.updated_at = now.unix_timestamp();
        subscribers::save(c, &cur)?;
        let fp = hex::encode(openssl::sha::sha256(&device));
        events.push(NewEvent::of(
            &actor,
            subject(&cur.id),
            AuditEvent::SubscriberActivated {
                certificate: serial.clone(),
                device_key_sha256: fp,
                new_key: fresh.is_some(),
            },
        ));
        events.push(NewEvent::of(
            &actor,
            subject(&cur.id),
            AuditEvent::PinSet {},
        ));
        audit::append_all(c, now, events)?;
        Ok(Outcome::Done { serial, pem })
    });
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            if let Some((key, _)) = &fresh {
                let _ = svc.custody.destroy_key(&key.id);
            }
            return Err(e);
        }
    };
    match outcome {
        Outcome::Done { serial, pem } => Ok(Activated {
            certificate: pem,
            chain: format!("{}{}", svc.pki.issuing.info.pem, svc.pki.root.info.pem),
            serial,
        }),
        Outcome::Wrong { left } => Err(reject_with_attempts(
            Problem::ActivationBadCode,
            if left > 0 {
                format!("wrong activation code; {left} attempts left")
            } else {
                "wrong activation code; no attempts left, the subscriber is blocked".to_string()
            },
            left,
        )),
        Outcome::Blocked => Err(reject(
            Problem::SubscriberBlocked,
            "too many wrong activation codes; the subscriber is blocked",
        )),
    }
}
