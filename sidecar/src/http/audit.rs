//! `GET /v1/audit[?tenant=T][&limit=N]`: the control-plane changes made
//! through the API (who, through which host, when, what, for which
//! tenant), newest last, from
//! the control log's audit trail (admin scope).

use super::{ApiError, App};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use spillway_consensus::Scope;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    tenant: Option<String>,
    /// The newest this many (default 1000).
    limit: Option<usize>,
}

pub(super) async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let Query(query) = query.map_err(ApiError::from_query)?;
    let state = app.control.state();
    let records: Vec<Value> = state
        .audit()
        .filter(|r| query.tenant.as_deref().is_none_or(|t| r.tenant.0 == t))
        .map(|r| {
            json!({
                "unix_ms": r.unix_ms,
                "by": r.by,
                "via": spillway_proto::NodeId(r.via).to_string(),
                "tenant": r.tenant.0,
                "what": r.what,
            })
        })
        .collect();
    let limit = query.limit.unwrap_or(1000);
    let skip = records.len().saturating_sub(limit);
    Ok(Json(Value::Array(records.into_iter().skip(skip).collect())))
}
