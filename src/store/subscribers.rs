//! Subscribers (customers with a handset).

use diesel::prelude::*;

use super::schema::subscribers;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = subscribers, treat_none_as_null = true)]
pub struct SubscriberRow {
    pub id: String,
    pub msisdn: String,
    pub pseudonym: String,
    pub display_name: String,
    pub kyc_ref: String,
    /// pending_activation | active | blocked | archived
    pub state: String,
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

pub fn insert(conn: &mut DbConn, row: &SubscriberRow) -> DbResult<()> {
    diesel::insert_into(subscribers::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Writes every column of `row`.
pub fn save(conn: &mut DbConn, row: &SubscriberRow) -> DbResult<()> {
    diesel::update(subscribers::table.find(&row.id))
        .set(row)
        .execute(conn)?;
    Ok(())
}

pub fn by_alias(conn: &mut DbConn, alias: &str) -> DbResult<Option<SubscriberRow>> {
    Ok(subscribers::table
        .filter(subscribers::alias.eq(alias))
        .select(SubscriberRow::as_select())
        .first(conn)
        .optional()?)
}

/// Takes this subscriber's row lock for the rest of the transaction
/// (PostgreSQL; SQLite transactions are already serialised).
pub fn lock(conn: &mut DbConn, id: &str) -> DbResult<()> {
    diesel::update(subscribers::table.find(id))
        .set(subscribers::updated_at.eq(subscribers::updated_at))
        .execute(conn)?;
    Ok(())
}
