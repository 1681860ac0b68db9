//! The transactional outbox (CONTRACT §11). Every delivery is enqueued in
//! the transaction of the status change that causes it, and every answer is
//! recorded in one transaction with what it means for the request:
//!
//! | delivered | request | enqueues |
//! |---|---|---|
//! | `signed` | `signed → relayed` | mode `fsp+bank`: the `instruction` |
//! | `instruction`, pain.002 ACSC/ACCC/ACSP/ACCP | `relayed → settled` | `outcome` to the FSP and the merchant |
//! | `instruction`, pain.002 RJCT | `relayed → rolled_back` (reason) | `outcome` |
//! | `outcome` | — | — |
//!
//! A `signed` or `instruction` delivery that gives up fails the request
//! (`relay.<event>.failed`) and tells the FSP and the merchant. An operator
//! may put it back in the queue; once it goes through, the request moves on
//! from `failed` as above.
//!
//! Receivers are named by party; their `callback_url` is read when sending,
//! so a corrected URL applies to deliveries already queued.

use serde::Serialize;

use super::pain::{self, BankAnswer, Instruction};
use super::{Mode, Relay};
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::error::{internal, DomainResult};
use crate::signing::{parse_stored, subject};
use crate::states::{DeliveryEvent, DeliveryStatus, RequestStatus};
use crate::store::deliveries::{self, DeliveryRow, Settle};
use crate::store::requests::{self, RequestRow};
use crate::store::{certs, parties, DbConn};

/// The header that carries the payer's certificate (base64 DER) with the
/// `signed` event, so that the FSP can verify `from/sign` over `C` without
/// a directory lookup. Additive to CONTRACT §11.
pub const SIGNER_CERT_HEADER: &str = "TMCS-Signer-Certificate";

