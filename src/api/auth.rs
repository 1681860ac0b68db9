//! Roles from client certificates (CONTRACT §3), checked per route prefix.
//! The guard takes the presented certificate from the connection and asks
//! the domain ([`crate::access::authorize`]) who that is; a refusal is
//! answered as problem+json and nothing else happens.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::tls::PeerCert;
use super::{ApiError, State};
use crate::access::{self, Caller, Peer, Target};
use crate::problem::Problem;
use crate::states::Role;

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(req.extensions().get::<Caller>().cloned().ok_or_else(|| {
            ApiError::coded(Problem::AuthUnauthenticated, "no authenticated client")
        }))
    }
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
    let peer = req.conn_data::<PeerCert>().map(|p| Peer {
        fingerprint: p.fingerprint.clone(),
        not_before: p.not_before,
        not_after: p.not_after,
    });
    let route = req
        .match_pattern()
        .unwrap_or_else(|| req.path().split('/').take(3).collect::<Vec<_>>().join("/"));
    let method = req.method().to_string();
    let source = req.peer_addr().map(|a| a.ip());
    let resolved = state
        .domain(move |svc| {
            access::authorize(
                svc,
                peer.as_ref(),
                Target {
                    required,
                    method: &method,
                    route: &route,
                    source,
                },
            )
        })
        .await;
    match resolved {
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
