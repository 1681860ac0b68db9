//! Handset API (`/v1/handset/`, CONTRACT §7): TLS server auth, device-key
//! signatures on every call but `activate`, and PIN blocks.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::{ApiError, State};
use crate::audit::{self, Actor, NewEvent};
use crate::signing;
use crate::store::subscribers;
use crate::subscriber::{self, ActivateRequest};

/// Allowed distance between the header's `ts` and our clock.
pub const DEVICE_SKEW_SECONDS: i64 = 300;

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
    let app = state.app.clone();
    let done = state
        .blocking(move || Ok(subscriber::activate(&app, req)?))
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "certificate": done.certificate,
        "chain": done.chain,
        "serial": done.serial,
    })))
}

/// A handset authenticated by its device key.
#[derive(Debug, Clone)]
pub struct Device {
    pub subscriber_id: String,
}

/// `TMCS-Device msisdn="+…",ts="<unix seconds>",sig="<b64>"`
pub fn parse_device_header(h: &str) -> Option<(String, i64, Vec<u8>)> {
    let rest = h.strip_prefix("TMCS-Device ")?;
    let (mut msisdn, mut ts, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.strip_prefix('"')?.strip_suffix('"')?;
        match k {
            "msisdn" if msisdn.is_none() => msisdn = Some(v.to_string()),
            "ts" if ts.is_none() => ts = Some(v.parse::<i64>().ok()?),
            "sig" if sig.is_none() => {
                sig = Some(base64::engine::general_purpose::STANDARD.decode(v).ok()?)
            }
            _ => return None,
        }
    }
    Some((msisdn?, ts?, sig?))
}

/// The bytes the device key signs.
pub fn device_message(method: &str, path: &str, msisdn: &str, ts: i64) -> String {
    format!("tmcs-dev-v1\n{method}\n{path}\n{msisdn}\n{ts}\n")
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
    let method = req.method().to_string();
    let path = req.path().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "/v1/handset".into());
    let st = state.clone();
    state
        .blocking(move || {
            let app = &st.app;
            let now = app.clock.now();
            let deny = |actor: Actor, reason: &str| -> ApiError {
                let ev = NewEvent::new(
                    &actor,
                    "auth.denied",
                    None,
                    json!({ "route": route, "method": method, "reason": reason }),
                );
                if let Err(e) = app.store.write(|c| audit::append(c, now, ev)) {
                    tracing::error!(error = %e, "cannot audit a device authentication failure");
                }
                ApiError::coded("auth.device_signature", reason.to_string())
            };
            let Some((msisdn, ts, sig)) = header.as_deref().and_then(parse_device_header) else {
                return Err(deny(
                    Actor::Anonymous,
                    "missing or malformed TMCS-Device authorization",
                ));
            };
            if (now.unix_timestamp() - ts).abs() > DEVICE_SKEW_SECONDS {
                return Err(deny(
                    Actor::Anonymous,
                    "device timestamp outside the allowed skew",
                ));
            }
            let s = app
                .store
                .read(|c| subscribers::by_msisdn(c, &msisdn))
                .map_err(|e| ApiError::unavailable("database", e))?;
            let Some(s) = s else {
                return Err(deny(Actor::Anonymous, "unknown device"));
            };
            let actor = Actor::Subscriber(s.id.clone());
            let Some(spki) = s
                .device_spki
                .as_deref()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            else {
                return Err(deny(actor, "no device key is registered"));
            };
            let name = format!("spki:{}", hex::encode(openssl::sha::sha256(&spki)));
            let ok = app
                .keys
                .get_or_load(&name, || crate::keycache::from_spki_der(&spki))
                .and_then(|k| {
                    let mut v = Verifier::new(MessageDigest::sha256(), &k.key)?;
                    v.verify_oneshot(&sig, device_message(&method, &path, &msisdn, ts).as_bytes())
                })
                .unwrap_or(false);
            if !ok {
                return Err(deny(actor, "device signature does not verify"));
            }
            // A state-changing call is accepted once per signature: a captured
            // request cannot be played again inside the skew window.
            if method != "GET" {
                let sig_hash = hex::encode(openssl::sha::sha256(&sig));
                let until = ts + DEVICE_SKEW_SECONDS + 1;
                let fresh = app
                    .store
                    .write(|c| crate::store::replay::first_use(c, &sig_hash, until))
                    .map_err(|e| ApiError::unavailable("database", e))?;
                if !fresh {
                    return Err(deny(
                        actor,
                        "device signature already used; sign each request anew",
                    ));
                }
            }
            Ok(Device {
                subscriber_id: s.id,
            })
        })
        .await
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
    body: web::Json<PinChange>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let app = state.app.clone();
    state
        .blocking(move || {
            Ok(subscriber::change_pin(
                &app,
                &device.subscriber_id,
                &b.old_pin_block,
                &b.new_pin_block,
            )?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "pin_changed" })))
}

async fn list_requests(state: web::Data<State>, device: Device) -> Result<HttpResponse, ApiError> {
    let app = state.app.clone();
    let list = state
        .blocking(move || Ok(signing::pending_for(&app, &device.subscriber_id)?))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "requests": list })))
}

async fn get_request(
    state: web::Data<State>,
    device: Device,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let app = state.app.clone();
    let view = state
        .blocking(move || Ok(signing::handset_view(&app, &device.subscriber_id, &id)?))
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
    body: web::Json<Authorize>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let b = body.into_inner();
    let app = state.app.clone();
    let signed = state
        .blocking(move || {
            Ok(signing::authorize_handset(
                &app,
                &device.subscriber_id,
                &id,
                &b.pin_block,
            )?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(signed.to_json()))
}

async fn decline(
    state: web::Data<State>,
    device: Device,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let app = state.app.clone();
    let rid = id.clone();
    state
        .blocking(move || Ok(signing::decline(&app, &device.subscriber_id, &rid)?))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "declined", "request_id": id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_header_parses_strictly() {
        let (m, ts, sig) =
            parse_device_header(r#"TMCS-Device msisdn="+4912345678",ts="1700000000",sig="AAEC""#)
                .unwrap();
        assert_eq!(
            (m.as_str(), ts, sig),
            ("+4912345678", 1_700_000_000, vec![0, 1, 2])
        );
        assert!(parse_device_header(r#"Bearer x"#).is_none());
        assert!(parse_device_header(r#"TMCS-Device msisdn="+49",ts="x",sig="AA==""#).is_none());
        assert!(
            parse_device_header(r#"TMCS-Device msisdn="+49",ts="1",sig="AA==",extra="1""#)
                .is_none()
        );
        assert!(
            parse_device_header(r#"TMCS-Device msisdn="+49",msisdn="+48",ts="1",sig="AA==""#)
                .is_none()
        );
        assert_eq!(
            device_message("GET", "/v1/handset/requests", "+4912345678", 5),
            "tmcs-dev-v1\nGET\n/v1/handset/requests\n+4912345678\n5\n"
        );
    }
}
