//! Rows of the audit log's Merkle tree (complete subtrees) and its signed
//! tree heads. The tree logic lives in `crate::audit::tree`; this is only
//! storage.

use diesel::dsl::max;
use diesel::prelude::*;

use super::audit_rows::advisory_xact_lock;
use super::schema::{audit_events, audit_tree_heads, audit_tree_nodes};
use super::{execute_raw, DbConn, DbResult, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_tree_heads)]
pub struct TreeHeadRow {
    pub tree_size: i64,
    pub root_hash: String,
    pub ts: String,
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = audit_tree_nodes)]
pub struct NodeRow {
    pub level: i32,
    pub idx: i64,
    pub hash: String,
}

/// PostgreSQL advisory lock key (transaction-scoped) of extending the tree.
const TREE_LOCK: i64 = 7_316_827_303;

/// Serialises extending the tree for the rest of the transaction (on
/// SQLite the write transaction already holds the database write lock).
pub fn lock_tree(conn: &mut DbConn) -> DbResult<()> {
    advisory_xact_lock(conn, TREE_LOCK)
}

/// How many leaves the stored tree has: one more than the highest leaf
/// index (an index lookup on the primary key, not a count).
pub fn built_size(conn: &mut DbConn) -> DbResult<i64> {
    let top: Option<i64> = audit_tree_nodes::table
        .filter(audit_tree_nodes::level.eq(0))
        .select(max(audit_tree_nodes::idx))
        .first(conn)?;
    Ok(top.map_or(0, |i| i + 1))
}

/// The stored hash (hex) of the complete subtree `(level, idx)`.
pub fn node(conn: &mut DbConn, level: i32, idx: i64) -> DbResult<Option<String>> {
    Ok(audit_tree_nodes::table
        .find((level, idx))
        .select(audit_tree_nodes::hash)
        .first(conn)
        .optional()?)
}

/// The stored nodes among `keys`, in one query (a primary-key lookup per
/// key, joined by `UNION ALL`).
pub fn nodes(conn: &mut DbConn, keys: &[(i32, i64)]) -> DbResult<Vec<NodeRow>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = keys
        .iter()
        .map(|(level, idx)| {
            format!("SELECT level, idx, hash FROM audit_tree_nodes WHERE level = {level} AND idx = {idx}")
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    Ok(diesel::sql_query(sql).load(conn)?)
}

/// Stores nodes; one already stored (another node extended the tree first)
/// is left as it is. The values are integers and hex digits made by
/// `audit::tree`, never caller text.
pub fn insert_nodes(conn: &mut DbConn, nodes: &[(i32, i64, String)]) -> DbResult<()> {
    for chunk in nodes.chunks(500) {
        let mut sql = String::from("INSERT INTO audit_tree_nodes (level, idx, hash) VALUES ");
        for (i, (level, idx, hash)) in chunk.iter().enumerate() {
            if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(StoreError::Corrupt(format!(
                    "tree node ({level}, {idx}) is not hex"
                )));
            }
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("({level},{idx},'{hash}')"));
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        execute_raw(conn, &sql)?;
    }
    Ok(())
}

/// Stored nodes after `(level, idx)` in (level, idx) order, at most `limit`.
pub fn nodes_after(conn: &mut DbConn, level: i32, idx: i64, limit: i64) -> DbResult<Vec<NodeRow>> {
    use audit_tree_nodes::dsl as n;
    Ok(audit_tree_nodes::table
        .filter(
            n::level
                .gt(level)
                .or(n::level.eq(level).and(n::idx.gt(idx))),
        )
        .order((n::level.asc(), n::idx.asc()))
        .limit(limit)
        .select(NodeRow::as_select())
        .load(conn)?)
}

/// (seq, hash) of the events with `after < seq <= upto`, ascending.
pub fn event_hashes(conn: &mut DbConn, after: i64, upto: i64) -> DbResult<Vec<(i64, String)>> {
    Ok(audit_events::table
        .filter(audit_events::seq.gt(after))
        .filter(audit_events::seq.le(upto))
        .order(audit_events::seq.asc())
        .select((audit_events::seq, audit_events::hash))
        .load(conn)?)
}

pub fn insert_head(conn: &mut DbConn, row: &TreeHeadRow) -> DbResult<()> {
    diesel::insert_into(audit_tree_heads::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn latest_head(conn: &mut DbConn) -> DbResult<Option<TreeHeadRow>> {
    Ok(audit_tree_heads::table
        .order(audit_tree_heads::tree_size.desc())
        .select(TreeHeadRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn head_of_size(conn: &mut DbConn, tree_size: i64) -> DbResult<Option<TreeHeadRow>> {
    Ok(audit_tree_heads::table
        .find(tree_size)
        .select(TreeHeadRow::as_select())
        .first(conn)
        .optional()?)
}

/// Tree heads with `tree_size > after`, ascending, at most `limit`.
pub fn heads(conn: &mut DbConn, after: i64, limit: i64) -> DbResult<Vec<TreeHeadRow>> {
    Ok(audit_tree_heads::table
        .filter(audit_tree_heads::tree_size.gt(after))
        .order(audit_tree_heads::tree_size.asc())
        .limit(limit)
        .select(TreeHeadRow::as_select())
        .load(conn)?)
}
