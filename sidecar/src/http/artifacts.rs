//! `PUT /v1/artifacts/{name}` and `GET /v1/artifacts`. An upload's body is
//! spooled to disk as it arrives (never held whole), then handed to the
//! node in chunks.

use super::{ApiError, App};
use crate::records::{ArtifactRecord, valid_name};
use crate::signing::{self, SignatureRefusal};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use spillway_consensus::Scope;
use spillway_consensus::{ControlCommand, ResidencyChange, ResidencyStatus};
use spillway_proto::NodeId;
use spillway_proto::{ArtifactKind, Failure};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an upload waits for a restarting node.
const NODE_WAIT: Duration = Duration::from_secs(10);

fn signature_error(refusal: SignatureRefusal) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        refusal.code(),
        refusal.to_string(),
    )
}

pub(super) async fn put(
    State(app): State<Arc<App>>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<ArtifactRecord>, ApiError> {
    // The token first, from the headers: an unauthenticated upload's body
    // is never read.
    let principal = app.authorize(&headers, Scope::Publish).await?;
    let Path(name) = name.map_err(ApiError::from_path)?;
    if !valid_name(&name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "names are 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit",
        ));
    }
    // A tenant's uploads are rate-limited on each host before a byte of
    // the body is read.
    if let Err(wait) = app.rates.take(
        &format!("publish:{}", principal.tenant),
        app.config.publish_rate_per_s,
        Instant::now(),
    ) {
        return Err(ApiError {
            retry_after_ms: Some(super::error::saturating_ms(wait.as_millis() as u64).max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "tenant {} is over its {}/s of uploads on this host",
                    principal.tenant, app.config.publish_rate_per_s
                ),
            )
        });
    }
    let rules = (app.jobs.artifacts.limits(), app.config.ingress.body_timeout);
    let spooled =
        super::body::spool_body(&headers, body, rules, app.jobs.artifacts.spool()).await?;
    if spooled.size == 0 {
        return Err(ApiError::from(Failure::InvalidArtifact {
            reason: "the body is empty".into(),
        }));
    }
    // The tenant's storage quota, before the node stores anything (the log
    // checks it again when the upload is committed).
    app.control
        .state()
        .storage_room(&principal.tenant, &name, spooled.size)
        .map_err(|over| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "storage_quota_exceeded",
                over.to_string(),
            )
        })?;
    // The publisher's signature is checked before the node sees the bytes.
    let presented = match headers.get(crate::api::header::SIGNATURE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| SignatureRefusal::Malformed)
                .and_then(signing::parse)
                .map_err(signature_error)?,
        ),
    };
    let kind = spooled.kind;
    let signature = {
        let state = app.control.state();
        let tenant = state.tenant(&principal.tenant);
        let digest = &spooled.digest;
        match kind {
            ArtifactKind::Component | ArtifactKind::Weights => {
                signing::check_upload(tenant, presented, digest, &name)
            }
            ArtifactKind::KernelPack => {
                signing::check_pack_upload(tenant, presented, digest, &name).map(Some)
            }
        }
        .map_err(signature_error)?
    };
    app.jobs.executors.wait_up(Instant::now() + NODE_WAIT).await;
    let (digest, size) = app.jobs.executors.put_artifact(&spooled).await?;
    drop(spooled);
    let record = ArtifactRecord {
        name: name.clone(),
        digest: digest.to_string(),
        size,
        kind,
        holders: Vec::new(),
    };
    let command = ControlCommand::PutArtifact {
        name,
        digest,
        size,
        tenant: principal.tenant.clone(),
        signature,
        kind,
    };
    app.commit(&headers, command).await?;
    // This host holds it from now on; say so at once rather than at the
    // residency loop's next batch, so peers can fetch it right away.
    let held = ResidencyChange {
        host: NodeId(app.control.id),
        digest,
        status: ResidencyStatus::Resident,
    };
    app.record(ControlCommand::SetResidency(vec![held])).await?;
    tracing::info!(name = %record.name, digest = %record.digest, size, kind = kind.name(), "artifact stored");
    Ok(Json(record))
}

pub(super) async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<ArtifactRecord>>, ApiError> {
    let principal = app.authorize(&headers, Scope::Read).await?;
    let state = app.control.state();
    let mine = state
        .artifacts_of(&principal.tenant)
        .map(|a| ArtifactRecord {
            holders: state
                .holders(&a.digest)
                .into_iter()
                .map(|h| h.to_string())
                .collect(),
            ..ArtifactRecord::from(a)
        });
    Ok(Json(mine.collect()))
}
