//! Roles from client certificates (CONTRACT §3): fingerprint → registered
//! client → role, checked per route prefix. A missing certificate is 401, an
//! unknown, revoked, expired or wrong-role one is 403; each denial is an
//! audit event and nothing else happens.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use serde_json::json;

use super::tls::PeerCert;
use super::{ApiError, State};
use crate::audit::{self, Actor, NewEvent};
use crate::store::{certs, clients};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Operator,
    Auditor,
    Fsp,
    Gateway,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Fsp => "fsp",
            Role::Gateway => "gateway",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "operator" => Role::Operator,
            "auditor" => Role::Auditor,
            "fsp" => Role::Fsp,
            "gateway" => Role::Gateway,
            _ => return None,
        })
    }
}

/// The authenticated client of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    pub fingerprint: String,
    pub name: String,
    pub party_id: Option<String>,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::Client {
            role: self.role.as_str().to_string(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| ApiError::coded("auth.unauthenticated", "no authenticated client")),
        )
    }
}

/// Resolves the caller for `required`, or explains (and audits) the refusal.
async fn authorize(
    state: &web::Data<State>,
    peer: Option<PeerCert>,
    required: Role,
    method: String,
    route: String,
) -> Result<Caller, ApiError> {
    let st = state.clone();
    state
        .blocking(move || {
            let app = &st.app;
            let now = app.clock.now();
            let deny = |actor: Actor, code: &'static str, reason: &str| -> ApiError {
                let ev = NewEvent::new(
                    &actor,
                    "auth.denied",
                    None,
                    json!({ "method": method, "route": route, "required_role": required.as_str(), "reason": reason }),
                );
                if let Err(e) = app.store.write(|c| audit::append(c, now, ev)) {
                    tracing::error!(error = %e, "cannot audit an authorisation failure");
                }
                tracing::warn!(reason, required = required.as_str(), "request refused");
                ApiError::coded(code, reason.to_string())
            };
            let Some(peer) = peer else {
                return Err(deny(Actor::Anonymous, "auth.unauthenticated", "a client certificate is required"));
            };
            let anon = Actor::Client {
                role: "unknown".into(),
                fingerprint: peer.fingerprint.clone(),
            };
            let found = app
                .store
                .read(|c| -> Result<_, crate::store::StoreError> {
                    let client = clients::get(c, &peer.fingerprint)?;
                    let cert = match client.as_ref().and_then(|cl| cl.serial.clone()) {
                        Some(serial) => certs::get(c, &serial)?,
                        None => None,
                    };
                    Ok((client, cert))
                })
                .map_err(|e| ApiError::unavailable("database", e))?;
            let (Some(client), cert) = found else {
                return Err(deny(anon, "auth.forbidden", "the client certificate is not registered"));
            };
            let actor = Actor::Client {
                role: client.role.clone(),
                fingerprint: peer.fingerprint.clone(),
            };
            let cert_ok = cert.as_ref().is_none_or(|c| c.status == "active");
            if client.status != "active" || !cert_ok {
                return Err(deny(actor, "auth.forbidden", "the client certificate is suspended or revoked"));
            }
            let t = now.unix_timestamp();
            if t < peer.not_before || t > peer.not_after {
                return Err(deny(actor, "auth.forbidden", "the client certificate is expired or not yet valid"));
            }
            match Role::parse(&client.role) {
                Some(role) if role == required => Ok(Caller {
                    role,
                    fingerprint: peer.fingerprint,
                    name: client.name,
                    party_id: client.party_id,
                }),
                _ => Err(deny(actor, "auth.forbidden", "this client's role may not use this API")),
            }
        })
        .await
}

async fn guard<B: MessageBody>(
    required: Role,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<State>>().cloned() else {
        let e = ApiError::internal("application state missing");
        return Ok(req.error_response(e).map_into_right_body());
    };
    let peer = req.conn_data::<PeerCert>().cloned();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| req.path().split('/').take(3).collect::<Vec<_>>().join("/"));
    match authorize(&state, peer, required, req.method().to_string(), route).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(e) => Ok(req.error_response(e).map_into_right_body()),
    }
}

pub async fn operator_only<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(Role::Operator, req, next).await
}

pub async fn auditor_only<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(Role::Auditor, req, next).await
}

pub async fn fsp_only<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(Role::Fsp, req, next).await
}

pub async fn gateway_only<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(Role::Gateway, req, next).await
}
