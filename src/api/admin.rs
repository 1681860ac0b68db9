//! Operator API (`/v1/admin/`, role `operator`, CONTRACT §8).

use crate::problem::Problem;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::body::read_limited;
use super::body::JsonBody;
use super::{ApiError, Caller, State};
use crate::party::{self, Credential, NewParty};
use crate::pki::lifecycle::{self, Transition};
use crate::pki::Reason;
use crate::relay;
use crate::states::DeliveryStatus;
use crate::subscriber::{self, Registration};

/// `{"reason": "…"}` bodies are tiny.
const REASON_BODY_MAX: usize = 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/subscribers", web::post().to(register))
        .route("/subscribers/{msisdn}", web::get().to(get_subscriber))
        .route("/subscribers/{msisdn}/block", web::post().to(block))
        .route("/subscribers/{msisdn}/unblock", web::post().to(unblock))
        .route(
            "/subscribers/{msisdn}/disconnect",
            web::post().to(disconnect),
        )
        .route("/subscribers/{msisdn}/renew", web::post().to(renew))
        .route("/certificates/{serial}/revoke", web::post().to(revoke_cert))
        .route(
            "/certificates/{serial}/suspend",
            web::post().to(suspend_cert),
        )
        .route("/certificates/{serial}/resume", web::post().to(resume_cert))
        .route("/parties", web::post().to(register_party))
        .route("/parties/{party_id}", web::get().to(get_party))
        .route("/parties/{party_id}/suspend", web::post().to(suspend_party))
        .route("/parties/{party_id}/resume", web::post().to(resume_party))
        .route("/parties/{party_id}/revoke", web::post().to(revoke_party))
        .route("/relay", web::get().to(relay_list))
        .route("/relay/{delivery_id}/retry", web::post().to(relay_retry));
}

/// The statuses `GET /v1/admin/relay?status=` takes (CONTRACT §11).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RelayStatus {
    /// Waiting, or in flight.
    Pending,
    Failed,
    Delivered,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayQuery {
    /// All when absent.
    status: Option<RelayStatus>,
    /// 1–1000, default 100.
    limit: Option<i64>,
}

/// `GET /v1/admin/relay` (CONTRACT §11).
async fn relay_list(
    state: web::Data<State>,
    _caller: Caller,
    q: web::Query<RelayQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::coded(
            Problem::RequestInvalid,
            "limit must be 1..=1000",
        ));
    }
    let status = q.status.map(|s| match s {
        RelayStatus::Pending => DeliveryStatus::Pending,
        RelayStatus::Failed => DeliveryStatus::Failed,
        RelayStatus::Delivered => DeliveryStatus::Delivered,
    });
    let list = state
        .domain(move |svc| relay::outcome::list(svc, status, limit))
        .await?;
    Ok(HttpResponse::Ok().json(list))
}

/// `POST /v1/admin/relay/{delivery_id}/retry`.
async fn relay_retry(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let view = state
        .domain(move |svc| relay::outcome::retry(svc, &caller.actor(), &id))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    msisdn: String,
    display_name: String,
    kyc_ref: String,
    /// Additive: the payer's iMS person id, if `from` will name it that way.
    party_id: Option<String>,
}

async fn register(
    state: web::Data<State>,
    caller: Caller,
    JsonBody(b): JsonBody<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let issued = state
        .domain(move |svc| {
            subscriber::register(
                svc,
                &caller.actor(),
                Registration {
                    msisdn: b.msisdn,
                    display_name: b.display_name,
                    kyc_ref: b.kyc_ref,
                    party_id: b.party_id,
                },
            )
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(issued))
}

async fn get_subscriber(
    state: web::Data<State>,
    _caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    let view = state
        .domain(move |svc| subscriber::view(svc, &msisdn))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn block(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    let done = state
        .domain(move |svc| subscriber::block(svc, &caller.actor(), &msisdn))
        .await?;
    Ok(HttpResponse::Ok().json(done))
}

async fn unblock(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    let issued = state
        .domain(move |svc| subscriber::unblock(svc, &caller.actor(), &msisdn))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(issued))
}

async fn disconnect(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    let done = state
        .domain(move |svc| subscriber::disconnect(svc, &caller.actor(), &msisdn))
        .await?;
    Ok(HttpResponse::Ok().json(done))
}

async fn renew(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    let r = state
        .domain(move |svc| subscriber::renew(svc, &caller.actor(), &msisdn))
        .await?;
    Ok(HttpResponse::Ok().json(r))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
}

/// An optional `{"reason": "<RFC 5280 name>"}` body; empty means `default`.
fn parse_reason(body: &[u8], default: Reason) -> Result<Reason, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(default);
    }
    let b: ReasonBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::coded(Problem::RequestMalformed, format!("invalid JSON: {e}")))?;
    match b.reason {
        None => Ok(default),
        Some(r) => Reason::parse(&r).ok_or_else(|| {
            ApiError::coded(
                Problem::RequestInvalid,
                "reason must be an RFC 5280 name (keyCompromise, superseded, cessationOfOperation, …)",
            )
        }),
    }
}

async fn cert_transition(
    state: web::Data<State>,
    caller: Caller,
    serial: String,
    t: Transition,
) -> Result<HttpResponse, ApiError> {
    let done = state
        .domain(move |svc| lifecycle::apply(svc, &caller.actor(), &serial, t))
        .await?;
    Ok(HttpResponse::Ok().json(done))
}

async fn revoke_cert(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_limited(body, REASON_BODY_MAX, state.limits.deadline).await?;
    let reason = parse_reason(&body, Reason::Unspecified)?;
    cert_transition(state, caller, path.into_inner(), Transition::Revoke(reason)).await
}

async fn suspend_cert(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    cert_transition(state, caller, path.into_inner(), Transition::Suspend).await
}

async fn resume_cert(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    cert_transition(state, caller, path.into_inner(), Transition::Resume).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartyBody {
    party_id: String,
    kind: String,
    certificate: Option<String>,
    csr: Option<String>,
    callback_url: Option<String>,
}

async fn register_party(
    state: web::Data<State>,
    caller: Caller,
    JsonBody(b): JsonBody<PartyBody>,
) -> Result<HttpResponse, ApiError> {
    let credential = match (b.certificate, b.csr) {
        (Some(c), None) => Credential::Certificate(c),
        (None, Some(c)) => Credential::Csr(c),
        _ => {
            return Err(ApiError::coded(
                Problem::RequestInvalid,
                "give exactly one of certificate (PEM) or csr (PEM)",
            ))
        }
    };
    let view = state
        .domain(move |svc| {
            party::register(
                svc,
                &caller.actor(),
                NewParty {
                    party_id: b.party_id,
                    kind: b.kind,
                    credential,
                    callback_url: b.callback_url,
                },
            )
        })
        .await?;
    Ok(HttpResponse::Created().json(view))
}

async fn get_party(
    state: web::Data<State>,
    _caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let view = state.domain(move |svc| party::view(svc, &id)).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn party_transition(
    state: web::Data<State>,
    caller: Caller,
    id: String,
    t: Transition,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .domain(move |svc| party::transition(svc, &caller.actor(), &id, t))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn suspend_party(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    party_transition(state, caller, path.into_inner(), Transition::Suspend).await
}

async fn resume_party(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    party_transition(state, caller, path.into_inner(), Transition::Resume).await
}

async fn revoke_party(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_limited(body, REASON_BODY_MAX, state.limits.deadline).await?;
    let reason = parse_reason(&body, party::default_reason())?;
    party_transition(state, caller, path.into_inner(), Transition::Revoke(reason)).await
}
