//! Request bodies, read only after the token was checked from the headers
//! (so an unauthenticated request never has its body read): into memory up
//! to a limit (invoke inputs), or into the spool as they arrive (artifact
//! uploads, which may be hundreds of MiB).
//!
//! Every body is bounded three ways: a `Content-Length` over the limit is
//! 413 before a byte is read (else 413 as the bytes pass it); a body that
//! pauses longer than the body timeout is 408 `body_timeout`; and bodies
//! read into memory share one budget ([`BodyBudget`]), so stalled clients
//! cannot make the sidecar hold more than it in half-read bodies (503
//! `overloaded` past it).
//!
//! What it is not: header parsing (`request`).

use super::ApiError;
use crate::spool::{SizeLimits, Spool, SpoolError, Spooled};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bytes of request bodies being read into memory at once, over all
/// requests, counted in KiB at each body's announced length (or the
/// limit when it announces none) from before its first byte is read until
/// its last.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    kib: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    pub(crate) fn new(total_bytes: usize) -> Self {
        Self {
            kib: Arc::new(Semaphore::new(total_bytes.div_ceil(1024))),
            total: total_bytes,
        }
    }

    /// Room for `bytes` more, or 503 `overloaded` at once.
    fn reserve(&self, bytes: u64) -> Result<OwnedSemaphorePermit, ApiError> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        self.kib.clone().try_acquire_many_owned(kib).map_err(|_| {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "request bodies being read fill this host's budget of {} bytes; retry shortly",
                    self.total
                ),
            );
            e.retry_after_ms = Some(100);
            e
        })
    }
}

/// How a body is read: its limit, the pause it may make between bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyRules {
    pub(super) limit: u64,
    pub(super) idle: Duration,
}

/// The body's announced length, when it announces one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

fn broken_body(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("bad_body", format!("the body could not be read: {e}"))
}

/// The body's next data, `None` at its end; 408 if it pauses too long.
async fn next_data(body: &mut Body, idle: Duration) -> Result<Option<Bytes>, ApiError> {
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!("the body paused for more than {} ms", idle.as_millis()),
                ));
            }
            Ok(None) => return Ok(None),
            Ok(Some(frame)) => frame.map_err(broken_body)?,
        };
        // Trailers carry no data.
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

/// Reads a request's body into memory under `rules` and the shared
/// `budget`: 413 past the limit, 408 on a pause, 503 when the budget is
/// spent, 400 if the body breaks off.
pub(super) async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    rules: BodyRules,
    budget: &BodyBudget,
) -> Result<Bytes, ApiError> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > rules.limit) {
        return Err(ApiError::too_large(rules.limit));
    }
    let expected = declared.unwrap_or(rules.limit);
    let _reserved = budget.reserve(expected)?;
    let mut bytes = bytes::BytesMut::with_capacity(expected.min(64 << 10) as usize);
    while let Some(data) = next_data(&mut body, rules.idle).await? {
        if (bytes.len() + data.len()) as u64 > rules.limit {
            return Err(ApiError::too_large(rules.limit));
        }
        bytes.extend_from_slice(&data);
    }
    Ok(bytes.freeze())
}

/// Writes a request's body to a spool file as it arrives (never holding
/// it whole), with the same answers as [`read_body`] but for the budget
/// (it is on disk); a local disk failure is a 500. The limit is the one of
/// the artifact's kind (`limits`; the larger one for a `Content-Length`
/// checked before the first byte); `idle` the longest pause between bytes.
pub(super) async fn spool_body(
    headers: &HeaderMap,
    mut body: Body,
    (limits, idle): (SizeLimits, Duration),
    spool: &Spool,
) -> Result<Spooled, ApiError> {
    // Past every kind's limit: refused from the head. Past the limit of
    // the kind its first bytes tell: refused as soon as they arrive.
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > limits.largest()) {
        return Err(ApiError::too_large(limits.largest()));
    }
    let spooling = |e: SpoolError| match e {
        SpoolError::TooLarge { limit, .. } => ApiError::too_large(limit),
        SpoolError::Io(e) => ApiError::from(spillway_proto::Failure::Internal {
            message: format!("cannot spool the upload: {e}"),
        }),
    };
    let mut into = spool.create(limits).map_err(spooling)?;
    while let Some(data) = next_data(&mut body, idle).await? {
        into.write(&data).await.map_err(spooling)?;
        if let (Some(n), Some(kind)) = (declared, into.kind()) {
            let limit = limits.of(Some(kind));
            if n > limit {
                return Err(ApiError::too_large(limit));
            }
        }
    }
    into.finish().await.map_err(spooling)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(limit: u64) -> BodyRules {
        BodyRules {
            limit,
            idle: Duration::from_millis(200),
        }
    }

    fn length(n: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::CONTENT_LENGTH, n.into());
        h
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_read_and_the_budget_comes_back() {
        let budget = BodyBudget::new(4096);
        let got = read_body(&length(5), Body::from("hello"), rules(10), &budget)
            .await
            .unwrap();
        assert_eq!(got, "hello");
        assert_eq!(budget.kib.available_permits(), 4);
        // No Content-Length: counted at the limit, read as it comes.
        let got = read_body(&HeaderMap::new(), Body::from("hi"), rules(4096), &budget)
            .await
            .unwrap();
        assert_eq!(got, "hi");
    }

    #[tokio::test]
    async fn over_the_limit_is_413_announced_or_not() {
        let budget = BodyBudget::new(1 << 20);
        let e = read_body(&length(11), Body::from("x"), rules(10), &budget)
            .await
            .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (413, "payload_too_large"));
        let e = read_body(
            &HeaderMap::new(),
            Body::from("elevenbytes"),
            rules(10),
            &budget,
        )
        .await
        .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (413, "payload_too_large"));
    }

    #[tokio::test]
    async fn a_spent_budget_is_503_and_a_stalled_body_408() {
        let budget = BodyBudget::new(2048);
        // A body that never comes holds 2 KiB of the budget until it times out.
        let announced = length(2048);
        let first = read_body(&announced, Body::new(Stalled), rules(4096), &budget);
        // `join!` polls the first until it waits for its body (its share
        // reserved), then the second.
        let one = length(1);
        let second = read_body(&one, Body::from("x"), rules(4096), &budget);
        let (first, second) = tokio::join!(first, second);
        let e = second.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (503, "overloaded"));
        assert_eq!(e.retry_after_ms, Some(100));
        let e = first.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (408, "body_timeout"));
        // Both gave their share back.
        assert_eq!(budget.kib.available_permits(), 2);
    }

    /// A body whose bytes never come.
    struct Stalled;

    impl axum::body::HttpBody for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }
}
