//! What an invoke request says beyond its body, read from its headers:
//! the bearer token, `spillway-deadline-ms`, `spillway-idempotency-key`,
//! `spillway-placement` and `traceparent`. Pure: no state is touched, so
//! the parsing the network reaches first is fuzzed on its own (the
//! `invoke_request` target).

use super::ApiError;
use crate::idempotency;
use axum::http::{HeaderMap, header};

/// The headers of one invoke request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeHeaders {
    /// The deadline in ms: the function's, or shorter if the caller asked.
    pub deadline_ms: u64,
    pub idempotency_key: Option<String>,
    /// `spillway-placement: local`: never burst.
    pub here_only: bool,
    /// The W3C `traceparent` and `tracestate`, when they check (a bad
    /// one is ignored: the job starts a trace of its own).
    pub trace: Option<spillway_proto::TraceCarrier>,
}

impl InvokeHeaders {
    /// Reads them, for a function whose deadline is `function_deadline_ms`.
    pub fn parse(headers: &HeaderMap, function_deadline_ms: u64) -> Result<Self, ApiError> {
        Ok(Self {
            deadline_ms: deadline_ms(headers, function_deadline_ms)?,
            idempotency_key: idempotency_key(headers)?,
            here_only: here_only(headers)?,
            trace: spillway_telemetry::checked(
                headers.get("traceparent").and_then(|v| v.to_str().ok()),
                headers.get("tracestate").and_then(|v| v.to_str().ok()),
            ),
        })
    }
}

/// The token of `Authorization: Bearer <token>`, trimmed.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing_token", "send Authorization: Bearer <token>")
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthorized("invalid_token", "expected Authorization: Bearer <token>")
        })
}

fn deadline_ms(headers: &HeaderMap, function_ms: u64) -> Result<u64, ApiError> {
    let Some(value) = headers.get(crate::api::header::DEADLINE_MS) else {
        return Ok(function_ms);
    };
    let ms: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_deadline",
                "spillway-deadline-ms must be a whole number of milliseconds",
            )
        })?;
    if ms == 0 {
        return Err(ApiError::bad_request(
            "bad_deadline",
            "spillway-deadline-ms must be positive",
        ));
    }
    // A caller may shorten the function's deadline, never extend it.
    Ok(ms.min(function_ms))
}

/// The `spillway-placement` header: `local` keeps the job on this host
/// (queued here when full, never sent to a peer); `any` (the default)
/// lets the scheduler choose.
fn here_only(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers
        .get(crate::api::header::PLACEMENT)
        .map(|v| v.to_str())
    {
        None | Some(Ok("any")) => Ok(false),
        Some(Ok("local")) => Ok(true),
        Some(_) => Err(ApiError::bad_request(
            "bad_placement",
            "spillway-placement must be `local` or `any`",
        )),
    }
}

/// The `spillway-idempotency-key` header, checked.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(crate::api::header::IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if idempotency::valid_key(key) => Ok(Some(key.to_owned())),
        _ => Err(ApiError::bad_request(
            "bad_idempotency_key",
            format!(
                "spillway-idempotency-key must be 1 to {} visible ASCII characters",
                idempotency::MAX_KEY_LEN
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn defaults_come_from_the_function() {
        let h = InvokeHeaders::parse(&HeaderMap::new(), 5_000).unwrap();
        assert_eq!(
            h,
            InvokeHeaders {
                deadline_ms: 5_000,
                idempotency_key: None,
                here_only: false,
                trace: None
            }
        );
    }

    #[test]
    fn a_caller_may_shorten_the_deadline_never_extend_it() {
        let parse = |v| InvokeHeaders::parse(&headers(&[("spillway-deadline-ms", v)]), 5_000);
        assert_eq!(parse(" 1200 ").unwrap().deadline_ms, 1_200);
        assert_eq!(parse("90000").unwrap().deadline_ms, 5_000);
        assert_eq!(parse("0").unwrap_err().code, "bad_deadline");
        assert_eq!(parse("-1").unwrap_err().code, "bad_deadline");
    }

    #[test]
    fn keys_placement_and_tokens_are_checked() {
        let h = headers(&[
            ("spillway-idempotency-key", "order-17"),
            ("spillway-placement", "local"),
            ("authorization", "Bearer  swk_a_b "),
        ]);
        let parsed = InvokeHeaders::parse(&h, 5_000).unwrap();
        assert_eq!(parsed.idempotency_key.as_deref(), Some("order-17"));
        assert!(parsed.here_only);
        assert_eq!(bearer(&h).unwrap(), "swk_a_b");
        let bad = headers(&[("spillway-placement", "elsewhere")]);
        assert_eq!(
            InvokeHeaders::parse(&bad, 1).unwrap_err().code,
            "bad_placement"
        );
        let bad = headers(&[("spillway-idempotency-key", "two words")]);
        assert_eq!(
            InvokeHeaders::parse(&bad, 1).unwrap_err().code,
            "bad_idempotency_key"
        );
        assert_eq!(bearer(&HeaderMap::new()).unwrap_err().code, "missing_token");
        assert_eq!(
            bearer(&headers(&[("authorization", "Basic x")]))
                .unwrap_err()
                .code,
            "invalid_token"
        );
    }
}