fn now_ms(now: time::OffsetDateTime) -> i64 {
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The receiver's callback URL, if it has one.
fn callback_of(c: &mut DbConn, party: &str) -> DomainResult<Option<String>> {
    Ok(parties::get(c, party)?.and_then(|p| p.callback_url))
}

#[allow(clippy::too_many_arguments)]
fn enqueue(
    c: &mut DbConn,
    request_id: &str,
    event: DeliveryEvent,
    target: &str,
    idempotency_key: String,
    content_type: &str,
    headers: &[(String, String)],
    body: String,
    now: time::OffsetDateTime,
) -> DomainResult<bool> {
    let row = DeliveryRow {
        id: uuid::Uuid::new_v4().to_string(),
        request_id: request_id.to_string(),
        event,
        target: target.to_string(),
        idempotency_key,
        content_type: content_type.to_string(),
        headers: serde_json::to_string(headers).map_err(|e| internal(e.to_string()))?,
        body,
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_ms: now_ms(now),
        lease_owner: None,
        lease_until_ms: None,
        last_error: None,
        created_at: now.unix_timestamp(),
        updated_at: now.unix_timestamp(),
        delivered_at: None,
    };
    Ok(deliveries::insert(c, &row)?)
}

/// The `signed` event to the FSP that submitted (call in the transaction
/// that stores the signature). Nothing when the relay is off or the FSP has
/// no `callback_url`: the request then stays `signed` and the FSP polls.
pub fn enqueue_signed(
    c: &mut DbConn,
    relay: &Relay,
    row: &RequestRow,
    signed_xml: &str,
    certificate_serial: &str,
    now: time::OffsetDateTime,
) -> DomainResult<bool> {
    if !relay.enabled() || callback_of(c, &row.fsp_party)?.is_none() {
        return Ok(false);
    }
    let cert = certs::get(c, certificate_serial)?
        .ok_or_else(|| internal(format!("certificate {certificate_serial} is not stored")))?;
    let der = openssl::x509::X509::from_pem(cert.pem.as_bytes())
        .and_then(|x| x.to_der())
        .map_err(|e| internal(format!("certificate {certificate_serial}: {e}")))?;
    use base64::Engine as _;
    let headers = [(
        SIGNER_CERT_HEADER.to_string(),
        base64::engine::general_purpose::STANDARD.encode(der),
    )];
    enqueue(
        c,
        &row.id,
        DeliveryEvent::Signed,
        &row.fsp_party,
        row.id.clone(),
        "application/xml",
        &headers,
        signed_xml.to_string(),
        now,
    )
}

/// The pain.001 to the bank (mode `fsp+bank`), once the FSP took `signed`.
fn enqueue_instruction(
    c: &mut DbConn,
    relay: &Relay,
    row: &RequestRow,
    now: time::OffsetDateTime,
) -> DomainResult<bool> {
    let s = &relay.settings;
    let Some(bank) = s.bank.as_deref() else {
        return Err(internal("relay.mode fsp+bank without relay.bank"));
    };
    let mut ims = parse_stored(row)?;
    if let Some(id) = &row.instrument_id {
        // An alias payment: the bank gets the account the alias stands for
        // (CONTRACT §12); the signed iMS, the FSP and the merchant keep the alias.
        let instrument = crate::store::instruments::get(c, id)?.ok_or_else(|| {
            internal(format!("request {}: instrument {id} is not stored", row.id))
        })?;
        ims.account_payable = instrument.account;
    }
    let signed_at =
        time::OffsetDateTime::from_unix_timestamp(row.signed_at.unwrap_or(row.updated_at))
            .map_err(|e| internal(e.to_string()))?;
    let xml = pain::pain001(&Instruction {
        request_id: &row.id,
        ims: &ims,
        signed_at,
        initiating_party: &s.initiating_party,
        debtor_agent_bic: s.debtor_agent_bic.as_deref(),
        creditor_agent_bic: s.creditor_agent_bic.as_deref(),
    })
    .map_err(internal)?;
    enqueue(
        c,
        &row.id,
        DeliveryEvent::Instruction,
        bank,
        row.id.clone(),
        "application/xml",
        &[],
        xml,
        now,
    )
}

/// The end of an instrument's reservation at the bank (CONTRACT §12):
/// `DELETE <bank callback_url>/reservations/{reservation_id}`. The row's
/// `request_id` is the instrument's id.
pub fn enqueue_release(
    c: &mut DbConn,
    instrument_id: &str,
    bank: &str,
    reservation_id: &str,
    now: time::OffsetDateTime,
) -> DomainResult<bool> {
    // Even with the relay switched off: the release waits in the outbox
    // until it runs again (a reservation always ends).
    enqueue(
        c,
        instrument_id,
        DeliveryEvent::Release,
        bank,
        reservation_id.to_string(),
        "application/json",
        &[],
        String::new(),
        now,
    )
}

/// The `outcome` body (CONTRACT §11).
#[derive(Debug, Serialize)]
struct OutcomeBody<'a> {
    request_id: &'a str,
    #[serde(rename = "ref")]
    reference: String,
    status: RequestStatus,
    amount: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// The iMS `ref` ("" when the message has none) and amount (`EUR25.00`).
pub(crate) fn ref_and_amount(row: &RequestRow) -> DomainResult<(String, String, String)> {
    let m = parse_stored(row)?;
    Ok((
        m.reference.map(|r| r.to_string()).unwrap_or_default(),
        m.amount.to_string(),
        m.to.to_string(),
    ))
}

/// The `outcome` event to the FSP and, when it has a `callback_url`, the
/// merchant (a P2P payee has no party of its own).
pub fn enqueue_outcomes(
    c: &mut DbConn,
    relay: &Relay,
    row: &RequestRow,
    status: RequestStatus,
    reason: Option<&str>,
    now: time::OffsetDateTime,
) -> DomainResult<usize> {
    if !relay.enabled() {
        return Ok(0);
    }
    let (reference, amount, _) = ref_and_amount(row)?;
    let body = serde_json::to_string(&OutcomeBody {
        request_id: &row.id,
        reference,
        status,
        amount,
        reason,
    })
    .map_err(|e| internal(e.to_string()))?;
    let mut targets = vec![row.fsp_party.clone()];
    if row.merchant_party != row.fsp_party {
        targets.push(row.merchant_party.clone());
    }
    let mut n = 0;
    for target in targets {
        if callback_of(c, &target)?.is_none() {
            continue;
        }
        if enqueue(
            c,
            &row.id,
            DeliveryEvent::Outcome,
            &target,
            format!("{}:{}", row.id, status),
            "application/json",
            &[],
            body.clone(),
            now,
        )? {
            n += 1;
        }
    }
    Ok(n)
}

/// What one attempt got.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// A 2xx, with the body (the bank's pain.002).
    Delivered { status: u16, body: Vec<u8> },
    /// A 5xx, a timeout, a refused connection, an unreadable pain.002: again later.
    Retryable(String),
    /// Any other status, or no receiver: the delivery fails at once.
    Refused(String),
}

/// What recording an attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Delivered,
    Retry {
        next_attempt_ms: i64,
    },
    Failed,
    /// Another node took the delivery over meanwhile; its answer counts.
    LeaseLost,
}

