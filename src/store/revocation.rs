//! Revocation bookkeeping shared by all nodes: the epoch that moves with
//! every revocation-state change, and the issued CRLs.

use diesel::prelude::*;

use super::schema::{crls, pki_state};
use super::{DbConn, DbResult, StoreError};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = crls)]
pub struct CrlRow {
    pub crl_number: i64,
    pub revocation_epoch: i64,
    pub this_update: i64,
    pub next_update: i64,
    pub der_b64: String,
}

/// Call in the same transaction as any change to a certificate's status.
pub fn bump_epoch(conn: &mut DbConn) -> DbResult<()> {
    diesel::update(pki_state::table.find(1))
        .set(pki_state::revocation_epoch.eq(pki_state::revocation_epoch + 1))
        .execute(conn)?;
    Ok(())
}

/// Locks the `pki_state` row until the transaction ends (a no-op update),
/// so concurrent CRL builders on several nodes queue instead of racing.
pub fn lock_state(conn: &mut DbConn) -> DbResult<()> {
    diesel::update(pki_state::table.find(1))
        .set(pki_state::crl_number.eq(pki_state::crl_number))
        .execute(conn)?;
    Ok(())
}

/// (revocation_epoch, last crl_number).
pub fn state(conn: &mut DbConn) -> DbResult<(i64, i64)> {
    pki_state::table
        .find(1)
        .select((pki_state::revocation_epoch, pki_state::crl_number))
        .first(conn)
        .optional()?
        .ok_or_else(|| StoreError::Corrupt("pki_state row missing".into()))
}

/// The newest CRL.
pub fn latest_crl(conn: &mut DbConn) -> DbResult<Option<CrlRow>> {
    Ok(crls::table
        .order(crls::crl_number.desc())
        .select(CrlRow::as_select())
        .first(conn)
        .optional()?)
}

/// Takes the next CRL number (inside a write transaction).
pub fn next_crl_number(conn: &mut DbConn) -> DbResult<i64> {
    diesel::update(pki_state::table.find(1))
        .set(pki_state::crl_number.eq(pki_state::crl_number + 1))
        .execute(conn)?;
    Ok(state(conn)?.1)
}

pub fn insert_crl(conn: &mut DbConn, row: &CrlRow) -> DbResult<()> {
    diesel::insert_into(crls::table).values(row).execute(conn)?;
    Ok(())
}
