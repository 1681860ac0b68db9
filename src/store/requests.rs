//! Signing requests. Every status change goes through [`transition`] (or
//! one of its named forms), which refuses a change that is not in
//! [`RequestStatus::TRANSITIONS`] and applies an allowed one only if the row
//! is still in the `from` status: a conditional per-field update, so
//! concurrent callers on several nodes cannot both make it. A change into
//! or out of the counting statuses moves the payer's daily total in the
//! same transaction ([`super::daily_totals`]).

use diesel::prelude::*;

use super::daily_totals::{self, Counted, DayKey};
use super::schema::requests;
use super::{DbConn, DbResult, StoreError};
use crate::states::RequestStatus;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = requests)]
pub struct RequestRow {
    pub id: String,
    pub subscriber_id: String,
    pub fsp_party: String,
    pub merchant_party: String,
    pub replay_key: String,
    /// Hex SHA-256 of `C`, the one digest of the request: the PIN block is
    /// bound to it (as `dtbs_sha256`, base64url) and the HSM signs it.
    pub c_sha256: String,
    pub dtbs_sha256: String,
    pub nonce: String,
    pub verification_code: String,
    pub tier: String,
    pub currency: String,
    pub amount_minor: i64,
    pub limit_day: String,
    pub ims_xml: String,
    pub signed_xml: Option<String>,
    pub signature_b64: Option<String>,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub status: RequestStatus,
    pub error_code: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub updated_at: i64,
    pub signed_at: Option<i64>,
    /// When it reached settled, rolled_back or failed.
    pub final_at: Option<i64>,
    /// The payer's instrument when `accountPayable` is `alias:<alias>`
    /// (CONTRACT §12): the bank instruction carries its account.
    pub instrument_id: Option<String>,
}

impl RequestRow {
    /// The status a reader reports at `now` (see [`RequestStatus::seen_at`]).
    pub fn seen_at(&self, now: i64) -> RequestStatus {
        self.status.seen_at(self.expires_at, now)
    }
}

