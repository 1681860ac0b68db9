//! Authorisation and the exactly-once signature.
//!
//! 1. The PIN block is decrypted inside the HSM and must name this request,
//!    its nonce and `dtbs_sha256` (handset), or the gateway names it (tier
//!    `small` only).
//! 2. The PIN is checked against the verifier with the shared try counter,
//!    and — in the same transaction — the request is claimed with a
//!    conditional update `pending → signing`. Only one caller can win it.
//! 3. The HSM signs `C` with the payer's key; the signature and the signed
//!    iMS are stored (`signing → signed`). A crash between 2 and 3 leaves no
//!    signature out; the sweeper expires the request.

use serde_json::json;
use zeroize::Zeroizing;

use super::{b64, expire_if_overdue, load_pending_for, parse_stored, subject, PENDING};
use crate::app::App;
use crate::audit::{self, Actor, NewEvent};
use crate::error::{reject, DomainResult};
use crate::ims::Tier;
use crate::store::requests::{self, RequestRow};
use crate::store::subscribers;
use crate::subscriber::{self, pin, pinblock};

#[derive(Debug)]
pub struct Signed {
    pub request_id: String,
    pub signature_b64: String,
}

impl Signed {
    /// The answer of both authorisation endpoints (CONTRACT §7).
    pub fn to_json(&self) -> serde_json::Value {
        json!({ "status": "signed", "request_id": self.request_id, "signature": self.signature_b64 })
    }
}

/// `POST /v1/handset/requests/{id}/authorize`.
pub fn authorize_handset(
    app: &App,
    subscriber_id: &str,
    request_id: &str,
    pin_block: &str,
) -> DomainResult<Signed> {
    let actor = Actor::Subscriber(subscriber_id.to_string());
    let plain = pinblock::open(
        &app.hsm,
        &app.pki.keys.transport,
        &app.pki.transport.point,
        pin_block,
    )?;
    let p = pinblock::parse_auth(&plain)?;
    let row = load_pending_for(app, subscriber_id, request_id)?;
    let bound = p.request_id == row.id
        && pin::ct_eq(p.nonce.as_bytes(), row.nonce.as_bytes())
        && pin::ct_eq(p.dtbs_sha256.as_bytes(), row.dtbs_sha256.as_bytes());
    if !bound {
        let now = app.clock.now();
        app.store.write(|c| {
            audit::append(
                c,
                now,
                NewEvent::new(
                    &actor,
                    "request.sad_mismatch",
                    Some(subject(&row.id)),
                    json!({ "channel": "handset" }),
                ),
            )
        })?;
        return Err(reject(
            "sad.mismatch",
            "the PIN block does not match this request's id, nonce and digest",
        ));
    }
    sign_once(app, &actor, subscriber_id, row, &p.pin, "handset")
}

/// `POST /v1/gateway/authorize`: USSD/SMS without an app, tier `small` only.
pub fn authorize_gateway(
    app: &App,
    actor: &Actor,
    msisdn: &str,
    request_id: &str,
    pin: &str,
) -> DomainResult<Signed> {
    let pin = Zeroizing::new(pin.to_string());
    let s = app
        .store
        .read(|c| subscribers::by_msisdn(c, msisdn))?
        .ok_or_else(|| reject("request.not_found", "no such request for this subscriber"))?;
    let row = load_pending_for(app, &s.id, request_id)?;
    if row.tier != Tier::Small.as_str() {
        let now = app.clock.now();
        app.store.write(|c| {
            audit::append(
                c,
                now,
                NewEvent::new(
                    actor,
                    "auth.denied",
                    Some(subject(&row.id)),
                    json!({ "reason": "gateway may only authorise tier small", "tier": row.tier }),
                ),
            )
        })?;
        return Err(reject(
            "auth.forbidden",
            "the gateway may only authorise tier small",
        ));
    }
    sign_once(app, actor, &s.id, row, &pin, "gateway")
}

