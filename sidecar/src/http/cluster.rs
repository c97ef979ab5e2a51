//! `GET /v1/cluster`: the cluster at a glance (= `spillway status --json`):
//! Raft's view from this host (leader, term, log indexes, voters and
//! learners), every member from the control log, and each member's own
//! report of its node (asked over QUIC; `null` when it does not answer).
//! Each member's GPUs are its inventory in the log (model, memory, how
//! each is shared) with what its report adds per GPU: each tenant's cap
//! and use there, and the weights loaded on it.

use super::{ApiError, App};
use crate::peer::HostStatus;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use spillway_consensus::Scope;
use spillway_consensus::{GpuIsolation, MemberState};
use spillway_proto::{GpuDevice, GpuMemory, GpuWeights, NodeId};
use std::collections::{BTreeMap, HashMap};
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
            let gpus = gpu_inventory(
                &m.gpus,
                state.gpu_isolation(m.id),
                report.map(|r| (r.gpu_memory.as_slice(), r.weights.as_slice())),
            );
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

/// A member's GPUs as `/v1/cluster` shows them: each one the log records
/// (model, memory, `isolation`: how its contexts are shared, `null` until
/// the host records it), with its `tenants` (each tenant's memory pools
/// there, added up across the executors sharing the GPU: the cap the
/// driver enforces and the bytes in use) and `weights` (loaded on it), both
/// `null` when the host did not report.
fn gpu_inventory(
    gpus: &[GpuDevice],
    isolation: &[GpuIsolation],
    report: Option<(&[GpuMemory], &[GpuWeights])>,
) -> Vec<Value> {
    gpus.iter()
        .map(|g| {
            let isolation = isolation.iter().find(|i| i.gpu == g.index).map(|i| {
                json!({
                    "contexts": i.contexts,
                    "shared_context": i.shared,
                    "kept_for": i.kept_for.iter()
                        .map(|k| k.iter().map(|t| t.0.as_str()).collect::<Vec<_>>())
                        .collect::<Vec<_>>(),
                    "tenants_apart": i.tenants_apart(),
                    "mps": i.mps,
                    "mig": i.mig,
                })
            });
            let tenants = report.map(|(memory, _)| {
                let mut by_tenant: BTreeMap<&str, (Option<u64>, u64, u32)> = BTreeMap::new();
                for pool in memory.iter().filter(|m| m.gpu == g.index).flat_map(|m| &m.tenants) {
                    let (cap, used, pools) = by_tenant.entry(&pool.tenant.0).or_insert((Some(0), 0, 0));
                    *cap = cap.zip(pool.cap_bytes).map(|(a, b)| a + b);
                    *used += pool.used_bytes;
                    *pools += 1;
                }
                by_tenant
                    .into_iter()
                    .map(|(tenant, (cap, used, pools))| {
                        json!({"tenant": tenant, "cap_bytes": cap, "used_bytes": used, "pools": pools})
                    })
                    .collect::<Vec<Value>>()
            });
            let weights = report.map(|(_, weights)| {
                (weights.iter().filter(|w| w.gpu == g.index))
                    .map(|w| json!({"digest": w.digest.to_string(), "bytes": w.bytes}))
                    .collect::<Vec<Value>>()
            });
            json!({
                "index": g.index,
                "model": g.model,
                "memory_bytes": g.memory_bytes,
                "compute_capability": format!("{}.{}", g.compute_capability.0, g.compute_capability.1),
                "isolation": isolation,
                "tenants": tenants,
                "weights": weights,
            })
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::{Digest, TenantGpuPool, TenantId};

    #[test]
    fn each_gpu_shows_its_isolation_caps_and_weights() {
        let gpu = |index| GpuDevice {
            index,
            model: "H100".into(),
            memory_bytes: 80 << 30,
            compute_capability: (9, 0),
        };
        let isolation = [GpuIsolation {
            gpu: 0,
            contexts: 2,
            shared: true,
            kept_for: vec![vec![TenantId("acme".into())]],
            mps: false,
            mig: false,
        }];
        let pool = |tenant: &str, cap, used| TenantGpuPool {
            tenant: TenantId(tenant.into()),
            cap_bytes: cap,
            reserved_bytes: used,
            used_bytes: used,
        };
        // Two executors on GPU 0: globex has a pool in each (its cap split
        // in two), acme one in its own context.
        let memory = [
            GpuMemory {
                gpu: 0,
                used_bytes: 0,
                total_bytes: 80 << 30,
                weights_bytes: 0,
                tenants: vec![pool("globex", Some(32), 10), pool("acme", None, 5)],
            },
            GpuMemory {
                gpu: 0,
                used_bytes: 0,
                total_bytes: 80 << 30,
                weights_bytes: 0,
                tenants: vec![pool("globex", Some(32), 1)],
            },
        ];
        let weights = [GpuWeights {
            gpu: 1,
            digest: Digest::of(b"w"),
            bytes: 7,
        }];
        let shown = gpu_inventory(&[gpu(0), gpu(1)], &isolation, Some((&memory, &weights)));
        assert_eq!(shown[0]["isolation"]["contexts"], 2);
        assert_eq!(shown[0]["isolation"]["kept_for"], json!([["acme"]]));
        assert_eq!(shown[0]["isolation"]["tenants_apart"], false);
        assert_eq!(
            shown[0]["tenants"],
            json!([
                {"tenant": "acme", "cap_bytes": null, "used_bytes": 5, "pools": 1},
                {"tenant": "globex", "cap_bytes": 64, "used_bytes": 11, "pools": 2},
            ])
        );
        assert_eq!(shown[0]["weights"], json!([]));
        assert_eq!(shown[1]["isolation"], Value::Null);
        assert_eq!(shown[1]["tenants"], json!([]));
        assert_eq!(shown[1]["weights"][0]["bytes"], 7);
        // A host that did not answer: the log's part only.
        let silent = gpu_inventory(&[gpu(0)], &isolation, None);
        assert_eq!(silent[0]["memory_bytes"], 80u64 << 30);
        assert_eq!(silent[0]["tenants"], Value::Null);
        assert_eq!(silent[0]["weights"], Value::Null);
    }
}
