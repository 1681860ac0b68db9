//! Reading request bodies: a hard size cap and a deadline for the whole
//! body (a client sending one byte every few seconds is cut off with 408),
//! and JSON parsed with the same problem answers everywhere.

use std::time::Duration;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::problem::Problem;

/// Size and time limits of a body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub deadline: Duration,
}

/// Reads at most `limit` bytes within `deadline`; more gives 413
/// `payload.too_large`, later 408 `request.timeout`.
pub async fn read_limited(
    mut payload: web::Payload,
    limit: usize,
    deadline: Duration,
) -> Result<web::Bytes, ApiError> {
    let read = async move {
        let mut buf = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| {
                ApiError::coded(Problem::RequestMalformed, "the request body cannot be read")
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::coded(
                    Problem::PayloadTooLarge,
                    format!("the body is larger than {limit} bytes"),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::coded(
            Problem::RequestTimeout,
            format!(
                "the body did not arrive within {} s",
                deadline.as_secs_f64()
            ),
        )),
    }
}

/// The media type of the request, lowercased, without parameters.
pub fn media_type(req: &HttpRequest) -> String {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Parses a JSON body (after checking `Content-Type: application/json`).
pub fn parse_json<T: DeserializeOwned>(req: &HttpRequest, body: &[u8]) -> Result<T, ApiError> {
    let mt = media_type(req);
    if mt != "application/json" && !mt.ends_with("+json") {
        return Err(ApiError::coded(
            Problem::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::coded(Problem::RequestMalformed, super::json_error_detail(&e)))
}

/// A JSON body read with the server's size and time limits (for routes
/// whose caller is already authenticated by middleware; handset routes read
/// the body in the handler, after device authentication).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> actix_web::FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<JsonBody<T>, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        let payload = <web::Payload as actix_web::FromRequest>::from_request(&req, payload);
        Box::pin(async move {
            let payload = payload
                .await
                .map_err(|_| ApiError::internal("request payload unavailable"))?;
            let limits = req
                .app_data::<web::Data<super::State>>()
                .map(|s| s.limits)
                .ok_or_else(|| ApiError::internal("application state missing"))?;
            let body = read_limited(payload, limits.max_bytes, limits.deadline).await?;
            Ok(JsonBody(parse_json(&req, &body)?))
        })
    }
}
