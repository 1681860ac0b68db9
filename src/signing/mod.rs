//! Delegated signing of iMS messages (CONTRACT §5–7; steps 1–6 of the iMS
//! paper's security procedure; EN 419 241 SCAL2: the activation data is
//! bound to the exact data to be signed, used once, checked where the key
//! lives).
//!
//! * [`submit`]: the FSP's message — merchant and FSP signatures, payer,
//!   tier, limits, freshness, replay, idempotency → a pending request;
//! * [`authorize`]: PIN block (handset) or PIN (gateway) → PIN check with
//!   the shared counter → the exactly-once claim `pending → signing` → the
//!   HSM signs `C` → `signed`;
//! * expiry, decline and the views of the handset and the FSP.

mod authorize;
pub mod policy;
mod submit;

use base64::Engine;
use serde::Serialize;
use time::OffsetDateTime;

use crate::app::App;
use crate::audit::{self, Actor, NewEvent};
use crate::clock::rfc3339_seconds;
use crate::error::{reject, DomainError, DomainResult};
use crate::ims::{ImsError, ImsMessage};
use crate::store::requests::{self, RequestRow};

pub use authorize::{authorize_gateway, authorize_handset, decline, Signed};
pub use policy::Policy;
pub use submit::{submit, Submitted};

pub const PENDING: &str = "pending_authorization";
pub const SIGNING: &str = "signing";
pub const SIGNED: &str = "signed";
pub const DECLINED: &str = "declined";
pub const EXPIRED: &str = "expired";

pub fn subject(id: &str) -> String {
    format!("request:{id}")
}

pub(crate) fn ims_error(e: ImsError) -> DomainError {
    reject(e.code, e.to_string())
}

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The 4-digit verification code both merchant and handset can show: the
/// two rightmost bytes of SHA-256(SHA-256(C)), big-endian, mod 10000 (as
/// Smart-ID derives its code from the hash to be signed).
pub fn verification_code(c_sha256: &[u8; 32]) -> String {
    let h = openssl::sha::sha256(c_sha256);
    let n = u16::from_be_bytes([h[30], h[31]]);
    format!("{:04}", n % 10_000)
}

/// What the handset shows before the PIN (the trusted dialog).
#[derive(Debug, Clone, Serialize)]
pub struct Display {
    pub payee: String,
    /// As in the iMS, e.g. `EUR25.00`.
    pub amount: String,
    pub currency: String,
    pub text: String,
}

/// The bytes the display key signs (CONTRACT §7).
pub fn display_message(
    request_id: &str,
    payee: &str,
    amount: &str,
    verification_code: &str,
    dtbs_sha256: &str,
    expires_at: &str,
) -> String {
    format!(
        "tmcs-display-v1\nrequest_id:{request_id}\npayee:{payee}\namount:{amount}\nverification_code:{verification_code}\ndtbs_sha256:{dtbs_sha256}\nexpires_at:{expires_at}\n"
    )
}

fn ts(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .map(rfc3339_seconds)
        .unwrap_or_else(|_| t.to_string())
}

/// The externally visible status (`signing` is an internal instant).
pub fn public_status(status: &str) -> &str {
    if status == SIGNING {
        PENDING
    } else {
        status
    }
}

pub(crate) fn parse_stored(row: &RequestRow) -> DomainResult<ImsMessage> {
    ImsMessage::parse(row.ims_xml.as_bytes())
        .map_err(|e| reject("internal", format!("stored iMS: {e}")))
}

/// Marks requests past their expiry `expired` (pending ones, and claimed
/// ones whose signature never got stored: no signature is out for them).
/// Returns how many.
pub fn expire_overdue(app: &App) -> DomainResult<usize> {
    let now = app.clock.now();
    let t = now.unix_timestamp();
    let overdue = app.store.read(|c| requests::overdue(c, t, 500))?;
    let mut n = 0;
    for (id, status) in overdue {
        let done = app.store.write(|c| -> DomainResult<bool> {
            if !requests::transition(c, &id, &status, EXPIRED, t)? {
                return Ok(false);
            }
            audit::append(
                c,
                now,
                NewEvent::new(
                    &Actor::System,
                    "request.expired",
                    Some(subject(&id)),
                    serde_json::json!({ "from": status }),
                ),
            )?;
            Ok(true)
        })?;
        n += usize::from(done);
    }
    Ok(n)
}

/// Expires `row` now if it is overdue; returns the (possibly updated) status.
pub(crate) fn expire_if_overdue(app: &App, row: &RequestRow) -> DomainResult<String> {
    let now = app.clock.now();
    let t = now.unix_timestamp();
    if (row.status == PENDING || row.status == SIGNING) && row.expires_at < t {
        app.store.write(|c| -> DomainResult<()> {
            if requests::transition(c, &row.id, &row.status, EXPIRED, t)? {
                audit::append(
                    c,
                    now,
                    NewEvent::new(
                        &Actor::System,
                        "request.expired",
                        Some(subject(&row.id)),
                        serde_json::json!({ "from": row.status }),
                    ),
                )?;
            }
            Ok(())
        })?;
        return Ok(EXPIRED.to_string());
    }
    Ok(row.status.clone())
}

