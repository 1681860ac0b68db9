//! The one check of "may this subscriber use its PIN, and sign, now".
//!
//! It runs once per operation, inside the write transaction, on the
//! subscriber row locked for that transaction, and refuses in this order:
//!
//! 1. no such subscriber → `subscriber.not_found`;
//! 2. blocked: by its own wrong PINs (the counter is at the limit) →
//!    `pin.blocked`; otherwise (the operator, wrong activation codes) →
//!    `subscriber.blocked`;
//! 3. pending activation or disconnected → `subscriber.not_active`;
//! 4. no PIN set, or (to sign) no key or certificate → `subscriber.not_active`;
//! 5. (to sign) the certificate: missing → `certificate.not_found`; revoked
//!    → `certificate.revoked`; suspended, expired or outside its validity →
//!    `certificate.not_active`.
//!
//! Submission ([`crate::signing::submit`]), authorisation (handset and
//! gateway) and PIN change all go through here, so one state always gives
//! one answer.

use time::OffsetDateTime;

use super::keys::SignerKey;
use super::SubscriberState;
use crate::error::{reject, DomainResult, Problem};
use crate::pki::lifecycle;
use crate::store::certs::{self, CertRow};
use crate::store::subscribers::{self, SubscriberRow};
use crate::store::{DbConn, Locked};

/// A subscriber whose PIN may be checked: its locked row and PIN verifier.
#[derive(Debug)]
pub struct PinHolder {
    pub subscriber: Locked<SubscriberRow>,
    pub salt: Vec<u8>,
    pub verifier: Vec<u8>,
}

/// A subscriber that may sign now: its locked row, PIN verifier, key and
/// usable certificate.
#[derive(Debug)]
pub struct ActiveSigner {
    pub subscriber: Locked<SubscriberRow>,
    pub salt: Vec<u8>,
    pub verifier: Vec<u8>,
    pub key: SignerKey,
    pub certificate: CertRow,
}

/// Steps 1–4 without the key: a subscriber whose PIN may be checked.
pub fn lock_pin_holder(
    conn: &mut DbConn,
    subscriber_id: &str,
    max_attempts: u32,
) -> DomainResult<PinHolder> {
    let s = subscribers::lock_by_id(conn, subscriber_id)?
        .ok_or_else(|| reject(Problem::SubscriberNotFound, "no such subscriber"))?;
    refuse_state(&s, max_attempts)?;
    let decode = |h: Option<&str>| h.and_then(|h| hex::decode(h).ok());
    let (Some(salt), Some(verifier)) = (
        decode(s.pin_salt.as_deref()),
        decode(s.pin_verifier.as_deref()),
    ) else {
        return Err(reject(Problem::SubscriberNotActive, "no PIN is set"));
    };
    Ok(PinHolder {
        subscriber: s,
        salt,
        verifier,
    })
}

/// Steps 1–5: a subscriber that may sign now.
pub fn lock_signer(
    conn: &mut DbConn,
    subscriber_id: &str,
    max_attempts: u32,
    now: OffsetDateTime,
) -> DomainResult<ActiveSigner> {
    let PinHolder {
        subscriber,
        salt,
        verifier,
    } = lock_pin_holder(conn, subscriber_id, max_attempts)?;
    let (Some(key), Some(serial)) = (&subscriber.key_id, &subscriber.cert_serial) else {
        return Err(reject(
            Problem::SubscriberNotActive,
            "the subscriber has no signing key",
        ));
    };
    let key = super::keys::load(conn, key)?;
    let certificate = certs::get(conn, serial)?.ok_or_else(|| {
        reject(
            Problem::CertificateNotFound,
            "the subscriber's certificate is missing",
        )
    })?;
    lifecycle::require_usable(&certificate, now)?;
    Ok(ActiveSigner {
        subscriber,
        salt,
        verifier,
        key,
        certificate,
    })
}

/// Steps 2–3 for a row already read.
fn refuse_state(s: &SubscriberRow, max_attempts: u32) -> DomainResult<()> {
    match s.state {
        SubscriberState::Active => Ok(()),
        SubscriberState::Blocked if pin_exhausted(s, max_attempts) => {
            Err(reject(Problem::PinBlocked, "the PIN is blocked"))
        }
        SubscriberState::Blocked => Err(reject(
            Problem::SubscriberBlocked,
            "the subscriber is blocked",
        )),
        SubscriberState::PendingActivation | SubscriberState::Archived => Err(reject(
            Problem::SubscriberNotActive,
            "the subscriber is not active",
        )),
    }
}

/// Blocked by its own wrong PINs: a PIN is set and every attempt is used.
fn pin_exhausted(s: &SubscriberRow, max_attempts: u32) -> bool {
    s.pin_verifier.is_some() && u32::try_from(s.attempts).unwrap_or(0) >= max_attempts
}
