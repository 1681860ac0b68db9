//! The audit log's Merkle tree as stored (CONTRACT §13, RFC 9162 §2.1).
//!
//! `audit_tree_nodes` holds every *complete* subtree of the leaves built so
//! far: `(level, idx)` is the hash of leaves `[idx << level, (idx + 1) <<
//! level)`, leaf `i` being SHA-256(`0x00` ‖ the hash of the event with
//! `seq` = i + 1). [`extend`] adds the leaves of events not yet in the tree
//! and every parent that becomes complete, reading only the right edge (one
//! node per set bit of the built size). It runs when a checkpoint is signed
//! and before a proof of a size not yet built, never in the append path of
//! an event.
//!
//! Any tree of `n` ≤ built size leaves is a combination of stored complete
//! subtrees, so a root, an inclusion proof or a consistency proof costs
//! O(log n) primary-key reads ([`StoredNodes`] counts them).
//!
//! Signed tree heads (`audit_tree_heads`) are made with every checkpoint
//! ([`super::make_checkpoint`]) over `tmcs-sth-v1\n<tree_size>\n<root_hash>\n<ts>\n`.

use serde::{Deserialize, Serialize};

use super::merkle::{self, parse_hash, Hash, NodeSource, SignedTreeHead};
use super::AuditError;
use crate::store::tree_rows::{self, TreeHeadRow};
use crate::store::{audit_rows, DbConn, Store, StoreError};

/// Leaves added per write transaction by [`extend`], so that building the
/// tree of a long log that predates it never holds the lock for long.
const EXTEND_CHUNK: i64 = 8192;

/// `GET /v1/audit/proof/inclusion` (CONTRACT §13, RFC 9162 §2.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    pub seq: i64,
    pub tree_size: i64,
    /// Hex of SHA-256(`0x00` ‖ the event's hash).
    pub leaf_hash: String,
    /// Hex hashes, from the leaf's sibling up to the root's child.
    pub audit_path: Vec<String>,
}

/// `GET /v1/audit/proof/consistency` (CONTRACT §13, RFC 9162 §2.1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    pub first: i64,
    pub second: i64,
    pub proof: Vec<String>,
}

impl From<TreeHeadRow> for SignedTreeHead {
    fn from(r: TreeHeadRow) -> Self {
        SignedTreeHead {
            tree_size: r.tree_size,
            root_hash: r.root_hash,
            ts: r.ts,
            sig: r.sig,
        }
    }
}

impl From<SignedTreeHead> for TreeHeadRow {
    fn from(h: SignedTreeHead) -> Self {
        TreeHeadRow {
            tree_size: h.tree_size,
            root_hash: h.root_hash,
            ts: h.ts,
            sig: h.sig,
        }
    }
}

fn corrupt(what: String) -> AuditError {
    AuditError::Store(StoreError::Corrupt(what))
}

fn node_key(level: u32, index: u64) -> Result<(i32, i64), AuditError> {
    match (i32::try_from(level), i64::try_from(index)) {
        (Ok(l), Ok(i)) => Ok((l, i)),
        _ => Err(corrupt(format!(
            "tree node ({level}, {index}) out of range"
        ))),
    }
}

/// Stored complete subtrees on one connection: a node [`StoredNodes::fetch`]ed
/// beforehand is served from memory, any other is read by its primary key.
/// `reads` counts the nodes read from the database (the cost of a proof),
/// `queries` the statements that read them.
pub struct StoredNodes<'a> {
    conn: &'a mut DbConn,
    fetched: std::collections::HashMap<(u32, u64), Hash>,
    pub reads: u64,
    pub queries: u64,
}