#[derive(Debug, Serialize)]
pub struct Listed {
    pub request_id: String,
    pub expires_at: String,
    pub verification_code: String,
    pub payee: String,
    pub amount: String,
}

/// `GET /v1/handset/requests`.
pub fn pending_for(app: &App, subscriber_id: &str) -> DomainResult<Vec<Listed>> {
    let now = app.clock.now().unix_timestamp();
    let rows = app
        .store
        .read(|c| requests::pending_for(c, subscriber_id, now))?;
    rows.iter()
        .map(|r| {
            let m = parse_stored(r)?;
            Ok(Listed {
                request_id: r.id.clone(),
                expires_at: ts(r.expires_at),
                verification_code: r.verification_code.clone(),
                payee: m.to.to_string(),
                amount: m.amount.to_string(),
            })
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct HandsetView {
    pub request_id: String,
    pub nonce: String,
    pub dtbs_sha256: String,
    pub expires_at: String,
    pub verification_code: String,
    pub display: Display,
    pub display_sig: String,
}

/// A request of `subscriber_id` that is still waiting for it.
pub(crate) fn load_pending_for(
    app: &App,
    subscriber_id: &str,
    id: &str,
) -> DomainResult<RequestRow> {
    let row = app
        .store
        .read(|c| requests::get(c, id))?
        .filter(|r| r.subscriber_id == subscriber_id)
        .ok_or_else(|| reject("request.not_found", "no such request for this subscriber"))?;
    match expire_if_overdue(app, &row)?.as_str() {
        PENDING => Ok(row),
        EXPIRED => Err(reject("request.expired", "the request has expired")),
        other => Err(reject(
            "request.not_pending",
            format!("the request is {}", public_status(other)),
        )),
    }
}

/// `GET /v1/handset/requests/{id}`: what to show, signed by the display key.
pub fn handset_view(app: &App, subscriber_id: &str, id: &str) -> DomainResult<HandsetView> {
    let row = load_pending_for(app, subscriber_id, id)?;
    let m = parse_stored(&row)?;
    let payee = m.to.to_string();
    let amount = m.amount.to_string();
    let expires_at = ts(row.expires_at);
    let text = match &m.reference {
        Some(r) => format!("Pay {amount} to {payee} (ref {r})"),
        None => format!("Pay {amount} to {payee}"),
    };
    let msg = display_message(
        &row.id,
        &payee,
        &amount,
        &row.verification_code,
        &row.dtbs_sha256,
        &expires_at,
    );
    let sig = app.hsm.sign_sha256(&app.pki.keys.display, msg.as_bytes())?;
    Ok(HandsetView {
        request_id: row.id,
        nonce: row.nonce,
        dtbs_sha256: row.dtbs_sha256,
        expires_at,
        verification_code: row.verification_code,
        display: Display {
            payee,
            amount,
            currency: m.amount.currency().code().to_string(),
            text,
        },
        display_sig: b64(&sig),
    })
}

#[derive(Debug, Serialize)]
pub struct FspView {
    pub request_id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ims: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub expires_at: String,
    pub verification_code: String,
}

/// `GET /v1/fsp/requests/{id}`, for the FSP that submitted it.
pub fn fsp_view(app: &App, fsp_party: &str, id: &str) -> DomainResult<FspView> {
    let row = app
        .store
        .read(|c| requests::get(c, id))?
        .filter(|r| r.fsp_party == fsp_party)
        .ok_or_else(|| reject("request.not_found", "no such request for this FSP"))?;
    let status = expire_if_overdue(app, &row)?;
    Ok(FspView {
        request_id: row.id,
        status: public_status(&status).to_string(),
        ims: row.signed_xml,
        error: row.error_code,
        expires_at: ts(row.expires_at),
        verification_code: row.verification_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_code_is_four_digits_from_the_digest() {
        let d = openssl::sha::sha256(b"C");
        let vc = verification_code(&d);
        assert_eq!(vc.len(), 4);
        let h = openssl::sha::sha256(&d);
        assert_eq!(
            vc,
            format!("{:04}", (u32::from(h[30]) * 256 + u32::from(h[31])) % 10000)
        );
        assert_ne!(verification_code(&openssl::sha::sha256(b"D")), "");
    }

    #[test]
    fn display_message_is_exact() {
        assert_eq!(
            display_message("r", "p@merchant.x", "EUR1.00", "0042", "abc", "2026-01-01T00:00:00Z"),
            "tmcs-display-v1\nrequest_id:r\npayee:p@merchant.x\namount:EUR1.00\nverification_code:0042\ndtbs_sha256:abc\nexpires_at:2026-01-01T00:00:00Z\n"
        );
    }
}
