//! `POST /v1/tenants`, `GET /v1/tenants`, `PATCH /v1/tenants/{name}`:
//! tenants (admin scope). A tenant is a namespace: its artifacts, functions
//! and tokens are invisible to every other tenant. A tenant may be limited
//! to hosts with given labels (`placement`): its jobs run, and burst, only
//! there. Its quotas: jobs at once cluster-wide (`max_concurrent`), memory
//! per job (`max_job_memory_bytes`, linear memory and `gpu` buffers
//! together) and invoke requests a second cluster-wide (`rate_per_s`). The
//! admin tenant always exists and has no quotas.

use super::{ApiError, App};
use crate::records::valid_name;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use spillway_consensus::{
    ControlCommand, ControlState, GPU_LEASE_UNIT, Scope, TenantEntry, TenantPatch,
};
use spillway_proto::{NodeId, TenantId};
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
    /// Memory one job may use.
    max_job_memory_bytes: Option<u64>,
    /// Invoke requests a second, cluster-wide.
    rate_per_s: Option<u32>,
    /// `gpu` buffer bytes its jobs may hold at once on one host.
    max_gpu_memory_bytes: Option<u64>,
    /// Artifact names it may hold.
    max_artifacts: Option<u32>,
    /// Bytes its artifacts may add up to.
    max_artifact_bytes: Option<u64>,
}

/// `PATCH`: a field left out stays as it is; `null` clears a limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangeTenant {
    placement: Option<BTreeMap<String, String>>,
    trusted_keys: Option<Vec<String>>,
    require_signed: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    max_concurrent: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    max_job_memory_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    rate_per_s: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    max_gpu_memory_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_artifacts: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    max_artifact_bytes: Option<Option<u64>>,
}

/// A field that is present (`null` included): `Some(value or None)`; an
/// absent one falls back to `default`, `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn view(t: &TenantEntry, state: &ControlState) -> Value {
    // Where its concurrency quota (in jobs) and its GPU memory quota (in
    // MiB) are leased, once the leader has written leases (until then each
    // active host has an even share).
    let shown = |l: &spillway_consensus::QuotaLeases| {
        let shares: BTreeMap<String, u32> = l
            .shares
            .iter()
            .map(|(h, s)| (NodeId(*h).to_string(), *s))
            .collect();
        json!({"epoch": l.epoch, "shares": shares})
    };
    json!({
        "leases": state.quota_leases(&t.id).map(shown),
        "gpu_memory_leases_mib": state.gpu_leases(&t.id).map(shown),
        "name": t.id.0,
        "created_unix_ms": t.created_unix_ms,
        "placement": t.placement,
        "trusted_keys": t.trusted_keys.iter().map(hex::encode).collect::<Vec<_>>(),
        "require_signed": t.require_signed,
        "max_concurrent": t.max_concurrent,
        "max_job_memory_bytes": t.max_job_memory_bytes,
        "rate_per_s": t.rate_per_s,
        "max_gpu_memory_bytes": t.max_gpu_memory_bytes,
        "max_artifacts": t.max_artifacts,
        "max_artifact_bytes": t.max_artifact_bytes,
    })
}

pub(super) async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<CreateTenant>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
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
    let trusted_keys = keys(&req.trusted_keys)?;
    check_limits(
        [req.max_concurrent, req.rate_per_s, req.max_artifacts],
        [
            req.max_job_memory_bytes,
            req.max_gpu_memory_bytes,
            req.max_artifact_bytes,
        ],
    )?;
    check_gpu_quota(req.max_gpu_memory_bytes)?;
    let entry = TenantEntry {
        id: id.clone(),
        created_unix_ms: crate::now_unix_ms(),
        placement: req.placement,
        trusted_keys,
        require_signed: req.require_signed,
        max_concurrent: req.max_concurrent,
        max_job_memory_bytes: req.max_job_memory_bytes,
        rate_per_s: req.rate_per_s,
        max_gpu_memory_bytes: req.max_gpu_memory_bytes,
        max_artifacts: req.max_artifacts,
        max_artifact_bytes: req.max_artifact_bytes,
    };
    app.commit(&headers, ControlCommand::CreateTenant(entry.clone()))
        .await?;
    tracing::info!(tenant = %id, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(view(&entry, &app.control.state())),
    ))
}

pub(super) async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let state = app.control.state();
    let mut tenants = vec![json!({"name": TenantId::admin().0, "created_unix_ms": null})];
    tenants.extend(state.tenants().map(|t| view(t, &state)));
    Ok(Json(Value::Array(tenants)))
}

pub(super) async fn change(
    State(app): State<Arc<App>>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<ChangeTenant>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let Path(name) = name.map_err(ApiError::from_path)?;
    let Json(req) = body.map_err(ApiError::from_json)?;
    let id = TenantId(name);
    let missing = || {
        ApiError::not_found(
            "tenant",
            format!("no tenant {id} (the admin tenant has no settings)"),
        )
    };
    if app.control.state().tenant(&id).is_none() {
        return Err(missing());
    }
    let trusted_keys = req.trusted_keys.as_deref().map(keys).transpose()?;
    check_limits(
        [
            req.max_concurrent.flatten(),
            req.rate_per_s.flatten(),
            req.max_artifacts.flatten(),
        ],
        [
            req.max_job_memory_bytes.flatten(),
            req.max_gpu_memory_bytes.flatten(),
            req.max_artifact_bytes.flatten(),
        ],
    )?;
    check_gpu_quota(req.max_gpu_memory_bytes.flatten())?;
    let patch = TenantPatch {
        placement: req.placement,
        trusted_keys,
        require_signed: req.require_signed,
        max_concurrent: req.max_concurrent,
        max_job_memory_bytes: req.max_job_memory_bytes,
        rate_per_s: req.rate_per_s,
        max_gpu_memory_bytes: req.max_gpu_memory_bytes,
        max_artifacts: req.max_artifacts,
        max_artifact_bytes: req.max_artifact_bytes,
    };
    let command = ControlCommand::UpdateTenant {
        id: id.clone(),
        patch,
    };
    app.commit(&headers, command).await?;
    tracing::info!(tenant = %id, "tenant changed");
    let state = app.control.state();
    let tenant = state.tenant(&id).ok_or_else(missing)?;
    Ok(Json(view(tenant, &state)))
}

/// Publisher keys from hex.
fn keys(hex_keys: &[String]) -> Result<Vec<[u8; 32]>, ApiError> {
    hex_keys
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
        })
}

/// Zero is not a limit anyone means: refuse it rather than lock the
/// tenant out.
fn check_limits(counts: [Option<u32>; 3], bytes: [Option<u64>; 3]) -> Result<(), ApiError> {
    if counts.contains(&Some(0)) || bytes.contains(&Some(0)) {
        return Err(ApiError::bad_request(
            "bad_limit",
            "max_concurrent, rate_per_s, max_artifacts, max_job_memory_bytes, max_gpu_memory_bytes and max_artifact_bytes must be positive (null: no limit)",
        ));
    }
    Ok(())
}

/// A GPU memory quota is leased to hosts in whole MiB: less than one would
/// leave every host nothing.
fn check_gpu_quota(bytes: Option<u64>) -> Result<(), ApiError> {
    match bytes {
        Some(b) if b < GPU_LEASE_UNIT => Err(ApiError::bad_request(
            "bad_limit",
            format!(
                "max_gpu_memory_bytes is leased to hosts in whole MiB: at least {GPU_LEASE_UNIT} (null: no limit)"
            ),
        )),
        _ => Ok(()),
    }
}
