//! The HTTP ingress: the JSON API of DESIGN §8.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /healthz` | 200 while the host serves (also when degraded) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /v1/cluster` | members, their node, slots and load |
//! | `PUT /v1/artifacts/{name}` / `GET /v1/artifacts` | upload (validated by the node) / list |
//! | `POST /v1/functions` / `GET /v1/functions` | register / list |
//! | `POST /v1/functions/{name}/invoke` | run; output bytes, receipt in headers |
//!
//! Every `/v1` route needs `Authorization: Bearer <admin token>`. Errors are
//! `{"error": {"code", "message", ...}}` (see [`ApiError`]).

mod artifacts;
mod cluster;
mod error;
mod functions;
mod invoke;

pub use error::ApiError;

use crate::auth::AdminToken;
use crate::link::NodeLink;
use crate::metrics::Metrics;
use crate::queue::LocalQueue;
use crate::registry::Registry;
use crate::{SidecarConfig, SidecarError};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use spillway_proto::NodeId;
use std::net::SocketAddr;
use std::sync::Arc;

/// Everything a request handler may touch.
#[derive(Debug)]
pub struct App {
    pub(crate) config: SidecarConfig,
    pub(crate) token: AdminToken,
    pub(crate) registry: Registry,
    pub(crate) link: Arc<NodeLink>,
    pub(crate) queue: LocalQueue,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) cluster_id: String,
    pub(crate) node_id: NodeId,
    pub(crate) http_addr: SocketAddr,
}

impl App {
    pub(crate) fn new(
        config: SidecarConfig,
        token: AdminToken,
        http_addr: SocketAddr,
    ) -> Result<Self, SidecarError> {
        let cluster_id = cluster_id(&config.dir)?;
        Ok(Self {
            registry: Registry::open(&config.dir)?,
            link: Arc::new(NodeLink::new()),
            queue: LocalQueue::new(config.slots, config.queue_capacity),
            metrics: Arc::new(Metrics::new()),
            cluster_id,
            node_id: NodeId(1),
            http_addr,
            token,
            config,
        })
    }

    /// Checks the bearer token.
    pub(crate) fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing_token", "send Authorization: Bearer <token>")
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("invalid_token", "expected Authorization: Bearer <token>")
            })?;
        if self.token.verify(token.trim()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "invalid_token",
                "the token is not valid for this cluster",
            ))
        }
    }
}

/// The cluster id, created at first start (`dir/cluster-id`).
fn cluster_id(dir: &std::path::Path) -> Result<String, SidecarError> {
    let path = dir.join("cluster-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_owned());
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| crate::TokenError::Random(e.to_string()))?;
    let id = format!("sw-{}", hex::encode(bytes));
    std::fs::write(&path, &id).map_err(|source| SidecarError::Io {
        what: "cannot write",
        path: path.clone(),
        source,
    })?;
    Ok(id)
}

/// The ingress router.
pub fn router(app: Arc<App>) -> Router {
    let max_input = app.config.max_input_bytes;
    let max_artifact = app.config.max_artifact_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster::get_cluster))
        .route("/v1/artifacts", get(artifacts::list))
        .route(
            "/v1/artifacts/{name}",
            put(artifacts::put).layer(DefaultBodyLimit::max(max_artifact)),
        )
        .route(
            "/v1/functions",
            post(functions::create).get(functions::list),
        )
        .route(
            "/v1/functions/{name}/invoke",
            post(invoke::invoke).layer(DefaultBodyLimit::max(max_input)),
        )
        .fallback(|| async { ApiError::not_found("route", "no such route") })
        .with_state(app)
}

async fn healthz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let up = app.link.status().up;
    axum::Json(serde_json::json!({
        "status": if up { "ok" } else { "degraded" },
        "node_up": up,
    }))
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    app.metrics.queue_depth.set(i64::from(app.queue.depth()));
    app.metrics.running.set(i64::from(app.queue.running()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
