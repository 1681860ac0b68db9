//! Operator API (`/v1/admin/`, role `operator`, CONTRACT §8).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::body::read_capped;
use super::{ApiError, Caller, State};

/// `{"reason": "…"}` bodies are tiny.
const REASON_BODY_MAX: usize = 1024;
use crate::party::{self, Credential, NewParty};
use crate::pki::lifecycle::{self, Transition};
use crate::pki::{cert::normalize_serial, Reason};
use crate::subscriber::{self, Registration};

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
        .route("/parties/{party_id}/revoke", web::post().to(revoke_party));
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
    body: web::Json<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let app = state.app.clone();
    let issued = state
        .blocking(move || {
            Ok(subscriber::register(
                &app,
                &caller.actor(),
                Registration {
                    msisdn: b.msisdn,
                    display_name: b.display_name,
                    kyc_ref: b.kyc_ref,
                    party_id: b.party_id,
                },
            )?)
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(json!({
            "subscriber_id": issued.subscriber_id,
            "activation_code": issued.activation_code,
            "activation_expires_at": issued.activation_expires_at,
            "reactivated": issued.reactivated,
        })))
}

async fn get_subscriber(
    state: web::Data<State>,
    _caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    let app = state.app.clone();
    let view = state
        .blocking(move || Ok(subscriber::view(&app, &msisdn)?))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn block(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    let app = state.app.clone();
    state
        .blocking(move || Ok(subscriber::block(&app, &caller.actor(), &msisdn)?))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "state": subscriber::BLOCKED })))
}

async fn unblock(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    let app = state.app.clone();
    let issued = state
        .blocking(move || Ok(subscriber::unblock(&app, &caller.actor(), &msisdn)?))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(json!({
            "subscriber_id": issued.subscriber_id,
            "state": subscriber::PENDING,
            "activation_code": issued.activation_code,
            "activation_expires_at": issued.activation_expires_at,
        })))
}

async fn disconnect(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    let app = state.app.clone();
    let revoked = state
        .blocking(move || Ok(subscriber::disconnect(&app, &caller.actor(), &msisdn)?))
        .await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "state": subscriber::ARCHIVED, "revoked_certificates": revoked })))
}

async fn renew(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    let app = state.app.clone();
    let r = state
        .blocking(move || Ok(subscriber::renew(&app, &caller.actor(), &msisdn)?))
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
        .map_err(|e| ApiError::coded("request.malformed", format!("invalid JSON: {e}")))?;
    match b.reason {
        None => Ok(default),
        Some(r) => Reason::parse(&r).ok_or_else(|| {
            ApiError::coded(
                "request.invalid",
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
    let serial = normalize_serial(&serial)
        .ok_or_else(|| ApiError::coded("request.invalid", "serial must be hex"))?;
    let app = state.app.clone();
    let row = state
        .blocking(move || {
            let now = app.clock.now();
            let row = app.store.write(|c| -> crate::error::DomainResult<_> {
                let (row, ev) = lifecycle::transition(c, &caller.actor(), &serial, t, now)?;
                crate::audit::append(c, now, ev)?;
                Ok(row)
            })?;
            Ok(row)
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "serial": row.serial,
        "status": row.status,
        "revocation_reason": row.revocation_reason,
    })))
}

async fn revoke_cert(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_capped(body, REASON_BODY_MAX).await?;
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
    body: web::Json<PartyBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let credential = match (b.certificate, b.csr) {
        (Some(c), None) => Credential::Certificate(c),
        (None, Some(c)) => Credential::Csr(c),
        _ => {
            return Err(ApiError::coded(
                "request.invalid",
                "give exactly one of certificate (PEM) or csr (PEM)",
            ))
        }
    };
    let app = state.app.clone();
    let view = state
        .blocking(move || {
            Ok(party::register(
                &app,
                &caller.actor(),
                NewParty {
                    party_id: b.party_id,
                    kind: b.kind,
                    credential,
                    callback_url: b.callback_url,
                },
            )?)
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
    let app = state.app.clone();
    let view = state.blocking(move || Ok(party::view(&app, &id)?)).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn party_transition(
    state: web::Data<State>,
    caller: Caller,
    id: String,
    t: Transition,
) -> Result<HttpResponse, ApiError> {
    let app = state.app.clone();
    let view = state
        .blocking(move || Ok(party::transition(&app, &caller.actor(), &id, t)?))
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
    let body = read_capped(body, REASON_BODY_MAX).await?;
    let reason = parse_reason(&body, party::default_reason())?;
    party_transition(state, caller, path.into_inner(), Transition::Revoke(reason)).await
}
