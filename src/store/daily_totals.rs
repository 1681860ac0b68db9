//! The payer's running daily total per currency: the sum of `amount_minor`
//! over their requests of one `limit_day` that are in a counting status
//! ([`RequestStatus::COUNTING`](crate::states::RequestStatus::COUNTING)).
//! The daily limit is checked against it with one conditional update, so
//! the check costs the same however many payments the payer made that day.
//!
//! It stays equal to that sum because it only moves in the transaction of
//! the change that moves the sum: a request inserted through
//! [`count_within`] and [`super::requests::insert`], and every status change
//! that crosses the counting set (`store::requests::transition_with`),
//! always on the request's own day.

use diesel::prelude::*;

use super::schema::daily_totals;
use super::{DbConn, DbResult};

/// Which total: a payer, a currency, a UTC day (`YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayKey<'a> {
    pub subscriber_id: &'a str,
    pub currency: &'a str,
    pub day: &'a str,
}

/// An amount added to a payer's total in the open transaction: what
/// [`super::requests::insert`] needs to insert the request it counts.
#[derive(Debug)]
#[must_use = "a counted amount belongs to a request to insert"]
pub struct Counted {
    pub(super) subscriber_id: String,
    pub(super) currency: String,
    pub(super) day: String,
    pub(super) amount_minor: i64,
}

macro_rules! row_of {
    ($key:expr) => {
        daily_totals::table
            .filter(daily_totals::subscriber_id.eq($key.subscriber_id))
            .filter(daily_totals::currency.eq($key.currency))
            .filter(daily_totals::day.eq($key.day))
    };
}

/// Adds `amount_minor` to the total of `key` if the total stays at most
/// `max`; `None` (nothing written) if it would pass it. The update is
/// conditional, so concurrent callers can never take the total past `max`.
pub fn count_within(
    conn: &mut DbConn,
    key: &DayKey<'_>,
    amount_minor: i64,
    max: i64,
) -> DbResult<Option<Counted>> {
    if amount_minor < 0 || amount_minor > max {
        return Ok(None);
    }
    let room = daily_totals::total_minor.le(max - amount_minor);
    let add = |conn: &mut DbConn| -> DbResult<bool> {
        Ok(diesel::update(row_of!(key).filter(room))
            .set(daily_totals::total_minor.eq(daily_totals::total_minor + amount_minor))
            .execute(conn)?
            == 1)
    };
    // No row updated: no room, or the payer's first payment of the day, or
    // a first payment of the same day that another transaction inserted
    // meanwhile (the insert waits for it, then the update sees its row).
    let counted = add(conn)? || insert_first(conn, key, amount_minor)? || add(conn)?;
    Ok(counted.then(|| Counted {
        subscriber_id: key.subscriber_id.to_string(),
        currency: key.currency.to_string(),
        day: key.day.to_string(),
        amount_minor,
    }))
}

/// Inserts the day's row with `total`; false when it exists already.
fn insert_first(conn: &mut DbConn, key: &DayKey<'_>, total: i64) -> DbResult<bool> {
    let row = (
        daily_totals::subscriber_id.eq(key.subscriber_id),
        daily_totals::currency.eq(key.currency),
        daily_totals::day.eq(key.day),
        daily_totals::total_minor.eq(total),
    );
    let q = diesel::insert_into(daily_totals::table).values(row);
    let n = match conn {
        DbConn::Pg(c) => q.on_conflict_do_nothing().execute(c)?,
        DbConn::Sqlite(c) => q.on_conflict_do_nothing().execute(c)?,
    };
    Ok(n == 1)
}

/// Moves the total of `key` by `delta` (a request leaving or re-entering
/// the counting statuses; the limit is not checked here).
pub(super) fn adjust(conn: &mut DbConn, key: &DayKey<'_>, delta: i64) -> DbResult<()> {
    let add = |conn: &mut DbConn| -> DbResult<bool> {
        Ok(diesel::update(row_of!(key))
            .set(daily_totals::total_minor.eq(daily_totals::total_minor + delta))
            .execute(conn)?
            == 1)
    };
    // Every counted request has its day's row; a request that re-enters the
    // counting statuses on a day without one starts it.
    if !add(conn)? && delta > 0 && !insert_first(conn, key, delta)? {
        add(conn)?;
    }
    Ok(())
}

/// The total of `key` (0 when the payer has none that day).
pub fn total(conn: &mut DbConn, key: &DayKey<'_>) -> DbResult<i64> {
    Ok(row_of!(key)
        .select(daily_totals::total_minor)
        .first(conn)
        .optional()?
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::plan::{explain, sqlite_store};

    /// The daily limit's check reads and writes one row by its key,
    /// however many payments the payer made that day.
    #[test]
    fn the_total_is_one_row_by_its_key() {
        let (_dir, store) = sqlite_store();
        let key = DayKey {
            subscriber_id: "s",
            currency: "EUR",
            day: "2026-12-02",
        };
        let by_key =
            "SEARCH daily_totals USING PRIMARY KEY (subscriber_id=? AND currency=? AND day=?)";
        let read = explain(&store, &row_of!(key).select(daily_totals::total_minor));
        assert_eq!(read, [by_key], "{read:?}");
        let update = explain(
            &store,
            &diesel::update(row_of!(key).filter(daily_totals::total_minor.le(5)))
                .set(daily_totals::total_minor.eq(daily_totals::total_minor + 1)),
        );
        assert_eq!(update, [by_key], "{update:?}");
    }
}
