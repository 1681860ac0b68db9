//! mTLS client identities: certificate fingerprint → role (and party).

use diesel::prelude::*;

use super::schema::clients;
use super::{DbConn, DbResult};
use crate::states::{CertStatus, Role};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = clients)]
pub struct ClientRow {
    /// SHA-256 of the client certificate's DER, lowercase hex.
    pub fingerprint: String,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub role: Role,
    pub name: String,
    pub party_id: Option<String>,
    pub serial: Option<String>,
    /// The status of its certificate.
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub status: CertStatus,
    pub created_at: i64,
}

pub fn get(conn: &mut DbConn, fingerprint: &str) -> DbResult<Option<ClientRow>> {
    Ok(clients::table
        .find(fingerprint)
        .select(ClientRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn by_name(conn: &mut DbConn, name: &str) -> DbResult<Vec<ClientRow>> {
    Ok(clients::table
        .filter(clients::name.eq(name))
        .select(ClientRow::as_select())
        .load(conn)?)
}

pub fn insert(conn: &mut DbConn, row: &ClientRow) -> DbResult<()> {
    diesel::insert_into(clients::table)
        .values(row.clone())
        .execute(conn)?;
    Ok(())
}

/// Binds an existing identity (a bootstrap client certificate) to a party.
pub fn bind_party(conn: &mut DbConn, fingerprint: &str, party_id: &str) -> DbResult<usize> {
    Ok(diesel::update(clients::table.find(fingerprint))
        .set(clients::party_id.eq(party_id))
        .execute(conn)?)
}

/// Identities whose certificate is `serial` follow its status.
pub fn set_status_by_serial(
    conn: &mut DbConn,
    serial: &str,
    status: CertStatus,
) -> DbResult<usize> {
    Ok(
        diesel::update(clients::table.filter(clients::serial.eq(serial)))
            .set(clients::status.eq(status.as_str()))
            .execute(conn)?,
    )
}

pub fn set_status_by_fingerprint(
    conn: &mut DbConn,
    fingerprint: &str,
    status: CertStatus,
) -> DbResult<usize> {
    Ok(diesel::update(clients::table.find(fingerprint))
        .set(clients::status.eq(status.as_str()))
        .execute(conn)?)
}
