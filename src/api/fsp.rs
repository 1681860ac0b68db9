//! FSP API (`/v1/fsp/`, role `fsp`, CONTRACT §6).

use crate::problem::Problem;
use actix_web::{web, HttpRequest, HttpResponse};

use super::body::{read_limited, JsonBody};
use super::{ApiError, Caller, State};
use crate::ims::MAX_IMS_BYTES;
use crate::relay::outcome::{self, OutcomeReport};
use crate::signing::{self, views::SubmitView};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/messages", web::post().to(submit))
        .route("/requests/{id}", web::get().to(status))
        .route("/requests/{id}/outcome", web::post().to(outcome));
}

/// The caller's FSP party, or 403.
fn fsp_of(caller: &Caller) -> Result<String, ApiError> {
    caller.party_id.clone().ok_or_else(|| {
        ApiError::coded(
            Problem::AuthForbidden,
            "this FSP client is not bound to a registered FSP party",
        )
    })
}

/// `POST /v1/fsp/requests/{id}/outcome` (CONTRACT §11, mode `fsp`).
async fn outcome(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    JsonBody(b): JsonBody<OutcomeReport>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let fsp = fsp_of(&caller)?;
    let view = state
        .domain(move |svc| outcome::report(svc, &fsp, &caller.actor(), &id, b))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn submit(
    state: web::Data<State>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ct = super::body::media_type(&req);
    if ct != "application/xml" && ct != "text/xml" {
        return Err(ApiError::coded(
            Problem::UnsupportedMediaType,
            "expected Content-Type: application/xml",
        ));
    }
    let body = read_limited(payload, MAX_IMS_BYTES, state.limits.deadline).await?;
    let r = state
        .domain(move |svc| {
            let r = signing::submit(svc, caller.party_id.as_deref(), &caller.actor(), &body)?;
            Ok((
                SubmitView::of(&r, svc.clock.now().unix_timestamp()),
                r.created,
            ))
        })
        .await?;
    Ok(match r {
        (view, true) => HttpResponse::Accepted().json(view),
        (view, false) => HttpResponse::Ok().json(view),
    })
}

async fn status(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let fsp = fsp_of(&caller)?;
    let view = state
        .domain(move |svc| signing::fsp_view(svc, &fsp, &id))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}
