//! The HTTPS service (actix-web + OpenSSL). One module per role; the role
//! comes from the registered client-certificate fingerprint and is enforced
//! per route prefix (CONTRACT §3). Every error is problem+json (§4).
//!
//! No cryptoki or diesel here: handlers call domain functions on the
//! blocking pool through [`State::blocking`].

mod admin;
mod auditor;
pub mod auth;
mod body;
mod fsp;
mod gateway;
mod handset;
mod health;
mod limits;
mod metrics;
mod pki_routes;
pub mod problem;
pub mod tls;

use crate::problem::Problem;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App as ActixApp, HttpRequest, HttpServer};
use tokio::sync::Semaphore;

pub use crate::access::Caller;
use crate::app::{App, AppError, Services};
pub use crate::states::Role;
pub use crate::subscriber::device::{device_message, parse_device_header, DeviceHeader};
pub use problem::ApiError;

/// Shared by all workers.
pub struct State {
    pub app: App,
    pub http: metrics::HttpMetrics,
    pub crl: crate::pki::crl::CrlService,
    pub limits: body::BodyLimits,
    pub clients: limits::ClientLimits,
    blocking: Arc<Semaphore>,
}

impl State {
    /// Runs blocking work (DB, HSM, argon2) off the executor, at most
    /// `server.blocking_threads` at once.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let _permit = self
            .blocking
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::unavailable("worker pool", e))?;
        // Logs of the blocking work carry the request's span (its request id).
        let span = tracing::Span::current();
        match actix_web::rt::task::spawn_blocking(move || span.in_scope(f)).await {
            Ok(r) => r,
            Err(e) => Err(ApiError::internal(format!("blocking task failed: {e}"))),
        }
    }

    /// Runs one domain call on the blocking pool; its error becomes the
    /// answer's problem.
    pub async fn domain<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Services) -> crate::error::DomainResult<T> + Send + 'static,
    {
        let svc = self.app.svc.clone();
        self.blocking(move || Ok(f(&svc)?)).await
    }

    pub fn now(&self) -> time::OffsetDateTime {
        self.app.svc.clock.now()
    }
}

/// A bound, not yet running server.
pub struct Bound {
    pub server: actix_web::dev::Server,
    pub addrs: Vec<SocketAddr>,
    pub state: web::Data<State>,
    /// The plain-HTTP listener of the public PKI, unless disabled.
    pub pki: Option<Listener>,
}

/// The settings both listeners share: timeouts, keep-alive, connection and
/// worker counts, no signal handling of their own.
macro_rules! tuned {
    ($server:expr, $cfg:expr) => {{
        let s = $server
            .client_request_timeout(Duration::from_secs(
                $cfg.file.server.request_timeout_seconds,
            ))
            .client_disconnect_timeout(Duration::from_secs(5))
            .keep_alive(Duration::from_secs(75))
            .max_connections($cfg.file.server.max_connections)
            .shutdown_timeout(10)
            .disable_signals();
        if $cfg.file.server.workers > 0 {
            s.workers($cfg.file.server.workers)
        } else {
            s
        }
    }};
}

/// A second listener (already running; await or stop it through its handle).
pub struct Listener {
    pub server: actix_web::dev::Server,
    pub addrs: Vec<SocketAddr>,
}

async fn pki_not_found() -> actix_web::HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::coded(
        crate::problem::Problem::NotFound,
        "this listener serves /pki/ only",
    ))
}

/// The plain-HTTP listener: `/pki/*` only, with the same per-address
/// limits and metrics, no TLS (relying parties check certificates over
/// http://, RFC 5280), keep-alive.
fn bind_pki_http(state: &web::Data<State>, listen: &str) -> Result<Listener, AppError> {
    let cfg = state.app.cfg.clone();
    let data = state.clone();
    let on_connect = state.clone();
    let server = HttpServer::new(move || {
        ActixApp::new()
            .app_data(data.clone())
            .app_data(path_config())
            .wrap(middleware::from_fn(limits::gate))
            .wrap(middleware::from_fn(metrics::observe))
            .wrap(middleware::DefaultHeaders::new().add(("x-content-type-options", "nosniff")))
            .configure(pki_routes::routes)
            .default_service(web::to(pki_not_found))
    })
    .on_connect(move |conn, ext| on_connect.clients.on_connect(tls::peer_ip(conn), ext));
    let server = tuned!(server, cfg);
    let server = server
        .bind(listen)
        .map_err(|e| AppError::Setup(format!("cannot listen on {listen}: {e}")))?;
    let addrs = server.addrs();
    Ok(Listener {
        server: server.run(),
        addrs,
    })
}

