//! What a request's evidence bundle needs besides the request and the audit
//! log (CONTRACT §13): the OCSP response produced when it was signed.

use diesel::prelude::*;

use super::schema::request_evidence;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = request_evidence)]
pub struct EvidenceRow {
    pub request_id: String,
    /// Base64 of the DER OCSPResponse.
    pub ocsp_der_b64: String,
    /// Its producedAt, Unix seconds.
    pub produced_at: i64,
}

/// Stores the OCSP response of a request being signed (in the transaction
/// that marks it signed).
pub fn insert(conn: &mut DbConn, row: &EvidenceRow) -> DbResult<()> {
    diesel::insert_into(request_evidence::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn get(conn: &mut DbConn, request_id: &str) -> DbResult<Option<EvidenceRow>> {
    Ok(request_evidence::table
        .find(request_id)
        .select(EvidenceRow::as_select())
        .first(conn)
        .optional()?)
}