impl<'a> StoredNodes<'a> {
    pub fn new(conn: &'a mut DbConn) -> StoredNodes<'a> {
        StoredNodes {
            conn,
            fetched: Default::default(),
            reads: 0,
            queries: 0,
        }
    }

    /// Reads the nodes `keys` in one query.
    pub fn fetch(&mut self, keys: &[(u32, u64)]) -> Result<(), AuditError> {
        let wanted = keys
            .iter()
            .map(|&(l, i)| node_key(l, i))
            .collect::<Result<Vec<_>, _>>()?;
        self.queries += 1;
        for row in tree_rows::nodes(self.conn, &wanted)? {
            self.reads += 1;
            let hash = parse_hash(&row.hash).ok_or_else(|| {
                corrupt(format!("tree node ({}, {}) is not hex", row.level, row.idx))
            })?;
            // Both were asked for as u32 / u64 and converted without loss.
            self.fetched
                .insert((row.level as u32, row.idx as u64), hash);
        }
        Ok(())
    }

    /// Runs `proof` twice: first to learn which nodes it needs (a proof's
    /// shape depends on the indices only, never on the hashes), then on
    /// those nodes, read in one query.
    pub fn prove<T>(
        &mut self,
        proof: impl Fn(&mut dyn NodeSource<Error = AuditError>) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let mut wanted = Wanted(Vec::new());
        proof(&mut wanted)?;
        let mut keys = wanted.0;
        keys.sort_unstable();
        keys.dedup();
        self.fetch(&keys)?;
        proof(self)
    }
}

impl NodeSource for StoredNodes<'_> {
    type Error = AuditError;

    fn node(&mut self, level: u32, index: u64) -> Result<Hash, AuditError> {
        if let Some(h) = self.fetched.get(&(level, index)) {
            return Ok(*h);
        }
        let (l, i) = node_key(level, index)?;
        self.reads += 1;
        self.queries += 1;
        let hex = tree_rows::node(self.conn, l, i)?
            .ok_or_else(|| corrupt(format!("tree node ({level}, {index}) is not stored")))?;
        parse_hash(&hex).ok_or_else(|| corrupt(format!("tree node ({level}, {index}) is not hex")))
    }
}

/// A node source behind a `dyn` reference.
struct Dyn<'s>(&'s mut dyn NodeSource<Error = AuditError>);

impl NodeSource for Dyn<'_> {
    type Error = AuditError;
    fn node(&mut self, level: u32, index: u64) -> Result<Hash, AuditError> {
        self.0.node(level, index)
    }
}

/// Records which nodes a proof asks for (see [`StoredNodes::prove`]).
struct Wanted(Vec<(u32, u64)>);

impl NodeSource for Wanted {
    type Error = AuditError;
    fn node(&mut self, level: u32, index: u64) -> Result<Hash, AuditError> {
        self.0.push((level, index));
        Ok([0; 32])
    }
}

/// The number of events in the log (the newest `seq`).
fn log_size(conn: &mut DbConn) -> Result<i64, AuditError> {
    Ok(audit_rows::head(conn)?.map_or(0, |(seq, _)| seq))
}

/// Adds up to `max_leaves` leaves, for the events after the built tree up
/// to `seq` = `to`, and the parents they complete, in the caller's write
/// transaction under the tree lock. Returns the tree size now built.
/// Idempotent: the built size is read under the lock, and a node already
/// stored is left alone.
pub fn extend_in(conn: &mut DbConn, to: i64, max_leaves: i64) -> Result<i64, AuditError> {
    tree_rows::lock_tree(conn)?;
    let built = tree_rows::built_size(conn)?;
    if built >= to {
        return Ok(built);
    }
    let end = to.min(built.saturating_add(max_leaves.max(1)));
    // The right edge of the built tree: one complete subtree per set bit of
    // `built`, the largest (leftmost) first.
    let mut edge: Vec<(u32, Hash)> = Vec::new();
    for level in (0..63u32).rev() {
        if built & (1i64 << level) != 0 {
            let idx = (built >> level) - 1;
            let mut src = StoredNodes::new(conn);
            edge.push((level, src.node(level, idx as u64)?));
        }
    }
    let events = tree_rows::event_hashes(conn, built, end)?;
    let mut new_nodes: Vec<(i32, i64, String)> = Vec::with_capacity(events.len() * 2);
    let mut next = built;
    for (seq, hash) in events {
        if seq != next + 1 {
            return Err(corrupt(format!(
                "audit event seq {} missing while building the tree",
                next + 1
            )));
        }
        let event_hash =
            parse_hash(&hash).ok_or_else(|| corrupt(format!("event {seq}: hash is not hex")))?;
        let mut h = merkle::leaf_hash(&event_hash);
        let (mut level, mut idx) = (0u32, next);
        new_nodes.push((0, idx, hex::encode(h)));
        while idx & 1 == 1 {
            let Some((l, left)) = edge.pop() else {
                return Err(corrupt(format!("tree edge broken at leaf {next}")));
            };
            debug_assert_eq!(l, level);
            h = merkle::node_hash(&left, &h);
            level += 1;
            idx >>= 1;
            new_nodes.push((level as i32, idx, hex::encode(h)));
        }
        edge.push((level, h));
        next += 1;
    }
    if next != end {
        return Err(corrupt(format!(
            "audit event seq {} missing while building the tree",
            next + 1
        )));
    }
    tree_rows::insert_nodes(conn, &new_nodes)?;
    Ok(end)
}