/// The detail for a JSON body that does not deserialise. serde's "invalid
/// type/value/length" and "unknown variant" messages quote the offending
/// value (e.g. a gateway's PIN sent as a number: ``integer `482619` ``); the
/// body must never carry a PIN (CONTRACT §4), so those say what was
/// expected and where, not what was sent.
pub(crate) fn json_error_detail(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let quotes_value = [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
    ]
    .iter()
    .any(|p| msg.starts_with(p));
    if !quotes_value {
        return format!("invalid JSON: {msg}");
    }
    match msg.split_once(", expected ") {
        Some((_, expected)) => {
            format!("invalid JSON: a value of the wrong type or form, expected {expected}")
        }
        None => format!(
            "invalid JSON: a value of the wrong type or form at line {} column {}",
            e.line(),
            e.column()
        ),
    }
}

/// Every route the service answers (method, path pattern). The OpenAPI
/// document lists exactly these, and a test checks both against the app.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/pki/ca.pem"),
    ("GET", "/pki/transport.pem"),
    ("GET", "/pki/display.pem"),
    ("GET", "/pki/audit.pem"),
    ("GET", "/pki/crl"),
    ("POST", "/pki/ocsp"),
    ("GET", "/pki/ocsp/{request}"),
    ("POST", "/v1/admin/subscribers"),
    ("GET", "/v1/admin/subscribers/{msisdn}"),
    ("POST", "/v1/admin/subscribers/{msisdn}/block"),
    ("POST", "/v1/admin/subscribers/{msisdn}/unblock"),
    ("POST", "/v1/admin/subscribers/{msisdn}/disconnect"),
    ("POST", "/v1/admin/subscribers/{msisdn}/renew"),
    ("POST", "/v1/admin/certificates/{serial}/revoke"),
    ("POST", "/v1/admin/certificates/{serial}/suspend"),
    ("POST", "/v1/admin/certificates/{serial}/resume"),
    ("POST", "/v1/admin/parties"),
    ("GET", "/v1/admin/parties/{party_id}"),
    ("POST", "/v1/admin/parties/{party_id}/suspend"),
    ("POST", "/v1/admin/parties/{party_id}/resume"),
    ("POST", "/v1/admin/parties/{party_id}/revoke"),
    ("GET", "/v1/admin/relay"),
    ("POST", "/v1/admin/relay/{delivery_id}/retry"),
    ("GET", "/v1/audit/events"),
    ("GET", "/v1/audit/checkpoints"),
    ("GET", "/v1/audit/sth"),
    ("GET", "/v1/audit/proof/inclusion"),
    ("GET", "/v1/audit/proof/consistency"),
    ("GET", "/v1/audit/evidence/{request_id}"),
    ("POST", "/v1/fsp/messages"),
    ("GET", "/v1/fsp/requests/{id}"),
    ("POST", "/v1/fsp/requests/{id}/outcome"),
    ("POST", "/v1/gateway/authorize"),
    ("POST", "/v1/handset/activate"),
    ("POST", "/v1/handset/pin"),
    ("GET", "/v1/handset/requests"),
    ("GET", "/v1/handset/requests/{id}"),
    ("POST", "/v1/handset/requests/{id}/authorize"),
    ("POST", "/v1/handset/requests/{id}/decline"),
    ("GET", "/v1/handset/receipts"),
    ("GET", "/v1/handset/receipts/{id}"),
    ("POST", "/v1/handset/instruments"),
    ("GET", "/v1/handset/instruments"),
    ("POST", "/v1/handset/instruments/{id}/confirm"),
    ("DELETE", "/v1/handset/instruments/{id}"),
];

/// The methods `ROUTES` allows on `path` (empty: no such resource).
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let mut m: Vec<&'static str> = ROUTES
        .iter()
        .filter(|(_, pattern)| actix_web::dev::ResourceDef::new(*pattern).is_match(path))
        .map(|(method, _)| *method)
        .collect();
    m.dedup();
    m
}

async fn not_found(req: HttpRequest) -> actix_web::HttpResponse {
    let allowed = allowed_methods(req.path());
    if allowed.is_empty() {
        return actix_web::ResponseError::error_response(&ApiError::coded(
            Problem::NotFound,
            "no such resource",
        ));
    }
    let mut res = actix_web::ResponseError::error_response(&ApiError::coded(
        Problem::MethodNotAllowed,
        format!("allowed: {}", allowed.join(", ")),
    ));
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allowed.join(", ")) {
        res.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    res
}

/// The OpenAPI document (docs/openapi.json).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

