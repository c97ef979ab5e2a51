//! A streamed invoke's response: the guest's chunks reach the client as it
//! emits them, instead of with the whole output at the end.
//!
//! A client asks for it with `TE: trailers` (raw chunks, chunked transfer
//! encoding, the outcome in HTTP trailers) or `Accept: text/event-stream`
//! (server-sent events, the outcome in a last event). The response waits
//! for the job's first chunk: a job that ends before emitting any is
//! answered as a buffered one is (its status, the whole receipt in the
//! headers). From the first chunk on the status is 200 and the headers
//! name what is known then (`spillway-job-id`, `spillway-node`,
//! `spillway-burst`); what is known only at the end (the outcome, a
//! failure's code and `may_have_run`, the execution time, the backend)
//! comes last:
//!
//! - **Chunked**: the chunks as they are, then `run`'s returned bytes, then
//!   trailers: `spillway-outcome` (`ok`, or the error code), on a failure
//!   `spillway-error-message` and `spillway-may-have-run`, and the receipt's
//!   headers. A body without `spillway-outcome` at its end was cut.
//! - **Server-sent events**: each chunk an `event: chunk` (`id` its
//!   sequence number; `data` `{"text": …}`, or `{"base64": …}` for bytes
//!   that are not UTF-8), `run`'s returned bytes one more `chunk`, then
//!   `event: end` (`data` `{"receipt": {…}}`) or `event: error` (`data`
//!   the error's JSON object, as a buffered failure's body). A stream
//!   without either was cut.
//!
//! Dropping the response (the client went away) aborts the job's task,
//! which cancels the job wherever it runs.
//!
//! What it is not: how chunks travel to here (`job::stream`,
//! `NodeLink::execute_into`, the burst origin) or the buffered response
//! (`http::invoke`).

use super::ApiError;
use crate::api;
use crate::job::Ran;
use crate::job::stream::StreamFrom;
use crate::metrics::{OpenStream, StreamMetrics};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde_json::{Value, json};
use spillway_proto::JobId;
use std::collections::VecDeque;
use tokio::task::JoinHandle;

/// How the client asked for the output to be streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Raw chunks; the outcome in trailers (`TE: trailers`).
    Chunked,
    /// Server-sent events (`Accept: text/event-stream`).
    Events,
}

impl Mode {
    /// The mode a request asks for, if any (events win over trailers).
    pub(crate) fn of(headers: &HeaderMap) -> Option<Self> {
        let lists = |name: header::HeaderName, token: &str| {
            headers.get_all(name).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',').any(|item| {
                        let item = item.split(';').next().unwrap_or("").trim();
                        item.eq_ignore_ascii_case(token)
                    })
                })
            })
        };
        if lists(header::ACCEPT, "text/event-stream") {
            Some(Mode::Events)
        } else if lists(header::TE, "trailers") {
            Some(Mode::Chunked)
        } else {
            None
        }
    }
}

/// The trailers a chunked stream ends with, announced in its `Trailer`
/// header (hyper sends only trailers announced there).
const TRAILERS: [&str; 11] = [
    api::header::OUTCOME,
    api::header::ERROR_MESSAGE,
    api::header::MAY_HAVE_RUN,
    api::header::NODE,
    api::header::BURST,
    api::header::BACKEND,
    api::header::GPU,
    api::header::QUEUE_MS,
    api::header::EXEC_MS,
    api::header::WEIGHTS_LOADED,
    api::header::FETCHED,
];

/// Aborts the job's task when the response is dropped before the end.
pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The job's outcome as the handler's task gives it: what ran and the
/// receipt it makes, or the failure.
pub(crate) type Outcome = Result<(std::sync::Arc<Ran>, api::Receipt), ApiError>;

/// What comes first: a chunk (the response streams), or the end (it is
/// answered buffered, by `buffered`).
pub(crate) async fn respond(
    (job, accepted): (JobId, std::time::Instant),
    mode: Mode,
    from: StreamFrom,
    task: JoinHandle<Outcome>,
    (metrics, buffered): (&StreamMetrics, impl FnOnce(Outcome) -> Response),
) -> Response {
    let mut running = Running::new(from, task);
    let first = match running.first_chunk().await {
        Ok(first) => first,
        Err(outcome) => return buffered(outcome),
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(h, api::header::JOB_ID, job.to_string());
    if let Some(on) = running.running_on() {
        set(h, api::header::NODE, on.host.to_string());
        set(h, api::header::BURST, on.burst.to_string());
    }
    match mode {
        Mode::Chunked => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(
                header::TRAILER,
                HeaderValue::from_str(&TRAILERS.join(", ")).expect("names are ASCII"),
            );
        }
        Mode::Events => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
    }
    let framing = InvokeFraming { mode, seq: 0 };
    *response.body_mut() = running.body(framing, first, (metrics, accepted));
    response
}

