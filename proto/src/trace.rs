//! The W3C trace context a job carries from one process to the next: the
//! `traceparent` and `tracestate` header values, as text.
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
