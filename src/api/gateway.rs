//! Gateway API (`/v1/gateway/`, role `gateway`): USSD/SMS authorisation of
//! tier `small` requests with the PIN (CONTRACT §7).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::body::JsonBody;
use super::{ApiError, Caller, State};
use crate::signing;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/authorize", web::post().to(authorize));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayAuth {
    msisdn: String,
    request_id: String,
    pin: Zeroizing<String>,
}

async fn authorize(
    state: web::Data<State>,
    caller: Caller,
    JsonBody(b): JsonBody<GatewayAuth>,
) -> Result<HttpResponse, ApiError> {
    let signed = state
        .domain(move |svc| {
            signing::authorize_gateway(svc, &caller.actor(), &b.msisdn, &b.request_id, &b.pin)
        })
        .await?;
    Ok(HttpResponse::Ok().json(signed))
}
