//! Seen device signatures (replay protection for state-changing handset calls).

use diesel::prelude::*;

use super::schema::device_signatures;
use super::{DbConn, DbResult};

/// Records a signature as used; false when it was used before.
pub fn first_use(conn: &mut DbConn, sig_sha256: &str, expires_at: i64) -> DbResult<bool> {
    match diesel::insert_into(device_signatures::table)
        .values((
            device_signatures::sig_sha256.eq(sig_sha256),
            device_signatures::expires_at.eq(expires_at),
        ))
        .execute(conn)
    {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Forgets signatures whose window has passed.
pub fn purge(conn: &mut DbConn, now: i64) -> DbResult<usize> {
    Ok(
        diesel::delete(device_signatures::table.filter(device_signatures::expires_at.lt(now)))
            .execute(conn)?,
    )
}
