//! Subscribers (Y.2741 client registration 6.4.1.1, application activation
//! 6.4.2.2, client disconnection 6.4.1.5): registration with a one-time
//! activation code, handset activation, the PIN, blocking, disconnection,
//! renewal of the signing key.
//!
//! States: `pending_activation` → `active` ⇄ `blocked`; any → `archived`
//! (disconnected); `archived` → `pending_activation` on re-registration.

mod activation;
pub mod pin;
pub mod pinblock;

use base64::Engine;
use serde::Serialize;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::app::App;
use crate::audit::{self, Actor, NewEvent};
use crate::clock::rfc3339_seconds;
use crate::error::{reject, DomainError, DomainResult};
use crate::hsm::{EcUsage, KeyId};
use crate::pki::lifecycle::{self, Transition};
use crate::pki::{CertInfo, EcPublicKey, Reason};
use crate::store::certs::{self, CertRow};
use crate::store::subscribers::{self, SubscriberRow};
use crate::store::DbConn;

pub use activation::{activate, ActivateRequest, Activated};

pub const PENDING: &str = "pending_activation";
pub const ACTIVE: &str = "active";
pub const BLOCKED: &str = "blocked";
pub const ARCHIVED: &str = "archived";

/// E.164 with the leading `+`: 8–15 digits, no leading zero.
pub fn valid_msisdn(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// `+4915112345678` → `+491511****678`: enough for an auditor to tell
/// subscribers apart, not the full number.
pub fn mask_msisdn(s: &str) -> String {
    let n = s.len();
    if n <= 7 {
        return "****".into();
    }
    let keep_head = n.saturating_sub(7).min(7);
    format!(
        "{}****{}",
        s.get(..keep_head).unwrap_or(""),
        s.get(n - 3..).unwrap_or("")
    )
}

pub fn subject(id: &str) -> String {
    format!("subscriber:{id}")
}

fn random_digits(n: usize) -> DomainResult<zeroize::Zeroizing<String>> {
    let mut out = zeroize::Zeroizing::new(String::with_capacity(n));
    let mut b = [0u8; 1];
    while out.len() < n {
        openssl::rand::rand_bytes(&mut b).map_err(|e| reject("internal", e.to_string()))?;
        // 250 = 25 * 10: uniform over digits.
        if b[0] < 250 {
            out.push(char::from(b'0' + b[0] % 10));
        }
    }
    Ok(out)
}

/// The keyed hash stored for an activation code.
fn activation_hash(app: &App, id: &str, code: &str) -> DomainResult<[u8; 32]> {
    let input = zeroize::Zeroizing::new(format!("tmcs-activation-v1|{id}|{code}"));
    Ok(app
        .hsm
        .hmac_sha256(&app.pki.keys.pin_pepper, input.as_bytes())?)
}

/// A fresh activation code for subscriber `id`: (code, hash hex, expiry).
fn new_activation(
    app: &App,
    id: &str,
    now: OffsetDateTime,
) -> DomainResult<(zeroize::Zeroizing<String>, String, OffsetDateTime)> {
    let code = random_digits(app.cfg.file.pin.activation_code_digits)?;
    let hash = hex::encode(activation_hash(app, id, &code)?);
    let hours = i64::try_from(app.cfg.file.pin.activation_ttl_hours).unwrap_or(72);
    Ok((code, hash, now + Duration::hours(hours)))
}

fn load(conn: &mut DbConn, msisdn: &str) -> DomainResult<SubscriberRow> {
    subscribers::by_msisdn(conn, msisdn)?
        .ok_or_else(|| reject("subscriber.not_found", "no subscriber with this MSISDN"))
}

/// What registration and unblocking hand to the operator (once).
#[derive(Debug, Serialize)]
pub struct ActivationIssued {
    pub subscriber_id: String,
    pub activation_code: String,
    pub activation_expires_at: String,
    #[serde(skip)]
    pub reactivated: bool,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub msisdn: String,
    pub display_name: String,
    pub kyc_ref: String,
    /// Optional iMS person id (`name@person.domain`) naming this payer.
    pub party_id: Option<String>,
}

fn check_text(field: &str, v: &str, max: usize) -> DomainResult<()> {
    if v.trim().is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(reject(
            "request.invalid",
            format!("{field} must be 1-{max} printable characters"),
        ));
    }
    Ok(())
}

