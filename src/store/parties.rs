//! Parties: merchants, FSPs, banks and gateways, known by a certificate.

use diesel::prelude::*;

use super::schema::{parties, revoked_party_certificates};
use super::{first_for_update, DbConn, DbResult, Locked};
use crate::states::{CertStatus, PartyKind};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = parties, treat_none_as_null = true)]
pub struct PartyRow {
    pub party_id: String,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub kind: PartyKind,
    pub fingerprint: String,
    /// The serial when the tmcs CA issued the certificate.
    pub cert_serial: Option<String>,
    pub cert_pem: String,
    pub issued_by_us: i32,
    pub callback_url: Option<String>,
    /// The status of its certificate.
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub status: CertStatus,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn get(conn: &mut DbConn, party_id: &str) -> DbResult<Option<PartyRow>> {
    Ok(parties::table
        .find(party_id)
        .select(PartyRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn by_fingerprint(conn: &mut DbConn, fp: &str) -> DbResult<Option<PartyRow>> {
    Ok(parties::table
        .filter(parties::fingerprint.eq(fp))
        .select(PartyRow::as_select())
        .first(conn)
        .optional()?)
}

/// Reads party `party_id` and locks its row for the rest of the write
/// transaction (call inside `Store::write`).
pub fn lock(conn: &mut DbConn, party_id: &str) -> DbResult<Option<Locked<PartyRow>>> {
    Ok(first_for_update!(
        conn,
        parties::table
            .find(party_id.to_string())
            .select(PartyRow::as_select())
    )?
    .map(Locked::new))
}

pub fn insert(conn: &mut DbConn, row: &PartyRow) -> DbResult<()> {
    diesel::insert_into(parties::table)
        .values(row.clone())
        .execute(conn)?;
    Ok(())
}

/// Removes a (revoked) party so its id can be registered again.
pub fn delete(conn: &mut DbConn, party_id: &str) -> DbResult<usize> {
    Ok(diesel::delete(parties::table.find(party_id)).execute(conn)?)
}

/// Writes every column of a row read with its lock.
pub fn save(conn: &mut DbConn, row: &Locked<PartyRow>) -> DbResult<()> {
    let r: &PartyRow = row;
    diesel::update(parties::table.find(&r.party_id))
        .set(r.clone())
        .execute(conn)?;
    Ok(())
}

/// Parties whose certificate is `serial` follow its status.
pub fn set_status_by_serial(
    conn: &mut DbConn,
    serial: &str,
    status: CertStatus,
) -> DbResult<usize> {
    Ok(
        diesel::update(parties::table.filter(parties::cert_serial.eq(serial)))
            .set(parties::status.eq(status.as_str()))
            .execute(conn)?,
    )
}

/// Remembers that the certificate `fingerprint` was revoked with party
/// `party_id`, so it cannot come back under any id (the party row itself
/// may be replaced when the id is registered again).
pub fn record_revocation(
    conn: &mut DbConn,
    fingerprint: &str,
    party_id: &str,
    reason: &str,
    at: i64,
) -> DbResult<()> {
    let inserted = diesel::insert_into(revoked_party_certificates::table)
        .values((
            revoked_party_certificates::fingerprint.eq(fingerprint),
            revoked_party_certificates::party_id.eq(party_id),
            revoked_party_certificates::reason.eq(reason),
            revoked_party_certificates::revoked_at.eq(at),
        ))
        .execute(conn);
    match inserted {
        // Revoked before (with an earlier party): the first record stands.
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(()),
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// The party a certificate was revoked with, if it was.
pub fn revoked_fingerprint(conn: &mut DbConn, fingerprint: &str) -> DbResult<Option<String>> {
    Ok(revoked_party_certificates::table
        .find(fingerprint)
        .select(revoked_party_certificates::party_id)
        .first(conn)
        .optional()?)
}
