//! Key-encryption keys by version and the subscriber keys wrapped under
//! them (`hsm.key_storage = "wrapped"`).

use diesel::prelude::*;

use super::schema::{keks, wrapped_keys};
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = keks)]
pub struct KekRow {
    pub version: i32,
    /// Hex `CKA_ID` of the KEK in the token.
    pub key_id: String,
    pub created_at: i64,
}

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = wrapped_keys)]
pub struct WrappedRow {
    pub key_id: String,
    pub kek_version: i32,
    /// Hex of the wrapped key.
    pub wrapped: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for WrappedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedRow")
            .field("key_id", &self.key_id)
            .field("kek_version", &self.kek_version)
            .field(
                "wrapped",
                &format_args!("[{} hex chars]", self.wrapped.len()),
            )
            .finish_non_exhaustive()
    }
}

/// The newest KEK: the one new keys are wrapped under.
pub fn current_kek(conn: &mut DbConn) -> DbResult<Option<KekRow>> {
    Ok(keks::table
        .order(keks::version.desc())
        .select(KekRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn all_keks(conn: &mut DbConn) -> DbResult<Vec<KekRow>> {
    Ok(keks::table
        .order(keks::version)
        .select(KekRow::as_select())
        .load(conn)?)
}

pub fn insert_kek(conn: &mut DbConn, row: &KekRow) -> DbResult<()> {
    diesel::insert_into(keks::table).values(row).execute(conn)?;
    Ok(())
}

pub fn get(conn: &mut DbConn, key_id: &str) -> DbResult<Option<WrappedRow>> {
    Ok(wrapped_keys::table
        .find(key_id)
        .select(WrappedRow::as_select())
        .first(conn)
        .optional()?)
}

/// The wrapped key `key_id` and the `CKA_ID` (hex) of the KEK it is
/// wrapped under, in one read (a signature's).
pub fn get_with_kek(conn: &mut DbConn, key_id: &str) -> DbResult<Option<(WrappedRow, String)>> {
    Ok(wrapped_keys::table
        .inner_join(keks::table.on(keks::version.eq(wrapped_keys::kek_version)))
        .filter(wrapped_keys::key_id.eq(key_id))
        .select((WrappedRow::as_select(), keks::key_id))
        .first(conn)
        .optional()?)
}

pub fn insert(conn: &mut DbConn, row: &WrappedRow) -> DbResult<()> {
    diesel::insert_into(wrapped_keys::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Forgets a wrapped key: without its blob it can never be unwrapped again.
pub fn delete(conn: &mut DbConn, key_id: &str) -> DbResult<bool> {
    Ok(diesel::delete(wrapped_keys::table.find(key_id)).execute(conn)? == 1)
}

/// Up to `limit` keys under a version older than `version`, in key order
/// after `after` (a rotation's cursor).
pub fn older_than(
    conn: &mut DbConn,
    version: i32,
    after: &str,
    limit: i64,
) -> DbResult<Vec<WrappedRow>> {
    Ok(wrapped_keys::table
        .filter(wrapped_keys::kek_version.lt(version))
        .filter(wrapped_keys::key_id.gt(after))
        .order(wrapped_keys::key_id)
        .limit(limit)
        .select(WrappedRow::as_select())
        .load(conn)?)
}

/// Replaces the blob of `key_id` if it is still under `from` (a renewal or
/// a disconnection meanwhile wins). Returns whether it did.
pub fn rewrapped(
    conn: &mut DbConn,
    key_id: &str,
    from: i32,
    to: i32,
    wrapped: &str,
    now: i64,
) -> DbResult<bool> {
    Ok(diesel::update(
        wrapped_keys::table
            .filter(wrapped_keys::key_id.eq(key_id))
            .filter(wrapped_keys::kek_version.eq(from)),
    )
    .set((
        wrapped_keys::kek_version.eq(to),
        wrapped_keys::wrapped.eq(wrapped),
        wrapped_keys::updated_at.eq(now),
    ))
    .execute(conn)?
        == 1)
}

/// How many keys each KEK version wraps.
pub fn count_by_version(conn: &mut DbConn) -> DbResult<Vec<(i32, i64)>> {
    Ok(wrapped_keys::table
        .group_by(wrapped_keys::kek_version)
        .select((wrapped_keys::kek_version, diesel::dsl::count_star()))
        .order(wrapped_keys::kek_version)
        .load(conn)?)
}
