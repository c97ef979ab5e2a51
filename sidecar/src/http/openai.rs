//! The OpenAI-compatible front end: `GET /v1/models`, `POST
//! /v1/chat/completions` and `POST /v1/completions`, so OpenAI's clients
//! talk to the pool unmodified.
//!
//! A model name maps to the function of the caller's tenant that serves
//! it (`openai_model`). The request's JSON goes to that function's guest
//! as its input, unchanged; the guest emits the completion's text as it
//! makes it (UTF-8, split anywhere: `openai::text` joins it) and returns
//! `{"finish_reason", "usage": {"prompt_tokens", "completion_tokens"}}`.
//! This module frames that as OpenAI does (`openai::wire`): one
//! `chat.completion` / `text_completion`, or with `"stream": true`
//! server-sent events of `chat.completion.chunk` / `text_completion`
//! objects ending in `data: [DONE]` (a failure after the first piece is a
//! last `data: {"error": …}`). Errors take OpenAI's shape and statuses.
//!
//! The job is an invoke like any other: the same tokens (scope `invoke`),
//! tenants, rates, deadline (the function's, or `spillway-deadline-ms`),
//! placement and burst, receipt headers, and cancellation when the client
//! goes away. The guest honours `max_tokens`; the sidecar does not count
//! tokens.
//!
//! What it is not: a guest (`examples/models/tiny_lm/guest/lm.py` is one)
//! or the job's path (`job`, `http::invoke`).

use super::invoke::{self, Started};
use super::request::InvokeHeaders;
use super::stream::{AbortOnDrop, Framing as StreamFraming, Running, joined};
use super::{ApiError, App};
use crate::job::Context;
use crate::job::stream::StreamFrom;
use crate::metrics::StreamMetrics;
use crate::openai::text::Utf8Pieces;
use crate::openai::wire::{self, Endpoint, Framing, GuestEnd};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{Value, json};
use spillway_consensus::Scope;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;

/// A failure, as OpenAI's clients read it.
#[derive(Debug)]
pub(super) struct OpenAiError {
    api: ApiError,
    param: Option<&'static str>,
}

impl From<ApiError> for OpenAiError {
    fn from(api: ApiError) -> Self {
        Self { api, param: None }
    }
}

impl OpenAiError {
    fn new(status: StatusCode, code: &'static str, message: String, param: &'static str) -> Self {
        Self {
            api: ApiError::new(status, code, message),
            param: Some(param),
        }
    }

    fn json(&self) -> Value {
        wire::error(
            self.api.status,
            self.api.code,
            &self.api.message,
            self.param,
        )
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.api.status, axum::Json(self.json())).into_response();
        let h = response.headers_mut();
        if let Some(ms) = self.api.retry_after_ms {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000).max(1)),
            );
        }
        if let Some(job) = self.api.job_id
            && let Ok(v) = HeaderValue::from_str(&job.to_string())
        {
            h.insert(crate::api::header::JOB_ID, v);
        }
        response
    }
}

/// `GET /v1/models`: the models the caller's tenant serves.
pub(super) async fn models(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, OpenAiError> {
    let principal = app.authorize(&headers, Scope::Invoke).await?;
    let state = app.control.state();
    let data: Vec<Value> = state
        .functions_of(&principal.tenant)
        .filter_map(|f| {
            let model = f.openai_model.as_ref()?;
            Some(json!({"id": model, "object": "model", "created": 0, "owned_by": principal.tenant.to_string()}))
        })
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})))
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OpenAiError> {
    complete(app, headers, body, Endpoint::Chat).await
}

/// `POST /v1/completions`.
pub(super) async fn completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OpenAiError> {
    complete(app, headers, body, Endpoint::Completion).await
}

async fn complete(
    app: Arc<App>,
    headers: HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Result<Response, OpenAiError> {
    let principal = app.authorize(&headers, Scope::Invoke).await?;
    invoke::tenant_rate(&app, &principal.tenant)?;
    let rules = super::body::BodyRules {
        limit: app.config.max_input_bytes as u64,
        idle: app.config.ingress.body_timeout,
    };
    let input = super::body::read_body(&headers, body, rules, &app.bodies).await?;
    let request: wire::Request = serde_json::from_slice(&input).map_err(|e| {
        let message = format!("the body is not a valid request: {e}");
        OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request", message, "body")
    })?;
    if let Err((message, param)) = request.check(endpoint) {
        return Err(OpenAiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            message,
            param,
        ));
    }
    let tenant = principal.tenant.clone();
    let lookup = |app: &App| {
        app.control
            .state()
            .openai_model(&tenant, &request.model)
            .cloned()
    };
    let function = match lookup(&app) {
        Some(f) => Some(f),
        None => {
            app.control.catch_up().await;
            lookup(&app)
        }
    };
    let Some(function) = function else {
        let message = format!("the model {:?} does not exist", request.model);
        return Err(OpenAiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            message,
            "model",
        ));
    };
    let InvokeHeaders {
        deadline_ms,
        here_only,
        trace,
        ..
    } = InvokeHeaders::parse(&headers, function.deadline_ms)?;
    let job = invoke::new_job_id(&app);
    let span = tracing::info_span!("openai", job = %job, tenant = %tenant, model = %request.model, function = %function.name, token = principal.token.as_deref());
    spillway_telemetry::continue_trace(&span, trace.as_ref());
    let spec = invoke::job_spec(&app, tenant, &function, deadline_ms);
    let context = Context {
        trace,
        here_only,
        ..Context::default()
    };
    let accepted = Instant::now();
    let started = Started {
        job,
        accepted,
        span,
    };
    let (task, from) = invoke::spawn_streamed(&app, started, spec, input.to_vec(), context);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let framing = Framing::new(endpoint, &job.to_string(), created, request.model.clone());
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let metrics = (app.metrics.streams.clone(), accepted);
    match request.stream {
        false => whole(framing, from, task, &metrics.0).await,
        true => streamed(framing, from, task, include_usage, metrics).await,
    }
}

