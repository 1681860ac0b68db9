//! Signing requests.

use diesel::prelude::*;

use super::schema::requests;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = requests)]
pub struct RequestRow {
    pub id: String,
    pub subscriber_id: String,
    pub fsp_party: String,
    pub merchant_party: String,
    pub replay_key: String,
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
    pub status: String,
    pub error_code: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub updated_at: i64,
    pub signed_at: Option<i64>,
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

pub fn insert(conn: &mut DbConn, row: &RequestRow) -> DbResult<()> {
    diesel::insert_into(requests::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Statuses that count against the payer's limits (not declined, expired,
/// failed or rolled back).
pub const COUNTING: [&str; 5] = [
    "pending_authorization",
    "signing",
    "signed",
    "relayed",
    "settled",
];

/// Sum of the payer's counting requests in `currency` on `day`.
pub fn day_total(
    conn: &mut DbConn,
    subscriber_id: &str,
    currency: &str,
    day: &str,
) -> DbResult<i64> {
    let amounts: Vec<i64> = requests::table
        .filter(requests::subscriber_id.eq(subscriber_id))
        .filter(requests::currency.eq(currency))
        .filter(requests::limit_day.eq(day))
        .filter(requests::status.eq_any(COUNTING))
        .select(requests::amount_minor)
        .load(conn)?;
    Ok(amounts.iter().fold(0i64, |a, b| a.saturating_add(*b)))
}

/// The subscriber's requests waiting for the handset, not yet expired.
pub fn pending_for(conn: &mut DbConn, subscriber_id: &str, now: i64) -> DbResult<Vec<RequestRow>> {
    Ok(requests::table
        .filter(requests::subscriber_id.eq(subscriber_id))
        .filter(requests::status.eq("pending_authorization"))
        .filter(requests::expires_at.ge(now))
        .order(requests::created_at.asc())
        .limit(50)
        .select(RequestRow::as_select())
        .load(conn)?)
}

/// Conditional status change; returns whether this caller made it.
pub fn transition(conn: &mut DbConn, id: &str, from: &str, to: &str, now: i64) -> DbResult<bool> {
    let n = diesel::update(
        requests::table
            .filter(requests::id.eq(id))
            .filter(requests::status.eq(from)),
    )
    .set((requests::status.eq(to), requests::updated_at.eq(now)))
    .execute(conn)?;
    Ok(n == 1)
}

/// `pending → signing` while still unexpired: the exactly-once claim.
pub fn claim(conn: &mut DbConn, id: &str, now: i64) -> DbResult<bool> {
    let n = diesel::update(
        requests::table
            .filter(requests::id.eq(id))
            .filter(requests::status.eq("pending_authorization"))
            .filter(requests::expires_at.ge(now)),
    )
    .set((requests::status.eq("signing"), requests::updated_at.eq(now)))
    .execute(conn)?;
    Ok(n == 1)
}

/// Stores the signature of a claimed request (`signing → signed`).
pub fn store_signature(
    conn: &mut DbConn,
    id: &str,
    signature_b64: &str,
    signed_xml: &str,
    now: i64,
) -> DbResult<bool> {
    let n = diesel::update(
        requests::table
            .filter(requests::id.eq(id))
            .filter(requests::status.eq("signing")),
    )
    .set((
        requests::status.eq("signed"),
        requests::signature_b64.eq(signature_b64),
        requests::signed_xml.eq(signed_xml),
        requests::signed_at.eq(now),
        requests::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

pub fn fail(conn: &mut DbConn, id: &str, from: &str, code: &str, now: i64) -> DbResult<bool> {
    let n = diesel::update(
        requests::table
            .filter(requests::id.eq(id))
            .filter(requests::status.eq(from)),
    )
    .set((
        requests::status.eq("failed"),
        requests::error_code.eq(code),
        requests::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Ids of requests past their expiry that never got a signature.
pub fn overdue(conn: &mut DbConn, now: i64, limit: i64) -> DbResult<Vec<(String, String)>> {
    Ok(requests::table
        .filter(requests::status.eq_any(["pending_authorization", "signing"]))
        .filter(requests::expires_at.lt(now))
        .select((requests::id, requests::status))
        .limit(limit)
        .load(conn)?)
}
