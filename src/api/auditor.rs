//! Auditor API (`/v1/audit/`, role `auditor`, read-only).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, Caller, State};
use crate::audit::{Checkpoint, Event};
use crate::store::audit_rows::{self, EventFilter};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(events))
        .route("/checkpoints", web::get().to(checkpoints));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    subject: Option<String>,
    action: Option<String>,
    after_seq: Option<i64>,
    limit: Option<i64>,
}

const MAX_LIMIT: i64 = 1000;

fn limit(l: Option<i64>) -> Result<i64, ApiError> {
    match l {
        None => Ok(100),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::coded(
            "request.invalid",
            format!("limit must be 1..={MAX_LIMIT}"),
        )),
    }
}

async fn events(
    state: web::Data<State>,
    _caller: Caller,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let filter = EventFilter {
        subject: q.subject.filter(|s| !s.is_empty()),
        action: q.action.filter(|s| !s.is_empty()),
        after_seq: q.after_seq.unwrap_or(0).max(0),
        limit: limit(q.limit)?,
    };
    let app = state.app.clone();
    let events = state
        .blocking(move || {
            let rows = app
                .store
                .read(|c| audit_rows::list(c, &filter))
                .map_err(|e| ApiError::unavailable("database", e))?;
            rows.into_iter()
                .map(|r| Event::from_row(r).map_err(ApiError::internal))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    let next = events.last().map(|e| e.seq);
    Ok(HttpResponse::Ok().json(json!({ "events": events, "next_after_seq": next })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointQuery {
    after_seq: Option<i64>,
    limit: Option<i64>,
}

async fn checkpoints(
    state: web::Data<State>,
    _caller: Caller,
    q: web::Query<CheckpointQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let (after, lim) = (q.after_seq.unwrap_or(0).max(0), limit(q.limit)?);
    let app = state.app.clone();
    let cps = state
        .blocking(move || {
            app.store
                .read(|c| audit_rows::checkpoints(c, after, lim))
                .map_err(|e| ApiError::unavailable("database", e))
        })
        .await?;
    let cps: Vec<Checkpoint> = cps.into_iter().map(Checkpoint::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "checkpoints": cps })))
}
