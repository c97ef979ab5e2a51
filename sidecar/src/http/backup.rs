//! `GET /v1/backup`: a backup of the control state (admin scope), from any
//! member: taken after the leader's read index is applied here, so it holds
//! every change acknowledged before it was asked for. The body is the
//! backup file (`spillway_consensus::Backup`); its position in the old
//! cluster's log is in `spillway-backup-index` and `spillway-backup-term`.
//! Without a leader to name its read index (no quorum) it is 503
//! `no_quorum`: take one offline from a stopped host's directory instead
//! (`spillway backup --from-dir`).

use super::{ApiError, App};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use spillway_consensus::Scope;
use std::sync::Arc;

pub(super) async fn take(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let backup = app
        .control
        .backup()
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_quorum",
                "no leader named its read index: the cluster has no quorum; take a backup offline from a stopped host's directory (spillway backup --from-dir)",
            )
        })?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_founded", e.to_string()))?;
    tracing::info!(index = backup.index, term = backup.term, "backup taken");
    let mut response = backup.encode().into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("spillway-backup-index", HeaderValue::from(backup.index));
    h.insert("spillway-backup-term", HeaderValue::from(backup.term));
    Ok(response)
}
