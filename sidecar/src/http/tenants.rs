//! `POST /v1/tenants`, `GET /v1/tenants`: tenants (admin scope). A tenant
//! is a namespace: its artifacts, functions and tokens are invisible to
//! every other tenant. A tenant may be limited to hosts with given labels
//! (`placement`): its jobs run, and burst, only there. The admin tenant
//! always exists.

use super::{ApiError, App};
use crate::records::valid_name;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use spillway_consensus::{ControlCommand, Scope, TenantEntry};
use spillway_proto::TenantId;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTenant {
    name: String,
    /// Labels a host must carry to run this tenant's jobs.
    #[serde(default)]
    placement: BTreeMap<String, String>,
    /// Publisher public keys (64 hex digits each) whose signatures count.
    #[serde(default)]
    trusted_keys: Vec<String>,
    /// Refuse artifacts not signed by a trusted key.
    #[serde(default)]
    require_signed: bool,
    /// Jobs it may have running at once, cluster-wide.
    max_concurrent: Option<u32>,
}

fn view(t: &TenantEntry) -> Value {
    json!({
        "name": t.id.0,
        "created_unix_ms": t.created_unix_ms,
        "placement": t.placement,
        "trusted_keys": t.trusted_keys.iter().map(hex::encode).collect::<Vec<_>>(),
        "require_signed": t.require_signed,
        "max_concurrent": t.max_concurrent,
    })
}

pub(super) async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<CreateTenant>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let principal = app.authorize(&headers, Scope::Admin).await?;
    let Json(req) = body.map_err(ApiError::from_json)?;
    if !valid_name(&req.name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "names are 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit",
        ));
    }
    let id = TenantId(req.name);
    if app.control.state().tenant_exists(&id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tenant_exists",
            format!("tenant {id} exists"),
        ));
    }
    let trusted_keys = req
        .trusted_keys
        .iter()
        .map(|k| {
            hex::decode(k)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_key",
                "trusted_keys are ed25519 public keys, 64 hex digits",
            )
        })?;
    let entry = TenantEntry {
        id: id.clone(),
        created_unix_ms: crate::now_unix_ms(),
        placement: req.placement,
        trusted_keys,
        require_signed: req.require_signed,
        max_concurrent: req.max_concurrent,
    };
    app.commit(&principal, ControlCommand::CreateTenant(entry.clone()))
        .await?;
    tracing::info!(tenant = %id, "tenant created");
    Ok((StatusCode::CREATED, Json(view(&entry))))
}

pub(super) async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let state = app.control.state();
    let mut tenants = vec![json!({"name": TenantId::admin().0, "created_unix_ms": null})];
    tenants.extend(state.tenants().map(view));
    Ok(Json(Value::Array(tenants)))
}
