//! Verification of the chain, its checkpoints and its signed tree heads,
//! from the database or from an export file. The first problem found is
//! reported with its `seq`.

use std::io::BufRead;

use openssl::pkey::{PKey, Public};

use super::merkle::SignedTreeHead;
use super::tree::{self, Pyramid};
use super::{verify_checkpoint_sig, AuditError, Checkpoint, Event, ExportLine, GENESIS_HASH};
use crate::store::Store;
use crate::store::{audit_rows, tree_rows};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: i64,
    pub checkpoints: usize,
    /// Signed tree heads checked (CONTRACT §13).
    pub tree_heads: usize,
    pub head_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at seq {seq}: {reason}")]
pub struct VerifyFailure {
    pub seq: i64,
    pub reason: String,
}

fn fail(seq: i64, reason: impl Into<String>) -> VerifyFailure {
    VerifyFailure {
        seq,
        reason: reason.into(),
    }
}

/// Walks events in order, checking numbering, links and hashes.
struct Chain {
    next_seq: i64,
    prev: String,
    hashes: Vec<[u8; 32]>,
}

impl Chain {
    fn new() -> Chain {
        Chain {
            next_seq: 1,
            prev: GENESIS_HASH.to_string(),
            hashes: Vec::new(),
        }
    }

    fn push(&mut self, e: &Event) -> Result<(), VerifyFailure> {
        if e.seq != self.next_seq {
            return Err(if e.seq > self.next_seq {
                fail(
                    self.next_seq,
                    format!("event missing (next present is seq {})", e.seq),
                )
            } else {
                fail(e.seq, "event out of order or repeated")
            });
        }
        if e.prev_hash != self.prev {
            return Err(fail(
                e.seq,
                "prev_hash does not link to the previous event (deleted, reordered or changed)",
            ));
        }
        let computed = e
            .compute_hash()
            .map_err(|err| fail(e.seq, format!("cannot hash: {err}")))?;
        if computed != e.hash {
            return Err(fail(
                e.seq,
                "hash does not match the event's content (event changed)",
            ));
        }
        let mut h = [0u8; 32];
        hex::decode_to_slice(&e.hash, &mut h).map_err(|_| fail(e.seq, "hash is not hex"))?;
        self.hashes.push(h);
        self.prev = computed;
        self.next_seq += 1;
        Ok(())
    }

    fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    fn check_checkpoints(
        &self,
        cps: &[Checkpoint],
        key: &PKey<Public>,
    ) -> Result<(), VerifyFailure> {
        let mut cps: Vec<&Checkpoint> = cps.iter().collect();
        cps.sort_by_key(|c| c.seq);
        for cp in cps {
            if !verify_checkpoint_sig(cp, key) {
                return Err(fail(
                    cp.seq,
                    "checkpoint signature does not verify with the audit certificate",
                ));
            }
            if cp.seq > self.last_seq() {
                return Err(fail(
                    self.last_seq() + 1,
                    format!(
                        "events after seq {} are missing (a signed checkpoint covers seq {})",
                        self.last_seq(),
                        cp.seq
                    ),
                ));
            }
            let idx =
                usize::try_from(cp.seq - 1).map_err(|_| fail(cp.seq, "bad checkpoint seq"))?;
            let stored = self
                .hashes
                .get(idx)
                .map(hex::encode)
                .ok_or_else(|| fail(cp.seq, "bad checkpoint seq"))?;
            if stored != cp.hash {
                return Err(fail(
                    cp.seq,
                    "event differs from the one the signed checkpoint covers",
                ));
            }
        }
        Ok(())
    }

    /// The Merkle tree of the verified events, computed here.
    fn pyramid(&self) -> Pyramid {
        Pyramid::of_events(&self.hashes)
    }

    /// Each tree head's signature, and its root against the tree of the
    /// verified events, smallest first.
    fn check_tree_heads(
        &self,
        pyramid: &Pyramid,
        heads: &[SignedTreeHead],
        key: &PKey<Public>,
    ) -> Result<(), VerifyFailure> {
        let mut heads: Vec<&SignedTreeHead> = heads.iter().collect();
        heads.sort_by_key(|h| h.tree_size);
        for h in heads {
            let n = h.tree_size;
            if !h.signature_verifies(key) {
                return Err(fail(
                    n,
                    format!(
                        "tree head of size {n}: signature does not verify with the audit certificate"
                    ),
                ));
            }
            if n > self.last_seq() {
                return Err(fail(
                    self.last_seq() + 1,
                    format!(
                        "tree head of size {n}: events after seq {} are missing",
                        self.last_seq()
                    ),
                ));
            }
            let root = u64::try_from(n)
                .ok()
                .filter(|&n| n > 0)
                .and_then(|n| pyramid.root(n))
                .ok_or_else(|| fail(n, format!("tree head of size {n}: not a tree size")))?;
            if hex::encode(root) != h.root_hash {
                return Err(fail(
                    n,
                    format!("tree head of size {n}: root does not match the log"),
                ));
            }
        }
        Ok(())
    }

