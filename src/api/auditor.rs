//! Auditor API (`/v1/audit/`, role `auditor`, read-only).

use super::{ApiError, Caller, State};
use crate::audit::{evidence as bundle, query};
use crate::problem::Problem;
use crate::store::audit_rows::EventFilter;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(events))
        .route("/checkpoints", web::get().to(checkpoints))
        .route("/sth", web::get().to(sth))
        .route("/proof/inclusion", web::get().to(inclusion))
        .route("/proof/consistency", web::get().to(consistency))
        .route("/evidence/{request_id}", web::get().to(evidence));
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
            Problem::RequestInvalid,
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
    let page = state.domain(move |svc| query::events(svc, &filter)).await?;
    Ok(HttpResponse::Ok().json(page))
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
    let page = state
        .domain(move |svc| query::checkpoints(svc, after, lim))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /v1/audit/evidence/{request_id}` (CONTRACT §13).
async fn evidence(
    state: web::Data<State>,
    _caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let b = state.domain(move |svc| bundle::bundle(svc, &id)).await?;
    Ok(HttpResponse::Ok().json(b))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SthQuery {
    tree_size: Option<i64>,
}

async fn sth(
    state: web::Data<State>,
    _caller: Caller,
    q: web::Query<SthQuery>,
) -> Result<HttpResponse, ApiError> {
    let tree_size = q.into_inner().tree_size;
    let head = state.domain(move |svc| query::sth(svc, tree_size)).await?;
    Ok(HttpResponse::Ok().json(head))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    seq: i64,
    tree_size: i64,
}

async fn inclusion(
    state: web::Data<State>,
    _caller: Caller,
    q: web::Query<InclusionQuery>,
) -> Result<HttpResponse, ApiError> {
    let InclusionQuery { seq, tree_size } = q.into_inner();
    let proof = state
        .domain(move |svc| query::inclusion(svc, seq, tree_size))
        .await?;
    Ok(HttpResponse::Ok().json(proof))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    first: i64,
    second: i64,
}

async fn consistency(
    state: web::Data<State>,
    _caller: Caller,
    q: web::Query<ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    let ConsistencyQuery { first, second } = q.into_inner();
    let proof = state
        .domain(move |svc| query::consistency(svc, first, second))
        .await?;
    Ok(HttpResponse::Ok().json(proof))
}
