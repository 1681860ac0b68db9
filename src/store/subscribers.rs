//! Subscribers (customers with a handset).

use diesel::prelude::*;

use super::schema::subscribers;
use super::{first_for_update, DbConn, DbResult, Locked};
use crate::states::SubscriberState;

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = subscribers, treat_none_as_null = true)]
pub struct SubscriberRow {
    pub id: String,
    pub msisdn: String,
    pub pseudonym: String,
    pub display_name: String,
    pub kyc_ref: String,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub state: SubscriberState,
    /// Hex HMAC (pepper key) of the one-time activation code; never the code.
    pub activation_hash: Option<String>,
    pub activation_expires_at: Option<i64>,
    /// Failed activation-code or PIN attempts since the last success.
    pub attempts: i32,
    pub pin_salt: Option<String>,
    pub pin_verifier: Option<String>,
    /// Base64 SPKI DER of the handset's device key.
    pub device_spki: Option<String>,
    /// HSM CKA_ID (hex) of the current signing key.
    pub key_id: Option<String>,
    /// Serial of the current certificate.
    pub cert_serial: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The subscriber's iMS person id (`name@person.domain`), if given.
    pub alias: Option<String>,
}

pub fn by_msisdn(conn: &mut DbConn, msisdn: &str) -> DbResult<Option<SubscriberRow>> {
    Ok(subscribers::table
        .filter(subscribers::msisdn.eq(msisdn))
        .select(SubscriberRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn by_id(conn: &mut DbConn, id: &str) -> DbResult<Option<SubscriberRow>> {
    Ok(subscribers::table
        .find(id)
        .select(SubscriberRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn by_alias(conn: &mut DbConn, alias: &str) -> DbResult<Option<SubscriberRow>> {
    Ok(subscribers::table
        .filter(subscribers::alias.eq(alias))
        .select(SubscriberRow::as_select())
        .first(conn)
        .optional()?)
}

/// Reads subscriber `id` and locks its row for the rest of the write
/// transaction (call inside `Store::write`).
pub fn lock_by_id(conn: &mut DbConn, id: &str) -> DbResult<Option<Locked<SubscriberRow>>> {
    Ok(first_for_update!(
        conn,
        subscribers::table
            .find(id.to_string())
            .select(SubscriberRow::as_select())
    )?
    .map(Locked::new))
}

/// Same, by MSISDN.
pub fn lock_by_msisdn(conn: &mut DbConn, msisdn: &str) -> DbResult<Option<Locked<SubscriberRow>>> {
    Ok(first_for_update!(
        conn,
        subscribers::table
            .filter(subscribers::msisdn.eq(msisdn.to_string()))
            .select(SubscriberRow::as_select())
    )?
    .map(Locked::new))
}

pub fn insert(conn: &mut DbConn, row: &SubscriberRow) -> DbResult<()> {
    diesel::insert_into(subscribers::table)
        .values(row.clone())
        .execute(conn)?;
    Ok(())
}

/// Writes every column of a row read with its lock.
pub fn save(conn: &mut DbConn, row: &Locked<SubscriberRow>) -> DbResult<()> {
    let r: &SubscriberRow = row;
    diesel::update(subscribers::table.find(&r.id))
        .set(r.clone())
        .execute(conn)?;
    Ok(())
}

/// Up to `limit` subscribers holding a key, in id order after `after` (a
/// batch walk that never loads the table whole).
pub fn with_keys_after(conn: &mut DbConn, after: &str, limit: i64) -> DbResult<Vec<SubscriberRow>> {
    Ok(subscribers::table
        .filter(subscribers::id.gt(after))
        .filter(subscribers::key_id.is_not_null())
        .order(subscribers::id)
        .limit(limit)
        .select(SubscriberRow::as_select())
        .load(conn)?)
}
