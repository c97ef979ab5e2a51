//! Request bodies, read only after the token was checked from the headers
//! (so an unauthenticated request never has its body read): into memory up
//! to a limit (invoke inputs), or into the spool as they arrive (artifact
//! uploads, which may be hundreds of MiB). A `Content-Length` over the
//! limit is refused before a byte is read.
//!
//! What it is not: header parsing (`request`).

use crate::spool::{Spool, SpoolError, Spooled};

/// The body's announced length, when it announces one.
fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a request's body, at most `limit` bytes: 413 past it (told by the
/// `Content-Length` before a byte is read, else as the bytes arrive), 400
/// if the body breaks off. Handlers call it only after the token was
/// checked from the headers, so an unauthenticated request never has its
/// body read.
pub(super) async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<bytes::Bytes, super::ApiError> {
    if declared_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(super::ApiError::too_large(limit as u64));
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(super::ApiError::too_large(limit as u64));
                }
                source = s.source();
            }
            Err(broken_body(e))
        }
    }
}

fn broken_body(e: impl std::fmt::Display) -> super::ApiError {
    super::ApiError::bad_request("bad_body", format!("the body could not be read: {e}"))
}

/// Writes a request's body to a spool file as it arrives (never holding
/// it whole), at most `limit` bytes, with the same answers as
/// [`read_body`]; a local disk failure is a 500.
pub(super) async fn spool_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    spool: &Spool,
    limit: u64,
) -> Result<Spooled, super::ApiError> {
    use http_body_util::BodyExt;
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(super::ApiError::too_large(limit));
    }
    let spooling = |e: SpoolError| match e {
        SpoolError::TooLarge { limit } => super::ApiError::too_large(limit),
        SpoolError::Io(e) => super::ApiError::from(spillway_proto::Failure::Internal {
            message: format!("cannot spool the upload: {e}"),
        }),
    };
    let mut into = spool.create(limit).map_err(spooling)?;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(broken_body)?;
        if let Ok(data) = frame.into_data() {
            into.write(&data).await.map_err(spooling)?;
        }
    }
    into.finish().await.map_err(spooling)
}
