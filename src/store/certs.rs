//! Every certificate the tmcs CAs issued, with its lifecycle state, and the
//! names of the current server certificates (`pki_current`).

use diesel::prelude::*;

use super::schema::{certificates, pki_current};
use super::{first_for_update, DbConn, DbResult, Locked};
use crate::states::CertStatus;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = certificates)]
pub struct CertRow {
    /// Lowercase hex of the serial number's bytes.
    pub serial: String,
    /// `root` or `issuing`: which CA signed it (`self` for the root itself).
    pub issuer: String,
    pub purpose: String,
    pub owner: Option<String>,
    pub key_id: Option<String>,
    pub pem: String,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    pub not_before: i64,
    pub not_after: i64,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub status: CertStatus,
    pub revocation_reason: Option<String>,
    pub revoked_at: Option<i64>,
    pub superseded_by: Option<String>,
    pub created_at: i64,
}

pub fn insert(conn: &mut DbConn, row: &CertRow) -> DbResult<()> {
    diesel::insert_into(certificates::table)
        .values(row.clone())
        .execute(conn)?;
    Ok(())
}

pub fn get(conn: &mut DbConn, serial: &str) -> DbResult<Option<CertRow>> {
    Ok(certificates::table
        .find(serial)
        .select(CertRow::as_select())
        .first(conn)
        .optional()?)
}

/// Reads certificate `serial` and locks its row for the rest of the write
/// transaction (call inside `Store::write`).
pub fn lock(conn: &mut DbConn, serial: &str) -> DbResult<Option<Locked<CertRow>>> {
    Ok(first_for_update!(
        conn,
        certificates::table
            .find(serial.to_string())
            .select(CertRow::as_select())
    )?
    .map(Locked::new))
}

pub fn by_fingerprint(conn: &mut DbConn, fingerprint: &str) -> DbResult<Option<CertRow>> {
    Ok(certificates::table
        .filter(certificates::fingerprint.eq(fingerprint))
        .select(CertRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn by_owner(conn: &mut DbConn, owner: &str) -> DbResult<Vec<CertRow>> {
    Ok(certificates::table
        .filter(certificates::owner.eq(owner))
        .order(certificates::created_at.asc())
        .select(CertRow::as_select())
        .load(conn)?)
}

/// Up to `limit` certificates of `issuer` that a CRL must list (revoked or
/// on hold), in serial order after `after` (a page of a streamed read).
pub fn listed_on_crl(
    conn: &mut DbConn,
    issuer: &str,
    after: &str,
    limit: i64,
) -> DbResult<Vec<CertRow>> {
    Ok(certificates::table
        .filter(certificates::issuer.eq(issuer))
        .filter(certificates::serial.gt(after))
        .filter(
            certificates::status
                .eq_any([CertStatus::Revoked.as_str(), CertStatus::Suspended.as_str()]),
        )
        .order(certificates::serial.asc())
        .limit(limit)
        .select(CertRow::as_select())
        .load(conn)?)
}

/// The current certificate called `name` (root-ca, issuing-ca, tls-server, …).
pub fn current(conn: &mut DbConn, name: &str) -> DbResult<Option<CertRow>> {
    Ok(pki_current::table
        .inner_join(certificates::table.on(certificates::serial.eq(pki_current::serial)))
        .filter(pki_current::name.eq(name))
        .select(CertRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn set_current(conn: &mut DbConn, name: &str, serial: &str) -> DbResult<()> {
    let updated = diesel::update(pki_current::table.find(name))
        .set(pki_current::serial.eq(serial))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(pki_current::table)
            .values((pki_current::name.eq(name), pki_current::serial.eq(serial)))
            .execute(conn)?;
    }
    Ok(())
}

/// Sets the lifecycle state of one certificate and moves the revocation
/// epoch (so CRL caches notice). Returns rows changed.
pub fn set_status(
    conn: &mut DbConn,
    serial: &str,
    status: CertStatus,
    reason: Option<&str>,
    revoked_at: Option<i64>,
) -> DbResult<usize> {
    let n = diesel::update(certificates::table.find(serial))
        .set((
            certificates::status.eq(status.as_str()),
            certificates::revocation_reason.eq(reason),
            certificates::revoked_at.eq(revoked_at),
        ))
        .execute(conn)?;
    if n > 0 {
        super::revocation::bump_epoch(conn)?;
    }
    Ok(n)
}

/// Active certificates whose notAfter has passed (at most `limit`).
pub fn past_not_after(conn: &mut DbConn, now: i64, limit: i64) -> DbResult<Vec<CertRow>> {
    Ok(certificates::table
        .filter(certificates::status.eq(CertStatus::Active.as_str()))
        .filter(certificates::not_after.lt(now))
        .limit(limit)
        .select(CertRow::as_select())
        .load(conn)?)
}

/// Records that `old` was replaced by `new` (renewal).
pub fn set_superseded_by(conn: &mut DbConn, old: &str, new: &str) -> DbResult<()> {
    diesel::update(certificates::table.find(old))
        .set(certificates::superseded_by.eq(new))
        .execute(conn)?;
    Ok(())
}
