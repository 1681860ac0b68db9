//! Signed checkpoints: the HSM audit key signs
//! `tmcs-checkpoint-v1\n<seq>\n<hash>\n<ts>\n` (ECDSA P-256/SHA-256), and
//! with each a signed tree head `tmcs-sth-v1\n<tree_size>\n<root_hash>\n<ts>\n`.

use base64::Engine;
use openssl::pkey::{PKey, Public};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::merkle::{sth_message, SignedTreeHead};
use super::{tree, AuditError};
use crate::clock::rfc3339_millis;
use crate::hsm::{Custody, KeyId};
use crate::store::audit_rows::{self, CheckpointRow};
use crate::store::{tree_rows, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub ts: String,
    /// Base64 DER ECDSA signature.
    pub sig: String,
}

impl From<CheckpointRow> for Checkpoint {
    fn from(r: CheckpointRow) -> Self {
        Checkpoint {
            seq: r.seq,
            hash: r.hash,
            ts: r.ts,
            sig: r.sig,
        }
    }
}

pub fn checkpoint_message(seq: i64, hash: &str, ts: &str) -> String {
    format!("tmcs-checkpoint-v1\n{seq}\n{hash}\n{ts}\n")
}

/// Signs the current head unless it is already checkpointed, and a signed
/// tree head of the same size (CONTRACT §13), after building the Merkle
/// tree that far. Returns the new checkpoint, or `None` when there was
/// nothing new or another writer (a node's timer, `tmcs audit checkpoint`)
/// stored one of this head or a newer one meanwhile. A head checkpointed
/// before tree heads existed gets its tree head now (and `None`).
///
/// The HSM signs outside any transaction; storing takes the checkpoint lock
/// and checks again, so checkpoints (and tree heads) are stored in the
/// order of their `seq` and one of an older head never lands after a newer
/// one (an auditor who fetches `GET /v1/audit/checkpoints?after_seq=<last
/// seen>` misses none). The checkpoint and its tree head are stored in one
/// transaction.
pub fn make_checkpoint(
    store: &Store,
    hsm: &dyn Custody,
    audit_key: &KeyId,
    now: OffsetDateTime,
) -> Result<Option<Checkpoint>, AuditError> {
    let (head, last, last_sth) = store.read(|c| {
        Ok::<_, AuditError>((
            audit_rows::head(c)?,
            audit_rows::last_checkpoint(c)?,
            tree_rows::latest_head(c)?,
        ))
    })?;
    let Some((seq, hash)) = head else {
        return Ok(None);
    };
    let checkpointed = last.is_some_and(|l| l.seq >= seq);
    let headed = last_sth.is_some_and(|h| h.tree_size >= seq);
    if checkpointed && headed {
        return Ok(None);
    }
    let root_hash = tree::root_hex(store, seq)?;
    let ts = rfc3339_millis(now);
    let b64 = base64::engine::general_purpose::STANDARD;
    let row = if checkpointed {
        None
    } else {
        let sig = hsm.sign_sha256(audit_key, checkpoint_message(seq, &hash, &ts).as_bytes())?;
        Some(CheckpointRow {
            seq,
            hash,
            ts: ts.clone(),
            sig: b64.encode(sig),
        })
    };
    let sth = if headed {
        None
    } else {
        let sig = hsm.sign_sha256(audit_key, sth_message(seq, &root_hash, &ts).as_bytes())?;
        Some(SignedTreeHead {
            tree_size: seq,
            root_hash,
            ts,
            sig: b64.encode(sig),
        })
    };
    let stored = store.write(|c| -> Result<bool, AuditError> {
        audit_rows::lock_checkpoints(c)?;
        if let Some(sth) = &sth {
            tree::store_sth_in(c, sth)?;
        }
        let Some(row) = &row else {
            return Ok(false);
        };
        if audit_rows::last_checkpoint(c)?.is_some_and(|l| l.seq >= row.seq) {
            return Ok(false);
        }
        audit_rows::insert_checkpoint(c, row)?;
        Ok(true)
    })?;
    Ok(row.filter(|_| stored).map(Into::into))
}

pub fn verify_checkpoint_sig(cp: &Checkpoint, key: &PKey<Public>) -> bool {
    audit_sig_verifies(key, &checkpoint_message(cp.seq, &cp.hash, &cp.ts), &cp.sig)
}

/// Whether `sig_b64` (base64 DER) is the audit key's signature over `msg`:
/// checkpoints and signed tree heads alike.
pub(crate) fn audit_sig_verifies(key: &PKey<Public>, msg: &str, sig_b64: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(sig_b64)
        .is_ok_and(|sig| crate::pki::sha256_signature_verifies(key, msg.as_bytes(), &sig))
}