/// Moves the request to `to` from whatever it is now, if the lifecycle
/// allows it; returns the row as it was.
fn advance(
    c: &mut DbConn,
    id: &str,
    to: RequestStatus,
    t: i64,
) -> DomainResult<Option<RequestRow>> {
    let Some(row) = requests::get(c, id)? else {
        return Ok(None);
    };
    if !row.status.can_become(to) {
        return Ok(None);
    }
    if !requests::transition(c, id, row.status, to, t)? {
        return Ok(None);
    }
    if row.status == RequestStatus::Failed {
        // An operator's retry went through: the failure is history (it
        // stays in the audit trail), not the request's reason any more.
        requests::clear_end(c, id, t)?;
    }
    Ok(Some(row))
}

/// How a payment ended: the status, when and why, the event, the outcomes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn end_request(
    c: &mut DbConn,
    relay: &Relay,
    actor: &Actor,
    id: &str,
    to: RequestStatus,
    reason: Option<&str>,
    event: AuditEvent,
    now: time::OffsetDateTime,
) -> DomainResult<bool> {
    let t = now.unix_timestamp();
    let Some(row) = advance(c, id, to, t)? else {
        return Ok(false);
    };
    requests::mark_ended(c, id, reason, t)?;
    audit::append(c, now, NewEvent::of(actor, subject(id), event))?;
    enqueue_outcomes(c, relay, &row, to, reason, now)?;
    Ok(true)
}

/// The attempt as the contract reads it: a 2xx instruction answer must be a
/// pain.002 about our message, else it is retried like a 5xx.
fn judge(d: &DeliveryRow, attempt: Attempt) -> (Attempt, Option<BankAnswer>) {
    match (d.event, attempt) {
        (DeliveryEvent::Instruction, Attempt::Delivered { status, body }) => {
            match pain::read_pain002(&body, &pain::message_id(&d.request_id)) {
                Ok(a) => (Attempt::Delivered { status, body }, Some(a)),
                Err(e) => {
                    tracing::warn!(delivery = %d.id, error = %e, "the bank's answer is not usable; retrying");
                    (Attempt::Retryable(e), None)
                }
            }
        }
        // The reservation is gone already: nothing left to release.
        (DeliveryEvent::Release, Attempt::Refused(e)) if e == "HTTP 404" => (
            Attempt::Delivered {
                status: 404,
                body: Vec::new(),
            },
            None,
        ),
        (_, a) => (a, None),
    }
}

/// Records one attempt of `d` (claimed by `node`) and what follows from it,
/// in one transaction.
pub fn record(
    c: &mut DbConn,
    relay: &Relay,
    node: &str,
    d: &DeliveryRow,
    attempt: Attempt,
    now: time::OffsetDateTime,
) -> DomainResult<Recorded> {
    let t = now.unix_timestamp();
    let (attempt, bank) = judge(d, attempt);
    match attempt {
        Attempt::Delivered { status, .. } => {
            if !deliveries::settle(c, &d.id, node, t, Settle::Delivered { at: t })? {
                return Ok(Recorded::LeaseLost);
            }
            note(
                c,
                now,
                d,
                AuditEvent::RelayDelivered {
                    delivery: d.id.clone(),
                    event: d.event,
                    target: d.target.clone(),
                    attempts: d.attempts,
                    http_status: status,
                },
            )?;
            delivered(c, relay, d, bank, now)?;
            Ok(Recorded::Delivered)
        }
        Attempt::Retryable(error)
            if d.attempts < i32::try_from(relay.settings.max_attempts).unwrap_or(i32::MAX) =>
        {
            let attempt_no = u32::try_from(d.attempts.max(1)).unwrap_or(1);
            let wait = relay.settings.backoff(attempt_no);
            let next = now_ms(now) + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
            let error = short(&error);
            if !deliveries::settle(
                c,
                &d.id,
                node,
                t,
                Settle::Retry {
                    next_attempt_ms: next,
                    error: &error,
                },
            )? {
                return Ok(Recorded::LeaseLost);
            }
            note(
                c,
                now,
                d,
                AuditEvent::RelayRetry {
                    delivery: d.id.clone(),
                    event: d.event,
                    target: d.target.clone(),
                    attempt: d.attempts,
                    error: error.clone(),
                    next_attempt_at: crate::clock::rfc3339_unix_ms(next),
                },
            )?;
            Ok(Recorded::Retry {
                next_attempt_ms: next,
            })
        }
        Attempt::Retryable(error) | Attempt::Refused(error) => {
            let error = short(&error);
            if !deliveries::settle(c, &d.id, node, t, Settle::Failed { error: &error })? {
                return Ok(Recorded::LeaseLost);
            }
            give_up_on(c, relay, d, &error, now)?;
            Ok(Recorded::Failed)
        }
    }
}

