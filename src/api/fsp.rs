//! FSP API (`/v1/fsp/`, role `fsp`, CONTRACT §6).

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::body::read_capped;
use super::{ApiError, Caller, State};
use crate::ims::MAX_IMS_BYTES;
use crate::signing;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/messages", web::post().to(submit))
        .route("/requests/{id}", web::get().to(status));
}

async fn submit(
    state: web::Data<State>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ct = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ct != "application/xml" && ct != "text/xml" {
        return Err(ApiError::coded(
            "unsupported_media_type",
            "expected Content-Type: application/xml",
        ));
    }
    let body = read_capped(payload, MAX_IMS_BYTES).await?;
    let app = state.app.clone();
    let r = state
        .blocking(move || {
            Ok(signing::submit(
                &app,
                caller.party_id.as_deref(),
                &caller.actor(),
                &body,
            )?)
        })
        .await?;
    let row = &r.request;
    let body = json!({
        "request_id": row.id,
        "status": signing::public_status(&row.status),
        "expires_at": crate::clock::rfc3339_seconds(
            time::OffsetDateTime::from_unix_timestamp(row.expires_at).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        ),
        "verification_code": row.verification_code,
        "dtbs_sha256": row.dtbs_sha256,
        "status_url": format!("/v1/fsp/requests/{}", row.id),
    });
    Ok(if r.created {
        HttpResponse::Accepted().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

async fn status(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let app = state.app.clone();
    let Some(fsp) = caller.party_id.clone() else {
        return Err(ApiError::coded(
            "auth.forbidden",
            "this FSP client is not bound to a registered FSP party",
        ));
    };
    let view = state
        .blocking(move || Ok(signing::fsp_view(&app, &fsp, &id)?))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}
