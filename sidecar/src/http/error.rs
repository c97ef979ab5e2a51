//! The JSON error every route answers with.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use spillway_proto::{Failure, JobId, Refusal};

/// `{"error": {"code", "message", ...}}` with its HTTP status. `code` is
/// what clients match on; `message` is for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Milliseconds a retry should wait (u32: 49 days is plenty, and
    /// keeps every handler's `Result` small).
    pub retry_after_ms: Option<u32>,
    pub may_have_run: Option<bool>,
    pub job_id: Option<JobId>,
    /// How long the job ran on the node before it failed, where known.
    pub exec_ms: Option<f64>,
    /// Fields only some failures carry (`exit_code` of `guest_exit`,
    /// `import` of `unsupported_import`), added to the error object.
    pub detail: Option<Box<(&'static str, Value)>>,
}

/// `ms` as an [`ApiError::retry_after_ms`], saturating.
pub(super) fn saturating_ms(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_ms: None,
            may_have_run: None,
            job_id: None,
            exec_ms: None,
            detail: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn not_found(what: &'static str, message: impl Into<String>) -> Self {
        let code = match what {
            "function" => "unknown_function",
            "artifact" => "unknown_artifact",
            _ => "not_found",
        };
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn with_job(mut self, job: JobId) -> Self {
        self.job_id = Some(job);
        self
    }

    /// 413: the body is larger than `limit` bytes.
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
    }

    pub fn from_json(rejection: JsonRejection) -> Self {
        Self::bad_request("bad_json", rejection.body_text())
    }

    /// A path segment that does not decode (bad percent-encoding, not
    /// UTF-8): 400 `bad_path`.
    pub fn from_path(rejection: PathRejection) -> Self {
        Self::bad_request("bad_path", rejection.body_text())
    }

    /// A query string that does not parse: 400 `bad_query`.
    pub fn from_query(rejection: QueryRejection) -> Self {
        Self::bad_request("bad_query", rejection.body_text())
    }
}

fn refusal_error(r: &Refusal) -> ApiError {
    let status = match r {
        Refusal::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError {
        retry_after_ms: r.retry_after_ms().map(saturating_ms),
        may_have_run: Some(false),
        ..ApiError::new(status, r.code(), r.to_string())
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        let status = match &f {
            Failure::Refused(r) => return refusal_error(r),
            Failure::DeadlineExceeded { .. } | Failure::GpuOverran { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Failure::ExecutorLost { .. } | Failure::DeviceFault { .. } => StatusCode::BAD_GATEWAY,
            Failure::InvalidArtifact { .. } | Failure::UnsupportedImport { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Failure::ArtifactCorrupt { .. } => StatusCode::BAD_GATEWAY,
            Failure::UntrustedArtifact { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Failure::ArtifactUnavailable { .. } => {
                return ApiError {
                    retry_after_ms: Some(1000),
                    may_have_run: Some(false),
                    ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, f.code(), f.to_string())
                };
            }
            Failure::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Trap { .. }
            | Failure::GuestError { .. }
            | Failure::GuestExit { .. }
            | Failure::MemoryLimit { .. }
            | Failure::UnknownArtifact { .. }
            | Failure::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let may_have_run = match &f {
            Failure::ExecutorLost { may_have_run } => Some(*may_have_run),
            Failure::ArtifactCorrupt { .. }
            | Failure::UntrustedArtifact { .. }
            | Failure::UnsupportedImport { .. } => Some(false),
            _ => None,
        };
        let detail = match &f {
            Failure::GuestExit { code } => Some(Box::new(("exit_code", json!(code)))),
            Failure::UnsupportedImport { import } => Some(Box::new(("import", json!(import)))),
            Failure::GpuOverran { .. } => Some(Box::new(("node_restarted", json!(true)))),
            _ => None,
        };
        ApiError {
            may_have_run,
            detail,
            ..ApiError::new(status, f.code(), f.to_string())
        }
    }
}

impl From<crate::job::Ended> for ApiError {
    fn from(ended: crate::job::Ended) -> Self {
        let api = ApiError::from(ended.failure);
        ApiError {
            exec_ms: ended.exec_us.map(|us| us as f64 / 1000.0),
            may_have_run: if ended.never_ran {
                Some(false)
            } else {
                api.may_have_run
            },
            ..api
        }
    }
}

impl ApiError {
    /// The error as its JSON object: `{"error": {"code", "message", …}}`
    /// (the body of an error response, and a stream's final `error` event).
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert("code".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        if let Some(ms) = self.retry_after_ms {
            body.insert("retry_after_ms".into(), json!(ms));
        }
        if let Some(m) = self.may_have_run {
            body.insert("may_have_run".into(), json!(m));
        }
        if let Some(ms) = self.exec_ms {
            body.insert("exec_ms".into(), json!(ms));
        }
        if let Some(job) = self.job_id {
            body.insert("job_id".into(), json!(job.to_string()));
        }
        if let Some(detail) = &self.detail {
            let (key, value) = &**detail;
            body.insert((*key).into(), value.clone());
        }
        json!({ "error": Value::Object(body) })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.to_json())).into_response();
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(job) = self.job_id
            && let Ok(v) = HeaderValue::from_str(&job.to_string())
        {
            response.headers_mut().insert(crate::api::header::JOB_ID, v);
        }
        if let Some(ms) = self.exec_ms
            && let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}"))
        {
            response
                .headers_mut()
                .insert(crate::api::header::EXEC_MS, v);
        }
        response
    }
}
