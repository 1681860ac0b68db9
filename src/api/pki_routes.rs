//! The public PKI (CONTRACT §9): certificates, the CRL and the OCSP
//! responder, for anyone.

use actix_web::{web, HttpResponse};

use super::{ApiError, State};
use crate::hsm::HsmError;
use crate::pki::PkiError;
use crate::store::StoreError;

const PEM: &str = "application/x-pem-file";
const CRL: &str = "application/pkix-crl";
const OCSP_RESPONSE: &str = "application/ocsp-response";
/// An OCSP request for a handful of certificates is a few hundred bytes.
pub const OCSP_MAX_REQUEST_BYTES: usize = 8 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/pki/ca.pem", web::get().to(ca))
        .route("/pki/transport.pem", web::get().to(transport))
        .route("/pki/display.pem", web::get().to(display))
        .route("/pki/audit.pem", web::get().to(audit))
        .route("/pki/crl", web::get().to(crl))
        .route("/pki/ocsp", web::post().to(ocsp));
}

fn pem(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(PEM)
        .insert_header(("cache-control", "public, max-age=300"))
        .body(body)
}

async fn ca(state: web::Data<State>) -> HttpResponse {
    pem(state.app.svc.pki.ca_bundle_pem())
}

async fn transport(state: web::Data<State>) -> HttpResponse {
    pem(state.app.svc.pki.transport.info.pem.clone())
}

async fn display(state: web::Data<State>) -> HttpResponse {
    pem(state.app.svc.pki.display.info.pem.clone())
}

async fn audit(state: web::Data<State>) -> HttpResponse {
    pem(state.app.svc.pki.audit.info.pem.clone())
}

fn pki_error(e: PkiError) -> ApiError {
    match e {
        PkiError::Store(e @ StoreError::Pool(_)) => ApiError::unavailable("database", e),
        PkiError::Hsm(
            e @ (HsmError::PoolTimeout(_) | HsmError::SessionLost(_) | HsmError::Device(_)),
        ) => ApiError::unavailable("HSM", e),
        e => ApiError::internal(e),
    }
}

fn seconds(s: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))
}

async fn crl(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let now = state.now();
    let validity = seconds(state.app.cfg.file.pki.crl_next_update_seconds);
    let st = state.clone();
    let der = state
        .blocking(move || {
            st.crl
                .current(&st.app.svc.store, &st.app.svc.pki, now, validity)
                .map_err(pki_error)
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type(CRL)
        .insert_header(("cache-control", "public, max-age=300"))
        .body(der.as_ref().clone()))
}

/// RFC 6960 over HTTP POST (Appendix A.1). Always answers 200 with an
/// `OCSPResponse`; failures are OCSP statuses, not HTTP errors.
async fn ocsp(state: web::Data<State>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body =
        super::body::read_limited(payload, OCSP_MAX_REQUEST_BYTES, state.limits.deadline).await?;
    let now = state.now();
    let validity = seconds(state.app.cfg.file.pki.ocsp_next_update_seconds);
    let svc = state.app.svc.clone();
    let der = state
        .blocking(move || {
            Ok(crate::pki::ocsp::respond(
                &svc.pki, &svc.store, &body, now, validity,
            ))
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type(OCSP_RESPONSE)
        .insert_header(("cache-control", "no-store"))
        .body(der))
}
