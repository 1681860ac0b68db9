//! Expiry is recorded by the sweeper, never by a read: a request awaiting
//! authorisation past its `expires_at` becomes `expired` here, with one
//! `request.expired` event. Readers report such a request as expired from
//! what they read ([`crate::states::RequestStatus::seen_at`]); the claim
//! refuses it by its own condition.

use super::subject;
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::error::DomainResult;
use crate::states::RequestStatus;
use crate::store::requests::{self, RequestRow};

/// `from → expired` with its event, if the request is still `from`.
fn try_expire(svc: &Services, id: &str, from: RequestStatus) -> DomainResult<bool> {
    let now = svc.clock.now();
    svc.store.write(|c| -> DomainResult<bool> {
        if !requests::transition(c, id, from, RequestStatus::Expired, now.unix_timestamp())? {
            return Ok(false);
        }
        audit::append(
            c,
            now,
            NewEvent::of(
                &Actor::System,
                subject(id),
                AuditEvent::RequestExpired { from },
            ),
        )?;
        Ok(true)
    })
}

/// Expires `row` if it is overdue and still awaiting authorisation, and
/// returns its status as it is after the attempt, read back from the
/// database: a request signed since `row` was read stays `signed`.
pub fn expire_if_overdue(svc: &Services, row: &RequestRow) -> DomainResult<RequestStatus> {
    let t = svc.clock.now().unix_timestamp();
    let overdue = RequestStatus::AWAITING.contains(&row.status) && row.expires_at < t;
    if overdue && try_expire(svc, &row.id, row.status)? {
        return Ok(RequestStatus::Expired);
    }
    Ok(svc
        .store
        .read(|c| requests::get(c, &row.id))?
        .map_or(row.status, |r| r.seen_at(t)))
}

/// The sweeper: marks requests past their expiry `expired` (pending ones,
/// and claimed ones whose signature never got stored: no signature is out
/// for them), one [`expire_if_overdue`] each. Returns how many are now
/// expired.
pub fn expire_overdue(svc: &Services) -> DomainResult<usize> {
    let t = svc.clock.now().unix_timestamp();
    let overdue = svc.store.read(|c| requests::overdue(c, t, 500))?;
    let mut n = 0;
    for row in &overdue {
        n += usize::from(expire_if_overdue(svc, row)? == RequestStatus::Expired);
    }
    Ok(n)
}
