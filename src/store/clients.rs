//! mTLS client identities: certificate fingerprint → role (and party).

use diesel::prelude::*;

use super::schema::clients;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = clients)]
pub struct ClientRow {
    /// SHA-256 of the client certificate's DER, lowercase hex.
    pub fingerprint: String,
    pub role: String,
    pub name: String,
    pub party_id: Option<String>,
    pub serial: Option<String>,
    pub status: String,
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
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn set_status_by_party(conn: &mut DbConn, party_id: &str, status: &str) -> DbResult<usize> {
    Ok(
        diesel::update(clients::table.filter(clients::party_id.eq(party_id)))
            .set(clients::status.eq(status))
            .execute(conn)?,
    )
}

pub fn set_status_by_fingerprint(
    conn: &mut DbConn,
    fingerprint: &str,
    status: &str,
) -> DbResult<usize> {
    Ok(diesel::update(clients::table.find(fingerprint))
        .set(clients::status.eq(status))
        .execute(conn)?)
}
