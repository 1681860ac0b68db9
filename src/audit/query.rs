//! What auditors read (`/v1/audit/`): events by filter, and checkpoints.

use serde::Serialize;

use super::{AuditError, Checkpoint, Event};
use crate::app::Services;
use crate::error::DomainResult;
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
