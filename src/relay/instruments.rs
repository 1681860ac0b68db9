//! Payment instruments (CONTRACT §12; Y.2741 Appendix I and 6.4.1.4; the
//! m-commerce report's pseudonyms): a subscriber links an account by
//! proving that they see a micro-amount the bank reserved on it, then pays
//! by alias, so that the FSP and the merchant never learn the account.
//!
//! ```text
//! requested ─bank 2xx─▶ verifying ─right amount─▶ active ─▶ disconnected
//!     │                    │  └─3 wrong amounts─▶ blocked
//!     └─bank 4xx/none─▶ rejected   └─TTL─▶ expired
//! ```
//!
//! * The amount (0.01–0.99 in `relay.instrument_currency`) comes from the
//!   CSPRNG and is kept only as an HMAC made with the HSM pepper key, bound
//!   to the instrument id; a confirmation is compared in constant time.
//! * The reservation is a direct call through the relay's transport
//!   ([`super::Relay::call`]): its body holds the amount, which is never
//!   stored. Its end (`DELETE …/reservations/{id}`) is an outbox delivery,
//!   enqueued in the transaction that ends the verification (confirmed,
//!   blocked, expired, disconnected, or the bank's answer lost), so it is
//!   never dropped.
//! * The account appears in full only in the reservation and in the bank
//!   instruction; everywhere else (API, audit details, logs) it is masked.

use serde::Serialize;
use zeroize::Zeroizing;

use super::{Answer, Method, Outgoing, TransportError};
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::error::{internal, reject, reject_with_attempts, DomainError, DomainResult, Problem};
use crate::ims::Money;
use crate::states::SubscriberState;
use crate::states::{DeliveryEvent, InstrumentStatus};
use crate::store::instruments::{self, InstrumentRow};
use crate::store::subscribers::SubscriberRow;
use crate::store::{parties, DbConn};
use crate::subscriber::pin::ct_eq;

/// Wrong amounts before an instrument is blocked (CONTRACT §12).
pub const MAX_ATTEMPTS: i32 = 3;

/// Instruments a subscriber may have requested, verifying or active at
/// once (each link asks the bank for a reservation).
pub const MAX_LIVE: i64 = 10;

/// How long an instrument may stay `requested` (the bank's answer to the
/// reservation was never recorded) before the sweeper rejects it and
/// releases the reservation, beyond the relay timeout.
const REQUESTED_GRACE_SECONDS: i64 = 60;

/// The prefix of an alias in `accountPayable`.
pub const ALIAS_PREFIX: &str = "alias:";

/// The audit subject of instrument `id`.
pub fn subject(id: &str) -> String {
    format!("instrument:{id}")
}

