//! Handset API (`/v1/handset/`, CONTRACT §7): TLS server auth, device-key
//! signatures on every call but `activate` (checked by the domain,
//! [`crate::subscriber::device`]), and PIN blocks.
//!
//! The device signature is checked before the body is read, so a caller
//! without one gets 401 whatever it sends; a `tmcs-dev-v2` body must then
//! hash to the digest the signature covers.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::body::{parse_json, read_limited};
use super::{ApiError, State};
use crate::relay::{instruments, receipt};
use crate::signing;
use crate::store::subscribers::SubscriberRow;
use crate::subscriber::{self, ActivateRequest, Authenticated, DeviceCall};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/activate", web::post().to(activate))
        .route("/pin", web::post().to(change_pin))
        .route("/requests", web::get().to(list_requests))
        .route("/requests/{id}", web::get().to(get_request))
        .route("/requests/{id}/authorize", web::post().to(authorize))
        .route("/requests/{id}/decline", web::post().to(decline))
        .route("/receipts", web::get().to(list_receipts))
        .route("/receipts/{id}", web::get().to(get_receipt))
        .route("/instruments", web::post().to(link_instrument))
        .route("/instruments", web::get().to(list_instruments))
        .route(
            "/instruments/{id}/confirm",
            web::post().to(confirm_instrument),
        )
        .route("/instruments/{id}", web::delete().to(disconnect_instrument));
}

/// `POST /v1/handset/instruments` (no `Debug`: the account is not logged).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    account: Zeroizing<String>,
    alias: String,
}

/// `POST /v1/handset/instruments`: the instrument is stored, the bank
/// reserves the amount (a direct call: the amount is never stored), and
/// the answer is the instrument's status (`verifying` normally).
async fn link_instrument(
    state: web::Data<State>,
    device: Device,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let b: LinkBody = device.body(&state, payload).await?;
    let sub = device.subscriber().clone();
    let (id, call) = state
        .domain(move |svc| instruments::prepare(svc, &sub, &b.account, &b.alias))
        .await?;
    let answer = state.app.svc.relay.call(call).await;
    let linked = state
        .domain(move |svc| instruments::reserved(svc, &id, answer))
        .await?;
    Ok(HttpResponse::Accepted().json(linked))
}

