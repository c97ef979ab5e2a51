//! Spans of the node, which opens no network socket: its SDK's batch
//! processor hands each batch to [`RelayExporter`], which passes it as
//! [`SpanRecord`]s to whatever sink the node's server set (its connection
//! to the sidecar); the sidecar gives them to [`submit`], which feeds a
//! batch processor of its own with an OTLP exporter and the node's
//! resource (`<host>/node`). So the node's spans reach the collector
//! without the node talking to the network.
//!
//! Both ends are bounded and never wait: with no sink (no sidecar
//! connected) or a full queue, spans are dropped.

use crate::export::{ExportError, Instance, build_exporter, resource};
use crate::settings::ExportPlan;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks, SpanProcessor,
};
pub use spillway_proto::{SpanRecord, SpanValue};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type Sink = Box<dyn Fn(Vec<SpanRecord>) + Send + Sync>;

/// Where the node's finished spans go now (its current sidecar
/// connection), if anywhere.
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// The sidecar's processor for its node's spans, when it exports.
static NODE_SPANS: OnceLock<BatchSpanProcessor> = OnceLock::new();

/// Node side: spans go to `sink` from now on (each new sidecar
/// connection sets its own).
pub fn deliver_to(sink: impl Fn(Vec<SpanRecord>) + Send + Sync + 'static) {
    *SINK.lock().expect("span sink lock") = Some(Box::new(sink));
}

/// The node's exporter: hands batches to the sink, never to the network.
#[derive(Debug, Default)]
pub struct RelayExporter;

impl SpanExporter for RelayExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let records: Vec<SpanRecord> = batch.iter().map(record_of).collect();
        if let Some(sink) = SINK.lock().expect("span sink lock").as_ref() {
            sink(records);
        }
        std::future::ready(Ok(()))
    }
}

/// Sidecar side: exports its node's spans under `node` through an
/// exporter of its own for `plan`. Called once, at start.
pub(crate) fn start_node_spans(plan: &ExportPlan, node: &Instance) -> Result<(), ExportError> {
    let mut processor = BatchSpanProcessor::builder(build_exporter(plan)?).build();
    processor.set_resource(&resource(node));
    let _ = NODE_SPANS.set(processor);
    Ok(())
}

/// Sends what is queued of the node's spans (at the sidecar's end).
pub(crate) fn shutdown_node_spans() {
    if let Some(p) = NODE_SPANS.get() {
        let _ = p.shutdown_with_timeout(Duration::from_secs(5));
    }
}

/// Sidecar side: spans its node finished, to export; dropped when this
/// host exports none.
pub fn submit(records: Vec<SpanRecord>) {
    let Some(processor) = NODE_SPANS.get() else {
        return;
    };
    for r in records {
        processor.on_end(span_of(r));
    }
}

fn record_of(s: &SpanData) -> SpanRecord {
    let ns = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    SpanRecord {
        trace_id: s.span_context.trace_id().to_bytes(),
        span_id: s.span_context.span_id().to_bytes(),
        parent_span_id: s.parent_span_id.to_bytes(),
        sampled: s.span_context.is_sampled(),
        name: s.name.to_string(),
        start_unix_ns: ns(s.start_time),
        end_unix_ns: ns(s.end_time),
        attributes: (s.attributes.iter())
            .map(|kv| {
                let v = match &kv.value {
                    Value::Bool(b) => SpanValue::Bool(*b),
                    Value::I64(i) => SpanValue::I64(*i),
                    other => SpanValue::Str(other.to_string()),
                };
                (kv.key.to_string(), v)
            })
            .collect(),
        error: match &s.status {
            Status::Error { description } => Some(description.to_string()),
            _ => None,
        },
    }
}

fn span_of(r: SpanRecord) -> SpanData {
    let flags = if r.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let at = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(r.trace_id),
            SpanId::from_bytes(r.span_id),
            flags,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from_bytes(r.parent_span_id),
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: r.name.into(),
        start_time: at(r.start_unix_ns),
        end_time: at(r.end_unix_ns),
        attributes: (r.attributes.into_iter())
            .map(|(k, v)| match v {
                SpanValue::Str(s) => KeyValue::new(k, s),
                SpanValue::I64(i) => KeyValue::new(k, i),
                SpanValue::Bool(b) => KeyValue::new(k, b),
            })
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match r.error {
            Some(description) => Status::error(description),
            None => Status::Unset,
        },
        instrumentation_scope: InstrumentationScope::builder("spillway").build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_crosses_as_a_record_unchanged() {
        let record = SpanRecord {
            trace_id: [7; 16],
            span_id: [3; 8],
            parent_span_id: [5; 8],
            sampled: true,
            name: "gpu.gemm".into(),
            start_unix_ns: 1_700_000_000_000_000_000,
            end_unix_ns: 1_700_000_000_000_250_000,
            attributes: vec![
                ("kernel".into(), SpanValue::Str("gemm".into())),
                ("device_us".into(), SpanValue::I64(250)),
                ("cuda".into(), SpanValue::Bool(true)),
            ],
            error: Some("device_fault".into()),
        };
        assert_eq!(record_of(&span_of(record.clone())), record);
    }
}
