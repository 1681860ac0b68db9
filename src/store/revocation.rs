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

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// Set when this thread's open transaction moved the epoch.
    static BUMPED: Cell<bool> = const { Cell::new(false) };
}

/// Counts committed epoch changes made by this process, so caches in it
/// (the OCSP responder) see a local status change at once, without asking
/// the database on every request. Other nodes' changes reach them through
/// the database epoch, read at most a second apart.
static LOCAL_CHANGES: AtomicU64 = AtomicU64::new(0);

/// Call in the same transaction as any change to a certificate's status.
pub fn bump_epoch(conn: &mut DbConn) -> DbResult<()> {
    diesel::update(pki_state::table.find(1))
        .set(pki_state::revocation_epoch.eq(pki_state::revocation_epoch + 1))
        .execute(conn)?;
    BUMPED.with(|b| b.set(true));
    Ok(())
}

/// Called by `Store::write` when a transaction ends: counts a committed
/// epoch change, forgets one that rolled back.
pub(crate) fn transaction_ended(committed: bool) {
    if BUMPED.with(|b| b.replace(false)) && committed {
        LOCAL_CHANGES.fetch_add(1, Ordering::SeqCst);
    }
}

/// How many epoch changes this process has committed so far.
pub fn local_changes() -> u64 {
    LOCAL_CHANGES.load(Ordering::SeqCst)
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