/// `1–32 of [A-Za-z0-9._-]`.
pub fn valid_alias(a: &str) -> bool {
    (1..=32).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `a` looks like an IBAN (two letters, two digits, then more):
/// such a value must pass the IBAN checks.
fn looks_like_iban(a: &str) -> bool {
    let b = a.as_bytes();
    b.len() >= 15
        && b.first().is_some_and(u8::is_ascii_uppercase)
        && b.get(1).is_some_and(u8::is_ascii_uppercase)
        && b.get(2).is_some_and(u8::is_ascii_digit)
        && b.get(3).is_some_and(u8::is_ascii_digit)
}

/// An account a bank can take: a valid IBAN, or another id of 1–34 of the
/// iMS account characters (ISO 20022 `Othr/Id`). Never echoed back.
fn check_account(a: &str) -> DomainResult<()> {
    if looks_like_iban(a) {
        return if super::pain::is_iban(a) {
            Ok(())
        } else {
            Err(reject(
                Problem::RequestInvalid,
                "account: not a valid IBAN (structure or checksum)",
            ))
        };
    }
    let ok = (1..=super::pain::MAX_OTHER_ID).contains(&a.len())
        && !a.starts_with(ALIAS_PREFIX)
        && crate::ims::fields::validate_account(a).is_ok();
    if ok {
        Ok(())
    } else {
        Err(reject(
            Problem::RequestInvalid,
            "account: an IBAN, or 1-34 of [A-Za-z0-9._:/-] not starting with alias:",
        ))
    }
}

/// What the API and the audit trail show of an account: its first and
/// last four characters (last two when short), the rest as `*`.
pub fn mask(account: &str) -> String {
    let chars: Vec<char> = account.chars().collect();
    let n = chars.len();
    let (head, tail) = if n >= 12 {
        (4, 4)
    } else if n >= 6 {
        (0, 2)
    } else {
        (0, 0)
    };
    let stars = n.saturating_sub(head + tail).max(4);
    let mut out: String = chars.iter().take(head).collect();
    out.push_str(&"*".repeat(stars));
    out.extend(chars.iter().skip(n - tail));
    out
}

/// `GET /v1/handset/instruments`: one line.
#[derive(Debug, Clone, Serialize)]
pub struct InstrumentView {
    pub instrument_id: String,
    pub alias: String,
    pub account_masked: String,
    pub status: InstrumentStatus,
}

impl InstrumentView {
    fn of(r: &InstrumentRow) -> InstrumentView {
        InstrumentView {
            instrument_id: r.id.clone(),
            alias: r.alias.clone(),
            account_masked: r.account_masked.clone(),
            status: r.status,
        }
    }
}

/// `GET /v1/handset/instruments`.
#[derive(Debug, Serialize)]
pub struct InstrumentList {
    pub instruments: Vec<InstrumentView>,
}

/// `202` of `POST /v1/handset/instruments`, `200` of `…/confirm`.
#[derive(Debug, Serialize)]
pub struct Linked {
    pub instrument_id: String,
    pub status: InstrumentStatus,
}

/// The HMAC of an amount, bound to the instrument.
fn amount_mac(svc: &Services, instrument_id: &str, minor: u64) -> DomainResult<String> {
    let msg = Zeroizing::new(format!(
        "tmcs-instrument-amount-v1\n{instrument_id}\n{minor}\n"
    ));
    Ok(hex::encode(
        svc.custody
            .hmac_sha256(&svc.pki.keys.pin_pepper, msg.as_bytes())?,
    ))
}

/// 1–99 minor units from the CSPRNG (rejection sampling: no bias).
fn random_minor() -> DomainResult<u64> {
    loop {
        let mut b = [0u8; 1];
        openssl::rand::rand_bytes(&mut b).map_err(|e| internal(e.to_string()))?;
        if b[0] < 198 {
            return Ok(u64::from(b[0] % 99) + 1);
        }
    }
}

/// The bank party's callback URL (instruments need `relay.bank`).
fn bank_url(svc: &Services, c: &mut DbConn) -> DomainResult<(String, String)> {
    let unavailable = || {
        reject(
            Problem::InstrumentUnavailable,
            "payment instruments need a bank with a callback_url (relay.bank)",
        )
    };
    if !svc.relay.enabled() {
        return Err(unavailable());
    }
    let bank = svc.relay.settings.bank.clone().ok_or_else(unavailable)?;
    let url = parties::get(c, &bank)?
        .filter(|p| p.status == crate::states::CertStatus::Active)
        .and_then(|p| p.callback_url)
        .ok_or_else(unavailable)?;
    Ok((bank, url))
}

fn note(
    c: &mut DbConn,
    now: time::OffsetDateTime,
    actor: &Actor,
    id: &str,
    event: AuditEvent,
) -> DomainResult<()> {
    audit::append(c, now, NewEvent::of(actor, subject(id), event))?;
    Ok(())
}

/// The end of a reservation, through the outbox (never dropped).
fn release(
    c: &mut DbConn,
    svc: &Services,
    r: &InstrumentRow,
    now: time::OffsetDateTime,
) -> DomainResult<()> {
    if let Some(bank) = svc.relay.settings.bank.as_deref() {
        super::outbox::enqueue_release(c, &r.id, bank, &r.reservation_id, now)?;
    }
    Ok(())
}

/// `POST /v1/handset/instruments`, first half: the instrument stored
/// `requested` (the amount's HMAC only) and the reservation call to make.
/// The amount lives in the returned call's body alone.
pub fn prepare(
    svc: &Services,
    subscriber: &SubscriberRow,
    account: &str,
    alias: &str,
) -> DomainResult<(String, Outgoing)> {
    let subscriber_id = subscriber.id.as_str();
    match subscriber.state {
        SubscriberState::Active => {}
        SubscriberState::Blocked => {
            return Err(reject(
                Problem::SubscriberBlocked,
                "the subscriber is blocked",
            ))
        }
        _ => {
            return Err(reject(
                Problem::SubscriberNotActive,
                "the subscriber is not active",
            ))
        }
    }
    if !valid_alias(alias) {
        return Err(reject(
            Problem::RequestInvalid,
            "alias: 1-32 of [A-Za-z0-9._-]",
        ));
    }
    check_account(account)?;
    let (bank, url) = svc.store.read(|c| bank_url(svc, c))?;
    let id = uuid::Uuid::new_v4().to_string();
    let minor = Zeroizing::new(random_minor()?);
    let mac = amount_mac(svc, &id, *minor)?;
    let currency = svc.relay.settings.instrument_currency;
    let amount = Zeroizing::new(
        Money::new(currency, *minor)
            .map_err(|e| internal(e.to_string()))?
            .to_string(),
    );
    let now = svc.clock.now();
    let t = now.unix_timestamp();
    let ttl = i64::try_from(svc.relay.settings.instrument_ttl.as_secs()).unwrap_or(86_400);
    let row = InstrumentRow {
        id: id.clone(),
        subscriber_id: subscriber_id.to_string(),
        alias: alias.to_string(),
        account: account.to_string(),
        account_masked: mask(account),
        status: InstrumentStatus::Requested,
        currency: currency.code().to_string(),
        amount_hmac: mac,
        reservation_id: uuid::Uuid::new_v4().to_string(),
        attempts: 0,
        created_at: t,
        expires_at: t + ttl,
        updated_at: t,
    };
    let stored = svc.store.write(|c| -> DomainResult<()> {
        if instruments::live_by_alias(c, subscriber_id, alias)?.is_some() {
            return Err(reject(
                Problem::InstrumentExists,
                "this alias names another of your instruments",
            ));
        }
        if instruments::live_count(c, subscriber_id)? >= MAX_LIVE {
            return Err(reject(
                Problem::LimitExceeded,
                format!(
                    "at most {MAX_LIVE} instruments in use or being linked; disconnect one first"
                ),
            ));
        }
        instruments::insert(c, &row)?;
        note(
            c,
            now,
            &Actor::Subscriber(subscriber_id.to_string()),
            &id,
            AuditEvent::InstrumentRequested {
                alias: alias.to_string(),
                account_masked: row.account_masked.clone(),
                currency: row.currency.clone(),
                bank,
            },
        )
    });
    match stored {
        Err(DomainError::Store(e)) if e.is_unique_violation() => {
            return Err(reject(
                Problem::InstrumentExists,
                "this alias names another of your instruments",
            ))
        }
        other => other?,
    }
    let body = Zeroizing::new(
        serde_json::json!({
            "reservation_id": row.reservation_id,
            "account": account,
            "amount": amount.as_str(),
        })
        .to_string(),
    );
    let out = Outgoing {
        method: Method::Post,
        url: format!("{}/reservations", url.trim_end_matches('/')),
        event: DeliveryEvent::Reserve,
        idempotency_key: row.reservation_id.clone(),
        content_type: "application/json".into(),
        headers: Vec::new(),
        body: Zeroizing::new(body.as_bytes().to_vec()),
        timeout: svc.relay.settings.timeout,
    };
    Ok((id, out))
}

/// `POST /v1/handset/instruments`, second half: the bank's answer. 2xx →
/// `verifying`; 4xx → `rejected`; no answer → `rejected`, the reservation
/// released (it may have been made), and 503.
pub fn reserved(
    svc: &Services,
    id: &str,
    answer: Result<Answer, TransportError>,
) -> DomainResult<Linked> {
    let now = svc.clock.now();
    let t = now.unix_timestamp();
    let (to, why) = match &answer {
        Ok(a) if (200..300).contains(&a.status) => (InstrumentStatus::Verifying, None),
        Ok(a) if (400..500).contains(&a.status) => (
            InstrumentStatus::Rejected,
            Some(format!(
                "the bank refused the reservation (HTTP {})",
                a.status
            )),
        ),
        Ok(a) => (
            InstrumentStatus::Rejected,
            Some(format!("the bank failed (HTTP {})", a.status)),
        ),
        Err(e) => (
            InstrumentStatus::Rejected,
            Some(format!("no answer from the bank: {e}")),
        ),
    };
    let refused = matches!(&answer, Ok(a) if (400..500).contains(&a.status));
    let reserved = matches!(&answer, Ok(a) if (200..300).contains(&a.status));
    let unanswered = !refused && !reserved;
    svc.store.write(|c| -> DomainResult<()> {
        let Some(r) = instruments::get(c, id)? else {
            return Err(internal(format!("instrument {id} vanished")));
        };
        if !instruments::transition(c, id, InstrumentStatus::Requested, to, r.attempts, t)? {
            // Disconnected (or given up by the sweeper) while the bank was
            // asked: what it may hold is released now, after its answer, so
            // the release cannot overtake the reservation.
            if !refused {
                release(c, svc, &r, now)?;
            }
            return Ok(());
        }
        if let Some(reason) = &why {
            if unanswered {
                release(c, svc, &r, now)?;
            }
            note(
                c,
                now,
                &Actor::System,
                id,
                AuditEvent::InstrumentFailed {
                    reason: reason.clone(),
                    attempts_left: None,
                },
            )?;
        }
        Ok(())
    })?;
    if unanswered {
        svc.relay.wake();
        return Err(DomainError::Bank(
            why.unwrap_or_else(|| "no answer from the bank".into()),
        ));
    }
    let status = svc
        .store
        .read(|c| instruments::get(c, id))?
        .map_or(to, |r| r.status);
    Ok(Linked {
        instrument_id: id.to_string(),
        status,
    })
}

/// The subscriber's own instrument, locked.
fn own(
    c: &mut DbConn,
    subscriber_id: &str,
    id: &str,
) -> DomainResult<crate::store::Locked<InstrumentRow>> {
    instruments::lock(c, id)?
        .filter(|r| r.subscriber_id == subscriber_id)
        .ok_or_else(|| reject(Problem::InstrumentUnknown, "no such instrument"))
}

/// What a confirmation decided (committed before it is answered).
enum Verdict {
    Active,
    Wrong { left: u32 },
    Blocked,
    Expired,
}

/// `POST /v1/handset/instruments/{id}/confirm {"amount"}`.
pub fn confirm(
    svc: &Services,
    subscriber_id: &str,
    id: &str,
    amount: &str,
) -> DomainResult<Linked> {
    let currency = svc.relay.settings.instrument_currency;
    // A malformed amount is not an attempt; another currency is a wrong one.
    let candidate = Money::parse(amount).map_err(|_| {
        reject(
            Problem::RequestInvalid,
            "amount: like the iMS, e.g. EUR0.37",
        )
    })?;
    let mac = if candidate.currency() == currency {
        Some(amount_mac(svc, id, candidate.minor())?)
    } else {
        None
    };
    let now = svc.clock.now();
    let t = now.unix_timestamp();
    let actor = Actor::Subscriber(subscriber_id.to_string());
    let verdict = svc.store.write(|c| -> DomainResult<Verdict> {
        let r = own(c, subscriber_id, id)?;
        match r.status {
            InstrumentStatus::Verifying => {}
            InstrumentStatus::Blocked => {
                return Err(reject(
                    Problem::InstrumentBlocked,
                    "the instrument is blocked",
                ))
            }
            other => {
                return Err(reject(
                    Problem::InstrumentNotVerifying,
                    format!("the instrument is {other}"),
                ))
            }
        }
        if r.expires_at < t {
            instruments::transition(c, id, r.status, InstrumentStatus::Expired, r.attempts, t)?;
            release(c, svc, &r, now)?;
            note(
                c,
                now,
                &Actor::System,
                id,
                AuditEvent::InstrumentFailed {
                    reason: "the amount was not confirmed in time".into(),
                    attempts_left: None,
                },
            )?;
            return Ok(Verdict::Expired);
        }
        let right = mac
            .as_deref()
            .is_some_and(|m| ct_eq(m.as_bytes(), r.amount_hmac.as_bytes()));
        if right {
            instruments::transition(c, id, r.status, InstrumentStatus::Active, r.attempts, t)?;
            release(c, svc, &r, now)?;
            note(
                c,
                now,
                &actor,
                id,
                AuditEvent::InstrumentConfirmed {
                    alias: r.alias.clone(),
                },
            )?;
            return Ok(Verdict::Active);
        }
        let attempts = r.attempts + 1;
        if attempts >= MAX_ATTEMPTS {
            instruments::transition(c, id, r.status, InstrumentStatus::Blocked, attempts, t)?;
            release(c, svc, &r, now)?;
            note(
                c,
                now,
                &actor,
                id,
                AuditEvent::InstrumentBlocked {
                    max_attempts: u32::try_from(MAX_ATTEMPTS).unwrap_or(3),
                },
            )?;
            return Ok(Verdict::Blocked);
        }
        instruments::transition(c, id, r.status, r.status, attempts, t)?;
        let left = u32::try_from(MAX_ATTEMPTS - attempts).unwrap_or(0);
        note(
            c,
            now,
            &actor,
            id,
            AuditEvent::InstrumentFailed {
                reason: "wrong amount".into(),
                attempts_left: Some(left),
            },
        )?;
        Ok(Verdict::Wrong { left })
    })?;
    svc.relay.wake();
    match verdict {
        Verdict::Active => Ok(Linked {
            instrument_id: id.to_string(),
            status: InstrumentStatus::Active,
        }),
        Verdict::Wrong { left } => Err(reject_with_attempts(
            Problem::InstrumentBadAmount,
            format!("wrong amount; {left} attempts left"),
            left,
        )),
        Verdict::Blocked => Err(reject(
            Problem::InstrumentBlocked,
            "three wrong amounts: the instrument is blocked",
        )),
        Verdict::Expired => Err(reject(
            Problem::InstrumentNotVerifying,
            "the instrument is expired: its amount was not confirmed in time",
        )),
    }
}

/// `GET /v1/handset/instruments`: newest first.
pub fn list(svc: &Services, subscriber_id: &str) -> DomainResult<InstrumentList> {
    let rows = svc
        .store
        .read(|c| instruments::of_subscriber(c, subscriber_id, 100))?;
    Ok(InstrumentList {
        instruments: rows.iter().map(InstrumentView::of).collect(),
    })
}

/// `DELETE /v1/handset/instruments/{id}` (Y.2741 6.4.1.4): out of use at
/// once; an open reservation is released. An instrument already out of use
/// is answered as it is.
pub fn disconnect(svc: &Services, subscriber_id: &str, id: &str) -> DomainResult<InstrumentView> {
    let now = svc.clock.now();
    let t = now.unix_timestamp();
    let view = svc.store.write(|c| -> DomainResult<InstrumentView> {
        let r = own(c, subscriber_id, id)?;
        if !InstrumentStatus::LIVE.contains(&r.status) {
            return Ok(InstrumentView::of(&r));
        }
        instruments::transition(
            c,
            id,
            r.status,
            InstrumentStatus::Disconnected,
            r.attempts,
            t,
        )?;
        // Verifying: the bank holds the amount. Requested: the bank's answer
        // is still coming, and `reserved` releases after it.
        let open = r.status == InstrumentStatus::Verifying;
        if open {
            release(c, svc, &r, now)?;
        }
        note(
            c,
            now,
            &Actor::Subscriber(subscriber_id.to_string()),
            id,
            AuditEvent::InstrumentDisconnected {
                alias: r.alias.clone(),
                from: r.status,
                reservation_released: open,
            },
        )?;
        let mut v = InstrumentView::of(&r);
        v.status = InstrumentStatus::Disconnected;
        Ok(v)
    })?;
    svc.relay.wake();
    Ok(view)
}

/// The sweep: amounts not confirmed in time expire, and a reservation
/// whose answer was never recorded is given up; both are released.
pub fn sweep(svc: &Services) -> DomainResult<usize> {
    let now = svc.clock.now();
    let t = now.unix_timestamp();
    let grace =
        i64::try_from(svc.relay.settings.timeout.as_secs()).unwrap_or(10) + REQUESTED_GRACE_SECONDS;
    let mut n = 0;
    for (status, before, to, reason) in [
        (
            InstrumentStatus::Verifying,
            t,
            InstrumentStatus::Expired,
            "the amount was not confirmed in time",
        ),
        (
            InstrumentStatus::Requested,
            t - grace,
            InstrumentStatus::Rejected,
            "the bank's answer to the reservation was never recorded",
        ),
    ] {
        let due = svc
            .store
            .read(|c| instruments::overdue(c, status, before, 100))?;
        for r in due {
            let done = svc.store.write(|c| -> DomainResult<bool> {
                if !instruments::transition(c, &r.id, status, to, r.attempts, t)? {
                    return Ok(false);
                }
                release(c, svc, &r, now)?;
                note(
                    c,
                    now,
                    &Actor::System,
                    &r.id,
                    AuditEvent::InstrumentFailed {
                        reason: reason.into(),
                        attempts_left: None,
                    },
                )?;
                Ok(true)
            })?;
            n += usize::from(done);
        }
    }
    if n > 0 {
        svc.relay.wake();
    }
    Ok(n)
}

/// At submission: `accountPayable` = `alias:<alias>` names an active
/// instrument of the payer, else `instrument.unknown`. `None` for a plain
/// account.
pub fn resolve(
    c: &mut DbConn,
    subscriber_id: &str,
    account_payable: &str,
) -> DomainResult<Option<InstrumentRow>> {
    let Some(alias) = account_payable.strip_prefix(ALIAS_PREFIX) else {
        return Ok(None);
    };
    let live = match instruments::live_by_alias(c, subscriber_id, alias)? {
        Some(r) => instruments::lock(c, &r.id)?.map(crate::store::Locked::into_inner),
        None => None,
    };
    match live {
        Some(r) if r.status == InstrumentStatus::Active => Ok(Some(r)),
        _ => Err(reject(
            Problem::InstrumentUnknown,
            "accountPayable names no active instrument of the payer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_the_ends_only() {
        assert_eq!(mask("DE89370400440532013000"), "DE89**************3000");
        assert_eq!(mask("1234-5678"), "*******78");
        assert_eq!(mask("123"), "****");
        assert!(!mask("DE89370400440532013000").contains("3704004405"));
    }

    #[test]
    fn aliases_and_accounts() {
        assert!(valid_alias("main") && valid_alias("a.b-c_1"));
        assert!(!valid_alias("") && !valid_alias(&"a".repeat(33)) && !valid_alias("a b"));
        assert!(check_account("DE89370400440532013000").is_ok());
        assert!(
            check_account("DE89370400440532013001").is_err(),
            "bad checksum"
        );
        assert!(check_account("1234-5678-9abc").is_ok());
        assert!(check_account(&"9".repeat(35)).is_err());
        assert!(check_account("alias:main").is_err());
        // The refusal never echoes the account.
        let e = check_account("DE89370400440532013001").unwrap_err();
        assert!(!e.to_string().contains("3704"));
    }

    #[test]
    fn amounts_are_one_to_ninety_nine_cents() {
        let mut seen = [false; 100];
        for _ in 0..5000 {
            let m = random_minor().unwrap();
            assert!((1..=99).contains(&m));
            seen[usize::try_from(m).unwrap()] = true;
        }
        assert!(seen[1..].iter().filter(|s| **s).count() > 90);
    }
}
