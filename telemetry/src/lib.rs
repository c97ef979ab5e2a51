//! Traces out of the process: where a `spillway` process sends its spans
//! (OTLP over gRPC or HTTP/protobuf, configured by the project's flags or
//! the standard `OTEL_*` variables), and the W3C trace context a job
//! carries between processes so that one trace shows its whole way:
//! ingress → queue → placement → dispatch → peer → node → guest → `gpu`.
//!
//! - [`settings`]: the pure decision of whether and where to export, from
//!   flags and environment (table-tested).
//! - [`export`]: the exporter, the batch processor and the `tracing` layer
//!   built from that decision; export runs on the SDK's own thread, never
//!   on a job's, and a dead collector costs at most the batch queue.
//! - [`relay`]: the node's spans, handed to its sidecar to export (the
//!   node opens no network socket).
//! - [`context`]: a client's `traceparent`/`tracestate` checked at ingress,
//!   a span's context written into a frame, and a frame's read back as the
//!   parent of the receiver's span.
//!
//! What it is not: logging (the binary's `fmt` layer) or metrics
//! (`spillway-sidecar`'s `/metrics`).

pub mod context;
pub mod export;
pub mod relay;
pub mod settings;

pub use context::{carrier_of, checked, continue_trace};
pub use export::{Exporting, Instance, Role};
pub use settings::{ExportPlan, Protocol, SettingsError, TraceSettings};