/// `POST /v1/admin/subscribers`: registers, or reactivates an archived
/// subscriber with a new code (Y.2741 alternative steps 3a–3b).
pub fn register(app: &App, actor: &Actor, reg: Registration) -> DomainResult<ActivationIssued> {
    if !valid_msisdn(&reg.msisdn) {
        return Err(reject(
            "request.invalid",
            "msisdn must be E.164: + and 8-15 digits",
        ));
    }
    check_text("display_name", &reg.display_name, 128)?;
    check_text("kyc_ref", &reg.kyc_ref, 128)?;
    if let Some(alias) = &reg.party_id {
        let ok = alias
            .parse::<crate::ims::PartyId>()
            .is_ok_and(|p| p.role() == Some(crate::ims::PartyRole::Person));
        if !ok {
            return Err(reject(
                "request.invalid",
                "party_id must be a person id: name@person.domain",
            ));
        }
    }
    let now = app.clock.now();
    let existing = app.store.read(|c| subscribers::by_msisdn(c, &reg.msisdn))?;
    let id = match &existing {
        Some(s) if s.state != ARCHIVED => {
            return Err(reject(
                "subscriber.exists",
                "the MSISDN is already registered",
            ))
        }
        Some(s) => s.id.clone(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let (code, hash, expires) = new_activation(app, &id, now)?;
    let t = now.unix_timestamp();
    let reactivated = existing.is_some();
    app.store.write(|c| -> DomainResult<()> {
        let base = match subscribers::by_msisdn(c, &reg.msisdn)? {
            Some(s) if s.state != ARCHIVED => {
                return Err(reject(
                    "subscriber.exists",
                    "the MSISDN is already registered",
                ))
            }
            Some(s) => s,
            None => SubscriberRow {
                id: id.clone(),
                msisdn: reg.msisdn.clone(),
                pseudonym: format!("sub-{}", &uuid::Uuid::new_v4().simple().to_string()[..20]),
                display_name: String::new(),
                kyc_ref: String::new(),
                state: String::new(),
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
                alias: None,
            },
        };
        // New or archived alike: pending, with a fresh code and no PIN or device.
        let row = SubscriberRow {
            display_name: reg.display_name.clone(),
            kyc_ref: reg.kyc_ref.clone(),
            state: PENDING.into(),
            activation_hash: Some(hash.clone()),
            activation_expires_at: Some(expires.unix_timestamp()),
            attempts: 0,
            pin_salt: None,
            pin_verifier: None,
            device_spki: None,
            updated_at: t,
            alias: reg.party_id.clone().or(base.alias.clone()),
            ..base
        };
        if row.id != id {
            return Err(reject(
                "subscriber.exists",
                "the MSISDN was registered concurrently",
            ));
        }
        let unique = |e: crate::store::StoreError| {
            if e.is_unique_violation() {
                reject(
                    "subscriber.exists",
                    "the MSISDN or party_id is already registered",
                )
            } else {
                DomainError::from(e)
            }
        };
        if reactivated {
            subscribers::save(c, &row).map_err(unique)?;
        } else {
            subscribers::insert(c, &row).map_err(unique)?;
        }
        audit::append(
            c,
            now,
            NewEvent::new(
                actor,
                if reactivated {
                    "subscriber.reactivated"
                } else {
                    "subscriber.registered"
                },
                Some(subject(&id)),
                json!({ "msisdn": mask_msisdn(&reg.msisdn), "kyc_ref": reg.kyc_ref,
                        "party_id": reg.party_id,
                        "activation_expires_at": rfc3339_seconds(expires) }),
            ),
        )?;
        Ok(())
    })?;
    Ok(ActivationIssued {
        subscriber_id: id,
        activation_code: code.to_string(),
        activation_expires_at: rfc3339_seconds(expires),
        reactivated,
    })
}

#[derive(Debug, Serialize)]
pub struct CertView {
    pub serial: String,
    pub status: String,
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
    pub state: String,
    pub attempts_left: u32,
    pub activation_expires_at: Option<String>,
    pub device_registered: bool,
    pub pin_set: bool,
    pub certificates: Vec<CertView>,
}

fn ts(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .map(rfc3339_seconds)
        .unwrap_or_else(|_| t.to_string())
}

/// `GET /v1/admin/subscribers/{msisdn}`: state and certificates, no secrets.
pub fn view(app: &App, msisdn: &str) -> DomainResult<SubscriberView> {
    if !valid_msisdn(msisdn) {
        return Err(reject(
            "request.invalid",
            "msisdn must be E.164: + and 8-15 digits",
        ));
    }
    let max = app.cfg.file.pin.max_attempts;
    app.store.read(|c| {
        let s = load(c, msisdn)?;
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
            activation_expires_at: (s.state == PENDING)
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
pub fn block(app: &App, actor: &Actor, msisdn: &str) -> DomainResult<()> {
    let now = app.clock.now();
    app.store.write(|c| {
        let mut s = load(c, msisdn)?;
        match s.state.as_str() {
            ACTIVE | PENDING => {}
            BLOCKED => {
                return Err(reject(
                    "subscriber.blocked",
                    "the subscriber is already blocked",
                ))
            }
            _ => {
                return Err(reject(
                    "subscriber.not_active",
                    "the subscriber is disconnected",
                ))
            }
        }
        s.state = BLOCKED.into();
        s.updated_at = now.unix_timestamp();
        subscribers::save(c, &s)?;
        audit::append(
            c,
            now,
            NewEvent::new(
                actor,
                "subscriber.blocked",
                Some(subject(&s.id)),
                json!({ "by": "operator" }),
            ),
        )?;
        Ok(())
    })
}

/// `POST …/{msisdn}/unblock`: a new activation code; the PIN must be set again.
pub fn unblock(app: &App, actor: &Actor, msisdn: &str) -> DomainResult<ActivationIssued> {
    let now = app.clock.now();
    let current = app.store.read(|c| load(c, msisdn))?;
    if current.state != BLOCKED {
        return Err(reject(
            "subscriber.not_active",
            "only a blocked subscriber can be unblocked",
        ));
    }
    let (code, hash, expires) = new_activation(app, &current.id, now)?;
    app.store.write(|c| {
        let mut s = load(c, msisdn)?;
        if s.state != BLOCKED {
            return Err(reject(
                "subscriber.not_active",
                "only a blocked subscriber can be unblocked",
            ));
        }
        s.state = PENDING.into();
        s.activation_hash = Some(hash.clone());
        s.activation_expires_at = Some(expires.unix_timestamp());
        s.attempts = 0;
        s.pin_salt = None;
        s.pin_verifier = None;
        s.updated_at = now.unix_timestamp();
        subscribers::save(c, &s)?;
        audit::append(
            c,
            now,
            NewEvent::new(
                actor,
                "subscriber.unblocked",
                Some(subject(&s.id)),
                json!({ "activation_expires_at": rfc3339_seconds(expires), "pin_reset": true }),
            ),
        )?;
        Ok(())
    })?;
    Ok(ActivationIssued {
        subscriber_id: current.id,
        activation_code: code.to_string(),
        activation_expires_at: rfc3339_seconds(expires),
        reactivated: false,
    })
}

/// `POST …/{msisdn}/disconnect`: archive; every certificate revoked
/// (cessationOfOperation); the PIN, device and code forgotten.
pub fn disconnect(app: &App, actor: &Actor, msisdn: &str) -> DomainResult<Vec<String>> {
    let now = app.clock.now();
    let (revoked, keys) = app
        .store
        .write(|c| -> DomainResult<(Vec<String>, Vec<String>)> {
            let mut s = load(c, msisdn)?;
            if s.state == ARCHIVED {
                return Err(reject(
                    "subscriber.not_active",
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
                if cert.status == "revoked" {
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
            s.state = ARCHIVED.into();
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
            events.push(NewEvent::new(
                actor,
                "subscriber.disconnected",
                Some(subject(&s.id)),
                json!({ "certificates_revoked": revoked }),
            ));
            audit::append_all(c, now, events)?;
            Ok((revoked, keys))
        })?;
    // The keys can never sign again; remove them from the token.
    for k in keys {
        destroy_key_best_effort(app, &k);
    }
    Ok(revoked)
}

fn destroy_key_best_effort(app: &App, key_hex: &str) {
    match KeyId::from_hex(key_hex) {
        Ok(id) => {
            if let Err(e) = app.hsm.destroy_key(&id) {
                tracing::warn!(key = %id, error = %e, "could not destroy a retired subscriber key");
            }
        }
        Err(e) => tracing::warn!(error = %e, "bad stored key id"),
    }
}

/// A new subscriber key in the HSM and its certificate (outside any transaction).
pub(crate) fn new_key_and_cert(
    app: &App,
    s: &SubscriberRow,
    now: OffsetDateTime,
) -> DomainResult<(crate::hsm::GeneratedKey, CertInfo)> {
    let key = app.hsm.generate_ec_p256("tmcs:subscriber", EcUsage::Sign)?;
    match app.pki.issue(
        "subscriber",
        &s.pseudonym,
        vec![],
        &EcPublicKey(key.point.clone()),
        now,
    ) {
        Ok(cert) => Ok((key, cert)),
        Err(e) => {
            let _ = app.hsm.destroy_key(&key.id);
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
    key: &crate::hsm::GeneratedKey,
    cert: &CertInfo,
    now: OffsetDateTime,
) -> DomainResult<Vec<NewEvent>> {
    let owner = subject(&s.id);
    certs::insert(
        c,
        &cert.to_row(
            "issuing",
            "subscriber",
            Some(&owner),
            Some(&key.id.to_hex()),
            "active",
            now,
        ),
    )?;
    Ok(issuance_events(actor, s, key, cert))
}

/// The events of a new key and its certificate becoming usable.
fn issuance_events(
    actor: &Actor,
    s: &SubscriberRow,
    key: &crate::hsm::GeneratedKey,
    cert: &CertInfo,
) -> Vec<NewEvent> {
    let sub = subject(&s.id);
    vec![
        NewEvent::new(
            actor,
            "cert.key_generated",
            Some(cert.serial_hex.clone()),
            json!({ "subscriber": sub, "key_id": key.id.to_hex(), "algorithm": "ecdsa-p256",
                    "sensitive": true, "extractable": false }),
        ),
        NewEvent::new(
            actor,
            "cert.issued",
            Some(cert.serial_hex.clone()),
            json!({ "subscriber": sub, "profile": "subscriber", "subject_cn": cert.common_name,
                    "fingerprint": cert.fingerprint, "not_after": rfc3339_seconds(cert.not_after) }),
        ),
        NewEvent::new(
            actor,
            "cert.activated",
            Some(cert.serial_hex.clone()),
            json!({ "subscriber": sub }),
        ),
    ]
}

#[derive(Debug, Serialize)]
pub struct Renewed {
    pub serial: String,
    pub previous_serial: Option<String>,
    pub certificate: String,
}

/// `POST …/{msisdn}/renew`: a new key and certificate; the old one is
/// revoked as `superseded` and its key destroyed.
pub fn renew(app: &App, actor: &Actor, msisdn: &str) -> DomainResult<Renewed> {
    let now = app.clock.now();
    let s = app.store.read(|c| load(c, msisdn))?;
    if s.state != ACTIVE {
        return Err(reject(
            "subscriber.not_active",
            "only an active subscriber can be renewed",
        ));
    }
    let (key, cert) = new_key_and_cert(app, &s, now)?;
    let result = app.store.write(|c| -> DomainResult<Option<String>> {
        let mut cur = load(c, msisdn)?;
        if cur.state != ACTIVE || cur.cert_serial != s.cert_serial {
            return Err(reject(
                "subscriber.not_active",
                "the subscriber changed meanwhile; try again",
            ));
        }
        let mut events = record_new_cert(c, actor, &cur, &key, &cert, now)?;
        let old_key = cur.key_id.clone();
        if let Some(old) = &cur.cert_serial {
            let old_row = certs::get(c, old)?;
            if old_row.as_ref().is_some_and(|r| r.status != "revoked") {
                let (_, ev) = lifecycle::transition(
                    c,
                    actor,
                    old,
                    Transition::Revoke(Reason::Superseded),
                    now,
                )?;
                events.push(ev);
            }
            certs::set_superseded_by(c, old, &cert.serial_hex)?;
            events.push(NewEvent::new(
                actor,
                "cert.renewed",
                Some(old.clone()),
                json!({ "subscriber": subject(&cur.id), "new_serial": cert.serial_hex }),
            ));
        }
        cur.key_id = Some(key.id.to_hex());
        cur.cert_serial = Some(cert.serial_hex.clone());
        cur.updated_at = now.unix_timestamp();
        subscribers::save(c, &cur)?;
        audit::append_all(c, now, events)?;
        Ok(old_key)
    });
    match result {
        Ok(old_key) => {
            if let Some(k) = old_key {
                destroy_key_best_effort(app, &k);
            }
            Ok(Renewed {
                serial: cert.serial_hex,
                previous_serial: s.cert_serial,
                certificate: cert.pem,
            })
        }
        Err(e) => {
            let _ = app.hsm.destroy_key(&key.id);
            Err(e)
        }
    }
}

/// The subscriber's signing key, if the subscriber and its certificate may
/// sign now. The signing path calls this and nothing else.
pub fn signing_key(
    conn: &mut DbConn,
    subscriber_id: &str,
    now: OffsetDateTime,
) -> DomainResult<(KeyId, CertRow)> {
    let s = subscribers::by_id(conn, subscriber_id)?
        .ok_or_else(|| reject("subscriber.not_found", "no such subscriber"))?;
    match s.state.as_str() {
        ACTIVE => {}
        BLOCKED => return Err(reject("subscriber.blocked", "the subscriber is blocked")),
        _ => {
            return Err(reject(
                "subscriber.not_active",
                "the subscriber is not active",
            ))
        }
    }
    let (Some(key), Some(serial)) = (&s.key_id, &s.cert_serial) else {
        return Err(reject(
            "subscriber.not_active",
            "the subscriber has no signing key",
        ));
    };
    let cert = certs::get(conn, serial)?.ok_or_else(|| {
        reject(
            "certificate.not_found",
            "the subscriber's certificate is missing",
        )
    })?;
    lifecycle::require_usable(&cert, now)?;
    Ok((KeyId::from_hex(key)?, cert))
}

/// Decodes and checks a device public key (base64 SPKI DER, P-256).
pub fn parse_device_key(b64: &str) -> DomainResult<Vec<u8>> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| reject("request.invalid", "device_public_key is not base64"))?;
    let key = openssl::pkey::PKey::public_key_from_der(&der).map_err(|_| {
        reject(
            "request.invalid",
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
            "request.invalid",
            "device_public_key must be EC P-256",
        ));
    }
    Ok(der)
}

/// `POST /v1/handset/pin`: change the PIN (old and new PIN blocks; the
/// device signature was checked by the caller). The old PIN goes through
/// the shared try counter.
pub fn change_pin(
    app: &App,
    subscriber_id: &str,
    old_block: &str,
    new_block: &str,
) -> DomainResult<()> {
    let now = app.clock.now();
    let s = app
        .store
        .read(|c| subscribers::by_id(c, subscriber_id))?
        .ok_or_else(|| reject("subscriber.not_found", "no such subscriber"))?;
    if s.state == BLOCKED {
        return Err(reject("pin.blocked", "the PIN is blocked"));
    }
    if s.state != ACTIVE {
        return Err(reject(
            "subscriber.not_active",
            "the subscriber is not active",
        ));
    }
    let open = |b: &str| {
        pinblock::open(
            &app.hsm,
            &app.pki.keys.transport,
            &app.pki.transport.point,
            b,
        )
    };
    let old_pin = pin::parse_pin_change(&open(old_block)?, "pin-old", &s.msisdn)?;
    let new_pin = pin::parse_pin_change(&open(new_block)?, "pin-new", &s.msisdn)?;
    app.pins.check_rules(&new_pin)?;
    let salt = s
        .pin_salt
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| reject("subscriber.not_active", "no PIN is set"))?;
    let candidate = app.pins.verifier(&app.hsm, &salt, &old_pin)?;
    let mut new_salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut new_salt).map_err(|e| reject("internal", e.to_string()))?;
    let new_verifier = app.pins.verifier(&app.hsm, &new_salt, &new_pin)?;
    let max = app.cfg.file.pin.max_attempts;
    let actor = Actor::Subscriber(s.id.clone());
    let check = app.store.write(|c| -> DomainResult<pin::Check> {
        let check = pin::check_in_tx(
            c,
            &s.id,
            ACTIVE,
            max,
            &candidate,
            |c| stored_verifier(c, &s.id),
            now.unix_timestamp(),
        )?;
        match check {
            pin::Check::Correct => {
                let mut cur = subscribers::by_id(c, &s.id)?
                    .ok_or_else(|| reject("subscriber.not_found", "no such subscriber"))?;
                cur.pin_salt = Some(hex::encode(new_salt));
                cur.pin_verifier = Some(hex::encode(new_verifier));
                cur.updated_at = now.unix_timestamp();
                subscribers::save(c, &cur)?;
                audit::append(
                    c,
                    now,
                    NewEvent::new(&actor, "pin.changed", Some(subject(&s.id)), json!({})),
                )?;
            }
            pin::Check::Wrong { left } => {
                audit::append_all(
                    c,
                    now,
                    pin_failure_events(&actor, &s.id, left, max, "pin_change"),
                )?;
            }
            pin::Check::Blocked => {}
        }
        Ok(check)
    })?;
    pin_outcome(check)
}

/// The stored PIN verifier of subscriber `id`.
pub(crate) fn stored_verifier(c: &mut DbConn, id: &str) -> DomainResult<Option<Vec<u8>>> {
    Ok(subscribers::by_id(c, id)?
        .and_then(|r| r.pin_verifier)
        .and_then(|h| hex::decode(h).ok()))
}

/// `pin.failed`, plus `pin.blocked` and `subscriber.blocked` on the last try.
pub(crate) fn pin_failure_events(
    actor: &Actor,
    id: &str,
    left: u32,
    max: u32,
    during: &str,
) -> Vec<NewEvent> {
    let mut events = vec![NewEvent::new(
        actor,
        "pin.failed",
        Some(subject(id)),
        json!({ "attempts_left": left, "during": during }),
    )];
    if left == 0 {
        events.push(NewEvent::new(
            &Actor::System,
            "pin.blocked",
            Some(subject(id)),
            json!({ "max_attempts": max }),
        ));
        events.push(NewEvent::new(
            &Actor::System,
            "subscriber.blocked",
            Some(subject(id)),
            json!({ "by": "attempt_limit" }),
        ));
    }
    events
}

/// The refusal after a wrong PIN with `left` attempts left (`pin.wrong`),
/// or once none are left or the PIN was blocked already (`pin.blocked`).
pub(crate) fn pin_refusal(left: Option<u32>) -> crate::error::DomainError {
    match left {
        Some(left) if left > 0 => crate::error::reject_with_attempts(
            "pin.wrong",
            format!("wrong PIN; {left} attempts left"),
            left,
        ),
        _ => reject("pin.blocked", "the PIN is blocked"),
    }
}

/// Maps a PIN check to the API outcome: `pin.wrong` with attempts left, or `pin.blocked`.
pub(crate) fn pin_outcome(check: pin::Check) -> DomainResult<()> {
    match check {
        pin::Check::Correct => Ok(()),
        pin::Check::Wrong { left } => Err(pin_refusal(Some(left))),
        pin::Check::Blocked => Err(pin_refusal(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msisdns() {
        assert!(valid_msisdn("+4915112345678"));
        assert!(valid_msisdn("+12345678"));
        assert!(!valid_msisdn("4915112345678"));
        assert!(!valid_msisdn("+0123456789"));
        assert!(!valid_msisdn("+1234567"));
        assert!(!valid_msisdn("+1234567890123456"));
        assert_eq!(mask_msisdn("+4915112345678"), "+491511****678");
        assert!(!mask_msisdn("+4915112345678").contains("12345678"));
    }

    #[test]
    fn digits_are_digits() {
        let d = random_digits(12).unwrap();
        assert_eq!(d.len(), 12);
        assert!(d.bytes().all(|b| b.is_ascii_digit()));
    }
}