/// A finished task's outcome (a panic or an abort as an internal error).
pub(super) fn joined(outcome: Result<Outcome, tokio::task::JoinError>) -> Outcome {
    outcome.unwrap_or_else(|e| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the job's task ended: {e}"),
        ))
    })
}

/// How a streamed answer frames its job's chunks and its end: an
/// invoke's raw chunks or events ([`InvokeFraming`]), or the OpenAI API's
/// objects (`http::openai`).
pub(super) trait Framing: Send + 'static {
    /// Frames one chunk of the guest's output.
    fn chunk(&mut self, chunk: Vec<u8>, out: &mut VecDeque<Frame<Bytes>>);
    /// Frames the job's end.
    fn end(&mut self, outcome: Outcome, out: &mut VecDeque<Frame<Bytes>>);
}

/// A job whose chunks a streamed answer waits for. Dropping it, or the
/// body it becomes, aborts the job's task (which cancels the job wherever
/// it runs).
pub(super) struct Running {
    from: StreamFrom,
    task: JoinHandle<Outcome>,
    abort: AbortOnDrop,
}

impl Running {
    pub(super) fn new(from: StreamFrom, task: JoinHandle<Outcome>) -> Self {
        let abort = AbortOnDrop(task.abort_handle());
        Self { from, task, abort }
    }

    /// The job's first chunk, or the outcome of a job that ended without
    /// one.
    pub(super) async fn first_chunk(&mut self) -> Result<Vec<u8>, Outcome> {
        let first = tokio::select! {
            biased;
            chunk = self.from.chunks.recv() => chunk,
            outcome = &mut self.task => {
                // Every chunk was sent before the job's end: one may still wait.
                return self.from.chunks.try_recv().map_err(|_| joined(outcome));
            }
        };
        match first {
            Some(chunk) => Ok(chunk),
            None => Err(joined((&mut self.task).await)),
        }
    }

    /// Where the job runs now.
    pub(super) fn running_on(&self) -> Option<crate::job::stream::RunningOn> {
        *self.from.running_on.borrow()
    }

    /// The answer's body from the `first` chunk on: each chunk framed as
    /// it comes, then the end; counted in the stream metrics.
    pub(super) fn body(
        self,
        mut framing: impl Framing,
        first: Vec<u8>,
        (metrics, accepted): (&StreamMetrics, std::time::Instant),
    ) -> Body {
        metrics
            .first_chunk
            .observe(accepted.elapsed().as_secs_f64());
        metrics.chunk(first.len());
        let mut queued = VecDeque::new();
        framing.chunk(first, &mut queued);
        let state = Streaming {
            framing,
            from: self.from,
            task: Some(self.task),
            _abort: self.abort,
            _open: metrics.opened(),
            metrics: metrics.clone(),
            queued,
        };
        let frames = futures::stream::unfold(state, |mut s| async move {
            let frame = s.next().await?;
            Some((Ok::<_, std::convert::Infallible>(frame), s))
        });
        Body::new(StreamBody::new(frames))
    }
}

/// A streaming answer between its first chunk and its end.
struct Streaming<F> {
    framing: F,
    from: StreamFrom,
    /// `None` once the outcome was taken.
    task: Option<JoinHandle<Outcome>>,
    _abort: AbortOnDrop,
    _open: OpenStream,
    metrics: StreamMetrics,
    queued: VecDeque<Frame<Bytes>>,
}

impl<F: Framing> Streaming<F> {
    /// The next frame: a chunk as it comes, then the end.
    async fn next(&mut self) -> Option<Frame<Bytes>> {
        loop {
            if let Some(frame) = self.queued.pop_front() {
                return Some(frame);
            }
            let task = self.task.as_mut()?;
            match self.from.chunks.recv().await {
                Some(chunk) => {
                    self.metrics.chunk(chunk.len());
                    self.framing.chunk(chunk, &mut self.queued);
                }
                None => {
                    let outcome = joined(task.await);
                    self.task = None;
                    self.framing.end(outcome, &mut self.queued);
                }
            }
        }
    }
}

/// An invoke's framing: raw chunks then trailers, or events.
struct InvokeFraming {
    mode: Mode,
    /// The next chunk's number.
    seq: u32,
}

impl Framing for InvokeFraming {
    fn chunk(&mut self, chunk: Vec<u8>, out: &mut VecDeque<Frame<Bytes>>) {
        out.push_back(frame(self.mode, self.seq, chunk));
        self.seq += 1;
    }

