//! RFC 9457 problem details with stable codes (CONTRACT §4). Details for
//! operators go to the log; the body carries only what the caller may see.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Map, Value};

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Extra members of the problem object (e.g. `attempts_left`).
    pub extra: Map<String, Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.detail
        )
    }
}

/// Every code the API can answer with, its status and title. Stable:
/// clients build on these (docs/errors.md lists them).
pub const CODES: &[(&str, u16, &str)] = &[
    ("request.malformed", 400, "The request is malformed"),
    ("request.invalid", 400, "A request field is invalid"),
    ("payload.too_large", 413, "The request body is too large"),
    ("unsupported_media_type", 415, "Unsupported content type"),
    ("not_found", 404, "No such resource"),
    ("method_not_allowed", 405, "Method not allowed"),
    (
        "auth.unauthenticated",
        401,
        "A client certificate is required",
    ),
    ("auth.forbidden", 403, "Not allowed for this caller"),
    (
        "auth.device_signature",
        401,
        "The device signature is missing or invalid",
    ),
    ("service.unavailable", 503, "A dependency is unavailable"),
    ("internal", 500, "Internal error"),
    ("subscriber.not_found", 404, "No such subscriber"),
    (
        "subscriber.exists",
        409,
        "The subscriber is already registered",
    ),
    ("subscriber.blocked", 403, "The subscriber is blocked"),
    ("subscriber.not_active", 409, "The subscriber is not active"),
    ("activation.bad_code", 403, "Wrong activation code"),
    ("activation.expired", 403, "The activation code has expired"),
    ("activation.not_pending", 409, "No activation is pending"),
    ("pin.invalid", 400, "The PIN does not meet the PIN rules"),
    ("pin.trivial", 400, "The PIN is too easy to guess"),
    ("pin.wrong", 403, "Wrong PIN"),
    ("pin.blocked", 403, "The PIN is blocked"),
    (
        "pinblock.invalid",
        400,
        "The PIN block cannot be decrypted or parsed",
    ),
    ("certificate.not_found", 404, "No such certificate"),
    ("certificate.revoked", 409, "The certificate is revoked"),
    (
        "certificate.invalid_transition",
        409,
        "The certificate cannot make this transition",
    ),
    (
        "certificate.not_active",
        409,
        "The certificate is not active",
    ),
    (
        "certificate.invalid",
        400,
        "The certificate or CSR is invalid",
    ),
    ("party.exists", 409, "The party is already registered"),
    ("party.not_found", 404, "No such party"),
    ("ims.malformed", 400, "The iMS message is malformed"),
    (
        "ims.bad_signature",
        400,
        "A signature on the iMS message does not verify",
    ),
    (
        "ims.unknown_party",
        400,
        "A party of the iMS message is not registered",
    ),
    ("ims.replay", 409, "This message reference was already used"),
    (
        "ims.stale",
        400,
        "The iMS timestamp is outside the allowed clock skew",
    ),
    (
        "ims.tier_mismatch",
        400,
        "The iMS type does not match the amount's tier",
    ),
    (
        "ims.currency_unsupported",
        400,
        "The currency is not configured",
    ),
    ("limit.exceeded", 403, "A payment limit would be exceeded"),
    ("request.not_found", 404, "No such signing request"),
    ("request.expired", 409, "The signing request has expired"),
    (
        "request.not_pending",
        409,
        "The signing request is not pending",
    ),
    (
        "sad.mismatch",
        403,
        "The authorisation does not match the request",
    ),
];

fn title(code: &str) -> &'static str {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, _, t)| *t)
        .unwrap_or("Error")
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// An error whose status is the one registered for `code` in [`CODES`].
    pub fn coded(code: &'static str, detail: impl Into<String>) -> ApiError {
        let status = CODES
            .iter()
            .find(|(c, _, _)| *c == code)
            .and_then(|(_, s, _)| StatusCode::from_u16(*s).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        ApiError::new(status, code, detail)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn internal(detail_for_log: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail_for_log, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    pub fn unavailable(what: &str, detail_for_log: impl std::fmt::Display) -> ApiError {
        tracing::error!(dependency = what, error = %detail_for_log, "dependency unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service.unavailable",
            format!("{what} is unavailable"),
        )
    }

    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "type".into(),
            Value::String(format!("urn:tmcs:problem:{}", self.code)),
        );
        m.insert("title".into(), Value::String(title(self.code).into()));
        m.insert("status".into(), Value::from(self.status.as_u16()));
        m.insert("code".into(), Value::String(self.code.into()));
        m.insert("detail".into(), Value::String(self.detail.clone()));
        for (k, v) in &self.extra {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(m)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .content_type(PROBLEM_JSON)
            .insert_header(("cache-control", "no-store"))
            .body(self.body().to_string())
    }
}

impl From<crate::error::DomainError> for ApiError {
    fn from(e: crate::error::DomainError) -> Self {
        use crate::error::DomainError as D;
        use crate::hsm::HsmError as H;
        let hsm = |h: &H| match h {
            H::PoolTimeout(_) | H::SessionLost(_) | H::Device(_) | H::Resources(_) => {
                ApiError::unavailable("HSM", h)
            }
            other => ApiError::internal(other),
        };
        match e {
            D::Rejected {
                code,
                detail,
                attempts_left,
            } => {
                if code == "internal" {
                    return ApiError::internal(detail);
                }
                let mut err = ApiError::coded(code, detail);
                if let Some(n) = attempts_left {
                    err = err.with("attempts_left", n);
                }
                err
            }
            D::Store(crate::store::StoreError::Pool(m)) => ApiError::unavailable("database", m),
            D::Store(other) => ApiError::internal(other),
            D::Hsm(h) => hsm(&h),
            D::Pki(crate::pki::PkiError::Hsm(h)) => hsm(&h),
            D::Pki(crate::pki::PkiError::Store(crate::store::StoreError::Pool(m))) => {
                ApiError::unavailable("database", m)
            }
            D::Pki(other) => ApiError::internal(other),
            D::Audit(crate::audit::AuditError::Store(crate::store::StoreError::Pool(m))) => {
                ApiError::unavailable("database", m)
            }
            D::Audit(other) => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_statuses_valid() {
        let mut seen = std::collections::HashSet::new();
        for (c, s, t) in CODES {
            assert!(seen.insert(*c), "duplicate code {c}");
            assert!(StatusCode::from_u16(*s).is_ok());
            assert!(!t.is_empty());
        }
    }

    #[test]
    fn problem_body_has_the_contract_members() {
        let e = ApiError::coded("activation.bad_code", "wrong code").with("attempts_left", 2);
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let b = e.body();
        assert_eq!(b["type"], "urn:tmcs:problem:activation.bad_code");
        assert_eq!(b["code"], "activation.bad_code");
        assert_eq!(b["status"], 403);
        assert_eq!(b["attempts_left"], 2);
        assert!(b["title"].as_str().is_some_and(|t| !t.is_empty()));
    }
}
