//! Changing the PIN (`POST /v1/handset/pin`, an additive extension of
//! CONTRACT §7), and what a PIN attempt leaves behind: the audit events of a
//! wrong PIN and the refusal the caller gets.

use super::pin::{self, Check};
use super::signer::lock_pin_holder;
use super::{pinblock, subject};
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, BlockedBy, NewEvent, PinDuring};
use crate::error::{internal, reject, reject_with_attempts, DomainError, DomainResult, Problem};
use crate::states::SubscriberState;
use crate::store::subscribers::{self, SubscriberRow};

/// `pin.failed`, plus `pin.blocked` and `subscriber.blocked` on the last try.
pub(crate) fn pin_failure_events(
    actor: &Actor,
    id: &str,
    left: u32,
    max: u32,
    during: PinDuring,
    request: Option<&str>,
) -> Vec<NewEvent> {
    let mut events = vec![NewEvent::of(
        actor,
        subject(id),
        AuditEvent::PinFailed {
            attempts_left: left,
            during,
            request: request.map(str::to_string),
        },
    )];
    if left == 0 {
        events.push(NewEvent::of(
            &Actor::System,
            subject(id),
            AuditEvent::PinBlocked { max_attempts: max },
        ));
        events.push(NewEvent::of(
            &Actor::System,
            subject(id),
            AuditEvent::SubscriberBlocked {
                by: BlockedBy::AttemptLimit,
                max_attempts: None,
            },
        ));
    }
    events
}

/// The refusal after a wrong PIN with `left` attempts left (`pin.wrong`),
/// or once none are left or the PIN was blocked already (`pin.blocked`).
pub(crate) fn pin_refusal(left: Option<u32>) -> DomainError {
    match left {
        Some(left) if left > 0 => reject_with_attempts(
            Problem::PinWrong,
            format!("wrong PIN; {left} attempts left"),
            left,
        ),
        _ => reject(Problem::PinBlocked, "the PIN is blocked"),
    }
}

/// `POST /v1/handset/pin`: change the PIN (old and new PIN blocks). `s` is
/// the row device authentication read; the old PIN goes through the shared
/// try counter, under the one signer check.
pub fn change_pin(
    svc: &Services,
    s: &SubscriberRow,
    old_block: &str,
    new_block: &str,
) -> DomainResult<()> {
    let now = svc.clock.now();
    let open = |b: &str| {
        pinblock::open(
            svc.custody.as_ref(),
            &svc.pki.keys.transport,
            &svc.pki.transport.point,
            b,
        )
    };
    let old_pin = pin::parse_pin_change(&open(old_block)?, "pin-old", &s.msisdn)?;
    let new_pin = pin::parse_pin_change(&open(new_block)?, "pin-new", &s.msisdn)?;
    svc.pins.check_rules(&new_pin)?;
    let max = svc.pins.settings.max_attempts;
    let mut new_salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut new_salt).map_err(|e| internal(e.to_string()))?;
    let new_verifier = svc
        .pins
        .verifier(svc.custody.as_ref(), &new_salt, &new_pin)?;
    let actor = Actor::Subscriber(s.id.clone());
    // The old PIN is hashed with the salt as read; if the PIN changed in
    // between, the salt in the transaction differs and the hash is redone.
    let mut salt = s.pin_salt.as_deref().and_then(|h| hex::decode(h).ok());
    for _ in 0..2 {
        let candidate = match &salt {
            Some(salt) => Some(svc.pins.verifier(svc.custody.as_ref(), salt, &old_pin)?),
            None => None,
        };
        let outcome = svc
            .store
            .write(|c| -> DomainResult<Result<Check, Vec<u8>>> {
                let holder = lock_pin_holder(c, &s.id, max)?;
                let Some(candidate) =
                    candidate.filter(|_| salt.as_deref() == Some(&holder.salt[..]))
                else {
                    return Ok(Err(holder.salt));
                };
                let check = pin::check_in_tx(
                    c,
                    &s.id,
                    SubscriberState::Active,
                    max,
                    &candidate,
                    |_| Ok(Some(holder.verifier.clone())),
                    now.unix_timestamp(),
                )?;
                match check {
                    Check::Correct => {
                        let mut cur = holder.subscriber;
                        cur.attempts = 0;
                        cur.pin_salt = Some(hex::encode(new_salt));
                        cur.pin_verifier = Some(hex::encode(new_verifier));
                        cur.updated_at = now.unix_timestamp();
                        subscribers::save(c, &cur)?;
                        audit::append(
                            c,
                            now,
                            NewEvent::of(&actor, subject(&s.id), AuditEvent::PinChanged {}),
                        )?;
                    }
                    Check::Wrong { left } => {
                        audit::append_all(
                            c,
                            now,
                            pin_failure_events(
                                &actor,
                                &s.id,
                                left,
                                max,
                                PinDuring::PinChange,
                                None,
                            ),
                        )?;
                    }
                    Check::Blocked => {}
                }
                Ok(Ok(check))
            })?;
        match outcome {
            Ok(Check::Correct) => return Ok(()),
            Ok(Check::Wrong { left }) => return Err(pin_refusal(Some(left))),
            Ok(Check::Blocked) => return Err(pin_refusal(None)),
            Err(current_salt) => salt = Some(current_salt),
        }
    }
    Err(reject(
        Problem::SubscriberNotActive,
        "the PIN changed meanwhile; try again",
    ))
}
