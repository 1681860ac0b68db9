//! What the handset and the FSP see of requests. Reads never write: a
//! request past its expiry reads as `expired` ([`RequestRow::seen_at`]);
//! the sweeper records it.

use serde::Serialize;

use super::{b64, display_message, parse_stored, Submitted};
use crate::app::Services;
use crate::clock::rfc3339_unix;
use crate::error::{reject, DomainResult, Problem};
use crate::states::RequestStatus;
use crate::store::requests::{self, RequestRow};

/// One line of `GET /v1/handset/requests`.
#[derive(Debug, Serialize)]
pub struct Listed {
    pub request_id: String,
    pub expires_at: String,
    pub verification_code: String,
    pub payee: String,
    pub amount: String,
}

/// `GET /v1/handset/requests`.
#[derive(Debug, Serialize)]
pub struct PendingList {
    pub requests: Vec<Listed>,
}

/// The caller's requests waiting for the handset.
pub fn pending_for(svc: &Services, subscriber_id: &str) -> DomainResult<PendingList> {
    let now = svc.clock.now().unix_timestamp();
    let rows = svc
        .store
        .read(|c| requests::pending_for(c, subscriber_id, now))?;
    let requests = rows
        .iter()
        .map(|r| {
            let m = parse_stored(r)?;
            Ok(Listed {
                request_id: r.id.clone(),
                expires_at: rfc3339_unix(r.expires_at),
                verification_code: r.verification_code.clone(),
                payee: m.to.to_string(),
                amount: m.amount.to_string(),
            })
        })
        .collect::<DomainResult<Vec<_>>>()?;
    Ok(PendingList { requests })
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

/// `GET /v1/handset/requests/{id}`.
#[derive(Debug, Serialize)]
pub struct HandsetView {
    pub request_id: String,
    pub nonce: String,
    pub dtbs_sha256: String,
    pub expires_at: String,
    pub verification_code: String,
    pub display: Display,
    pub display_sig: String,
    /// The alias of the paying instrument, alias payments only; then
    /// `display_sig` covers one more line, `instrument:<alias>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instrument: Option<String>,
}

/// A request of `subscriber_id` (another payer's reads as not found).
pub(crate) fn payers_request(
    svc: &Services,
    subscriber_id: &str,
    id: &str,
) -> DomainResult<RequestRow> {
    svc.store
        .read(|c| requests::get(c, id))?
        .filter(|r| r.subscriber_id == subscriber_id)
        .ok_or_else(|| {
            reject(
                Problem::RequestNotFound,
                "no such request for this subscriber",
            )
        })
}

/// A request of `subscriber_id` that is still waiting for it, as read now.
pub(crate) fn pending_of(
    svc: &Services,
    subscriber_id: &str,
    id: &str,
) -> DomainResult<RequestRow> {
    let row = payers_request(svc, subscriber_id, id)?;
    match row.seen_at(svc.clock.now().unix_timestamp()) {
        RequestStatus::PendingAuthorization
            if row.status == RequestStatus::PendingAuthorization =>
        {
            Ok(row)
        }
        RequestStatus::Expired => Err(reject(Problem::RequestExpired, "the request has expired")),
        other => Err(not_pending(other)),
    }
}

pub(crate) fn not_pending(status: RequestStatus) -> crate::error::DomainError {
    reject(
        Problem::RequestNotPending,
        format!("the request is {}", status.public()),
    )
}

/// `GET /v1/handset/requests/{id}`: what to show, signed by the display key.
pub fn handset_view(svc: &Services, subscriber_id: &str, id: &str) -> DomainResult<HandsetView> {
    let row = pending_of(svc, subscriber_id, id)?;
    let m = parse_stored(&row)?;
    let payee = m.to.to_string();
    let amount = m.amount.to_string();
    let expires_at = rfc3339_unix(row.expires_at);
    // An alias payment says which instrument pays (CONTRACT §12).
    let instrument = row
        .instrument_id
        .as_ref()
        .and_then(|_| {
            m.account_payable
                .strip_prefix(crate::relay::instruments::ALIAS_PREFIX)
        })
        .map(str::to_string);
    let mut text = match &m.reference {
        Some(r) => format!("Pay {amount} to {payee} (ref {r})"),
        None => format!("Pay {amount} to {payee}"),
    };
    let mut msg = display_message(
        &row.id,
        &payee,
        &amount,
        &row.verification_code,
        &row.dtbs_sha256,
        &expires_at,
    );
    if let Some(alias) = &instrument {
        text.push_str(&format!(" from {alias}"));
        msg.push_str(&format!("instrument:{alias}\n"));
    }
    let sig = svc
        .custody
        .sign_sha256(&svc.pki.keys.display, msg.as_bytes())?;
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
        instrument,
    })
}

/// `GET /v1/fsp/requests/{id}`.
#[derive(Debug, Serialize)]
pub struct FspView {
    pub request_id: String,
    pub status: RequestStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ims: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it was rolled back or failed (CONTRACT §11).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub expires_at: String,
    pub verification_code: String,
}

/// The request as the FSP that submitted it sees it.
pub fn fsp_view(svc: &Services, fsp_party: &str, id: &str) -> DomainResult<FspView> {
    let row = svc
        .store
        .read(|c| requests::get(c, id))?
        .filter(|r| r.fsp_party == fsp_party)
        .ok_or_else(|| reject(Problem::RequestNotFound, "no such request for this FSP"))?;
    let status = row.seen_at(svc.clock.now().unix_timestamp());
    Ok(FspView {
        reason: matches!(status, RequestStatus::RolledBack | RequestStatus::Failed)
            .then(|| row.error_code.clone())
            .flatten(),
        status,
        request_id: row.id,
        ims: row.signed_xml,
        error: row.error_code,
        expires_at: rfc3339_unix(row.expires_at),
        verification_code: row.verification_code,
    })
}

/// `202`/`200` of `POST /v1/fsp/messages`.
#[derive(Debug, Serialize)]
pub struct SubmitView {
    pub request_id: String,
    pub status: RequestStatus,
    pub expires_at: String,
    pub verification_code: String,
    pub dtbs_sha256: String,
    pub status_url: String,
}

impl SubmitView {
    pub fn of(s: &Submitted, now: i64) -> SubmitView {
        let r = &s.request;
        SubmitView {
            request_id: r.id.clone(),
            status: r.seen_at(now),
            expires_at: rfc3339_unix(r.expires_at),
            verification_code: r.verification_code.clone(),
            dtbs_sha256: r.dtbs_sha256.clone(),
            status_url: format!("/v1/fsp/requests/{}", r.id),
        }
    }
}
