//! The server's HSM keys by name (root-ca, issuing-ca, transport, …).

use diesel::prelude::*;

use super::schema::server_keys;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = server_keys)]
pub struct ServerKeyRow {
    pub name: String,
    pub key_id: String,
    pub kind: String,
    pub public_spki_hex: Option<String>,
    pub created_at: i64,
}

pub fn get(conn: &mut DbConn, name: &str) -> DbResult<Option<ServerKeyRow>> {
    Ok(server_keys::table
        .find(name)
        .select(ServerKeyRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn insert(conn: &mut DbConn, row: &ServerKeyRow) -> DbResult<()> {
    diesel::insert_into(server_keys::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn all(conn: &mut DbConn) -> DbResult<Vec<ServerKeyRow>> {
    Ok(server_keys::table
        .order(server_keys::name)
        .select(ServerKeyRow::as_select())
        .load(conn)?)
}