/// Builds the tree up to `seq` = `to` (in transactions of a few thousand
/// leaves). Returns the size built, at least `to`.
pub fn extend(store: &Store, to: i64) -> Result<i64, AuditError> {
    loop {
        let built = store.write(|c| extend_in(c, to, EXTEND_CHUNK))?;
        if built >= to {
            return Ok(built);
        }
    }
}

/// Runs `read` on one connection once the stored tree has `size` leaves,
/// building it that far first when it has not (then reading again). A
/// `size` beyond the log is refused, naming it as `what`.
fn on_tree_of<T>(
    store: &Store,
    size: i64,
    what: &str,
    read: impl Fn(&mut DbConn) -> Result<T, AuditError>,
) -> Result<T, AuditError> {
    let attempt = || {
        store.read(|c| -> Result<Option<T>, AuditError> {
            let log = log_size(c)?;
            if size > log {
                return Err(range(format!("{what} is beyond the log ({log} events)")));
            }
            if tree_rows::built_size(c)? < size {
                return Ok(None);
            }
            read(c).map(Some)
        })
    };
    if let Some(done) = attempt()? {
        return Ok(done);
    }
    extend(store, size)?;
    attempt()?.ok_or_else(|| corrupt(format!("tree not built to {size}")))
}

/// MTH of the first `size` events (hex), building the tree that far first.
pub fn root_hex(store: &Store, size: i64) -> Result<String, AuditError> {
    let n = u64::try_from(size).map_err(|_| AuditError::Range("negative tree size".into()))?;
    on_tree_of(store, size, &format!("tree size {size}"), |c| {
        Ok(hex::encode(merkle::root(&mut StoredNodes::new(c), n)?))
    })
}

/// The newest signed tree head.
pub fn latest_sth(store: &Store) -> Result<Option<SignedTreeHead>, AuditError> {
    Ok(store.read(tree_rows::latest_head)?.map(Into::into))
}

/// The signed tree head of `tree_size` events, if one was signed.
pub fn sth_of_size(store: &Store, tree_size: i64) -> Result<Option<SignedTreeHead>, AuditError> {
    Ok(store
        .read(|c| tree_rows::head_of_size(c, tree_size))?
        .map(Into::into))
}

