//! The public PKI (CONTRACT §9): certificates for anyone.

use actix_web::{web, HttpResponse};

use super::State;

const PEM: &str = "application/x-pem-file";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/pki/ca.pem", web::get().to(ca))
        .route("/pki/transport.pem", web::get().to(transport))
        .route("/pki/display.pem", web::get().to(display))
        .route("/pki/audit.pem", web::get().to(audit));
}

fn pem(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(PEM)
        .insert_header(("cache-control", "public, max-age=300"))
        .body(body)
}

async fn ca(state: web::Data<State>) -> HttpResponse {
    pem(state.app.pki.ca_bundle_pem())
}

async fn transport(state: web::Data<State>) -> HttpResponse {
    pem(state.app.pki.transport.info.pem.clone())
}

async fn display(state: web::Data<State>) -> HttpResponse {
    pem(state.app.pki.display.info.pem.clone())
}

async fn audit(state: web::Data<State>) -> HttpResponse {
    pem(state.app.pki.audit.info.pem.clone())
}
