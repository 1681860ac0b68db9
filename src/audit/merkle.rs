//! The audit log as a Merkle tree in the manner of RFC 9162 §2.1 (CONTRACT §13).
//!
//! Leaf `i` (0-based, for `seq` = i + 1) is SHA-256(`0x00` ‖ the event's
//! `hash`, 32 raw bytes); an inner node is SHA-256(`0x01` ‖ left ‖ right).
//! Proofs are built from *complete* subtrees: `node(level, index)` is the
//! hash of leaves `[index << level, (index + 1) << level)`. A store keeps
//! those nodes, so a proof costs O(log n) node reads (see [`NodeSource`]).
//!
//! This module is pure: it knows nothing of the database or the HSM.

use openssl::pkey::{PKey, Public};
use openssl::sha::Sha256;
use serde::{Deserialize, Serialize};

pub type Hash = [u8; 32];

/// RFC 9162 leaf hash of an event hash (hex of 32 bytes).
pub fn leaf_hash(event_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(&[0x00]);
    h.update(event_hash);
    h.finish()
}

/// RFC 9162 inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(&[0x01]);
    h.update(left);
    h.update(right);
    h.finish()
}

/// MTH of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    openssl::sha::sha256(b"")
}

/// Decodes 64 hex digits.
pub fn parse_hash(hex_text: &str) -> Option<Hash> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut h).ok()?;
    Some(h)
}