    fn report(&self, checkpoints: usize, tree_heads: usize) -> VerifyReport {
        VerifyReport {
            events: self.last_seq(),
            checkpoints,
            tree_heads,
            head_hash: self.prev.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Broken(#[from] VerifyFailure),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot read the export: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::store::StoreError> for VerifyError {
    fn from(e: crate::store::StoreError) -> Self {
        VerifyError::Audit(e.into())
    }
}

/// Verifies the chain in the database and every stored checkpoint.
/// Verifies the chain in the database, every stored checkpoint, and the
/// checkpoints an auditor kept (`held`): those catch a log cut after its
/// last stored checkpoint, which the database alone cannot show.
pub fn verify_store(
    store: &Store,
    key: &PKey<Public>,
    held: &[Checkpoint],
) -> Result<VerifyReport, VerifyError> {
    verify_store_held(store, key, &Held::checkpoints(held))
}

/// [`verify_store`] with what an auditor kept: checkpoints, and signed tree
/// heads (`GET /v1/audit/sth` answers). A kept tree head catches a log
/// rewritten together with its stored tree heads and checkpoints (its root
/// no longer matches) or cut below its size.
pub fn verify_store_held(
    store: &Store,
    key: &PKey<Public>,
    held: &Held,
) -> Result<VerifyReport, VerifyError> {
    let mut chain = Chain::new();
    super::for_each_stored(store, |r| -> Result<(), VerifyError> {
        let seq = r.seq;
        let e = Event::from_row(r).map_err(|e| fail(seq, e.to_string()))?;
        chain.push(&e)?;
        Ok(())
    })?;
    let cps: Vec<Checkpoint> = store
        .read(|c| audit_rows::checkpoints(c, 0, i64::MAX))?
        .into_iter()
        .map(Checkpoint::from)
        .collect();
    let n = cps.len();
    let all: Vec<Checkpoint> = cps
        .into_iter()
        .chain(held.checkpoints.iter().cloned())
        .collect();
    chain.check_checkpoints(&all, key)?;
    let pyramid = chain.pyramid();
    let heads = tree::all_sths(store)?;
    let count = heads.len();
    let all: Vec<SignedTreeHead> = heads
        .into_iter()
        .chain(held.tree_heads.iter().cloned())
        .collect();
    chain.check_tree_heads(&pyramid, &all, key)?;
    check_stored_nodes(store, &pyramid)?;
    Ok(chain.report(n, count))
}

/// Every stored tree node against the tree of the verified events: each
/// equal, none beyond the log, none missing (each level holds the nodes
/// `0..(built >> level)` of the built size).
fn check_stored_nodes(store: &Store, pyramid: &Pyramid) -> Result<(), VerifyError> {
    let node_fail = |level: i32, idx: i64, what: &str| {
        let first_seq = u32::try_from(level)
            .ok()
            .and_then(|l| idx.checked_shl(l))
            .map_or(0, |i| i.saturating_add(1));
        fail(
            first_seq,
            format!("stored tree node (level {level}, index {idx}) {what}"),
        )
    };
    let (mut at_level, mut next_idx, mut built) = (0i32, 0i64, None::<i64>);
    let (mut after_level, mut after_idx) = (-1i32, 0i64);
    // Level `level` must hold exactly `built >> level` nodes (`built` being
    // the number of leaves stored).
    let level_complete = |level: i32, count: i64, built: i64| -> Result<(), VerifyFailure> {
        let want = u32::try_from(level)
            .ok()
            .and_then(|l| built.checked_shr(l))
            .unwrap_or(0);
        match count.cmp(&want) {
            std::cmp::Ordering::Less => Err(node_fail(level, count, "is missing")),
            std::cmp::Ordering::Greater => Err(node_fail(
                level,
                want,
                "is stored but the leaves under it are not",
            )),
            std::cmp::Ordering::Equal => Ok(()),
        }
    };
    loop {
        let rows = store.read(|c| tree_rows::nodes_after(c, after_level, after_idx, 5000))?;
        let Some(last) = rows.last() else {
            break;
        };
        (after_level, after_idx) = (last.level, last.idx);
        for r in rows {
            while r.level > at_level {
                let b = *built.get_or_insert(next_idx);
                level_complete(at_level, next_idx, b)?;
                at_level += 1;
                next_idx = 0;
            }
            if r.level < 0 || r.idx != next_idx {
                return Err(node_fail(r.level, next_idx.min(r.idx), "is missing").into());
            }
            let want = u32::try_from(r.level)
                .ok()
                .zip(u64::try_from(r.idx).ok())
                .and_then(|(l, i)| pyramid.get(l, i));
            match want {
                None => {
                    return Err(node_fail(r.level, r.idx, "covers events beyond the log").into())
                }
                Some(w) if hex::encode(w) != r.hash => {
                    return Err(node_fail(r.level, r.idx, "does not match the log").into())
                }
                Some(_) => {}
            }
            next_idx += 1;
        }
    }
    let b = *built.get_or_insert(next_idx);
    loop {
        level_complete(at_level, next_idx, b)?;
        at_level += 1;
        next_idx = 0;
        if at_level >= 63 || b >> at_level == 0 {
            return Ok(());
        }
    }
}

/// Verifies an export (JSON lines of events and `{"checkpoint":…}` lines).
pub fn verify_lines(
    reader: impl BufRead,
    key: &PKey<Public>,
    held: &[Checkpoint],
) -> Result<VerifyReport, VerifyError> {
    verify_lines_held(reader, key, &Held::checkpoints(held))
}

/// [`verify_lines`] with the checkpoints and tree heads an auditor kept.
pub fn verify_lines_held(
    reader: impl BufRead,
    key: &PKey<Public>,
    held: &Held,
) -> Result<VerifyReport, VerifyError> {
    let mut chain = Chain::new();
    let mut cps = Vec::new();
    let mut heads = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ExportLine>(&line) {
            Ok(ExportLine::Event(e)) => chain.push(&e)?,
            Ok(ExportLine::Checkpoint { checkpoint }) => cps.push(checkpoint),
            Ok(ExportLine::TreeHead { tree_head }) => heads.push(tree_head),
            Err(_) => {
                return Err(fail(
                    chain.next_seq,
                    format!(
                        "line {} is neither an event, a checkpoint nor a tree head",
                        n + 1
                    ),
                )
                .into())
            }
        }
    }
    let n = cps.len();
    cps.extend(held.checkpoints.iter().cloned());
    chain.check_checkpoints(&cps, key)?;
    let count = heads.len();
    heads.extend(held.tree_heads.iter().cloned());
    if !heads.is_empty() {
        chain.check_tree_heads(&chain.pyramid(), &heads, key)?;
    }
    Ok(chain.report(n, count))
}

/// What an auditor kept from earlier visits, checked against the log as it
/// is now: checkpoints and signed tree heads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub checkpoints: Vec<Checkpoint>,
    pub tree_heads: Vec<SignedTreeHead>,
}

impl Held {
    fn checkpoints(cps: &[Checkpoint]) -> Held {
        Held {
            checkpoints: cps.to_vec(),
            tree_heads: Vec::new(),
        }
    }
}

/// Tree heads an auditor kept: one answer of `GET /v1/audit/sth`, a JSON
/// array of them, or JSON lines (bare tree heads, or the `{"tree_head":…}`
/// lines of an export, whose other lines are skipped).
pub fn parse_held_tree_heads(text: &str) -> Result<Vec<SignedTreeHead>, String> {
    if let Ok(h) = serde_json::from_str::<SignedTreeHead>(text) {
        return Ok(vec![h]);
    }
    if let Ok(v) = serde_json::from_str::<Vec<SignedTreeHead>>(text) {
        return Ok(v);
    }
    let out = held_lines(text, |l| match l {
        ExportLine::TreeHead { tree_head } => Some(tree_head),
        _ => None,
    })?;
    if out.is_empty() {
        return Err("no signed tree head in the file".into());
    }
    Ok(out)
}

/// Checkpoints an auditor kept: the JSON of `GET /v1/audit/checkpoints`
/// (`{"checkpoints":[…]}`), a JSON array, or JSON lines (bare checkpoints or
/// `{"checkpoint":…}` lines of an export).
pub fn parse_held_checkpoints(text: &str) -> Result<Vec<Checkpoint>, String> {
    #[derive(serde::Deserialize)]
    struct Wrapped {
        checkpoints: Vec<Checkpoint>,
    }
    if let Ok(w) = serde_json::from_str::<Wrapped>(text) {
        return Ok(w.checkpoints);
    }
    if let Ok(v) = serde_json::from_str::<Vec<Checkpoint>>(text) {
        return Ok(v);
    }
    held_lines(text, |l| match l {
        ExportLine::Checkpoint { checkpoint } => Some(checkpoint),
        _ => None,
    })
}

/// JSON lines of kept items: export lines (`pick` keeps the ones of this
/// kind, the others are skipped) or bare items; an unreadable line is
/// named by its number.
fn held_lines<T: serde::de::DeserializeOwned>(
    text: &str,
    pick: fn(ExportLine) -> Option<T>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ExportLine>(line) {
            Ok(l) => out.extend(pick(l)),
            Err(_) => match serde_json::from_str::<T>(line) {
                Ok(item) => out.push(item),
                Err(e) => return Err(format!("line {}: {e}", n + 1)),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain_of(n: i64) -> Vec<Event> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let mut e = Event {
                    seq,
                    ts: "2026-11-22T00:00:00.000Z".into(),
                    actor: "system".into(),
                    action: format!("test.{seq}"),
                    subject: Some(format!("s{seq}")),
                    details: json!({ "n": seq }),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = e.compute_hash().unwrap();
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn run(events: &[Event]) -> Result<(), VerifyFailure> {
        let mut c = Chain::new();
        for e in events {
            c.push(e)?;
        }
        Ok(())
    }

    #[test]
    fn held_tree_heads_parse_in_every_shape() {
        let h = |n: i64| SignedTreeHead {
            tree_size: n,
            root_hash: "ab".repeat(32),
            ts: "2026-12-02T00:00:00.000Z".into(),
            sig: "AA==".into(),
        };
        let one = serde_json::to_string(&h(3)).unwrap();
        assert_eq!(parse_held_tree_heads(&one).unwrap(), vec![h(3)]);
        let arr = serde_json::to_string(&vec![h(3), h(5)]).unwrap();
        assert_eq!(parse_held_tree_heads(&arr).unwrap(), vec![h(3), h(5)]);
        let export = format!(
            "{}\n{}\n{}\n",
            serde_json::to_string(&chain_of(1)[0]).unwrap(),
            serde_json::to_string(&ExportLine::TreeHead { tree_head: h(1) }).unwrap(),
            serde_json::to_string(&h(2)).unwrap()
        );
        assert_eq!(parse_held_tree_heads(&export).unwrap(), vec![h(1), h(2)]);
        assert!(parse_held_tree_heads("{\"tree_size\":1}\n")
            .unwrap_err()
            .starts_with("line 1:"));
        assert!(parse_held_tree_heads("\n").is_err());
    }

    #[test]
    fn intact_chain_passes() {
        assert!(run(&chain_of(5)).is_ok());
    }

    #[test]
    fn changed_event_is_named() {
        let mut ev = chain_of(5);
        ev[2].action = "test.forged".into();
        assert_eq!(run(&ev).unwrap_err().seq, 3);
    }

    #[test]
    fn deleted_event_is_named() {
        let mut ev = chain_of(5);
        ev.remove(1);
        assert_eq!(run(&ev).unwrap_err().seq, 2);
    }

    #[test]
    fn renumbered_deletion_is_caught_by_the_link() {
        let mut ev = chain_of(5);
        ev.remove(1);
        for (i, e) in ev.iter_mut().enumerate() {
            e.seq = i64::try_from(i).unwrap() + 1;
        }
        assert_eq!(run(&ev).unwrap_err().seq, 2);
    }

    #[test]
    fn reordered_events_are_named() {
        let mut ev = chain_of(5);
        ev.swap(1, 3);
        assert_eq!(run(&ev).unwrap_err().seq, 2);
        // Swapping content but keeping the seq numbers in place.
        let mut ev = chain_of(5);
        let (a, b) = (ev[1].clone(), ev[3].clone());
        ev[1] = Event { seq: 2, ..b };
        ev[3] = Event { seq: 4, ..a };
        assert_eq!(run(&ev).unwrap_err().seq, 2);
    }
}