async fn list_instruments(
    state: web::Data<State>,
    device: Device,
) -> Result<HttpResponse, ApiError> {
    let sub = device.subscriber().id.clone();
    let list = state
        .domain(move |svc| instruments::list(svc, &sub))
        .await?;
    Ok(HttpResponse::Ok().json(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    amount: Zeroizing<String>,
}

async fn confirm_instrument(
    state: web::Data<State>,
    device: Device,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let b: ConfirmBody = device.body(&state, payload).await?;
    let sub = device.subscriber().id.clone();
    let done = state
        .domain(move |svc| instruments::confirm(svc, &sub, &id, &b.amount))
        .await?;
    Ok(HttpResponse::Ok().json(done))
}

async fn disconnect_instrument(
    state: web::Data<State>,
    device: Device,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    device.empty_body(&state, payload).await?;
    let sub = device.subscriber().id.clone();
    let done = state
        .domain(move |svc| instruments::disconnect(svc, &sub, &id))
        .await?;
    Ok(HttpResponse::Ok().json(done))
}

/// `GET /v1/handset/receipts`: the payer's receipts, newest first.
async fn list_receipts(state: web::Data<State>, device: Device) -> Result<HttpResponse, ApiError> {
    let id = device.subscriber().id.clone();
    let list = state.domain(move |svc| receipt::receipts(svc, &id)).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// `GET /v1/handset/receipts/{request_id}`.
async fn get_receipt(
    state: web::Data<State>,
    device: Device,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let sub = device.subscriber().id.clone();
    let r = state
        .domain(move |svc| receipt::receipt(svc, &sub, &id))
        .await?;
    Ok(HttpResponse::Ok().json(r))
}

/// The client's address.
pub(super) fn source(req: &HttpRequest) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

async fn activate(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_limited(payload, state.limits.max_bytes, state.limits.deadline).await?;
    let activation: ActivateRequest = parse_json(&req, &body)?;
    let source = source(&req);
    let done = state
        .domain(move |svc| subscriber::activate(svc, activation, source))
        .await?;
    Ok(HttpResponse::Ok().json(done))
}

/// What a device-authenticated call carries into its handler.
#[derive(Debug, Clone)]
pub struct Device {
    auth: Authenticated,
    req: HttpRequest,
}

impl Device {
    pub fn subscriber(&self) -> &SubscriberRow {
        &self.auth.subscriber
    }

    /// Reads the JSON body, after checking a v2 signature covers it.
    async fn body<T: DeserializeOwned + Send + 'static>(
        &self,
        state: &web::Data<State>,
        payload: web::Payload,
    ) -> Result<T, ApiError> {
        let body = read_limited(payload, state.limits.max_bytes, state.limits.deadline).await?;
        self.check(state, body.clone()).await?;
        parse_json(&self.req, &body)
    }

    /// Reads a body that carries nothing (checked against a v2 digest).
    async fn empty_body(
        &self,
        state: &web::Data<State>,
        payload: web::Payload,
    ) -> Result<(), ApiError> {
        let body = read_limited(payload, 1024, state.limits.deadline).await?;
        self.check(state, body).await
    }

    /// A v2 signature's digest must be the body's.
    async fn check(&self, state: &web::Data<State>, body: web::Bytes) -> Result<(), ApiError> {
        if self.auth.body_sha256.is_none() {
            return Ok(());
        }
        let auth = self.auth.clone();
        let (method, path, route, source) = call_parts(&self.req);
        state
            .domain(move |svc| {
                subscriber::check_body(
                    svc,
                    &auth,
                    DeviceCall {
                        header: None,
                        method: &method,
                        path: &path,
                        route: &route,
                        source,
                    },
                    &body,
                )
            })
            .await
    }
}

fn call_parts(req: &HttpRequest) -> (String, String, String, Option<std::net::IpAddr>) {
    (
        req.method().to_string(),
        req.path().to_string(),
        req.match_pattern().unwrap_or_else(|| "/v1/handset".into()),
        source(req),
    )
}

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
    let (method, path, route, source) = call_parts(&req);
    let auth = state
        .domain(move |svc| {
            subscriber::authenticate(
                svc,
                DeviceCall {
                    header: header.as_deref(),
                    method: &method,
                    path: &path,
                    route: &route,
                    source,
                },
            )
        })
        .await?;
    Ok(Device { auth, req })
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
    device: Device,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let b: PinChange = device.body(&state, payload).await?;
    let s = device.subscriber().clone();
    state
        .domain(move |svc| subscriber::change_pin(svc, &s, &b.old_pin_block, &b.new_pin_block))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "pin_changed" })))
}

async fn list_requests(state: web::Data<State>, device: Device) -> Result<HttpResponse, ApiError> {
    let id = device.subscriber().id.clone();
    let list = state
        .domain(move |svc| signing::pending_for(svc, &id))
        .await?;
    Ok(HttpResponse::Ok().json(list))
}

async fn get_request(
    state: web::Data<State>,
    device: Device,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let sub = device.subscriber().id.clone();
    let view = state
        .domain(move |svc| signing::handset_view(svc, &sub, &id))
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
    device: Device,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let b: Authorize = device.body(&state, payload).await?;
    let s = device.subscriber().clone();
    let signed = state
        .domain(move |svc| signing::authorize_handset(svc, &s, &id, &b.pin_block))
        .await?;
    Ok(HttpResponse::Ok().json(signed))
}

async fn decline(
    state: web::Data<State>,
    device: Device,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    device.empty_body(&state, payload).await?;
    let sub = device.subscriber().id.clone();
    let declined = state
        .domain(move |svc| signing::decline(svc, &sub, &id))
        .await?;
    Ok(HttpResponse::Ok().json(declined))
}
