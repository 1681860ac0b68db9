//! The tamper-evident audit log (CONTRACT §10).
//!
//! Each event's `hash` is SHA-256 over the RFC 8785 (JCS) canonical JSON of
//! the event without `hash`; `prev_hash` chains it to the event before (64
//! zeros for `seq` 1). Appends are serialised per database (SQLite's write
//! lock, PostgreSQL's transaction advisory lock), so concurrent writers on
//! several nodes still build one chain. Checkpoints sign the head with the
//! HSM audit key.
//!
//! Convention: append audit events *last* in a transaction, so the chain
//! lock is held only for the append and the commit.

mod checkpoint;
mod event;
pub mod evidence;
pub mod merkle;
pub mod query;
pub mod refusals;
pub mod report;
pub mod tree;
mod verify;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::clock::rfc3339_millis;
use crate::store::audit_rows::{self, EventRow};
use crate::store::{DbConn, StoreError};

pub use checkpoint::{checkpoint_message, make_checkpoint, verify_checkpoint_sig, Checkpoint};
pub use event::{AuditEvent, BlockedBy, Channel, PinDuring};
pub use verify::{
    parse_held_checkpoints, parse_held_tree_heads, verify_lines, verify_lines_held, verify_store,
    verify_store_held, Held, VerifyError, VerifyFailure, VerifyReport,
};

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HSM could not sign a checkpoint.
    #[error(transparent)]
    Hsm(#[from] crate::hsm::HsmError),
    #[error("audit details must not carry {0:?}")]
    SecretInDetails(String),
    #[error("audit encoding: {0}")]
    Encoding(String),
    /// A proof or tree head asked for outside the log (a seq or tree size
    /// below 1, past the log's end, or `first` > `second`).
    #[error("out of range: {0}")]
    Range(String),
}

impl AuditError {
    /// An outage of the database or the HSM that may pass.
    pub fn is_transient(&self) -> bool {
        match self {
            AuditError::Store(e) => e.is_transient(),
            AuditError::Hsm(e) => e.is_transient(),
            AuditError::SecretInDetails(_) | AuditError::Encoding(_) | AuditError::Range(_) => {
                false
            }
        }
    }
}

impl From<diesel::result::Error> for AuditError {
    fn from(e: diesel::result::Error) -> Self {
        AuditError::Store(e.into())
    }
}

/// One event as stored, exported and hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub seq: i64,
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Serialize)]
struct Unhashed<'a> {
    seq: i64,
    ts: &'a str,
    actor: &'a str,
    action: &'a str,
    subject: Option<&'a str>,
    details: &'a Value,
    prev_hash: &'a str,
}

impl Event {
    /// SHA-256 (hex) over the JCS form of this event without `hash`.
    pub fn compute_hash(&self) -> Result<String, AuditError> {
        let u = Unhashed {
            seq: self.seq,
            ts: &self.ts,
            actor: &self.actor,
            action: &self.action,
            subject: self.subject.as_deref(),
            details: &self.details,
            prev_hash: &self.prev_hash,
        };
        let bytes = serde_json_canonicalizer::to_vec(&u)
            .map_err(|e| AuditError::Encoding(e.to_string()))?;
        Ok(hex::encode(openssl::sha::sha256(&bytes)))
    }

    pub fn from_row(r: EventRow) -> Result<Event, AuditError> {
        let details = serde_json::from_str(&r.details)
            .map_err(|e| AuditError::Encoding(format!("event {} details: {e}", r.seq)))?;
        Ok(Event {
            seq: r.seq,
            ts: r.ts,
            actor: r.actor,
            action: r.action,
            subject: r.subject,
            details,
            prev_hash: r.prev_hash,
            hash: r.hash,
        })
    }
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    System,
    /// An mTLS client: role and certificate fingerprint.
    Client {
        role: String,
        fingerprint: String,
    },
    Subscriber(String),
    Anonymous,
}

impl Actor {
    pub fn as_string(&self) -> String {
        match self {
            Actor::System => "system".into(),
            Actor::Client { role, fingerprint } => format!("{role}:sha256:{fingerprint}"),
            Actor::Subscriber(id) => format!("subscriber:{id}"),
            Actor::Anonymous => "anonymous".into(),
        }
    }
}

/// An event to append: who did it, to what, and the typed step.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub actor: Actor,
    pub action: &'static str,
    pub subject: Option<String>,
    pub details: Value,
}

impl NewEvent {
    /// `actor` did `event` to `subject`.
    pub fn of(actor: &Actor, subject: impl Into<Option<String>>, event: AuditEvent) -> Self {
        NewEvent {
            actor: actor.clone(),
            action: event.action(),
            subject: subject.into(),
            // A plain struct of strings, numbers and options: it always encodes.
            details: serde_json::to_value(&event).unwrap_or(Value::Null),
        }
    }
}

/// Keys that never belong in audit details, at any depth.
const FORBIDDEN_KEYS: &[&str] = &[
    "pin",
    "new_pin",
    "old_pin",
    "pin_block",
    "activation_code",
    "code",
    "private_key",
    "key_material",
    "hsm_pin",
    "secret",
    "password",
];

fn check_details(v: &Value) -> Result<(), AuditError> {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if FORBIDDEN_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                    return Err(AuditError::SecretInDetails(k.clone()));
                }
                check_details(v)?;
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(check_details),
        _ => Ok(()),
    }
}

