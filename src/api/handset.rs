//! Handset API (`/v1/handset/`, CONTRACT §7): TLS server auth, device-key
//! signatures on every call but `activate` (checked by the domain,
//! [`crate::subscriber::device`]), and PIN blocks.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::{ApiError, State};
use crate::signing;
use crate::store::subscribers::SubscriberRow;
use crate::subscriber::{self, ActivateRequest, DeviceCall};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/activate", web::post().to(activate))
        .route("/pin", web::post().to(change_pin))
        .route("/requests", web::get().to(list_requests))
        .route("/requests/{id}", web::get().to(get_request))
        .route("/requests/{id}/authorize", web::post().to(authorize))
        .route("/requests/{id}/decline", web::post().to(decline));
}

async fn activate(
    state: web::Data<State>,
    body: web::Json<ActivateRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    let done = state
        .domain(move |svc| subscriber::activate(svc, req))
        .await?;
    Ok(HttpResponse::Ok().json(done))
}

/// A handset authenticated by its device key: the subscriber row that
/// authentication read.
#[derive(Debug, Clone)]
pub struct Device(pub SubscriberRow);

async fn authenticate(req: HttpRequest) -> Result<Device, ApiError> {
    let state = req
        .app_data::<web::Data<State>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let method = req.method().to_string();
    let path = req.path().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "/v1/handset".into());
    let row = state
        .domain(move |svc| {
            subscriber::authenticate(
                svc,
                DeviceCall {
                    header: header.as_deref(),
                    method: &method,
                    path: &path,
                    route: &route,
                },
            )
        })
        .await?;
    Ok(Device(row))
}

impl FromRequest for Device {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Device, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(authenticate(req))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinChange {
    old_pin_block: Zeroizing<String>,
    new_pin_block: Zeroizing<String>,
}

async fn change_pin(
    state: web::Data<State>,
    Device(s): Device,
    body: web::Json<PinChange>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    state
        .domain(move |svc| subscriber::change_pin(svc, &s, &b.old_pin_block, &b.new_pin_block))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "pin_changed" })))
}

async fn list_requests(
    state: web::Data<State>,
    Device(s): Device,
) -> Result<HttpResponse, ApiError> {
    let list = state
        .domain(move |svc| signing::pending_for(svc, &s.id))
        .await?;
    Ok(HttpResponse::Ok().json(list))
}

async fn get_request(
    state: web::Data<State>,
    Device(s): Device,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let view = state
        .domain(move |svc| signing::handset_view(svc, &s.id, &id))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorize {
    pin_block: Zeroizing<String>,
}

async fn authorize(
    state: web::Data<State>,
    Device(s): Device,
    path: web::Path<String>,
    body: web::Json<Authorize>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let b = body.into_inner();
    let signed = state
        .domain(move |svc| signing::authorize_handset(svc, &s, &id, &b.pin_block))
        .await?;
    Ok(HttpResponse::Ok().json(signed))
}

async fn decline(
    state: web::Data<State>,
    Device(s): Device,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let declined = state
        .domain(move |svc| signing::decline(svc, &s.id, &id))
        .await?;
    Ok(HttpResponse::Ok().json(declined))
}
