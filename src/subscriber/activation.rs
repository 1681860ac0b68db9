//! Handset activation (CONTRACT §7, Y.2741 6.4.2.2): the one-time code and
//! the new PIN arrive in a PIN block; the code is checked in constant time
//! against its keyed hash with the shared try counter; on success tmcs
//! stores the device key and the PIN verifier and, unless the subscriber
//! still has a usable key, generates one in the HSM and issues its certificate.

use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::pin::{check_in_tx, Check};
use super::{
    activation_hash, load, new_key_and_cert, parse_device_key, pinblock, record_new_cert, subject,
    ACTIVE, BLOCKED, PENDING,
};
use crate::app::App;
use crate::audit::{self, Actor, NewEvent};
use crate::error::{reject, reject_with_attempts, DomainResult};
use crate::hsm::GeneratedKey;
use crate::pki::CertInfo;
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

pub struct Activated {
    pub certificate: String,
    pub chain: String,
    pub serial: String,
}

enum Outcome {
    Done { serial: String, pem: String },
    Wrong { left: u32 },
    Blocked,
}

pub fn activate(app: &App, req: ActivateRequest) -> DomainResult<Activated> {
    let now = app.clock.now();
    if !super::valid_msisdn(&req.msisdn) {
        return Err(reject(
            "request.invalid",
            "msisdn must be E.164: + and 8-15 digits",
        ));
    }
    let device = parse_device_key(&req.device_public_key)?;
    let plain = pinblock::open(
        &app.hsm,
        &app.pki.keys.transport,
        &app.pki.transport.point,
        &req.pin_block,
    )?;
    let p = pinblock::parse_activate(&plain)?;
    if p.msisdn != req.msisdn
        || !super::pin::ct_eq(p.code.as_bytes(), req.activation_code.as_bytes())
    {
        return Err(reject(
            "pinblock.invalid",
            "the PIN block is not bound to this msisdn and activation code",
        ));
    }
    app.pins.check_rules(&p.pin)?;

    let s = app.store.read(|c| subscribers::by_msisdn(c, &req.msisdn))?;
    let s = match s {
        Some(s) if s.state == PENDING => s,
        Some(s) if s.state == BLOCKED => {
            return Err(reject(
                "subscriber.blocked",
                "the subscriber is blocked; ask the operator",
            ))
        }
        _ => {
            return Err(reject(
                "activation.not_pending",
                "no activation is pending for this MSISDN",
            ))
        }
    };
    if s.activation_expires_at
        .is_none_or(|t| now.unix_timestamp() > t)
    {
        return Err(reject(
            "activation.expired",
            "the activation code has expired; ask the operator for a new one",
        ));
    }

    // Work that does not depend on the outcome, before the transaction: the
    // code's keyed hash and the PIN verifier. The key and certificate are
    // made inside it, only once the code is known to be right.
    let candidate = activation_hash(app, &s.id, &p.code)?;
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| reject("internal", e.to_string()))?;
    let verifier = app.pins.verifier(&app.hsm, &salt, &p.pin)?;

    let actor = Actor::Subscriber(s.id.clone());
    let max = app.cfg.file.pin.max_attempts;
    let device_b64 = req.device_public_key.trim().to_string();
    // A key made inside the transaction, to destroy if it does not commit.
    let mut fresh: Option<(GeneratedKey, CertInfo)> = None;
    let result = app.store.write(|c| -> DomainResult<Outcome> {
        let check = check_in_tx(
            c,
            &s.id,
            PENDING,
            max,
            &candidate,
            |c| {
                let cur = subscribers::by_id(c, &s.id)?;
                Ok(cur
                    .and_then(|r| r.activation_hash)
                    .and_then(|h| hex::decode(h).ok()))
            },
            now.unix_timestamp(),
        )?;
        match check {
            Check::Blocked => return Ok(Outcome::Blocked),
            Check::Wrong { left } => {
                let mut events = vec![NewEvent::new(
                    &actor,
                    "subscriber.activation_failed",
                    Some(subject(&s.id)),
                    json!({ "attempts_left": left }),
                )];
                if left == 0 {
                    events.push(NewEvent::new(
                        &Actor::System,
                        "subscriber.blocked",
                        Some(subject(&s.id)),
                        json!({ "by": "attempt_limit", "max_attempts": max }),
                    ));
                }
                audit::append_all(c, now, events)?;
                return Ok(Outcome::Wrong { left });
            }
            Check::Correct => {}
        }
        let mut cur = load(c, &req.msisdn)?;
        let mut events = Vec::new();
        // Keep a still-active key (re-activation after unblock); else make one.
        let keep_current = match &cur.cert_serial {
            Some(serial) => certs::get(c, serial)?.is_some_and(|r| r.status == "active"),
            None => false,
        };
        if !keep_current {
            fresh = Some(new_key_and_cert(app, &cur, now)?);
        }
        if let Some((key, cert)) = &fresh {
            events.extend(record_new_cert(c, &actor, &cur, key, cert, now)?);
            cur.key_id = Some(key.id.to_hex());
            cur.cert_serial = Some(cert.serial_hex.clone());
        }
        let serial = cur
            .cert_serial
            .clone()
            .ok_or_else(|| reject("internal", "activated subscriber without certificate"))?;
        let pem = certs::get(c, &serial)?
            .map(|r| r.pem)
            .ok_or_else(|| reject("internal", "certificate row missing"))?;
        cur.state = ACTIVE.into();
        cur.activation_hash = None;
        cur.activation_expires_at = None;
        cur.attempts = 0;
        cur.device_spki = Some(device_b64.clone());
        cur.pin_salt = Some(hex::encode(salt));
        cur.pin_verifier = Some(hex::encode(verifier));
        cur.updated_at = now.unix_timestamp();
        subscribers::save(c, &cur)?;
        let fp = hex::encode(openssl::sha::sha256(&device));
        events.push(NewEvent::new(
            &actor,
            "subscriber.activated",
            Some(subject(&cur.id)),
            json!({ "certificate": serial, "device_key_sha256": fp, "new_key": fresh.is_some() }),
        ));
        events.push(NewEvent::new(
            &actor,
            "pin.set",
            Some(subject(&cur.id)),
            json!({}),
        ));
        audit::append_all(c, now, events)?;
        Ok(Outcome::Done { serial, pem })
    });
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            if let Some((key, _)) = &fresh {
                let _ = app.hsm.destroy_key(&key.id);
            }
            return Err(e);
        }
    };
    match outcome {
        Outcome::Done { serial, pem } => Ok(Activated {
            certificate: pem,
            chain: format!("{}{}", app.pki.issuing.info.pem, app.pki.root.info.pem),
            serial,
        }),
        Outcome::Wrong { left } => Err(reject_with_attempts(
            "activation.bad_code",
            if left > 0 {
                format!("wrong activation code; {left} attempts left")
            } else {
                "wrong activation code; no attempts left, the subscriber is blocked".to_string()
            },
            left,
        )),
        Outcome::Blocked => Err(reject(
            "subscriber.blocked",
            "too many wrong activation codes; the subscriber is blocked",
        )),
    }
}
