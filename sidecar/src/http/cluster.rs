//! `GET /v1/cluster`: the cluster at a glance (= `spillway status --json`).

use super::{ApiError, App};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use spillway_topology::{ClusterView, HostState, HostView, Role};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A load report older than this makes a host unhealthy.
const MAX_REPORT_AGE: Duration = Duration::from_secs(5);

pub(super) async fn get_cluster(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers)?;
    let status = app.link.status();
    let host = HostView {
        id: app.node_id,
        role: Role::Voter,
        http_addr: app.http_addr.to_string(),
        quic_addr: None,
        capabilities: status.capabilities.clone(),
        load: status.load,
        queued: app.queue.depth(),
        node_up: status.up,
    };
    let view = ClusterView::single(app.cluster_id.clone(), host);
    let now = Instant::now();
    let members: Vec<Value> = view
        .members
        .iter()
        .map(|m| {
            let gpus: Vec<Value> = m
                .capabilities
                .iter()
                .flat_map(|c| &c.gpus)
                .map(|g| {
                    json!({"index": g.index, "model": g.model, "memory_bytes": g.memory_bytes,
                           "compute_capability": format!("{}.{}", g.compute_capability.0, g.compute_capability.1)})
                })
                .collect();
            let backends: Vec<&str> =
                m.capabilities.iter().flat_map(|c| &c.backends).map(|b| b.as_str()).collect();
            json!({
                "id": m.id.to_string(),
                "role": m.role,
                "state": match m.state() { HostState::Active => "active", HostState::Degraded => "degraded" },
                "http_addr": m.http_addr,
                "quic_addr": m.quic_addr,
                "healthy": m.healthy(now, MAX_REPORT_AGE),
                "gpus": gpus,
                "backends": backends,
                "slots": m.slots(),
                "running": m.running(),
                "queued": m.queued,
                "node": {
                    "pid": status.pid,
                    "up": status.up,
                    "restarts": status.restarts,
                    "resident_artifacts": status.resident,
                },
            })
        })
        .collect();
    Ok(Json(json!({
        "cluster_id": view.cluster_id,
        "leader": view.leader.map(|l| l.to_string()),
        "term": view.term,
        "members": members,
    })))
}