/// Every stored tree head, ascending by size.
pub fn all_sths(store: &Store) -> Result<Vec<SignedTreeHead>, AuditError> {
    Ok(store
        .read(|c| tree_rows::heads(c, 0, i64::MAX))?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// Stores a signed tree head in the caller's transaction (which holds the
/// checkpoint lock), unless one of this size or a larger one is stored:
/// tree heads land in the order of their size, as checkpoints do.
pub(crate) fn store_sth_in(conn: &mut DbConn, sth: &SignedTreeHead) -> Result<bool, AuditError> {
    if tree_rows::latest_head(conn)?.is_some_and(|h| h.tree_size >= sth.tree_size) {
        return Ok(false);
    }
    tree_rows::insert_head(conn, &sth.clone().into())?;
    Ok(true)
}

fn range(detail: String) -> AuditError {
    AuditError::Range(detail)
}

/// The inclusion proof of event `seq` in the tree of the first `tree_size`
/// events (RFC 9162 §2.1.3.1).
pub fn inclusion(store: &Store, seq: i64, tree_size: i64) -> Result<InclusionProof, AuditError> {
    inclusion_counted(store, seq, tree_size).map(|(p, _)| p)
}

/// [`inclusion`], and how many tree nodes it read (in one query). Besides
/// those it reads the log's size, the built tree size and the event's
/// hash: three more primary-key or index lookups, whatever the size, all on
/// one connection.
pub fn inclusion_counted(
    store: &Store,
    seq: i64,
    tree_size: i64,
) -> Result<(InclusionProof, u64), AuditError> {
    if tree_size < 1 {
        return Err(range(format!(
            "tree_size must be at least 1, not {tree_size}"
        )));
    }
    if seq < 1 || seq > tree_size {
        return Err(range(format!("seq must be 1..={tree_size}, not {seq}")));
    }
    on_tree_of(store, tree_size, &format!("tree_size {tree_size}"), |c| {
        let event = audit_rows::event_hash(c, seq)?
            .and_then(|h| parse_hash(&h))
            .ok_or_else(|| corrupt(format!("audit event {seq} missing or not hex")))?;
        let mut src = StoredNodes::new(c);
        // Both in range: 1 <= seq <= tree_size.
        let (m, n) = ((seq - 1) as u64, tree_size as u64);
        let path = src.prove(|s| merkle::inclusion_path(&mut Dyn(s), m, n))?;
        let proof = InclusionProof {
            seq,
            tree_size,
            leaf_hash: hex::encode(merkle::leaf_hash(&event)),
            audit_path: path.iter().map(hex::encode).collect(),
        };
        Ok((proof, src.reads))
    })
}

/// The consistency proof between the trees of the first `first` and the
/// first `second` events (RFC 9162 §2.1.4.1; empty when they are equal).
pub fn consistency(store: &Store, first: i64, second: i64) -> Result<ConsistencyProof, AuditError> {
    consistency_counted(store, first, second).map(|(p, _)| p)
}

/// [`consistency`], and how many tree nodes it read.
pub fn consistency_counted(
    store: &Store,
    first: i64,
    second: i64,
) -> Result<(ConsistencyProof, u64), AuditError> {
    if first < 1 {
        return Err(range(format!("first must be at least 1, not {first}")));
    }
    if first > second {
        return Err(range(format!(
            "first ({first}) must not be greater than second ({second})"
        )));
    }
    on_tree_of(store, second, &format!("second ({second})"), |c| {
        let mut src = StoredNodes::new(c);
        let (m, n) = (first as u64, second as u64);
        let proof = src.prove(|s| merkle::consistency_proof(&mut Dyn(s), m, n))?;
        Ok((
            ConsistencyProof {
                first,
                second,
                proof: proof.iter().map(hex::encode).collect(),
            },
            src.reads,
        ))
    })
}

/// Every complete subtree of a list of leaves, computed in memory: what
/// `tmcs audit verify` compares the stored tree and the tree heads with.
pub(crate) struct Pyramid {
    levels: Vec<Vec<Hash>>,
}

impl Pyramid {
    /// From the events' hashes, in `seq` order.
    pub(crate) fn of_events(event_hashes: &[Hash]) -> Pyramid {
        let mut levels = vec![event_hashes
            .iter()
            .map(merkle::leaf_hash)
            .collect::<Vec<_>>()];
        while let Some(last) = levels.last().filter(|l| l.len() >= 2) {
            let up = last
                .chunks_exact(2)
                .map(|p| merkle::node_hash(&p[0], &p[1]))
                .collect();
            levels.push(up);
        }
        Pyramid { levels }
    }

    /// The complete subtree `(level, idx)`, if the leaves reach that far.
    pub(crate) fn get(&self, level: u32, idx: u64) -> Option<Hash> {
        let l = self.levels.get(usize::try_from(level).ok()?)?;
        l.get(usize::try_from(idx).ok()?).copied()
    }

    pub(crate) fn leaves(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// MTH of the first `n` leaves (`n` ≤ [`Pyramid::leaves`]).
    pub(crate) fn root(&self, n: u64) -> Option<Hash> {
        struct Src<'a>(&'a Pyramid);
        impl NodeSource for Src<'_> {
            type Error = ();
            fn node(&mut self, level: u32, index: u64) -> Result<Hash, ()> {
                self.0.get(level, index).ok_or(())
            }
        }
        if n > self.leaves() {
            return None;
        }
        merkle::root(&mut Src(self), n).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_roots_are_the_mth() {
        let events: Vec<Hash> = (0u64..37)
            .map(|i| openssl::sha::sha256(&i.to_be_bytes()))
            .collect();
        let p = Pyramid::of_events(&events);
        let leaves: Vec<Hash> = events.iter().map(merkle::leaf_hash).collect();
        for n in 0..=37u64 {
            let want = merkle::root(&mut merkle::InMemory(&leaves), n).unwrap();
            assert_eq!(p.root(n), Some(want), "n={n}");
        }
        assert_eq!(p.root(38), None);
        assert_eq!(p.get(5, 0), merkle::InMemory(&leaves).node(5, 0).ok());
        assert_eq!(
            p.get(5, 1),
            None,
            "37 leaves have one complete 32-leaf subtree"
        );
    }
}
