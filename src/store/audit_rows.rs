//! Rows of the audit chain and its checkpoints. The chain logic lives in
//! `crate::audit`; this is only storage.

use diesel::prelude::*;

use super::schema::{audit_checkpoints, audit_events};
use super::{execute_raw, DbConn, DbResult};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub struct EventRow {
    pub seq: i64,
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_checkpoints)]
pub struct CheckpointRow {
    pub seq: i64,
    pub hash: String,
    pub ts: String,
    pub sig: String,
}

/// PostgreSQL advisory lock keys (transaction-scoped) of the chain and of
/// its checkpoints.
const CHAIN_LOCK: i64 = 7_316_827_301;
const CHECKPOINT_LOCK: i64 = 7_316_827_302;

/// Takes the transaction-scoped advisory lock `key`, released at commit or
/// rollback. SQLite transactions from `Store::write` already hold the
/// write lock, which serialises them all.
pub(super) fn advisory_xact_lock(conn: &mut DbConn, key: i64) -> DbResult<()> {
    if matches!(conn, DbConn::Pg(_)) {
        execute_raw(conn, &format!("SELECT pg_advisory_xact_lock({key})"))?;
    }
    Ok(())
}

/// Serialises appends to the chain for the rest of the transaction.
pub fn lock_chain(conn: &mut DbConn) -> DbResult<()> {
    advisory_xact_lock(conn, CHAIN_LOCK)
}

/// Serialises storing checkpoints for the rest of the transaction, so that
/// nodes store them in the order of their `seq`.
pub fn lock_checkpoints(conn: &mut DbConn) -> DbResult<()> {
    advisory_xact_lock(conn, CHECKPOINT_LOCK)
}

/// (seq, hash) of the newest event.
pub fn head(conn: &mut DbConn) -> DbResult<Option<(i64, String)>> {
    Ok(audit_events::table
        .order(audit_events::seq.desc())
        .select((audit_events::seq, audit_events::hash))
        .first(conn)
        .optional()?)
}

pub fn insert(conn: &mut DbConn, row: &EventRow) -> DbResult<()> {
    diesel::insert_into(audit_events::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub subject: Option<String>,
    pub action: Option<String>,
    pub after_seq: i64,
    pub limit: i64,
}

pub fn list(conn: &mut DbConn, f: &EventFilter) -> DbResult<Vec<EventRow>> {
    let mut q = audit_events::table
        .filter(audit_events::seq.gt(f.after_seq))
        .order(audit_events::seq.asc())
        .limit(f.limit)
        .select(EventRow::as_select())
        .into_boxed();
    if let Some(s) = &f.subject {
        q = q.filter(audit_events::subject.eq(s.clone()));
    }
    if let Some(a) = &f.action {
        if let Some(prefix) = a.strip_suffix('*') {
            q = q.filter(
                audit_events::action
                    .like(format!("{}%", escape_like(prefix)))
                    .escape('\\'),
            );
        } else {
            q = q.filter(audit_events::action.eq(a.clone()));
        }
    }
    Ok(q.load(conn)?)
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Events with `seq > after`, ascending, at most `limit` (for streaming).
pub fn batch(conn: &mut DbConn, after: i64, limit: i64) -> DbResult<Vec<EventRow>> {
    Ok(audit_events::table
        .filter(audit_events::seq.gt(after))
        .order(audit_events::seq.asc())
        .limit(limit)
        .select(EventRow::as_select())
        .load(conn)?)
}

pub fn event_hash(conn: &mut DbConn, seq: i64) -> DbResult<Option<String>> {
    Ok(audit_events::table
        .find(seq)
        .select(audit_events::hash)
        .first(conn)
        .optional()?)
}

pub fn insert_checkpoint(conn: &mut DbConn, row: &CheckpointRow) -> DbResult<()> {
    diesel::insert_into(audit_checkpoints::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn last_checkpoint(conn: &mut DbConn) -> DbResult<Option<CheckpointRow>> {
    Ok(audit_checkpoints::table
        .order(audit_checkpoints::seq.desc())
        .select(CheckpointRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn checkpoints(conn: &mut DbConn, after_seq: i64, limit: i64) -> DbResult<Vec<CheckpointRow>> {
    Ok(audit_checkpoints::table
        .filter(audit_checkpoints::seq.gt(after_seq))
        .order(audit_checkpoints::seq.asc())
        .limit(limit)
        .select(CheckpointRow::as_select())
        .load(conn)?)
}
