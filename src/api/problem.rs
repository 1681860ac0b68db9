//! RFC 9457 problem details with stable codes (CONTRACT §4). Details for
//! operators go to the log; the body carries only what the caller may see.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Map, Value};

pub use crate::problem::Problem;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub problem: Problem,
    pub detail: String,
    /// Extra members of the problem object (e.g. `attempts_left`).
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header (transient outages, rate limits).
    pub retry_after: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.problem,
            self.status.as_u16(),
            self.detail
        )
    }
}

/// How long a client should wait after a 503 before trying again.
pub const RETRY_AFTER_SECONDS: u32 = 2;

impl ApiError {
    /// The refusal `problem`, answered with its registered status.
    pub fn coded(problem: Problem, detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(problem.status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            problem,
            detail: detail.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.problem.code()
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn internal(detail_for_log: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail_for_log, "internal error");
        ApiError::coded(Problem::Internal, "internal error; see the server log")
    }

    /// 503 with `Retry-After`: a dependency is down or saturated.
    pub fn unavailable(what: &str, detail_for_log: impl std::fmt::Display) -> ApiError {
        tracing::error!(dependency = what, error = %detail_for_log, "dependency unavailable");
        let mut e = ApiError::coded(
            Problem::ServiceUnavailable,
            format!("{what} is unavailable"),
        );
        e.retry_after = Some(RETRY_AFTER_SECONDS);
        e
    }

    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "type".into(),
            Value::String(format!("urn:tmcs:problem:{}", self.problem)),
        );
        m.insert("title".into(), Value::String(self.problem.title().into()));
        m.insert("status".into(), Value::from(self.status.as_u16()));
        m.insert("code".into(), Value::String(self.problem.code().into()));
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
        let mut res = HttpResponse::build(self.status);
        res.content_type(PROBLEM_JSON)
            .insert_header(("cache-control", "no-store"));
        if let Some(s) = self.retry_after {
            res.insert_header(("retry-after", s.to_string()));
        }
        res.body(self.body().to_string())
    }
}

impl From<crate::error::DomainError> for ApiError {
    fn from(e: crate::error::DomainError) -> Self {
        use crate::error::DomainError as D;
        if e.is_transient() {
            return ApiError::unavailable(e.dependency(), &e);
        }
        match e {
            D::Rejected {
                problem,
                detail,
                attempts_left,
            } => {
                let mut err = ApiError::coded(problem, detail);
                if let Some(n) = attempts_left {
                    err = err.with("attempts_left", n);
                }
                err
            }
            D::Throttled {
                detail,
                retry_after,
            } => {
                let mut err = ApiError::coded(Problem::TooManyRequests, detail);
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                err.retry_after = Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX));
                err
            }
            other => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_has_the_contract_members() {
        let e = ApiError::coded(Problem::ActivationBadCode, "wrong code").with("attempts_left", 2);
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let b = e.body();
        assert_eq!(b["type"], "urn:tmcs:problem:activation.bad_code");
        assert_eq!(b["code"], "activation.bad_code");
        assert_eq!(b["status"], 403);
        assert_eq!(b["attempts_left"], 2);
        assert!(b["title"].as_str().is_some_and(|t| !t.is_empty()));
    }

    #[test]
    fn outages_are_503_with_retry_after() {
        let e: ApiError =
            crate::error::DomainError::Hsm(crate::hsm::HsmError::PoolTimeout(5)).into();
        assert_eq!((e.status.as_u16(), e.code()), (503, "service.unavailable"));
        assert_eq!(e.retry_after, Some(RETRY_AFTER_SECONDS));
        let e: ApiError = crate::error::internal("broken invariant").into();
        assert_eq!(
            (e.status.as_u16(), e.code(), e.retry_after),
            (500, "internal", None)
        );
    }
}
