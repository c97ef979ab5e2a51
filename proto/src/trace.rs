//! The W3C trace context a job carries from one process to the next: the
//! `traceparent` and `tracestate` header values, as text.
//!
//! Also the spans the node hands its sidecar to export ([`SpanRecord`]):
//! the node opens no network socket, so its spans leave through the
//! sidecar.
//!
//! What it is not: a parser. The values are checked where they enter the
//! cluster (`spillway-telemetry` reads them with OpenTelemetry's own
//! propagator) and written there again from the sender's span; a receiver
//! whose check fails ignores them.

use serde::{Deserialize, Serialize};

/// A span's context as the W3C Trace Context headers spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceCarrier {
    /// `00-<trace id>-<parent span id>-<flags>`.
    pub traceparent: String,
    /// Vendor entries, empty when there are none.
    pub tracestate: String,
}

/// One finished span of a process that opens no network socket (the
/// node), sent to its sidecar to export on its behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zero for a root span.
    pub parent_span_id: [u8; 8],
    pub sampled: bool,
    pub name: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Vec<(String, SpanValue)>,
    /// The span's error description, when it ended in error.
    pub error: Option<String>,
}

/// A span attribute's value (a float travels as text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpanValue {
    Str(String),
    I64(i64),
    Bool(bool),
}