/// PIN check + claim in one transaction, then one HSM signature, stored.
fn sign_once(
    app: &App,
    actor: &Actor,
    subscriber_id: &str,
    row: RequestRow,
    pin_value: &str,
    channel: &str,
) -> DomainResult<Signed> {
    let s = app
        .store
        .read(|c| subscribers::by_id(c, subscriber_id))?
        .ok_or_else(|| reject("subscriber.not_found", "no such subscriber"))?;
    match s.state.as_str() {
        subscriber::ACTIVE => {}
        subscriber::BLOCKED => return Err(reject("pin.blocked", "the PIN is blocked")),
        _ => {
            return Err(reject(
                "subscriber.not_active",
                "the subscriber is not active",
            ))
        }
    }
    let salt = s
        .pin_salt
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| reject("subscriber.not_active", "no PIN is set"))?;
    let candidate = app.pins.verifier(&app.hsm, &salt, pin_value)?;
    let max = app.cfg.file.pin.max_attempts;
    let now = app.clock.now();
    let t = now.unix_timestamp();

    // The outer result rolls the transaction back; the inner one is a refusal
    // that commits (a wrong PIN counts).
    type Gate = Result<(crate::hsm::KeyId, String), crate::error::DomainError>;
    let gate = app.store.write(|c| -> DomainResult<Gate> {
        let check = pin::check_in_tx(c, &s.id, subscriber::ACTIVE, max, &candidate, |c| subscriber::stored_verifier(c, &s.id), t)?;
        match check {
            pin::Check::Correct => {}
            pin::Check::Wrong { left } => {
                let mut events = subscriber::pin_failure_events(actor, &s.id, left, max, "authorization");
                for e in &mut events {
                    if let serde_json::Value::Object(m) = &mut e.details {
                        m.insert("request".into(), json!(row.id));
                    }
                }
                audit::append_all(c, now, events)?;
                return Ok(Err(subscriber::pin_refusal(Some(left))));
            }
            pin::Check::Blocked => return Ok(Err(subscriber::pin_refusal(None))),
        }
        let (key, cert) = subscriber::signing_key(c, &s.id, now)?;
        if !requests::claim(c, &row.id, t)? {
            // Someone else won, or time ran out: nothing of this attempt is kept.
            let cur = requests::get(c, &row.id)?;
            return Err(match cur.map(|r| r.status) {
                Some(st) if st == PENDING => reject("request.expired", "the request has expired"),
                Some(st) => reject("request.not_pending", format!("the request is {}", super::public_status(&st))),
                None => reject("request.not_found", "no such request"),
            });
        }
        audit::append(
            c,
            now,
            NewEvent::new(
                actor,
                "request.authorized",
                Some(subject(&row.id)),
                json!({ "channel": channel, "payer": subscriber::subject(&s.id), "certificate": cert.serial }),
            ),
        )?;
        Ok(Ok((key, cert.serial)))
    })?;
    let (key, serial) = gate?;

    // The one signature, in the HSM, over exactly C.
    let mut m = parse_stored(&row)?;
    let c_bytes = m.canonical_c().map_err(super::ims_error)?;
    let sig = match app.hsm.sign_sha256(&key, &c_bytes) {
        Ok(sig) => sig,
        Err(e) => {
            let now = app.clock.now();
            app.store.write(|c| -> DomainResult<()> {
                if requests::fail(
                    c,
                    &row.id,
                    super::SIGNING,
                    "hsm.unavailable",
                    now.unix_timestamp(),
                )? {
                    audit::append(
                        c,
                        now,
                        NewEvent::new(
                            &Actor::System,
                            "request.failed",
                            Some(subject(&row.id)),
                            json!({ "error": e.kind() }),
                        ),
                    )?;
                }
                Ok(())
            })?;
            return Err(e.into());
        }
    };
    m.from_sign = Some(sig.clone());
    let signed_xml = m.to_xml();
    let sig_b64 = b64(&sig);
    let now = app.clock.now();
    let stored = app.store.write(|c| -> DomainResult<bool> {
        if !requests::store_signature(c, &row.id, &sig_b64, &signed_xml, now.unix_timestamp())? {
            return Ok(false);
        }
        audit::append(
            c,
            now,
            NewEvent::new(
                actor,
                "request.signed",
                Some(subject(&row.id)),
                json!({ "certificate": serial, "signature_sha256": hex::encode(openssl::sha::sha256(&sig)),
                        "dtbs_sha256": row.dtbs_sha256 }),
            ),
        )?;
        Ok(true)
    })?;
    if !stored {
        // The claim was taken away (expired by the sweeper): the signature
        // is dropped here and was never given to anyone.
        return Err(reject(
            "request.expired",
            "the request expired while signing",
        ));
    }
    Ok(Signed {
        request_id: row.id,
        signature_b64: sig_b64,
    })
}

/// `POST /v1/handset/requests/{id}/decline`.
pub fn decline(app: &App, subscriber_id: &str, request_id: &str) -> DomainResult<()> {
    let row = load_pending_for(app, subscriber_id, request_id)?;
    let now = app.clock.now();
    let done = app.store.write(|c| -> DomainResult<bool> {
        if !requests::transition(c, &row.id, PENDING, super::DECLINED, now.unix_timestamp())? {
            return Ok(false);
        }
        audit::append(
            c,
            now,
            NewEvent::new(
                &Actor::Subscriber(subscriber_id.to_string()),
                "request.declined",
                Some(subject(&row.id)),
                json!({}),
            ),
        )?;
        Ok(true)
    })?;
    if done {
        Ok(())
    } else {
        let cur = app.store.read(|c| requests::get(c, &row.id))?;
        let st = cur
            .map(|r| expire_if_overdue(app, &r))
            .transpose()?
            .unwrap_or_default();
        Err(reject(
            "request.not_pending",
            format!("the request is {}", super::public_status(&st)),
        ))
    }
}