/// A relay step of delivery `d`, audited as the system's, about its
/// request (or, for a reservation's release, its instrument).
fn note(
    c: &mut DbConn,
    now: time::OffsetDateTime,
    d: &DeliveryRow,
    event: AuditEvent,
) -> DomainResult<()> {
    let about = match d.event {
        DeliveryEvent::Reserve | DeliveryEvent::Release => {
            super::instruments::subject(&d.request_id)
        }
        _ => subject(&d.request_id),
    };
    audit::append(c, now, NewEvent::of(&Actor::System, about, event))?;
    Ok(())
}

/// Error texts in the outbox and the audit trail stay short.
fn short(e: &str) -> String {
    e.chars().take(300).collect()
}

/// What a delivered event means for its request.
fn delivered(
    c: &mut DbConn,
    relay: &Relay,
    d: &DeliveryRow,
    bank: Option<BankAnswer>,
    now: time::OffsetDateTime,
) -> DomainResult<()> {
    let sys = Actor::System;
    match (d.event, bank) {
        (DeliveryEvent::Signed, _) => {
            let Some(_) = advance(
                c,
                &d.request_id,
                RequestStatus::Relayed,
                now.unix_timestamp(),
            )?
            else {
                return Ok(());
            };
            note(
                c,
                now,
                d,
                AuditEvent::RequestRelayed {
                    fsp: d.target.clone(),
                    delivery: d.id.clone(),
                },
            )?;
            if relay.settings.mode == Mode::FspBank {
                if let Some(row) = requests::get(c, &d.request_id)? {
                    enqueue_instruction(c, relay, &row, now)?;
                }
            }
        }
        (DeliveryEvent::Instruction, Some(BankAnswer::Settled { status })) => {
            end_request(
                c,
                relay,
                &sys,
                &d.request_id,
                RequestStatus::Settled,
                None,
                AuditEvent::RequestSettled {
                    by: "bank",
                    bank_status: Some(status),
                },
                now,
            )?;
        }
        (DeliveryEvent::Instruction, Some(BankAnswer::Rejected { reason })) => {
            end_request(
                c,
                relay,
                &sys,
                &d.request_id,
                RequestStatus::RolledBack,
                Some(&reason),
                AuditEvent::RequestRolledBack {
                    by: "bank",
                    reason: reason.clone(),
                },
                now,
            )?;
        }
        (DeliveryEvent::Instruction, None)
        | (DeliveryEvent::Outcome | DeliveryEvent::Reserve | DeliveryEvent::Release, _) => {}
    }
    Ok(())
}

/// A delivery that gave up: audited and counted; a `signed` or
/// `instruction` one fails its request.
fn give_up_on(
    c: &mut DbConn,
    relay: &Relay,
    d: &DeliveryRow,
    error: &str,
    now: time::OffsetDateTime,
) -> DomainResult<()> {
    let sys = Actor::System;
    note(
        c,
        now,
        d,
        AuditEvent::RelayFailed {
            delivery: d.id.clone(),
            event: d.event,
            target: d.target.clone(),
            attempts: d.attempts,
            error: error.to_string(),
        },
    )?;
    relay
        .metrics
        .failures
        .with_label_values(&[&d.target, d.event.as_str()])
        .inc();
    if !matches!(d.event, DeliveryEvent::Signed | DeliveryEvent::Instruction) {
        return Ok(());
    }
    let reason = format!("relay.{}.failed", d.event);
    end_request(
        c,
        relay,
        &sys,
        &d.request_id,
        RequestStatus::Failed,
        Some(&reason),
        AuditEvent::RequestFailed {
            error: reason.clone(),
        },
        now,
    )?;
    Ok(())
}

/// `GET /v1/admin/relay`: one delivery (CONTRACT §11).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub delivery_id: String,
    pub request_id: String,
    pub event: DeliveryEvent,
    pub target: String,
    /// `pending` (also while in flight), `delivered` or `failed`.
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

impl DeliveryView {
    pub fn of(d: &DeliveryRow) -> DeliveryView {
        let status = d.status.public();
        DeliveryView {
            delivery_id: d.id.clone(),
            request_id: d.request_id.clone(),
            event: d.event,
            target: d.target.clone(),
            status,
            attempts: d.attempts,
            next_attempt_at: (status == DeliveryStatus::Pending)
                .then(|| crate::clock::rfc3339_unix_ms(d.next_attempt_ms)),
            last_error: d.last_error.clone(),
        }
    }
}
