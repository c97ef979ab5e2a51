//! The HTTP ingress: the JSON API of DESIGN §8.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /healthz` | 200 while the host serves (also when degraded) |
//! | `GET /metrics` | OpenMetrics to scrapers that ask for it (Prometheus does), else the Prometheus text format |
//! | `GET /v1/cluster` | members, roles, leader, term, log indexes, per-host health |
//! | `POST /v1/tickets` | a one-time join ticket (`{"ttl_s": 3600}`) |
//! | `POST /v1/members/{id}/drain` / `POST /v1/members/{id}/undrain` / `DELETE /v1/members/{id}` | drain / bring back / remove a member |
//! | `PUT /v1/artifacts/{name}` / `GET /v1/artifacts` | upload (validated by the node) / list |
//! | `POST /v1/functions` / `GET /v1/functions` | register / list |
//! | `POST /v1/functions/{name}/invoke` | run; output bytes, receipt in headers |
//!
//! | `POST /v1/tokens` / `GET /v1/tokens` / `DELETE /v1/tokens/{id}` | scoped API tokens: create (secret shown once) / list / revoke |
//! | `POST /v1/tenants` / `GET /v1/tenants` | tenants (namespaces): create / list |
//! | `GET /v1/audit?tenant=&limit=` | changes made through the API: who, when, what |
//! | `GET /v1/backup` | a backup of the control state (admin): tenants, tokens, functions, artifact records |
//!
//! Every `/v1` route needs `Authorization: Bearer <token>`: the admin
//! token, or a scoped token with the route's scope (`read` for listings,
//! `publish` for uploads and registrations, `invoke` to run, `admin` for
//! members, tickets and tokens). Errors are `{"error": {"code", "message",
//! ...}}` (see [`ApiError`]).

mod artifacts;
mod audit;
mod backup;
pub(crate) mod body;
mod cluster;
mod error;
mod functions;
mod invoke;
mod jobs;
pub(crate) mod listener;
mod members;
mod observe;
mod openai;
pub mod request;
mod status_page;
mod stream;
mod tenants;
mod tokens;

pub use error::ApiError;
pub use request::InvokeHeaders;

use crate::SidecarConfig;
use crate::auth::ScopedToken;
use crate::control::{Control, ProposeFailure};
use crate::idempotency::Outcomes;
use crate::job::JobHost;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use spillway_consensus::{ControlCommand, ControlResponse, Scope};
use std::sync::Arc;

/// Who a request acts for.
pub(crate) use crate::auth::Principal;

use crate::now_unix_ms;

/// Everything a request handler may touch.
#[derive(Debug)]
pub struct App {
    pub(crate) config: SidecarConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) control: Arc<Control>,
    /// Every job's side of this host: the node link, the queue, quotas,
    /// burst.
    pub(crate) jobs: Arc<JobHost>,
    /// Outcomes remembered under idempotency keys.
    pub(crate) outcomes: Arc<Outcomes<invoke::Finished>>,
    /// Per-token request rates on this host.
    pub(crate) rates: crate::rate::RateLimits,
    /// Request bodies being read into memory, over all requests.
    pub(crate) bodies: body::BodyBudget,
}

impl App {
    /// Checks the bearer token against the control log: the admin token
    /// may do anything; a scoped token must be live and hold `scope`.
    ///
    /// A scoped token this host does not know yet (made through another
    /// host a moment ago) is looked up again after catching up with the
    /// leader, so a new token works on every host at once.
    pub(crate) async fn authorize(
        &self,
        headers: &HeaderMap,
        scope: Scope,
    ) -> Result<Principal, ApiError> {
        let token = request::bearer(headers)?;
        if let Some(s) = ScopedToken::parse(token)
            && self.control.state().token(&s.id).is_none()
        {
            self.control.catch_up_shared().await;
        }
        let state = self.control.state();
        let principal =
            crate::auth::authenticate(&state, token, scope, now_unix_ms()).map_err(denied)?;
        if let Some(id) = &principal.token
            && let Some(rate) = state.token(id).and_then(|e| e.rate_per_s)
            && let Err(wait) = self
                .rates
                .take(id, f64::from(rate), std::time::Instant::now())
        {
            let retry_after_ms = error::saturating_ms(wait.as_millis() as u64).max(1);
            return Err(ApiError {
                retry_after_ms: Some(retry_after_ms),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("token {id} is over its rate of {rate}/s on this host"),
                )
            });
        }
        Ok(principal)
    }

    /// Appends a change made through the API to the control log, audited,
    /// and waits until it is applied here. The leader checks the client's
    /// token (`headers`) itself and writes the audit record: a member
    /// cannot make a client change on its own authority.
    pub(crate) async fn commit(
        &self,
        headers: &HeaderMap,
        command: ControlCommand,
    ) -> Result<ControlResponse, ApiError> {
        let token = request::bearer(headers)?;
        match self.control.propose_audited(token, command).await {
            Ok(ControlResponse::Rejected(rejection)) => Err(rejected(rejection)),
            Ok(response) => Ok(response),
            Err(failure) => Err(propose_failure(failure)),
        }
    }

    /// Appends this host's own bookkeeping (not a change anyone asked
    /// for, so not audited) and waits until it is applied here.
    pub(crate) async fn record(
        &self,
        command: ControlCommand,
    ) -> Result<ControlResponse, ApiError> {
        match self.control.propose(command).await {
            Ok(ControlResponse::Rejected(rejection)) => Err(rejected(rejection)),
            Ok(response) => Ok(response),
            Err(failure) => Err(propose_failure(failure)),
        }
    }
}