/// The whole completion, once the job ended.
async fn whole(
    framing: Framing,
    mut from: StreamFrom,
    task: JoinHandle<super::stream::Outcome>,
    metrics: &StreamMetrics,
) -> Result<Response, OpenAiError> {
    let _abort = AbortOnDrop(task.abort_handle());
    let (mut text, mut decoder) = (String::new(), Utf8Pieces::default());
    while let Some(chunk) = from.chunks.recv().await {
        text.push_str(&decoder.push(&chunk));
    }
    let (ran, receipt) = joined(task.await)?;
    text.push_str(&decoder.finish());
    let end = GuestEnd::parse(&ran.body);
    if let Some(usage) = end.usage {
        metrics.completion_tokens.inc_by(usage.completion_tokens);
    }
    let mut response = axum::Json(framing.whole(&text, &end)).into_response();
    receipt.write_to(response.headers_mut());
    Ok(response)
}

/// Server-sent events, from the first piece of text on; a job that ends
/// before any is answered with its error, or a stream of its end alone.
async fn streamed(
    framing: Framing,
    from: StreamFrom,
    task: JoinHandle<super::stream::Outcome>,
    include_usage: bool,
    (metrics, accepted): (StreamMetrics, Instant),
) -> Result<Response, OpenAiError> {
    let mut events = Events {
        framing,
        include_usage,
        decoder: Utf8Pieces::default(),
        started: false,
        metrics: metrics.clone(),
    };
    let mut running = Running::new(from, task);
    let body = match running.first_chunk().await {
        Ok(first) => running.body(events, first, (&metrics, accepted)),
        Err(outcome) => {
            // Ended without a piece: a failure is an HTTP error.
            let outcome = Ok(outcome.map_err(OpenAiError::from)?);
            let mut frames = VecDeque::new();
            events.end(outcome, &mut frames);
            let bytes: Vec<Bytes> = frames
                .into_iter()
                .filter_map(|f| f.into_data().ok())
                .collect();
            Body::from(bytes.concat())
        }
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The events of one streamed completion: the role (chat) before the
/// first piece, the pieces of text, then the end.
struct Events {
    framing: Framing,
    include_usage: bool,
    decoder: Utf8Pieces,
    /// Whether the role went out.
    started: bool,
    metrics: StreamMetrics,
}

fn data(value: &Value) -> Frame<Bytes> {
    Frame::data(Bytes::from(format!("data: {value}\n\n")))
}

impl Events {
    /// The role, before anything else.
    fn start(&mut self, out: &mut VecDeque<Frame<Bytes>>) {
        if !self.started {
            self.started = true;
            if let Some(role) = self.framing.role() {
                out.push_back(data(&role));
            }
        }
    }

    fn piece(&self, text: &str, out: &mut VecDeque<Frame<Bytes>>) {
        if !text.is_empty() {
            out.push_back(data(&self.framing.piece(text)));
        }
    }
}

impl StreamFraming for Events {
    /// A chunk of the guest's text (nothing while it ends mid-character).
    fn chunk(&mut self, chunk: Vec<u8>, out: &mut VecDeque<Frame<Bytes>>) {
        self.start(out);
        let text = self.decoder.push(&chunk);
        self.piece(&text, out);
    }

    /// The end: the rest of the text, the finish reason and usage, and
    /// `[DONE]`; or the error.
    fn end(&mut self, outcome: super::stream::Outcome, out: &mut VecDeque<Frame<Bytes>>) {
        self.start(out);
        let rest = self.decoder.finish();
        self.piece(&rest, out);
        match outcome {
            Ok((ran, _)) => {
                let end = GuestEnd::parse(&ran.body);
                if let Some(usage) = end.usage {
                    self.metrics
                        .completion_tokens
                        .inc_by(usage.completion_tokens);
                }
                for last in self.framing.finish(&end, self.include_usage) {
                    out.push_back(data(&last));
                }
                out.push_back(Frame::data(Bytes::from_static(b"data: [DONE]\n\n")));
            }
            Err(e) => out.push_back(data(&OpenAiError::from(e).json())),
        }
    }
}
