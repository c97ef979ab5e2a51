//! `GET /v1/cluster`: the cluster at a glance (= `spillway status --json`):
//! Raft's view from this host (leader, term, log indexes, voters and
//! learners), every member from the control log, and each member's own
//! report of its node (asked over QUIC; `null` when it does not answer).

use super::{ApiError, App};
use crate::peer::HostStatus;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use spillway_consensus::MemberState;
use spillway_consensus::Scope;
use spillway_proto::NodeId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a member may take to report its status.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

pub(super) async fn get_cluster(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let principal = app.authorize(&headers, Scope::Read).await?;
    // The cluster's hosts, addresses and load are the operator's, not a
    // tenant's to see.
    if principal.tenant != spillway_proto::TenantId::admin() {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("tenant {} may not read the cluster view", principal.tenant),
        ));
    }
    let control = app.control.clone();
    let state = control.state();
    let raft = control.raft_status();
    let mut asks = tokio::task::JoinSet::new();
    for m in state.members() {
        if m.id != control.id && m.state != MemberState::Removed {
            let (client, id) = (control.client().clone(), m.id);
            asks.spawn(async move { (id, client.status(id, STATUS_TIMEOUT).await) });
        }
    }
    let mut reports: HashMap<u64, HostStatus> = HashMap::new();
    reports.insert(control.id, app.jobs.status());
    while let Some(Ok((id, report))) = asks.join_next().await {
        if let Some(r) = report {
            reports.insert(id, r);
        }
    }
    // What this host last heard from each peer's load gossip: what its
    // scheduler acts on.
    let view = app
        .jobs
        .burst
        .view(&state, control.id, app.jobs.artifacts.bytes_per_s());
    let now = std::time::Instant::now();
    let heard: HashMap<u64, Value> = view
        .hosts
        .iter()
        .filter_map(|h| {
            let sample = h.load?;
            let heard = json!({
                "age_ms": now.saturating_duration_since(sample.received).as_millis() as u64,
                "free_slots": sample.free(),
                "weights_loaded": sample.report.weights.len(),
            });
            Some((h.id.0, heard))
        })
        .collect();
    let members: Vec<Value> = state
        .members()
        .map(|m| {
            let role = if raft.voters.contains(&m.id) {
                "voter"
            } else if raft.learners.contains(&m.id) {
                "learner"
            } else {
                "none"
            };
            let report = reports.get(&m.id);
            let gpus: Vec<Value> = m
                .gpus
                .iter()
                .map(|g| {
                    json!({"index": g.index, "model": g.model, "memory_bytes": g.memory_bytes,
                           "compute_capability": format!("{}.{}", g.compute_capability.0, g.compute_capability.1)})
                })
                .collect();
            json!({
                "id": NodeId(m.id).to_string(),
                "role": role,
                "state": m.state.as_str(),
                "leader": raft.leader == Some(m.id),
                "http_addr": m.http_addr,
                "quic_addr": m.quic_addr,
                "key": hex::encode(m.key),
                "labels": m.labels,
                "gpus": gpus,
                "healthy": report.is_some_and(|r| r.node_up && r.executors.iter().all(|e| e.up)),
                "resident_artifacts": state.resident_count(NodeId(m.id)),
                "slots": report.map(|r| r.slots),
                "running": report.map(|r| r.running),
                "queued": report.map(|r| r.queued),
                "backends": report.map(|r| r.backends.clone()),
                "applied_index": report.and_then(|r| r.applied_index),
                "completed": report.map(|r| r.completed),
                "failed": report.map(|r| r.failed),
                "burst_out": report.map(|r| r.burst_out),
                "burst_in": report.map(|r| r.burst_in),
                "burst_to": report.map(|r| r.burst_to.iter()
                    .map(|(peer, n)| (NodeId(*peer).to_string(), json!(n)))
                    .collect::<serde_json::Map<String, Value>>()),
                "heard": heard.get(&m.id),
                "node": report.map(|r| json!({
                    "up": r.node_up,
                    "pid": r.node_pid,
                    "restarts": r.node_restarts,
                    "resident_artifacts": r.resident_artifacts,
                    "gpu_memory": r.gpu_memory.iter().map(|g| json!({
                        "gpu": g.gpu,
                        "used_bytes": g.used_bytes,
                        "total_bytes": g.total_bytes,
                        "weights_bytes": g.weights_bytes,
                        "tenants": g.tenants.iter().map(|t| json!({
                            "tenant": t.tenant.0,
                            "cap_bytes": t.cap_bytes,
                            "reserved_bytes": t.reserved_bytes,
                            "used_bytes": t.used_bytes,
                        })).collect::<Vec<Value>>(),
                    })).collect::<Vec<Value>>(),
                    "weights_on_gpus": r.weights.iter().map(|w| json!({
                        "gpu": w.gpu,
                        "digest": w.digest.to_string(),
                        "bytes": w.bytes,
                    })).collect::<Vec<Value>>(),
                    "executors": r.executors.iter().map(executor_json).collect::<Vec<Value>>(),
                })),
            })
        })
        .collect();
    Ok(Json(json!({
        "cluster_id": state.cluster_id(),
        "host": NodeId(control.id).to_string(),
        "role": raft.role,
        "leader": raft.leader.map(|l| NodeId(l).to_string()),
        "term": raft.term,
        "last_log_index": raft.last_log_index,
        "committed_index": raft.committed_index,
        "applied_index": raft.applied_index,
        "snapshot_index": raft.snapshot_index,
        "purged_index": raft.purged_index,
        "members": members,
    })))
}

/// `GET /v1/cluster/local`: this host's own view of the control plane,
/// answered without asking any other host (so it answers during a
/// partition): its Raft role, term and leader, the last applied index, the
/// jobs running and queued here,
/// fingerprint of its control state (equal on hosts that applied the same
/// entries) and the residency table it holds. Admin only: residency names
/// every tenant's digests.
pub(super) async fn get_local(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let control = &app.control;
    let state = control.state();
    let raft = control.raft_status();
    let residency: serde_json::Map<String, Value> = state
        .residency_table()
        .into_iter()
        .map(|(digest, holders)| {
            let holders: Vec<String> = holders.iter().map(ToString::to_string).collect();
            (digest.to_hex(), json!(holders))
        })
        .collect();
    Ok(Json(json!({
        "host": NodeId(control.id).to_string(),
        "role": raft.role,
        "term": raft.term,
        "leader": raft.leader.map(|l| NodeId(l).to_string()),
        "applied_index": raft.applied_index,
        "running": app.jobs.queue.running(),
        "queued": app.jobs.queue.depth(),
        "state_fingerprint": state.fingerprint().to_hex(),
        "residency": residency,
    })))
}

/// One executor of a host, as `/v1/cluster` shows it.
fn executor_json(e: &crate::peer::ExecutorStatus) -> Value {
    json!({
        "name": e.name,
        "up": e.up,
        "pid": e.pid,
        "restarts": e.restarts,
        "slots": e.slots,
        "running": e.running,
        "gpus": e.gpus,
        "confined_to": e.confined_to.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "gpu_sharing": e.sharing.iter().map(|g| json!({
            "gpu": g.gpu,
            "mps": g.mps,
            "mig": g.mig,
        })).collect::<Vec<Value>>(),
    })
}
