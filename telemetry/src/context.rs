//! The W3C trace context at the edges of a process: a client's headers
//! checked at ingress, a span's context written into the frame that goes
//! to a peer or to the node, and a received frame's context made the
//! parent of the receiver's span.
//!
//! The checking and the writing are OpenTelemetry's own
//! `TraceContextPropagator`: a malformed `traceparent` (wrong length or
//! version, upper-case or non-hex digits, an all-zero id) is ignored,
//! never an error, and the job starts a trace of its own.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
pub use spillway_proto::TraceCarrier;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// A client's trace context, kept only when the W3C propagator accepts
/// its `traceparent` (written back as the propagator writes it).
pub fn checked(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<TraceCarrier> {
    let traceparent = traceparent?;
    if !well_formed(traceparent) {
        return None;
    }
    let mut headers = HashMap::new();
    headers.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        headers.insert(TRACESTATE.to_owned(), state.to_owned());
    }
    let propagator = TraceContextPropagator::new();
    let cx = propagator.extract(&headers);
    let span = cx.span();
    let context = span.span_context();
    if !context.is_valid() {
        return None;
    }
    let mut out = HashMap::new();
    propagator.inject_context(&cx, &mut out);
    carrier(out)
}

/// `span`'s own context to send on, when this process exports spans
/// (`None` otherwise: the caller may pass on what it received).
pub fn carrier_of(span: &tracing::Span) -> Option<TraceCarrier> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    carrier(out)
}

/// Makes `received` the parent of `span`, which must not have been
/// entered yet. Nothing happens when this process does not export spans
/// or `received` does not check.
pub fn continue_trace(span: &tracing::Span, received: Option<&TraceCarrier>) {
    let Some(received) = received else { return };
    let mut headers = HashMap::new();
    headers.insert(TRACEPARENT.to_owned(), received.traceparent.clone());
    if !received.tracestate.is_empty() {
        headers.insert(TRACESTATE.to_owned(), received.tracestate.clone());
    }
    let cx = TraceContextPropagator::new().extract(&headers);
    if cx.span().span_context().is_valid() {
        // Only fails when spans are not exported or the span has started.
        let _ = span.set_parent(cx);
    }
}

/// The W3C Trace Context grammar for `traceparent`, strictly (the
/// propagator pads a short id): `version-traceid-parentid-flags`, lower-case
/// hex of 2, 32, 16 and 2 digits; version `ff` is invalid; a later version
/// may append fields after a `-`; version `00` may not.
fn well_formed(traceparent: &str) -> bool {
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let b = traceparent.as_bytes();
    if !traceparent.is_ascii() || b.len() < 55 || (b.len() > 55 && b[55] != b'-') {
        return false;
    }
    let (version, trace, parent, flags) = (
        &traceparent[0..2],
        &traceparent[3..35],
        &traceparent[36..52],
        &traceparent[53..55],
    );
    let dashes = b[2] == b'-' && b[35] == b'-' && b[52] == b'-';
    dashes
        && hex(version, 2)
        && version != "ff"
        && (version != "00" || b.len() == 55)
        && hex(trace, 32)
        && trace.bytes().any(|c| c != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|c| c != b'0')
        && hex(flags, 2)
}

fn carrier(mut headers: HashMap<String, String>) -> Option<TraceCarrier> {
    Some(TraceCarrier {
        traceparent: headers.remove(TRACEPARENT)?,
        tracestate: headers.remove(TRACESTATE).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_traceparent_is_kept_only_when_it_checks() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let rows: &[(&str, Option<&str>, Option<&str>, bool)] = &[
            ("none sent", None, None, false),
            ("a good one", Some(good), None, true),
            (
                "a good one with state",
                Some(good),
                Some("congo=t61rcWkgMzE"),
                true,
            ),
            (
                "not sampled",
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
                None,
                true,
            ),
            ("empty", Some(""), None, false),
            ("garbage", Some("hello"), None, false),
            (
                "version ff is forbidden",
                Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                None,
                false,
            ),
            (
                "an all-zero trace id",
                Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
                None,
                false,
            ),
            (
                "an all-zero span id",
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
                None,
                false,
            ),
            (
                "upper-case hex",
                Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"),
                None,
                false,
            ),
            (
                "a short trace id",
                Some("00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01"),
                None,
                false,
            ),
            (
                "non-hex digits",
                Some("00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01"),
                None,
                false,
            ),
            (
                "version 00 with a trailing field",
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"),
                None,
                false,
            ),
            (
                "a non-ASCII byte",
                Some("00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01"),
                None,
                false,
            ),
            (
                "a multi-byte char across a field's edge",
                Some("00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01"),
                None,
                false,
            ),
        ];
        for (what, parent, state, kept) in rows {
            let got = checked(*parent, *state);
            assert_eq!(got.is_some(), *kept, "{what}: {got:?}");
            if let Some(c) = got {
                assert_eq!(c.traceparent, parent.unwrap(), "{what}");
                assert_eq!(c.tracestate, state.unwrap_or(""), "{what}");
            }
        }
    }

    #[test]
    fn without_an_exporter_a_span_has_nothing_to_send_and_takes_no_parent() {
        let span = tracing::info_span!("x");
        assert_eq!(carrier_of(&span), None);
        let c = checked(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None,
        );
        continue_trace(&span, c.as_ref());
        assert_eq!(carrier_of(&span), None);
    }

    #[test]
    fn a_received_context_becomes_the_parent_and_is_sent_on() {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
        use tracing_subscriber::layer::SubscriberExt;

        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("t"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sent = tracing::subscriber::with_default(subscriber, || {
            let ingress = tracing::info_span!("ingress");
            continue_trace(
                &ingress,
                checked(Some(client), Some("congo=t61rcWkgMzE")).as_ref(),
            );
            let _in = ingress.enter();
            let dispatch = tracing::info_span!("dispatch");
            carrier_of(&dispatch).expect("an exported span has a context")
        });
        // The same trace, a new parent (the dispatch span), the state kept.
        assert!(
            sent.traceparent
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(!sent.traceparent.contains("00f067aa0ba902b7"));
        assert_eq!(sent.tracestate, "congo=t61rcWkgMzE");
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap().clone();
        let (ingress, dispatch) = (by_name("ingress"), by_name("dispatch"));
        assert_eq!(ingress.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(dispatch.parent_span_id, ingress.span_context.span_id());
        assert_eq!(
            dispatch.span_context.trace_id(),
            ingress.span_context.trace_id()
        );
        assert!(
            sent.traceparent
                .contains(&dispatch.span_context.span_id().to_string())
        );
    }
}