/// Appends events to the chain inside the caller's transaction.
pub fn append_all(
    conn: &mut DbConn,
    now: OffsetDateTime,
    events: Vec<NewEvent>,
) -> Result<Vec<Event>, AuditError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    for e in &events {
        check_details(&e.details)?;
    }
    audit_rows::lock_chain(conn)?;
    let (mut seq, mut prev) = audit_rows::head(conn)?.unwrap_or((0, GENESIS_HASH.to_string()));
    let ts = rfc3339_millis(now);
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        let details = match e.details {
            Value::Null => Value::Object(Default::default()),
            d => d,
        };
        let mut ev = Event {
            seq,
            ts: ts.clone(),
            actor: e.actor.as_string(),
            action: e.action.to_string(),
            subject: e.subject,
            details,
            prev_hash: prev,
            hash: String::new(),
        };
        ev.hash = ev.compute_hash()?;
        let details_text = serde_json_canonicalizer::to_string(&ev.details)
            .map_err(|e| AuditError::Encoding(e.to_string()))?;
        audit_rows::insert(
            conn,
            &EventRow {
                seq: ev.seq,
                ts: ev.ts.clone(),
                actor: ev.actor.clone(),
                action: ev.action.clone(),
                subject: ev.subject.clone(),
                details: details_text,
                prev_hash: ev.prev_hash.clone(),
                hash: ev.hash.clone(),
            },
        )?;
        prev = ev.hash.clone();
        out.push(ev);
    }
    Ok(out)
}

pub fn append(
    conn: &mut DbConn,
    now: OffsetDateTime,
    event: NewEvent,
) -> Result<Event, AuditError> {
    append_all(conn, now, vec![event])?
        .pop()
        .ok_or_else(|| AuditError::Encoding("nothing appended".into()))
}

/// Calls `f` with every stored event in `seq` order, reading in batches.
pub fn for_each_stored<E>(
    store: &crate::store::Store,
    mut f: impl FnMut(EventRow) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<StoreError>,
{
    let mut after = 0;
    loop {
        let rows = store.read(|c| audit_rows::batch(c, after, 2000))?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.seq;
        for r in rows {
            f(r)?;
        }
    }
}

/// A line of an export file: an event, a checkpoint wrapped as
/// `{"checkpoint": {...}}`, or a signed tree head wrapped as
/// `{"tree_head": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExportLine {
    Checkpoint { checkpoint: Checkpoint },
    TreeHead { tree_head: merkle::SignedTreeHead },
    Event(Event),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: i64, prev: &str) -> Event {
        let mut e = Event {
            seq,
            ts: "2026-11-22T00:00:00.000Z".into(),
            actor: "system".into(),
            action: "system.test".into(),
            subject: None,
            details: json!({"b": 2, "a": [1, "x"]}),
            prev_hash: prev.into(),
            hash: String::new(),
        };
        e.hash = e.compute_hash().unwrap();
        e
    }

    #[test]
    fn hash_is_sha256_of_jcs_without_hash() {
        let e = ev(1, GENESIS_HASH);
        let jcs = format!(
            "{{\"action\":\"system.test\",\"actor\":\"system\",\"details\":{{\"a\":[1,\"x\"],\"b\":2}},\"prev_hash\":\"{GENESIS_HASH}\",\"seq\":1,\"subject\":null,\"ts\":\"2026-11-22T00:00:00.000Z\"}}"
        );
        assert_eq!(e.hash, hex::encode(openssl::sha::sha256(jcs.as_bytes())));
    }

    #[test]
    fn secrets_are_refused_in_details() {
        assert!(check_details(&json!({"serial": "ab", "nested": {"ok": 1}})).is_ok());
        for k in ["pin", "PIN_block", "activation_code"] {
            let err = check_details(&json!({"outer": [{ k: "1234" }]})).unwrap_err();
            assert!(matches!(err, AuditError::SecretInDetails(_)));
            assert!(!err.to_string().contains("1234"));
        }
    }

    #[test]
    fn export_lines_round_trip() {
        let e = ev(1, GENESIS_HASH);
        let line = serde_json::to_string(&ExportLine::Event(e.clone())).unwrap();
        match serde_json::from_str::<ExportLine>(&line).unwrap() {
            ExportLine::Event(back) => assert_eq!(back, e),
            other => panic!("event read as {other:?}"),
        }
        let cp = Checkpoint {
            seq: 1,
            hash: e.hash.clone(),
            ts: e.ts.clone(),
            sig: "AA==".into(),
        };
        let line = serde_json::to_string(&ExportLine::Checkpoint {
            checkpoint: cp.clone(),
        })
        .unwrap();
        assert!(line.starts_with("{\"checkpoint\":"));
        match serde_json::from_str::<ExportLine>(&line).unwrap() {
            ExportLine::Checkpoint { checkpoint } => assert_eq!(checkpoint, cp),
            other => panic!("checkpoint read as {other:?}"),
        }
        let sth = merkle::SignedTreeHead {
            tree_size: 1,
            root_hash: hex::encode(merkle::leaf_hash(&[1; 32])),
            ts: e.ts.clone(),
            sig: "AA==".into(),
        };
        let line = serde_json::to_string(&ExportLine::TreeHead {
            tree_head: sth.clone(),
        })
        .unwrap();
        assert!(line.starts_with("{\"tree_head\":"));
        match serde_json::from_str::<ExportLine>(&line).unwrap() {
            ExportLine::TreeHead { tree_head } => assert_eq!(tree_head, sth),
            other => panic!("tree head read as {other:?}"),
        }
    }
}
