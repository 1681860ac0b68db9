//! Operator API (`/v1/admin/`, role `operator`).

use actix_web::{web, HttpResponse};

use super::{ApiError, Caller, State};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/subscribers/{msisdn}", web::get().to(get_subscriber));
}

/// E.164 with the leading `+`: 8–15 digits.
pub fn valid_msisdn(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

async fn get_subscriber(
    _state: web::Data<State>,
    _caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msisdn = path.into_inner();
    if !valid_msisdn(&msisdn) {
        return Err(ApiError::coded(
            "request.invalid",
            "msisdn must be E.164: + and 8-15 digits",
        ));
    }
    Err(ApiError::coded(
        "subscriber.not_found",
        "no subscriber with this MSISDN",
    ))
}
