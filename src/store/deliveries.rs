//! The relay outbox (CONTRACT §11). A delivery is inserted in the same
//! transaction as the status change that causes it, and claimed by one
//! worker at a time with a lease: `FOR UPDATE SKIP LOCKED` on PostgreSQL
//! (several nodes share the work), the write lock on SQLite. A lease that
//! runs out (a node died) is taken over by any node.

use diesel::prelude::*;

use super::schema::deliveries;
use super::{DbConn, DbResult, StoreError};
use crate::states::{DeliveryEvent, DeliveryStatus};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = deliveries)]
pub struct DeliveryRow {
    pub id: String,
    pub request_id: String,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub event: DeliveryEvent,
    /// The receiving party.
    pub target: String,
    pub idempotency_key: String,
    pub content_type: String,
    /// Extra headers, JSON `[[name, value], …]`.
    pub headers: String,
    pub body: String,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub status: DeliveryStatus,
    /// Attempts started (a claim counts one).
    pub attempts: i32,
    pub next_attempt_ms: i64,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

/// Inserts a delivery; false when the same (target, event, key) exists
/// (a delivery is enqueued once).
pub fn insert(conn: &mut DbConn, row: &DeliveryRow) -> DbResult<bool> {
    match diesel::insert_into(deliveries::table)
        .values(row.clone())
        .execute(conn)
    {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub fn get(conn: &mut DbConn, id: &str) -> DbResult<Option<DeliveryRow>> {
    Ok(deliveries::table
        .find(id)
        .select(DeliveryRow::as_select())
        .first(conn)
        .optional()?)
}

/// A request's deliveries, oldest first.
pub fn of_request(conn: &mut DbConn, request_id: &str) -> DbResult<Vec<DeliveryRow>> {
    Ok(deliveries::table
        .filter(deliveries::request_id.eq(request_id))
        .order(deliveries::created_at.asc())
        .select(DeliveryRow::as_select())
        .load(conn)?)
}

/// Due at `now_ms`: pending with its time come, or leased by a node whose
/// lease ran out.
macro_rules! due_at {
    ($now_ms:expr) => {
        deliveries::status
            .eq(DeliveryStatus::Pending.as_str())
            .and(deliveries::next_attempt_ms.le($now_ms))
            .or(deliveries::status
                .eq(DeliveryStatus::Delivering.as_str())
                .and(deliveries::lease_until_ms.lt($now_ms)))
    };
}

/// Targets with deliveries due at `now_ms` (pending and due, or leased by a
/// node whose lease ran out).
pub fn due_targets(conn: &mut DbConn, now_ms: i64, limit: i64) -> DbResult<Vec<String>> {
    Ok(deliveries::table
        .filter(due_at!(now_ms))
        .select(deliveries::target)
        .distinct()
        .limit(limit)
        .load(conn)?)
}

/// Claims up to `limit` due deliveries of `target` for `node` until
/// `lease_until_ms`, counting an attempt each (call inside `Store::write`).
pub fn claim(
    conn: &mut DbConn,
    node: &str,
    target: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: i64,
) -> DbResult<Vec<DeliveryRow>> {
    macro_rules! due {
        () => {
            deliveries::table
                .filter(deliveries::target.eq(target.to_string()))
                .filter(due_at!(now_ms))
                .order(deliveries::next_attempt_ms.asc())
                .limit(limit)
                .select(deliveries::id)
        };
    }
    let ids: Vec<String> = match conn {
        DbConn::Pg(c) => due!().for_update().skip_locked().load(c)?,
        DbConn::Sqlite(c) => due!().load(c)?,
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    diesel::update(deliveries::table.filter(deliveries::id.eq_any(&ids)))
        .set((
            deliveries::status.eq(DeliveryStatus::Delivering.as_str()),
            deliveries::lease_owner.eq(node),
            deliveries::lease_until_ms.eq(lease_until_ms),
            deliveries::attempts.eq(deliveries::attempts + 1),
            deliveries::updated_at.eq(now_ms / 1000),
        ))
        .execute(conn)?;
    Ok(deliveries::table
        .filter(deliveries::id.eq_any(&ids))
        .order(deliveries::next_attempt_ms.asc())
        .select(DeliveryRow::as_select())
        .load(conn)?)
}

/// Deliveries leased by `node` (left in flight when it stopped): due again now.
pub fn release_leases_of(conn: &mut DbConn, node: &str, now_ms: i64) -> DbResult<usize> {
    Ok(diesel::update(
        deliveries::table
            .filter(deliveries::status.eq(DeliveryStatus::Delivering.as_str()))
            .filter(deliveries::lease_owner.eq(node)),
    )
    .set((
        deliveries::status.eq(DeliveryStatus::Pending.as_str()),
        deliveries::next_attempt_ms.eq(now_ms),
        deliveries::lease_owner.eq(None::<String>),
        deliveries::lease_until_ms.eq(None::<i64>),
    ))
    .execute(conn)?)
}

/// The outcome of one attempt, recorded only if `node` still holds the lease.
pub enum Settle<'a> {
    Delivered {
        at: i64,
    },
    Retry {
        next_attempt_ms: i64,
        error: &'a str,
    },
    Failed {
        error: &'a str,
    },
}

/// Records an attempt's outcome; false when the lease was lost (another node
/// took the delivery over and will record its own).
pub fn settle(
    conn: &mut DbConn,
    id: &str,
    node: &str,
    now: i64,
    outcome: Settle<'_>,
) -> DbResult<bool> {
    let mine = deliveries::table
        .filter(deliveries::id.eq(id))
        .filter(deliveries::status.eq(DeliveryStatus::Delivering.as_str()))
        .filter(deliveries::lease_owner.eq(node));
    let n = match outcome {
        Settle::Delivered { at } => diesel::update(mine)
            .set((
                deliveries::status.eq(DeliveryStatus::Delivered.as_str()),
                deliveries::delivered_at.eq(at),
                deliveries::lease_owner.eq(None::<String>),
                deliveries::lease_until_ms.eq(None::<i64>),
                deliveries::last_error.eq(None::<String>),
                deliveries::updated_at.eq(now),
            ))
            .execute(conn)?,
        Settle::Retry {
            next_attempt_ms,
            error,
        } => diesel::update(mine)
            .set((
                deliveries::status.eq(DeliveryStatus::Pending.as_str()),
                deliveries::next_attempt_ms.eq(next_attempt_ms),
                deliveries::lease_owner.eq(None::<String>),
                deliveries::lease_until_ms.eq(None::<i64>),
                deliveries::last_error.eq(error),
                deliveries::updated_at.eq(now),
            ))
            .execute(conn)?,
        Settle::Failed { error } => diesel::update(mine)
            .set((
                deliveries::status.eq(DeliveryStatus::Failed.as_str()),
                deliveries::lease_owner.eq(None::<String>),
                deliveries::lease_until_ms.eq(None::<i64>),
                deliveries::last_error.eq(error),
                deliveries::updated_at.eq(now),
            ))
            .execute(conn)?,
    };
    Ok(n == 1)
}

/// A failed delivery back in the queue, due now, its attempts reset.
pub fn requeue_failed(conn: &mut DbConn, id: &str, now_ms: i64) -> DbResult<bool> {
    Ok(diesel::update(
        deliveries::table
            .filter(deliveries::id.eq(id))
            .filter(deliveries::status.eq(DeliveryStatus::Failed.as_str())),
    )
    .set((
        deliveries::status.eq(DeliveryStatus::Pending.as_str()),
        deliveries::attempts.eq(0),
        deliveries::next_attempt_ms.eq(now_ms),
        deliveries::updated_at.eq(now_ms / 1000),
    ))
    .execute(conn)?
        == 1)
}

/// Deliveries in one of `statuses` (all when empty), newest first.
pub fn list(
    conn: &mut DbConn,
    statuses: &[DeliveryStatus],
    limit: i64,
) -> DbResult<Vec<DeliveryRow>> {
    let mut q = deliveries::table
        .order((deliveries::created_at.desc(), deliveries::id.asc()))
        .limit(limit)
        .select(DeliveryRow::as_select())
        .into_boxed();
    if !statuses.is_empty() {
        let texts: Vec<&'static str> = statuses.iter().map(|s| s.as_str()).collect();
        q = q.filter(deliveries::status.eq_any(texts));
    }
    Ok(q.load(conn)?)
}

/// Pending or in-flight deliveries, and the oldest due one's `next_attempt_ms`.
pub fn backlog(conn: &mut DbConn, now_ms: i64) -> DbResult<(i64, Option<i64>)> {
    let open = [
        DeliveryStatus::Pending.as_str(),
        DeliveryStatus::Delivering.as_str(),
    ];
    let depth: i64 = deliveries::table
        .filter(deliveries::status.eq_any(open))
        .count()
        .get_result(conn)?;
    let oldest: Option<i64> = deliveries::table
        .filter(deliveries::status.eq(DeliveryStatus::Pending.as_str()))
        .filter(deliveries::next_attempt_ms.le(now_ms))
        .select(diesel::dsl::min(deliveries::next_attempt_ms))
        .first(conn)?;
    Ok((depth, oldest))
}

/// Decodes the stored extra headers.
pub fn headers_of(row: &DeliveryRow) -> DbResult<Vec<(String, String)>> {
    serde_json::from_str(&row.headers)
        .map_err(|e| StoreError::Corrupt(format!("delivery headers: {e}")))
}
