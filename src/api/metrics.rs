//! HTTP metrics and one log line per request (route pattern, not the raw
//! path, so MSISDNs and ids stay out of the log).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::State;

#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> Result<HttpMetrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new("tmcs_http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new("tmcs_http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(HttpMetrics { requests, seconds })
    }
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = method_label(req.method());
    let state = req.app_data::<web::Data<State>>().cloned();
    let request_id = request_id(&req);
    let span = tracing::info_span!("http", request_id = %request_id);
    let mut res = tracing::Instrument::instrument(next.call(req), span).await?;
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            v,
        );
    }
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    if let Some(st) = state {
        st.http
            .requests
            .with_label_values(&[method, &route, &status.to_string()])
            .inc();
        st.http
            .seconds
            .with_label_values(&[method, &route])
            .observe(elapsed.as_secs_f64());
    }
    // The public PKI answers anyone, often and cheaply: its requests are
    // logged at debug level (metrics still count them).
    if route.starts_with("/pki/") {
        tracing::debug!(request_id = %request_id, method = %method, route = %route, status,
            ms = elapsed.as_secs_f64() * 1000.0, "request");
    } else {
        tracing::info!(
            request_id = %request_id,
            method = %method,
            route = %route,
            status,
            ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
    Ok(res)
}

/// The method as a metrics label: the standard methods by name, anything
/// else `other`, so made-up methods cannot grow `/metrics` (issue #8,
/// finding 2). Routes are labelled by their pattern (or `unmatched`).
fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *m {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        M::TRACE => "TRACE",
        M::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The caller's `X-Request-Id` when it is a sane token (1–64 of
/// `[A-Za-z0-9._-]`), else a new UUID. Echoed in the answer and in every
/// log line of the request, so a support case can be followed end to end.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}
