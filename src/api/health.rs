//! `/healthz` (process up), `/readyz` (database and HSM really answer) and
//! Prometheus `/metrics`.

use actix_web::{web, HttpResponse};
use prometheus::Encoder;
use serde_json::json;

use super::{ApiError, State};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let svc = state.app.svc.clone();
    let (db, hsm) = state
        .blocking(move || Ok((svc.store.check(), svc.custody.check())))
        .await?;
    let label = |ok: bool| if ok { "ok" } else { "failing" };
    if let Err(e) = &db {
        tracing::error!(error = %e, "readiness: database check failed");
    }
    if let Err(e) = &hsm {
        tracing::error!(error = %e, "readiness: HSM check failed");
    }
    let body = json!({
        "status": if db.is_ok() && hsm.is_ok() { "ready" } else { "not_ready" },
        "checks": { "database": label(db.is_ok()), "hsm": label(hsm.is_ok()) },
        "database_backend": state.app.svc.store.backend().name(),
    });
    if db.is_ok() && hsm.is_ok() {
        Ok(HttpResponse::Ok().json(body))
    } else {
        Err(
            ApiError::unavailable("database or HSM", "readiness check failed")
                .with("checks", body["checks"].clone()),
        )
    }
}

async fn metrics(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let (conns, idle) = state.app.svc.store.pool_state();
    let families = state.app.registry.gather();
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families, &mut buf)
        .map_err(ApiError::internal)?;
    let extra = format!(
        "# HELP tmcs_db_pool_connections Open database connections\n# TYPE tmcs_db_pool_connections gauge\ntmcs_db_pool_connections {conns}\n\
         # HELP tmcs_db_pool_idle Idle database connections\n# TYPE tmcs_db_pool_idle gauge\ntmcs_db_pool_idle {idle}\n"
    );
    buf.extend_from_slice(extra.as_bytes());
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(buf))
}
