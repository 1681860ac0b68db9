//! Delegated signing of iMS messages (CONTRACT §5–7; steps 1–6 of the iMS
//! paper's security procedure; EN 419 241 SCAL2: the activation data is
//! bound to the exact data to be signed, used once, checked where the key
//! lives).
//!
//! * [`submit`]: the FSP's message — merchant and FSP signatures, payer,
//!   tier, limits, freshness, replay, idempotency → a pending request;
//! * [`authorize`]: PIN block (handset) or PIN (gateway) → the one signer
//!   check and the PIN with the shared counter → the exactly-once claim
//!   `pending → signing` → the HSM signs the digest the PIN was bound to →
//!   `signed`;
//! * [`views`]: what the handset and the FSP see; reads never write;
//! * [`expiry`]: the sweeper's half of expiry.
//!
//! Request statuses and their transitions: [`crate::states::RequestStatus`].

mod authorize;
pub mod expiry;
pub mod policy;
mod submit;
pub mod views;

use base64::Engine;

use crate::error::{reject, DomainError};
use crate::ims::{ImsError, ImsMessage};
use crate::store::requests::RequestRow;

pub use authorize::{authorize_gateway, authorize_handset, decline, Declined, Signed};
pub use expiry::{expire_if_overdue, expire_overdue};
pub use policy::Policy;
pub use submit::{submit, Submitted};
pub use views::{fsp_view, handset_view, pending_for, FspView, HandsetView, Listed};

/// The audit subject of request `id`.
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

pub fn parse_stored(row: &RequestRow) -> Result<ImsMessage, DomainError> {
    ImsMessage::parse(row.ims_xml.as_bytes())
        .map_err(|e| crate::error::internal(format!("stored iMS of {}: {e}", row.id)))
}

#[cfg(test)]
mod tests;
