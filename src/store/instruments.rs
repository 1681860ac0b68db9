//! Payment instruments (CONTRACT §12). A status changes only by a
//! conditional update from the status the caller read, so two requests (or
//! two nodes) cannot both make it.

use diesel::prelude::*;

use super::schema::instruments;
use super::{first_for_update, DbConn, DbResult, Locked};
use crate::states::InstrumentStatus;

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = instruments)]
pub struct InstrumentRow {
    pub id: String,
    pub subscriber_id: String,
    pub alias: String,
    /// The full account: only for the bank instruction and the reservation.
    pub account: String,
    pub account_masked: String,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub status: InstrumentStatus,
    pub currency: String,
    pub amount_hmac: String,
    pub reservation_id: String,
    pub attempts: i32,
    pub created_at: i64,
    pub expires_at: i64,
    pub updated_at: i64,
}

/// Never the account in full, nor the amount's HMAC.
impl std::fmt::Debug for InstrumentRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstrumentRow")
            .field("id", &self.id)
            .field("subscriber_id", &self.subscriber_id)
            .field("alias", &self.alias)
            .field("account_masked", &self.account_masked)
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

fn texts(v: &[InstrumentStatus]) -> Vec<&'static str> {
    v.iter().map(|s| s.as_str()).collect()
}

pub fn insert(conn: &mut DbConn, row: &InstrumentRow) -> DbResult<()> {
    diesel::insert_into(instruments::table)
        .values(row.clone())
        .execute(conn)?;
    Ok(())
}

pub fn get(conn: &mut DbConn, id: &str) -> DbResult<Option<InstrumentRow>> {
    Ok(instruments::table
        .find(id)
        .select(InstrumentRow::as_select())
        .first(conn)
        .optional()?)
}

/// Reads instrument `id` and locks its row for the rest of the write
/// transaction.
pub fn lock(conn: &mut DbConn, id: &str) -> DbResult<Option<Locked<InstrumentRow>>> {
    Ok(first_for_update!(
        conn,
        instruments::table
            .find(id.to_string())
            .select(InstrumentRow::as_select())
    )?
    .map(Locked::new))
}

/// The subscriber's live instrument (requested, verifying or active) named `alias`.
pub fn live_by_alias(
    conn: &mut DbConn,
    subscriber_id: &str,
    alias: &str,
) -> DbResult<Option<InstrumentRow>> {
    Ok(instruments::table
        .filter(instruments::subscriber_id.eq(subscriber_id))
        .filter(instruments::alias.eq(alias))
        .filter(instruments::status.eq_any(texts(InstrumentStatus::LIVE)))
        .select(InstrumentRow::as_select())
        .first(conn)
        .optional()?)
}

/// How many of the subscriber's instruments are live (requested,
/// verifying or active).
pub fn live_count(conn: &mut DbConn, subscriber_id: &str) -> DbResult<i64> {
    Ok(instruments::table
        .filter(instruments::subscriber_id.eq(subscriber_id))
        .filter(instruments::status.eq_any(texts(InstrumentStatus::LIVE)))
        .count()
        .get_result(conn)?)
}

/// The subscriber's instruments, newest first.
pub fn of_subscriber(
    conn: &mut DbConn,
    subscriber_id: &str,
    limit: i64,
) -> DbResult<Vec<InstrumentRow>> {
    Ok(instruments::table
        .filter(instruments::subscriber_id.eq(subscriber_id))
        .order((instruments::created_at.desc(), instruments::id.asc()))
        .limit(limit)
        .select(InstrumentRow::as_select())
        .load(conn)?)
}

/// `from → to` (and the attempts) if the row is still `from`.
pub fn transition(
    conn: &mut DbConn,
    id: &str,
    from: InstrumentStatus,
    to: InstrumentStatus,
    attempts: i32,
    now: i64,
) -> DbResult<bool> {
    Ok(diesel::update(
        instruments::table
            .filter(instruments::id.eq(id))
            .filter(instruments::status.eq(from.as_str())),
    )
    .set((
        instruments::status.eq(to.as_str()),
        instruments::attempts.eq(attempts),
        instruments::updated_at.eq(now),
    ))
    .execute(conn)?
        == 1)
}

/// Instruments in `status` whose time ran out at `now` (`expires_at` for
/// `verifying`; for `requested`, the bank's answer never got recorded).
pub fn overdue(
    conn: &mut DbConn,
    status: InstrumentStatus,
    before: i64,
    limit: i64,
) -> DbResult<Vec<InstrumentRow>> {
    let q = instruments::table
        .filter(instruments::status.eq(status.as_str()))
        .limit(limit)
        .select(InstrumentRow::as_select());
    Ok(match status {
        InstrumentStatus::Requested => q.filter(instruments::updated_at.lt(before)).load(conn)?,
        _ => q.filter(instruments::expires_at.lt(before)).load(conn)?,
    })
}
