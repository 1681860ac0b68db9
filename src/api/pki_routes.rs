//! The public PKI (CONTRACT §9): certificates, the CRL and the OCSP
//! responder, for anyone — on the HTTPS listener and, for relying parties
//! that must not need TLS to check a certificate (RFC 5280), on the plain
//! HTTP listener `pki.http_listen`.
//!
//! OCSP over POST (RFC 6960 A.1) and GET (`/pki/ocsp/{base64}`). A
//! pre-signed answer is served on the executor, without the blocking pool,
//! the database or the HSM; anything else is produced off the executor.

use actix_web::{web, HttpResponse};
use base64::Engine;

use super::{ApiError, State};
use crate::pki::ocsp::Lookup;
use crate::pki::PkiError;

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
        .route("/pki/ocsp", web::post().to(ocsp_post))
        .route("/pki/ocsp/{request:.+}", web::get().to(ocsp_get));
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
    if e.is_transient() {
        ApiError::unavailable(
            if matches!(e, PkiError::Hsm(_)) {
                "HSM"
            } else {
                "database"
            },
            e,
        )
    } else {
        ApiError::internal(e)
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

/// Answers one DER request: from the pre-signed cache on the executor, or
/// produced on the blocking pool. Always 200 with an `OCSPResponse`;
/// failures are OCSP statuses, not HTTP errors.
async fn ocsp(state: web::Data<State>, request: Vec<u8>) -> Result<HttpResponse, ApiError> {
    let now = state.now();
    let der = match state.app.svc.ocsp.lookup(&request, now) {
        Lookup::Answer(der) => der,
        Lookup::Produce(parsed) => {
            let svc = state.app.svc.clone();
            state
                .blocking(move || Ok(svc.ocsp.produce(&svc.pki, &svc.store, &parsed, now)))
                .await?
        }
    };
    let max_age = state.app.cfg.file.pki.ocsp_next_update_seconds / 2;
    Ok(HttpResponse::Ok()
        .content_type(OCSP_RESPONSE)
        .insert_header(("cache-control", format!("public, max-age={max_age}")))
        .body(der.as_ref().clone()))
}

/// RFC 6960 A.1 over POST.
async fn ocsp_post(
    state: web::Data<State>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body =
        super::body::read_limited(payload, OCSP_MAX_REQUEST_BYTES, state.limits.deadline).await?;
    ocsp(state, body.to_vec()).await
}

/// RFC 6960 A.1 over GET: `/pki/ocsp/{url-encoded base64 of the DER request}`.
async fn ocsp_get(
    state: web::Data<State>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // The raw path: the base64 may hold '/', '+' and '=' (percent-encoded or not).
    let raw = req.path().strip_prefix("/pki/ocsp/").unwrap_or("");
    if raw.len() > OCSP_MAX_REQUEST_BYTES * 2 {
        return Err(ApiError::coded(
            crate::problem::Problem::PayloadTooLarge,
            "the OCSP request is too large",
        ));
    }
    let text = percent_decode(raw);
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap_or_default();
    // A request that does not decode is answered malformedRequest by the responder.
    ocsp(state, der).await
}

/// `%XX` sequences to bytes (nothing else changes).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("MEow%2BTA%3D%3D"), "MEow+TA==");
        assert_eq!(percent_decode("a/b%2fc"), "a/b/c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