async fn openapi() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::coded(Problem::RequestInvalid, format!("query: {err}")).into()
    })
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        ApiError::coded(Problem::RequestInvalid, format!("path: {err}")).into()
    })
}

/// Builds the service and binds its listener.
pub fn bind(app: App) -> Result<Bound, AppError> {
    let cfg = app.cfg.clone();
    let http = metrics::HttpMetrics::new(&app.registry)
        .map_err(|e| AppError::Setup(format!("metrics: {e}")))?;
    let state = web::Data::new(State {
        blocking: Arc::new(Semaphore::new(cfg.file.server.blocking_threads)),
        http,
        crl: crate::pki::crl::CrlService::default(),
        limits: body::BodyLimits {
            max_bytes: cfg.file.server.max_body_bytes,
            deadline: Duration::from_secs(cfg.file.server.body_timeout_seconds.max(1)),
        },
        clients: limits::ClientLimits::new(&cfg.file.server, &app.registry)
            .map_err(|e| AppError::Setup(format!("metrics: {e}")))?,
        app,
    });
    let acceptor = tls::acceptor(&cfg.tls_cert, &cfg.tls_key)?;
    let data = state.clone();
    let on_connect = state.clone();
    let server = HttpServer::new(move || {
        ActixApp::new()
            .app_data(data.clone())
            .app_data(query_config())
            .app_data(path_config())
            .route("/openapi.json", web::get().to(openapi))
            .wrap(middleware::from_fn(limits::gate))
            .wrap(middleware::from_fn(metrics::observe))
            .wrap(
                middleware::DefaultHeaders::new()
                    .add(("x-content-type-options", "nosniff"))
                    .add(("strict-transport-security", "max-age=31536000")),
            )
            .configure(health::routes)
            .configure(pki_routes::routes)
            .service(
                web::scope("/v1/admin")
                    .wrap(middleware::from_fn(auth::operator_only))
                    .configure(admin::routes),
            )
            .service(web::scope("/v1/handset").configure(handset::routes))
            .service(
                web::scope("/v1/fsp")
                    .wrap(middleware::from_fn(auth::fsp_only))
                    .configure(fsp::routes),
            )
            .service(
                web::scope("/v1/gateway")
                    .wrap(middleware::from_fn(auth::gateway_only))
                    .configure(gateway::routes),
            )
            .service(
                web::scope("/v1/audit")
                    .wrap(middleware::from_fn(auth::auditor_only))
                    .configure(auditor::routes),
            )
            .default_service(web::to(not_found))
    })
    .on_connect(move |conn, ext| {
        tls::capture_peer_certificate(conn, ext);
        on_connect.clients.on_connect(tls::peer_ip(conn), ext);
    });
    let server = tuned!(server, cfg);
    let server = server
        .bind_openssl(&cfg.file.server.listen, acceptor)
        .map_err(|e| {
            AppError::Setup(format!("cannot listen on {}: {e}", cfg.file.server.listen))
        })?;
    let addrs = server.addrs();
    let server = server.run();
    let pki = match cfg.file.pki.http_listen.as_str() {
        "" => None,
        listen => Some(bind_pki_http(&state, listen)?),
    };
    Ok(Bound {
        server,
        addrs,
        state,
        pki,
    })
}

/// Periodic work while serving: signed audit checkpoints and the expiry
/// sweeper (requests that outlived their TTL and certificates past their
/// notAfter become `expired`).
pub async fn background(state: web::Data<State>) {
    tokio::join!(checkpoints(state.clone()), sweeper(state));
}

async fn checkpoints(state: web::Data<State>) {
    let every = state.app.cfg.file.audit.checkpoint_interval_seconds.max(1);
    let mut tick = tokio::time::interval(Duration::from_secs(every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let res = state
            .domain(|svc| {
                Ok(crate::audit::make_checkpoint(
                    &svc.store,
                    svc.custody.as_ref(),
                    &svc.pki.keys.audit,
                    svc.clock.now(),
                )?)
            })
            .await;
        match res {
            Ok(Some(cp)) => tracing::info!(seq = cp.seq, "audit checkpoint signed"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "audit checkpoint failed"),
        }
    }
}

async fn sweeper(state: web::Data<State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.clients.prune();
        if let Err(e) = state.domain(crate::audit::refusals::flush).await {
            tracing::warn!(error = %e, "refusal counts not written");
        }
        match state.domain(crate::sweeper::sweep).await {
            Ok(s) if s.requests == 0 && s.certificates == 0 && s.instruments == 0 => {}
            Ok(s) => tracing::info!(
                requests = s.requests,
                certificates = s.certificates,
                instruments = s.instruments,
                "expired"
            ),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
    }
}
