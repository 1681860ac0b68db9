//! Subscribers (Y.2741 client registration 6.4.1.1, application activation
//! 6.4.2.2, client disconnection 6.4.1.5).
//!
//! States ([`SubscriberState`]): `pending_activation` → `active` ⇄
//! `blocked`; any → `archived` (disconnected); `archived` →
//! `pending_activation` on re-registration.
//!
//! * [`registration`]: register, view, block, unblock, disconnect;
//! * [`activation`]: handset activation with the one-time code;
//! * [`renewal`]: a subscriber's key and certificate, new or renewed;
//! * [`signer`]: the one "may this subscriber sign (or use its PIN) now" check;
//! * [`pin`]: PIN rules, the verifier and the shared try counter;
//!   [`pin_change`]: changing the PIN;
//! * [`device`]: device-key authentication of handset calls;
//! * [`pinblock`]: ECIES PIN blocks opened with the transport key.

pub mod activation;
pub mod device;
pub mod keys;
pub mod pin;
pub mod pin_change;
pub mod pinblock;
pub mod registration;
pub mod renewal;
pub mod seed;
pub mod signer;

use time::{Duration, OffsetDateTime};

use crate::app::Services;
use crate::error::{internal, reject, DomainResult, Problem};
use crate::store::subscribers::{self, SubscriberRow};
use crate::store::{DbConn, Locked};

pub use crate::states::SubscriberState;
pub use activation::{activate, ActivateRequest, Activated};
pub use device::{authenticate, check_body, Authenticated, DeviceCall};
pub use pin_change::change_pin;
pub use registration::{
    block, disconnect, register, unblock, view, Disconnected, Registered, Registration,
    SubscriberView, Unblocked,
};
pub use renewal::{renew, Renewed};
pub use signer::{lock_signer, ActiveSigner};

/// E.164 with the leading `+`: 8–15 digits, no leading zero.
pub fn valid_msisdn(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

fn require_msisdn(s: &str) -> DomainResult<()> {
    if valid_msisdn(s) {
        Ok(())
    } else {
        Err(reject(
            Problem::RequestInvalid,
            "msisdn must be E.164: + and 8-15 digits",
        ))
    }
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

/// The audit subject of subscriber `id`.
pub fn subject(id: &str) -> String {
    format!("subscriber:{id}")
}

fn random_digits(n: usize) -> DomainResult<zeroize::Zeroizing<String>> {
    let mut out = zeroize::Zeroizing::new(String::with_capacity(n));
    let mut b = [0u8; 1];
    while out.len() < n {
        openssl::rand::rand_bytes(&mut b).map_err(|e| internal(e.to_string()))?;
        // 250 = 25 * 10: uniform over digits.
        if b[0] < 250 {
            out.push(char::from(b'0' + b[0] % 10));
        }
    }
    Ok(out)
}

/// The keyed hash stored for an activation code.
fn activation_hash(svc: &Services, id: &str, code: &str) -> DomainResult<[u8; 32]> {
    let input = zeroize::Zeroizing::new(format!("tmcs-activation-v1|{id}|{code}"));
    Ok(svc
        .custody
        .hmac_sha256(&svc.pki.keys.pin_pepper, input.as_bytes())?)
}

/// A fresh activation code for subscriber `id`.
struct NewActivation {
    code: zeroize::Zeroizing<String>,
    hash_hex: String,
    expires: OffsetDateTime,
}

fn new_activation(svc: &Services, id: &str, now: OffsetDateTime) -> DomainResult<NewActivation> {
    let code = random_digits(svc.pins.settings.activation_code_digits)?;
    let hash_hex = hex::encode(activation_hash(svc, id, &code)?);
    let hours = i64::try_from(svc.pins.settings.activation_ttl_hours).unwrap_or(72);
    Ok(NewActivation {
        code,
        hash_hex,
        expires: now + Duration::hours(hours),
    })
}

impl NewActivation {
    /// Puts `s` back to pending with this code: no PIN, no device, no tries used.
    fn apply(&self, s: &mut SubscriberRow, now: i64) {
        s.state = SubscriberState::PendingActivation;
        s.activation_hash = Some(self.hash_hex.clone());
        s.activation_expires_at = Some(self.expires.unix_timestamp());
        s.attempts = 0;
        s.pin_salt = None;
        s.pin_verifier = None;
        s.device_spki = None;
        s.updated_at = now;
    }
}

/// The subscriber with this MSISDN, as read now (no lock: for checks before
/// work done outside a transaction, which then locks and checks again).
fn read_msisdn(svc: &Services, msisdn: &str) -> DomainResult<SubscriberRow> {
    svc.store
        .read(|c| subscribers::by_msisdn(c, msisdn))?
        .ok_or_else(|| {
            reject(
                Problem::SubscriberNotFound,
                "no subscriber with this MSISDN",
            )
        })
}

/// The subscriber with this MSISDN, its row locked for the transaction.
fn lock_msisdn(conn: &mut DbConn, msisdn: &str) -> DomainResult<Locked<SubscriberRow>> {
    subscribers::lock_by_msisdn(conn, msisdn)?.ok_or_else(|| {
        reject(
            Problem::SubscriberNotFound,
            "no subscriber with this MSISDN",
        )
    })
}

fn ts(t: i64) -> String {
    crate::clock::rfc3339_unix(t)
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