pub fn get(conn: &mut DbConn, id: &str) -> DbResult<Option<RequestRow>> {
    Ok(requests::table
        .find(id)
        .select(RequestRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn by_replay_key(conn: &mut DbConn, key: &str) -> DbResult<Option<RequestRow>> {
    Ok(requests::table
        .filter(requests::replay_key.eq(key))
        .select(RequestRow::as_select())
        .first(conn)
        .optional()?)
}

/// Inserts a new request, whose amount `counted` added to its payer's
/// daily total in this transaction ([`daily_totals::count_within`]).
pub fn insert(conn: &mut DbConn, row: &RequestRow, counted: Counted) -> DbResult<()> {
    if row.status != RequestStatus::PendingAuthorization {
        return Err(StoreError::IllegalTransition(format!(
            "a request starts {}, not {}",
            RequestStatus::PendingAuthorization,
            row.status
        )));
    }
    let Counted {
        subscriber_id,
        currency,
        day,
        amount_minor,
    } = counted;
    if (
        subscriber_id.as_str(),
        currency.as_str(),
        day.as_str(),
        amount_minor,
    ) != (
        row.subscriber_id.as_str(),
        row.currency.as_str(),
        row.limit_day.as_str(),
        row.amount_minor,
    ) {
        return Err(StoreError::Corrupt(format!(
            "request {}: counted against another total",
            row.id
        )));
    }
    diesel::insert_into(requests::table)
        .values(row.clone())
        .execute(conn)?;
    Ok(())
}

fn texts(v: &[RequestStatus]) -> Vec<&'static str> {
    v.iter().map(|s| s.as_str()).collect()
}

/// The query of [`pending_for`] (a macro, so the plan test can show it to
/// SQLite's planner). One range of `requests_subscriber_pending`
/// (subscriber, status, expires_at): it reads this subscriber's pending
/// requests only, however many others are pending.
macro_rules! pending_query {
    ($subscriber_id:expr, $now:expr) => {
        requests::table
            .filter(requests::subscriber_id.eq($subscriber_id))
            .filter(requests::status.eq(RequestStatus::PendingAuthorization.as_str()))
            .filter(requests::expires_at.ge($now))
            .order(requests::created_at.asc())
            .limit(50)
            .select(RequestRow::as_select())
    };
}

/// The subscriber's requests waiting for the handset, not yet expired.
pub fn pending_for(conn: &mut DbConn, subscriber_id: &str, now: i64) -> DbResult<Vec<RequestRow>> {
    Ok(pending_query!(subscriber_id, now).load(conn)?)
}

/// What a transition also writes.
#[derive(Debug, Default)]
pub struct Effects<'a> {
    /// Only while unexpired at this time (the exactly-once claim).
    pub unexpired_at: Option<i64>,
    /// The signature and the signed iMS (`signing → signed`).
    pub signature: Option<(&'a str, &'a str)>,
    /// The error code (`→ failed`).
    pub error_code: Option<&'a str>,
}

/// `from → to` if the row is still `from`; returns whether this caller made
/// it. A change the lifecycle does not allow is an error, never a write.
pub fn transition_with(
    conn: &mut DbConn,
    id: &str,
    from: RequestStatus,
    to: RequestStatus,
    now: i64,
    fx: Effects<'_>,
) -> DbResult<bool> {
    if !from.can_become(to) {
        return Err(StoreError::IllegalTransition(format!(
            "request {id}: {from} → {to}"
        )));
    }
    let target = requests::table
        .filter(requests::id.eq(id))
        .filter(requests::status.eq(from.as_str()))
        .filter(requests::expires_at.ge(fx.unexpired_at.unwrap_or(i64::MIN)));
    let n = match (fx.signature, fx.error_code) {
        (Some((sig, xml)), _) => diesel::update(target)
            .set((
                requests::status.eq(to.as_str()),
                requests::updated_at.eq(now),
                requests::signature_b64.eq(sig),
                requests::signed_xml.eq(xml),
                requests::signed_at.eq(now),
            ))
            .execute(conn)?,
        (None, Some(code)) => diesel::update(target)
            .set((
                requests::status.eq(to.as_str()),
                requests::updated_at.eq(now),
                requests::error_code.eq(code),
            ))
            .execute(conn)?,
        (None, None) => diesel::update(target)
            .set((
                requests::status.eq(to.as_str()),
                requests::updated_at.eq(now),
            ))
            .execute(conn)?,
    };
    if n == 1 && from.counts() != to.counts() {
        // Leaving or re-entering the counting statuses moves the payer's
        // total of the request's own day (not today's).
        let (subscriber_id, currency, day, amount): (String, String, String, i64) = requests::table
            .find(id)
            .select((
                requests::subscriber_id,
                requests::currency,
                requests::limit_day,
                requests::amount_minor,
            ))
            .first(conn)?;
        let key = DayKey {
            subscriber_id: &subscriber_id,
            currency: &currency,
            day: &day,
        };
        daily_totals::adjust(conn, &key, if to.counts() { amount } else { -amount })?;
    }
    Ok(n == 1)
}

/// `from → to` with nothing else written.
pub fn transition(
    conn: &mut DbConn,
    id: &str,
    from: RequestStatus,
    to: RequestStatus,
    now: i64,
) -> DbResult<bool> {
    transition_with(conn, id, from, to, now, Effects::default())
}

/// `pending_authorization → signing` while still unexpired: the
/// exactly-once claim.
pub fn claim(conn: &mut DbConn, id: &str, now: i64) -> DbResult<bool> {
    transition_with(
        conn,
        id,
        RequestStatus::PendingAuthorization,
        RequestStatus::Signing,
        now,
        Effects {
            unexpired_at: Some(now),
            ..Effects::default()
        },
    )
}

/// Stores the signature of a claimed request (`signing → signed`).
pub fn store_signature(
    conn: &mut DbConn,
    id: &str,
    signature_b64: &str,
    signed_xml: &str,
    now: i64,
) -> DbResult<bool> {
    transition_with(
        conn,
        id,
        RequestStatus::Signing,
        RequestStatus::Signed,
        now,
        Effects {
            signature: Some((signature_b64, signed_xml)),
            ..Effects::default()
        },
    )
}

/// `from → failed` with an error code.
pub fn fail(
    conn: &mut DbConn,
    id: &str,
    from: RequestStatus,
    code: &str,
    now: i64,
) -> DbResult<bool> {
    transition_with(
        conn,
        id,
        from,
        RequestStatus::Failed,
        now,
        Effects {
            error_code: Some(code),
            ..Effects::default()
        },
    )
}

/// Records how a request ended: its reason (or none) and when (the
/// receipt's `ts`). Call after the transition that ended it.
pub fn mark_ended(conn: &mut DbConn, id: &str, reason: Option<&str>, now: i64) -> DbResult<()> {
    diesel::update(requests::table.find(id))
        .set((
            requests::error_code.eq(reason),
            requests::final_at.eq(now),
            requests::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Forgets how a request ended (a failed one that moves on after an
/// operator's retry).
pub fn clear_end(conn: &mut DbConn, id: &str, now: i64) -> DbResult<()> {
    diesel::update(requests::table.find(id))
        .set((
            requests::error_code.eq(None::<String>),
            requests::final_at.eq(None::<i64>),
            requests::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// The query of [`ended_for`]: the first two columns of
/// `requests_subscriber_pending`.
macro_rules! ended_query {
    ($subscriber_id:expr, $limit:expr) => {
        requests::table
            .filter(requests::subscriber_id.eq($subscriber_id))
            .filter(requests::status.eq_any(texts(RequestStatus::ENDED)))
            // An ended request is not written again except by the change that
            // ends it anew (an operator's retry), which also sets updated_at.
            .order((requests::updated_at.desc(), requests::id.asc()))
            .limit($limit)
            .select(RequestRow::as_select())
    };
}

/// The subscriber's requests that ended (settled, rolled back, failed),
/// newest first: the receipts.
pub fn ended_for(conn: &mut DbConn, subscriber_id: &str, limit: i64) -> DbResult<Vec<RequestRow>> {
    Ok(ended_query!(subscriber_id, limit).load(conn)?)
}

/// Requests past their expiry that never got a signature (at most `limit`).
pub fn overdue(conn: &mut DbConn, now: i64, limit: i64) -> DbResult<Vec<RequestRow>> {
    Ok(requests::table
        .filter(requests::status.eq_any(texts(RequestStatus::AWAITING)))
        .filter(requests::expires_at.lt(now))
        .order(requests::expires_at.asc())
        .limit(limit)
        .select(RequestRow::as_select())
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::plan::{explain, sqlite_store};

    /// The handset's pending list reads one range of the subscriber's own
    /// pending requests (issue #11: it used to walk every subscriber's
    /// pending requests through `requests_status_expires` and sort them);
    /// the receipts use the same index's first two columns.
    #[test]
    fn subscriber_queries_use_the_subscriber_index() {
        let (_dir, store) = sqlite_store();
        let plan = explain(&store, &pending_query!("s", 0i64));
        assert!(
            plan.iter().any(|s| s
                == "SEARCH requests USING INDEX requests_subscriber_pending \
                    (subscriber_id=? AND status=? AND expires_at>?)"),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|s| s.contains("requests_status_expires")),
            "{plan:?}"
        );
        let plan = explain(&store, &ended_query!("s", 10i64));
        assert!(
            plan.iter().any(|s| s
                == "SEARCH requests USING INDEX requests_subscriber_pending \
                    (subscriber_id=? AND status=?)"),
            "{plan:?}"
        );
    }
}
