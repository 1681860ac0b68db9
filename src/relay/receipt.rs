//! Step 10: the payer's receipt (CONTRACT §11), signed with the display
//! key over
//!
//! ```text
//! tmcs-receipt-v1\n
//! request_id:<id>\n status:<status>\n ref:<ref>\n payee:<to.id>\n amount:<EUR25.00>\n ts:<RFC 3339 UTC>\n
//! ```
//!
//! (one `key:value\n` line each, in that order; `ref` is empty when the
//! message had none; `ts` is when the status became final).

use serde::Serialize;

use super::outbox::ref_and_amount;
use crate::app::Services;
use crate::clock::rfc3339_unix;
use crate::error::{reject, DomainResult, Problem};
use crate::signing::b64;
use crate::states::RequestStatus;
use crate::store::requests::{self, RequestRow};

/// The receipts a list shows at most.
const LIST_LIMIT: i64 = 50;

/// The bytes `receipt_sig` covers.
pub fn receipt_message(
    request_id: &str,
    status: &str,
    reference: &str,
    payee: &str,
    amount: &str,
    ts: &str,
) -> String {
    format!(
        "tmcs-receipt-v1\nrequest_id:{request_id}\nstatus:{status}\nref:{reference}\npayee:{payee}\namount:{amount}\nts:{ts}\n"
    )
}

/// `GET /v1/handset/receipts/{request_id}`.
#[derive(Debug, Serialize)]
pub struct Receipt {
    pub request_id: String,
    pub status: RequestStatus,
    #[serde(rename = "ref")]
    pub reference: String,
    pub payee: String,
    pub amount: String,
    pub ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub receipt_sig: String,
}

/// `GET /v1/handset/receipts`: newest first.
#[derive(Debug, Serialize)]
pub struct ReceiptList {
    pub receipts: Vec<Receipt>,
}

fn receipt_of(svc: &Services, row: &RequestRow) -> DomainResult<Receipt> {
    let (reference, amount, payee) = ref_and_amount(row)?;
    let ts = rfc3339_unix(row.final_at.unwrap_or(row.updated_at));
    let status = row.status;
    let msg = receipt_message(&row.id, status.as_str(), &reference, &payee, &amount, &ts);
    let sig = svc
        .custody
        .sign_sha256(&svc.pki.keys.display, msg.as_bytes())?;
    Ok(Receipt {
        request_id: row.id.clone(),
        status,
        reference,
        payee,
        amount,
        ts,
        reason: matches!(status, RequestStatus::RolledBack | RequestStatus::Failed)
            .then(|| row.error_code.clone())
            .flatten(),
        receipt_sig: b64(&sig),
    })
}

/// The payer's receipt of one request, once it has ended.
pub fn receipt(svc: &Services, subscriber_id: &str, request_id: &str) -> DomainResult<Receipt> {
    let row = crate::signing::views::payers_request(svc, subscriber_id, request_id)?;
    if !RequestStatus::ENDED.contains(&row.status) {
        return Err(reject(
            Problem::ReceiptNotReady,
            format!(
                "the payment is {}; a receipt exists once it is settled, rolled back or failed",
                row.seen_at(svc.clock.now().unix_timestamp())
            ),
        ));
    }
    receipt_of(svc, &row)
}

/// The payer's receipts, newest first.
pub fn receipts(svc: &Services, subscriber_id: &str) -> DomainResult<ReceiptList> {
    let rows = svc
        .store
        .read(|c| requests::ended_for(c, subscriber_id, LIST_LIMIT))?;
    Ok(ReceiptList {
        receipts: rows
            .iter()
            .map(|r| receipt_of(svc, r))
            .collect::<DomainResult<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn receipt_message_is_exact() {
        assert_eq!(
            super::receipt_message("r1", "settled", "POS-1", "m@merchant.x", "EUR1.00", "2026-12-02T10:00:00Z"),
            "tmcs-receipt-v1\nrequest_id:r1\nstatus:settled\nref:POS-1\npayee:m@merchant.x\namount:EUR1.00\nts:2026-12-02T10:00:00Z\n"
        );
    }
}
