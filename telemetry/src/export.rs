//! The exporter, built from an [`ExportPlan`]: OTLP over gRPC (tonic) or
//! HTTP/protobuf, behind the SDK's batch processor, as a `tracing` layer.
//!
//! Export never blocks a job: spans are queued (at most
//! `OTEL_BSP_MAX_QUEUE_SIZE`, 2048 by default; past it new spans are
//! dropped) and sent from the SDK's own thread every
//! `OTEL_BSP_SCHEDULE_DELAY` (5 s by default) or when a batch fills. A
//! collector that is down costs that queue and one export timeout at a
//! time, nothing more.
//!
//! Every process says who it is: `service.name` (`OTEL_SERVICE_NAME`,
//! else `spillway`), `service.instance.id` (`<instance>/<role>`, so the
//! two processes of a host and different hosts can be told apart), and
//! `spillway.role`; `OTEL_RESOURCE_ATTRIBUTES` adds to them.

use crate::relay::RelayExporter;
use crate::settings::{ExportPlan, Protocol};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider};
use std::fmt;
use std::time::Duration;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// Which of a host's processes this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The sidecar: HTTP, placement, peers, Raft (`spillway host` or
    /// `spillway sidecar`).
    Sidecar,
    /// The node: the guests and the GPUs.
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sidecar => "sidecar",
            Role::Node => "node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The process as its spans name it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The host's name, the same for its two processes (the binary
    /// defaults it to the machine's hostname and the API port).
    pub host: String,
    pub role: Role,
}

impl Instance {
    /// `service.instance.id`: `<host>/<role>`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.host, self.role)
    }
}

/// The exporter could not be built from its settings.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {url} over {protocol}: {source}")]
pub struct ExportError {
    url: String,
    protocol: Protocol,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Spans being exported; dropping it sends what is queued (waiting at
/// most five seconds) and stops the export thread.
#[derive(Debug)]
pub struct Exporting {
    provider: SdkTracerProvider,
    role: Role,
}

impl Exporting {
    /// Builds the exporter for `plan` and the layer that feeds it: every
    /// span of the spillway crates at INFO or above (guest log lines stay
    /// in the log, never in a trace). A sidecar also starts the exporter
    /// of its node's spans; a node's spans go to its sidecar ([`crate::relay`]).
    /// A gRPC exporter must be built inside a tokio runtime.
    pub fn start<S>(
        plan: &ExportPlan,
        instance: &Instance,
    ) -> Result<(impl Layer<S> + use<S>, Exporting), ExportError>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        // The node opens no network socket: its spans go to its sidecar,
        // which exports them with its own (`relay`).
        let processor = match instance.role {
            Role::Node => BatchSpanProcessor::builder(RelayExporter).build(),
            Role::Sidecar => {
                let node = Instance {
                    host: instance.host.clone(),
                    role: Role::Node,
                };
                crate::relay::start_node_spans(plan, &node)?;
                BatchSpanProcessor::builder(build_exporter(plan)?).build()
            }
        };
        let mut builder = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource(instance));
        if let Some(ratio) = plan.sample_ratio {
            builder = builder.with_sampler(Sampler::ParentBased(Box::new(
                Sampler::TraceIdRatioBased(ratio),
            )));
        }
        let provider = builder.build();
        let tracer = provider.tracer("spillway");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Neither the code's location nor busy/idle times are an
            // operator's question, and both cost every span.
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_filter(
                Targets::new()
                    .with_target("spillway", LevelFilter::INFO)
                    .with_target("guest", LevelFilter::OFF),
            );
        Ok((
            layer,
            Exporting {
                provider,
                role: instance.role,
            },
        ))
    }
}

impl Drop for Exporting {
    fn drop(&mut self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(5));
        if self.role == Role::Sidecar {
            crate::relay::shutdown_node_spans();
        }
    }
}

/// The OTLP exporter `plan` names.
pub(crate) fn build_exporter(plan: &ExportPlan) -> Result<SpanExporter, ExportError> {
    match plan.protocol {
        // The plan decided endpoint and protocol (a flag wins over the
        // variables); said here, the exporter does not read them again.
        Protocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .with_endpoint(&plan.url)
            .build(),
        Protocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(&plan.url)
            .build(),
    }
    .map_err(|source| ExportError {
        url: plan.url.clone(),
        protocol: plan.protocol,
        source,
    })
}

/// Who a process is, as its spans say.
pub(crate) fn resource(instance: &Instance) -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name("spillway");
    }
    builder
        .with_attribute(KeyValue::new("service.instance.id", instance.id()))
        .with_attribute(KeyValue::new("spillway.role", instance.role.as_str()))
        .with_attribute(KeyValue::new("spillway.host", instance.host.clone()))
        .build()
}
