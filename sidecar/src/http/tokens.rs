//! `POST /v1/tokens`, `GET /v1/tokens`, `DELETE /v1/tokens/{id}`: scoped
//! API tokens (admin scope). A new token's secret is in the answer to its
//! creation and nowhere else; the log keeps its hash.

use super::{ApiError, App};
use crate::auth::ScopedToken;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use spillway_consensus::{ControlCommand, ControlResponse, Scope, TokenEntry};
use spillway_proto::TenantId;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The longest a token may stay valid.
const MAX_TTL_S: u64 = 365 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateToken {
    /// `admin`, `invoke`, `publish`, `read` (at least one).
    scopes: Vec<String>,
    /// Seconds it stays valid (default: until revoked).
    ttl_s: Option<u64>,
    label: Option<String>,
    /// The tenant it acts for (default: the admin tenant).
    tenant: Option<String>,
    /// Requests a second it may make on each host (default: no limit).
    rate_per_s: Option<u32>,
}

fn view(t: &TokenEntry) -> Value {
    json!({
        "id": t.id,
        "tenant": t.tenant.0,
        "scopes": t.scopes.iter().map(Scope::as_str).collect::<Vec<_>>(),
        "label": t.label,
        "created_unix_ms": t.created_unix_ms,
        "expires_unix_ms": t.expires_unix_ms,
        "revoked": t.revoked,
        "rate_per_s": t.rate_per_s,
    })
}

pub(super) async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let principal = app.authorize(&headers, Scope::Admin).await?;
    let Json(req) = body.map_err(ApiError::from_json)?;
    let scopes = req
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| ApiError::bad_request("bad_scope", e.to_string()))?;
    if scopes.is_empty() {
        return Err(ApiError::bad_request(
            "bad_scope",
            "a token needs at least one scope",
        ));
    }
    if req.ttl_s.is_some_and(|t| !(1..=MAX_TTL_S).contains(&t)) {
        return Err(ApiError::bad_request(
            "bad_ttl",
            format!("ttl_s must be between 1 and {MAX_TTL_S}"),
        ));
    }
    if req.rate_per_s == Some(0) {
        return Err(ApiError::bad_request(
            "bad_rate",
            "rate_per_s must be positive (leave it out for no limit)",
        ));
    }
    let label = req.label.unwrap_or_default();
    if label.len() > 200 {
        return Err(ApiError::bad_request(
            "bad_label",
            "a label is at most 200 bytes",
        ));
    }
    let tenant = match req.tenant {
        None => principal.tenant.clone(),
        Some(name) => TenantId(name),
    };
    if !app.control.state().tenant_exists(&tenant) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            format!("no tenant {tenant}"),
        ));
    }
    if !tenant.is_admin() && scopes.contains(&Scope::Admin) {
        return Err(ApiError::bad_request(
            "bad_scope",
            "only the admin tenant's tokens may have the admin scope",
        ));
    }
    let token = ScopedToken::generate()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let now = crate::now_unix_ms();
    let entry = TokenEntry {
        id: token.id.clone(),
        hash: token.hash_bytes(),
        tenant,
        scopes,
        label,
        created_unix_ms: now,
        expires_unix_ms: req.ttl_s.map(|t| now + t * 1000),
        revoked: false,
        rate_per_s: req.rate_per_s,
    };
    app.commit(&headers, ControlCommand::CreateToken(entry.clone()))
        .await?;
    tracing::info!(token = %entry.id, "token created");
    let mut answer = view(&entry);
    answer["token"] = token.reveal().into();
    Ok((StatusCode::CREATED, Json(answer)))
}

pub(super) async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let state = app.control.state();
    Ok(Json(Value::Array(state.tokens().map(view).collect())))
}

pub(super) async fn revoke(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let Path(id) = id.map_err(ApiError::from_path)?;
    if app.control.state().token(&id).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_token",
            format!("no token {id:?}"),
        ));
    }
    match app
        .commit(&headers, ControlCommand::RevokeToken { id: id.clone() })
        .await?
    {
        ControlResponse::Done => {
            tracing::info!(token = %id, "token revoked");
            Ok(Json(json!({"id": id, "revoked": true})))
        }
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{other:?}"),
        )),
    }
}
