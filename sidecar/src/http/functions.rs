//! `POST /v1/functions` and `GET /v1/functions`.

use super::{ApiError, App};
use crate::records::{AcceleratorName, FunctionRecord, valid_name};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use spillway_consensus::Scope;
use spillway_consensus::{ControlCommand, FunctionEntry};
use spillway_proto::{Accelerator, ArtifactKind, Digest, NamedArtifact, TenantId};
use std::sync::Arc;

/// The request body. Absent fields take the host's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateFunction {
    name: String,
    /// An artifact name or digest.
    artifact: String,
    #[serde(default)]
    accelerator: AcceleratorName,
    deadline_ms: Option<u64>,
    memory_limit_bytes: Option<u64>,
    #[serde(default)]
    idempotent: bool,
    /// Kernel packs (names or digests) the guest may launch from; the
    /// function must then require an accelerator.
    #[serde(default)]
    kernel_packs: Vec<String>,
    /// Weights (names or digests) the guest may open (`gpu.weights`).
    #[serde(default)]
    weights: Vec<String>,
    /// The model name it serves under the OpenAI-compatible API.
    openai_model: Option<String>,
}

pub(super) async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<CreateFunction>, JsonRejection>,
) -> Result<(StatusCode, Json<FunctionRecord>), ApiError> {
    let principal = app.authorize(&headers, Scope::Publish).await?;
    let Json(req) = body.map_err(ApiError::from_json)?;
    if !valid_name(&req.name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "names are 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit",
        ));
    }
    if let Some(model) = &req.openai_model
        && !valid_model_name(model)
    {
        return Err(ApiError::bad_request(
            "invalid_name",
            "an openai_model is 1-128 of A-Z, a-z, 0-9, '-', '_', '.', ':', '/'",
        ));
    }
    let Resolved {
        digest,
        kernel_packs,
        weights,
    } = resolve(&app, &principal.tenant, &req)?;
    let max_deadline = app.config.max_deadline.as_millis() as u64;
    let deadline_ms = req
        .deadline_ms
        .unwrap_or(app.config.default_deadline.as_millis() as u64);
    if !(1..=max_deadline).contains(&deadline_ms) {
        return Err(ApiError::bad_request(
            "bad_deadline",
            format!("deadline_ms must be between 1 and {max_deadline}"),
        ));
    }
    let max_memory = app
        .jobs
        .executors
        .status()
        .capabilities
        .map(|c| c.max_memory_bytes);
    let memory_limit_bytes = req.memory_limit_bytes.or(max_memory).unwrap_or(0);
    if let Some(max) = max_memory
        && memory_limit_bytes > max
    {
        return Err(ApiError::bad_request(
            "bad_memory_limit",
            format!("memory_limit_bytes must be at most {max} on this host"),
        ));
    }
    let state = app.control.state();
    let tenant_limit = state
        .tenant(&principal.tenant)
        .and_then(|t| t.max_job_memory_bytes);
    let memory_limit_bytes = match (req.memory_limit_bytes, tenant_limit) {
        (Some(asked), Some(limit)) if asked > limit => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "over_tenant_limit",
                format!(
                    "memory_limit_bytes {asked} is over tenant {}'s limit of {limit} bytes a job",
                    principal.tenant
                ),
            ));
        }
        (None, Some(limit)) => memory_limit_bytes.min(limit),
        _ => memory_limit_bytes,
    };
    let entry = FunctionEntry {
        name: req.name,
        artifact: req.artifact,
        digest,
        accelerator: req.accelerator.into(),
        deadline_ms,
        memory_limit_bytes,
        idempotent: req.idempotent,
        tenant: principal.tenant.clone(),
        kernel_packs,
        weights,
        openai_model: req.openai_model,
    };
    let record = FunctionRecord::from(&entry).with_gpu_context(&entry, &app.control.state());
    app.commit(&headers, ControlCommand::PutFunction(entry))
        .await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// Whether `name` may be an OpenAI model name: 1-128 of letters, digits
/// and `-_.:/` (`org/model:tag` style).
fn valid_model_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
}

/// What a function names, resolved to digests.
struct Resolved {
    digest: Digest,
    kernel_packs: Vec<NamedArtifact>,
    weights: Vec<NamedArtifact>,
}

/// The function's component, kernel packs and weights, each of the right
/// kind and the tenant's own (another tenant's are answered as if they did
/// not exist).
fn resolve(app: &App, tenant: &TenantId, req: &CreateFunction) -> Result<Resolved, ApiError> {
    let state = app.control.state();
    let find = |reference: &str| {
        state.find_artifact(tenant, reference).ok_or_else(|| {
            ApiError::not_found(
                "artifact",
                format!("no artifact named or hashed {reference:?}"),
            )
        })
    };
    let wrong_kind = |reference: &str, is: ArtifactKind, wanted: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_artifact_kind",
            format!("{reference:?} is a {}, not a {wanted}", is.name()),
        )
    };
    let component = find(&req.artifact)?;
    if component.kind != ArtifactKind::Component {
        return Err(wrong_kind(&req.artifact, component.kind, "component"));
    }
    // Each named once, by its registered name (the one the guest uses).
    let named = |references: &[String], kind: ArtifactKind| {
        let mut named: Vec<NamedArtifact> = Vec::new();
        for reference in references {
            let artifact = find(reference)?;
            if artifact.kind != kind {
                return Err(wrong_kind(reference, artifact.kind, kind.name()));
            }
            if !named.iter().any(|n| n.name == artifact.name) {
                named.push(NamedArtifact {
                    name: artifact.name.clone(),
                    digest: artifact.digest,
                });
            }
        }
        Ok(named)
    };
    let packs = named(&req.kernel_packs, ArtifactKind::KernelPack)?;
    let weights = named(&req.weights, ArtifactKind::Weights)?;
    if !packs.is_empty() && Accelerator::from(req.accelerator) != Accelerator::Required {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "kernel_packs_need_a_gpu",
            "a function with kernel packs must set \"accelerator\": \"required\" (packs run only on CUDA)",
        ));
    }
    Ok(Resolved {
        digest: component.digest,
        kernel_packs: packs,
        weights,
    })
}

pub(super) async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<FunctionRecord>>, ApiError> {
    let principal = app.authorize(&headers, Scope::Read).await?;
    let state = app.control.state();
    let mine = state.functions_of(&principal.tenant);
    Ok(Json(
        mine.map(|f| FunctionRecord::from(f).with_gpu_context(f, &state))
            .collect(),
    ))
}
