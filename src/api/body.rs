//! Reading raw bodies with a hard cap, answering problem+json when exceeded.

use crate::problem::Problem;
use actix_web::web;
use futures_util::StreamExt;

use super::ApiError;

/// Reads at most `limit` bytes; more gives 413 `payload.too_large`.
pub async fn read_capped(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
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
}
