//! What auditors read (`/v1/audit/`): events by filter, checkpoints, signed
//! tree heads and Merkle proofs (CONTRACT §13).

use serde::Serialize;

use super::merkle::SignedTreeHead;
use super::tree::{self, ConsistencyProof, InclusionProof};
use super::{AuditError, Checkpoint, Event};
use crate::app::Services;
use crate::error::{reject, DomainError, DomainResult, Problem};
use crate::store::audit_rows::{self, EventFilter};

/// `GET /v1/audit/events`.
#[derive(Debug, Serialize)]
pub struct EventsPage {
    pub events: Vec<Event>,
    /// The `after_seq` of the next page.
    pub next_after_seq: Option<i64>,
}

pub fn events(svc: &Services, filter: &EventFilter) -> DomainResult<EventsPage> {
    let rows = svc.store.read(|c| audit_rows::list(c, filter))?;
    let events = rows
        .into_iter()
        .map(Event::from_row)
        .collect::<Result<Vec<_>, AuditError>>()?;
    Ok(EventsPage {
        next_after_seq: events.last().map(|e| e.seq),
        events,
    })
}

/// `GET /v1/audit/checkpoints`.
#[derive(Debug, Serialize)]
pub struct CheckpointsPage {
    pub checkpoints: Vec<Checkpoint>,
}

pub fn checkpoints(svc: &Services, after_seq: i64, limit: i64) -> DomainResult<CheckpointsPage> {
    let rows = svc
        .store
        .read(|c| audit_rows::checkpoints(c, after_seq, limit))?;
    Ok(CheckpointsPage {
        checkpoints: rows.into_iter().map(Checkpoint::from).collect(),
    })
}

/// A proof asked for outside the log is the caller's mistake (400).
fn refuse_range(e: AuditError) -> DomainError {
    match e {
        AuditError::Range(detail) => reject(Problem::AuditRangeInvalid, detail),
        other => other.into(),
    }
}

/// `GET /v1/audit/sth[?tree_size=N]`: the newest signed tree head, or the
/// one of `tree_size` events.
pub fn sth(svc: &Services, tree_size: Option<i64>) -> DomainResult<SignedTreeHead> {
    let found = match tree_size {
        None => tree::latest_sth(&svc.store)?,
        Some(n) => tree::sth_of_size(&svc.store, n)?,
    };
    found.ok_or_else(|| {
        reject(
            Problem::AuditSthNotFound,
            match tree_size {
                None => "no tree head has been signed yet".to_string(),
                Some(n) => format!("no tree head of size {n} was signed"),
            },
        )
    })
}

/// `GET /v1/audit/proof/inclusion?seq=S&tree_size=N`.
pub fn inclusion(svc: &Services, seq: i64, tree_size: i64) -> DomainResult<InclusionProof> {
    tree::inclusion(&svc.store, seq, tree_size).map_err(refuse_range)
}

/// `GET /v1/audit/proof/consistency?first=M&second=N`.
pub fn consistency(svc: &Services, first: i64, second: i64) -> DomainResult<ConsistencyProof> {
    tree::consistency(&svc.store, first, second).map_err(refuse_range)
}