/// The largest power of two strictly below `n` (`n` ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Where a proof reads complete subtrees from.
pub trait NodeSource {
    type Error;
    /// The hash of the complete subtree over leaves
    /// `[index << level, (index + 1) << level)`; level 0 is a leaf hash.
    fn node(&mut self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// The hash of the (possibly incomplete) subtree of `size` leaves starting
/// at `start`, where `start` is a multiple of the largest power of two not
/// above `size` (true of every range RFC 9162's recursion visits).
fn range_hash<S: NodeSource>(src: &mut S, start: u64, size: u64) -> Result<Hash, S::Error> {
    if size.is_power_of_two() {
        let level = size.trailing_zeros();
        return src.node(level, start >> level);
    }
    let k = split(size);
    let left = range_hash(src, start, k)?;
    let right = range_hash(src, start + k, size - k)?;
    Ok(node_hash(&left, &right))
}

/// MTH(D[0:n]) from stored nodes. `n` = 0 gives [`empty_root`].
pub fn root<S: NodeSource>(src: &mut S, n: u64) -> Result<Hash, S::Error> {
    if n == 0 {
        return Ok(empty_root());
    }
    range_hash(src, 0, n)
}

/// RFC 9162 §2.1.3.1 PATH(m, D[0:n]), leaf to root. Requires `m < n`.
pub fn inclusion_path<S: NodeSource>(src: &mut S, m: u64, n: u64) -> Result<Vec<Hash>, S::Error> {
    let mut out = Vec::new();
    path(src, m, 0, n, &mut out)?;
    Ok(out)
}

fn path<S: NodeSource>(
    src: &mut S,
    m: u64,
    start: u64,
    n: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(src, m, start, k, out)?;
        out.push(range_hash(src, start + k, n - k)?);
    } else {
        path(src, m - k, start + k, n - k, out)?;
        out.push(range_hash(src, start, k)?);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.1 PROOF(m, D[0:n]). Requires `0 < m ≤ n`; empty when `m == n`.
pub fn consistency_proof<S: NodeSource>(
    src: &mut S,
    m: u64,
    n: u64,
) -> Result<Vec<Hash>, S::Error> {
    let mut out = Vec::new();
    subproof(src, m, 0, n, true, &mut out)?;
    Ok(out)
}

fn subproof<S: NodeSource>(
    src: &mut S,
    m: u64,
    start: u64,
    n: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if m == n {
        if !whole {
            out.push(range_hash(src, start, n)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, start, k, whole, out)?;
        out.push(range_hash(src, start + k, n - k)?);
    } else {
        subproof(src, m - k, start + k, n - k, false, out)?;
        out.push(range_hash(src, start, k)?);
    }
    Ok(())
}

/// RFC 9162 §2.1.3.2: the root that an inclusion proof of leaf `m` in a
/// tree of `n` leaves leads to, or `None` when the proof has the wrong shape.
pub fn root_from_inclusion(m: u64, n: u64, leaf: &Hash, path: &[Hash]) -> Option<Hash> {
    if m >= n {
        return None;
    }
    let (mut fn_, mut sn) = (m, n - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return None;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    (sn == 0).then_some(r)
}

/// RFC 9162 §2.1.4.2: whether `proof` shows that the tree of `m` leaves with
/// root `first` is a prefix of the tree of `n` leaves with root `second`.
pub fn verify_consistency(m: u64, n: u64, first: &Hash, second: &Hash, proof: &[Hash]) -> bool {
    if m == 0 || m > n {
        return false;
    }
    if m == n {
        return proof.is_empty() && first == second;
    }
    let mut items: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if m.is_power_of_two() {
        items.push(*first);
    }
    items.extend_from_slice(proof);
    let Some((head, rest)) = items.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (m - 1, n - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && &fr == first && &sr == second
}

/// Leaf hashes held in memory: every node is computed on request. For
/// verifying an export and for tests; the service reads stored nodes.
pub struct InMemory<'a>(pub &'a [Hash]);

impl NodeSource for InMemory<'_> {
    type Error = std::convert::Infallible;
    fn node(&mut self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        fn build(leaves: &[Hash]) -> Hash {
            if leaves.len() == 1 {
                return leaves[0];
            }
            let (l, r) = leaves.split_at(leaves.len() / 2);
            node_hash(&build(l), &build(r))
        }
        let start = usize::try_from(index << level).unwrap_or(usize::MAX);
        let len = 1usize << level;
        Ok(build(&self.0[start..start + len]))
    }
}

/// A signed tree head (CONTRACT §13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTreeHead {
    pub tree_size: i64,
    /// Hex of MTH(D[0:tree_size]).
    pub root_hash: String,
    pub ts: String,
    /// Base64 DER ECDSA P-256/SHA-256 signature by the audit key.
    pub sig: String,
}

/// What the audit key signs for a tree head.
pub fn sth_message(tree_size: i64, root_hash: &str, ts: &str) -> String {
    format!("tmcs-sth-v1\n{tree_size}\n{root_hash}\n{ts}\n")
}

impl SignedTreeHead {
    /// Whether `sig` verifies with the audit certificate's key.
    pub fn signature_verifies(&self, key: &PKey<Public>) -> bool {
        super::checkpoint::audit_sig_verifies(
            key,
            &sth_message(self.tree_size, &self.root_hash, &self.ts),
            &self.sig,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&openssl::sha::sha256(&(i as u64).to_be_bytes())))
            .collect()
    }

    /// MTH straight from RFC 9162's definition, over a slice.
    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    #[test]
    fn roots_match_the_definition() {
        for n in 0..70 {
            let l = leaves(n);
            assert_eq!(root(&mut InMemory(&l), n as u64).unwrap(), mth(&l), "n={n}");
        }
    }

    #[test]
    fn inclusion_and_consistency_round_trip() {
        let l = leaves(40);
        for n in 1..=40u64 {
            let r = mth(&l[..n as usize]);
            for m in 0..n {
                let p = inclusion_path(&mut InMemory(&l), m, n).unwrap();
                assert_eq!(root_from_inclusion(m, n, &l[m as usize], &p), Some(r));
                if !p.is_empty() {
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert_ne!(root_from_inclusion(m, n, &l[m as usize], &bad), Some(r));
                }
            }
            for m in 1..=n {
                let p = consistency_proof(&mut InMemory(&l), m, n).unwrap();
                let r1 = mth(&l[..m as usize]);
                assert!(verify_consistency(m, n, &r1, &r, &p), "m={m} n={n}");
                let mut wrong = r1;
                wrong[5] ^= 1;
                assert!(!verify_consistency(m, n, &wrong, &r, &p), "m={m} n={n}");
            }
        }
    }

    #[test]
    fn leaf_and_node_prefixes() {
        let e = [7u8; 32];
        let mut v = vec![0u8];
        v.extend_from_slice(&e);
        assert_eq!(leaf_hash(&e), openssl::sha::sha256(&v));
        let mut v = vec![1u8];
        v.extend_from_slice(&e);
        v.extend_from_slice(&[9u8; 32]);
        assert_eq!(node_hash(&e, &[9u8; 32]), openssl::sha::sha256(&v));
        assert_eq!(
            sth_message(3, "ab", "t"),
            "tmcs-sth-v1\n3\nab\nt\n".to_string()
        );
    }
}