    /// `run`'s returned bytes, then the outcome.
    fn end(&mut self, outcome: Outcome, out: &mut VecDeque<Frame<Bytes>>) {
        match outcome {
            Ok((ran, receipt)) => {
                if !ran.body.is_empty() {
                    let body = ran.body.to_vec();
                    out.push_back(frame(self.mode, self.seq, body));
                }
                out.push_back(match self.mode {
                    Mode::Chunked => {
                        let mut trailers = HeaderMap::new();
                        receipt.write_to(&mut trailers);
                        trailers.insert(api::header::OUTCOME, HeaderValue::from_static("ok"));
                        Frame::trailers(trailers)
                    }
                    Mode::Events => event("end", None, &json!({ "receipt": receipt })),
                });
            }
            Err(mut e) => {
                // It emitted output: it ran, whatever the failure says.
                e.may_have_run = Some(true);
                out.push_back(match self.mode {
                    Mode::Chunked => Frame::trailers(error_trailers(&e)),
                    Mode::Events => event("error", None, &e.to_json()),
                });
            }
        }
    }
}

/// A chunk as the mode frames it.
fn frame(mode: Mode, seq: u32, chunk: Vec<u8>) -> Frame<Bytes> {
    match mode {
        Mode::Chunked => Frame::data(Bytes::from(chunk)),
        Mode::Events => {
            let data = match String::from_utf8(chunk) {
                Ok(text) => json!({ "text": text }),
                Err(e) => {
                    use base64::Engine as _;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                    json!({ "base64": encoded })
                }
            };
            event("chunk", Some(seq), &data)
        }
    }
}

/// One server-sent event (`data` is one line of JSON).
fn event(name: &str, id: Option<u32>, data: &Value) -> Frame<Bytes> {
    let id = id.map(|id| format!("id: {id}\n")).unwrap_or_default();
    Frame::data(Bytes::from(format!("event: {name}\n{id}data: {data}\n\n")))
}

/// A failure's trailers: its code, message (printable ASCII) and whether
/// it may have run, and the execution time where known.
fn error_trailers(e: &ApiError) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            trailers.insert(HeaderName::from_static(name), v);
        }
    };
    set(api::header::OUTCOME, e.code);
    let message: String = e
        .message
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    set(api::header::ERROR_MESSAGE, &message);
    if let Some(may) = e.may_have_run {
        set(api::header::MAY_HAVE_RUN, &may.to_string());
    }
    if let Some(ms) = e.exec_ms {
        set(api::header::EXEC_MS, &format!("{ms:.3}"));
    }
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_follows_accept_and_te() {
        let mode = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            Mode::of(&h)
        };
        assert_eq!(mode(&[]), None);
        assert_eq!(mode(&[("te", "trailers")]), Some(Mode::Chunked));
        assert_eq!(mode(&[("te", "gzip, Trailers")]), Some(Mode::Chunked));
        assert_eq!(mode(&[("accept", "text/event-stream")]), Some(Mode::Events));
        assert_eq!(
            mode(&[
                ("accept", "application/json, text/event-stream;q=0.9"),
                ("te", "trailers")
            ]),
            Some(Mode::Events)
        );
        assert_eq!(mode(&[("accept", "text/html")]), None);
    }

    #[test]
    fn events_carry_text_or_base64_and_numbered_ids() {
        let text = |f: Frame<Bytes>| String::from_utf8(f.into_data().unwrap().to_vec()).unwrap();
        assert_eq!(
            text(frame(Mode::Events, 3, b"hi\n".to_vec())),
            "event: chunk\nid: 3\ndata: {\"text\":\"hi\\n\"}\n\n"
        );
        assert_eq!(
            text(frame(Mode::Events, 4, vec![0xff, 0x00])),
            "event: chunk\nid: 4\ndata: {\"base64\":\"/wA=\"}\n\n"
        );
        assert_eq!(
            frame(Mode::Chunked, 0, b"raw".to_vec())
                .into_data()
                .unwrap(),
            Bytes::from_static(b"raw")
        );
    }

    #[test]
    fn a_failure_in_trailers_keeps_to_printable_ascii() {
        let mut e = ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            "ran past — its deadline\n",
        );
        e.may_have_run = Some(true);
        let t = error_trailers(&e);
        assert_eq!(t[api::header::OUTCOME], "deadline_exceeded");
        assert_eq!(t[api::header::ERROR_MESSAGE], "ran past ? its deadline?");
        assert_eq!(t[api::header::MAY_HAVE_RUN], "true");
    }
}