/// The API's answer to a change the state machine did not apply.
fn rejected(rejection: spillway_consensus::Rejection) -> ApiError {
    use spillway_consensus::Rejection;
    let message = rejection.to_string();
    let (status, code) = match rejection {
        Rejection::Missing(_) => (StatusCode::NOT_FOUND, "not_found"),
        Rejection::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        Rejection::StorageQuota(_) => (StatusCode::FORBIDDEN, "storage_quota_exceeded"),
        Rejection::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_change"),
    };
    ApiError::new(status, code, message)
}

/// The API's answer to a token the control state refuses.
fn denied(denial: crate::auth::Denial) -> ApiError {
    use crate::auth::Denial;
    let message = denial.to_string();
    match denial {
        Denial::NotReady => ApiError {
            retry_after_ms: Some(500),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
        },
        Denial::Invalid => ApiError::unauthorized("invalid_token", message),
        Denial::Revoked(_) => ApiError::unauthorized("token_revoked", message),
        Denial::Expired(_) => ApiError::unauthorized("token_expired", message),
        Denial::MissingScope(..) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
    }
}

/// The API's answer to a proposal that did not reach the log.
fn propose_failure(failure: ProposeFailure) -> ApiError {
    let message = failure.to_string();
    match failure {
        ProposeFailure::NoLeader(_) => ApiError {
            retry_after_ms: Some(500),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", message)
        },
        ProposeFailure::Denied(denial) => denied(denial),
        ProposeFailure::Refused(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
        ProposeFailure::Failed(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "control_plane", message)
        }
    }
}

/// The ingress router.
pub fn router(app: Arc<App>) -> Router {
    let max_input = app.config.max_input_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status_page::page))
        .route("/v1/cluster", get(cluster::get_cluster))
        .route("/v1/cluster/local", get(cluster::get_local))
        .route("/v1/tickets", post(members::create_ticket))
        .route("/v1/members/{id}/drain", post(members::drain))
        .route("/v1/members/{id}/undrain", post(members::undrain))
        .route("/v1/members/{id}", delete(members::remove))
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        .route("/v1/tenants/{name}", patch(tenants::change))
        .route("/v1/audit", get(audit::list))
        .route("/v1/backup", get(backup::take))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route("/v1/artifacts", get(artifacts::list))
        .route("/v1/artifacts/{name}", put(artifacts::put))
        .route(
            "/v1/functions",
            post(functions::create).get(functions::list),
        )
        .route(
            "/v1/functions/{name}/invoke",
            post(invoke::invoke).layer(DefaultBodyLimit::max(max_input)),
        )
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/v1/models", get(openai::models))
        .route(
            "/v1/chat/completions",
            post(openai::chat).layer(DefaultBodyLimit::max(max_input)),
        )
        .route(
            "/v1/completions",
            post(openai::completions).layer(DefaultBodyLimit::max(max_input)),
        )
        .fallback(|| async { ApiError::not_found("route", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            observe::observe,
        ))
        .with_state(app)
}

/// `GET /healthz`: `ok` while every executor is up, else `degraded`;
/// `node_up` while any is (the host still runs jobs).
async fn healthz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let (up, of) = app.jobs.executors.up();
    axum::Json(serde_json::json!({
        "status": if up == of { "ok" } else { "degraded" },
        "node_up": up > 0,
        "executors_up": up,
        "executors": of,
    }))
}

/// `GET /metrics`: the host's series to anyone; the per-tenant series too
/// to an admin-tenant token (any scope), or to anyone where the operator
/// made them public. A token that does not check out is 401.
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let tenants = if app.config.public_tenant_metrics {
        true
    } else if headers.contains_key(header::AUTHORIZATION) {
        app.authorize(&headers, Scope::Read)
            .await?
            .tenant
            .is_admin()
    } else {
        false
    };
    app.metrics
        .queue_depth
        .set(i64::from(app.jobs.queue.depth()));
    app.metrics.running.set(i64::from(app.jobs.queue.running()));
    app.metrics.idempotency_keys.set(app.outcomes.len() as i64);
    app.metrics.raft.set(&app.control.raft_status());
    let (up, of) = app.jobs.executors.up();
    app.metrics.node_up.set(i64::from(up == of));
    app.metrics.executors_up.set(up as i64);
    let status = app.jobs.executors.status();
    app.metrics.set_tenant_gpu(&status.tenant_gpu);
    app.metrics
        .set_tenant_shares(&app.jobs.executors.gpu_shares());
    if let Some((load, _)) = &status.load {
        app.metrics.set_instance_starts(load);
        app.metrics.host.set_gpus(&load.gpu_memory);
        app.metrics.set_tenant_pools(&load.gpu_memory);
    }
    let members = app.control.state();
    let mut peers = app.jobs.burst.peers_seen(std::time::Instant::now());
    peers.retain(|p| members.member(p.peer).is_some());
    app.metrics.host.set_peers(&peers);
    let openmetrics = app.metrics.render(tenants);
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    Ok(if crate::prometheus_text::wants_openmetrics(accept) {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            openmetrics,
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::prometheus_text::from_openmetrics(&openmetrics),
        )
            .into_response()
    })
}
