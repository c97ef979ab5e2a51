//! The binary's side of traces: the flags that say where spans go, and
//! the logging set-up that adds the exporter's layer beside the log.
//! Only the long-running processes (`host`, `init`, `join`, `sidecar`,
//! `node`) export; the client commands never do.

use spillway_telemetry::settings::{self, Protocol};
use spillway_telemetry::{Exporting, Instance, Role, TraceSettings};
use std::ffi::OsString;

/// Traces: where a host's processes (the sidecar and its node) send their
/// spans. The standard `OTEL_*` variables work too; a flag wins.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct TraceArgs {
    /// Export spans to this OTLP receiver, a base URL such as
    /// http://127.0.0.1:4318 (default: OTEL_EXPORTER_OTLP_ENDPOINT; with
    /// neither, nothing is exported).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (default: OTEL_EXPORTER_OTLP_PROTOCOL,
    /// else http/protobuf).
    #[arg(long, value_name = "PROTOCOL", value_parser = parse_protocol)]
    otlp_protocol: Option<Protocol>,
    /// The fraction of new traces exported, 0 to 1; a trace the caller
    /// sampled is always exported (default: OTEL_TRACES_SAMPLER, else all).
    #[arg(long, value_name = "RATIO")]
    trace_sample_ratio: Option<f64>,
    /// This host's name in its spans' service.instance.id (default: the
    /// machine's hostname and the API port).
    #[arg(long, value_name = "NAME")]
    trace_instance: Option<String>,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
        .map_err(|e: settings::SettingsError| e.to_string())
}

impl TraceArgs {
    fn settings(&self) -> TraceSettings {
        TraceSettings {
            endpoint: self.otlp_endpoint.clone(),
            protocol: self.otlp_protocol,
            sample_ratio: self.trace_sample_ratio,
        }
    }

    /// The host's name: `--trace-instance`, else `<hostname>:<port>`.
    pub(crate) fn instance(&self, port: u16) -> String {
        self.trace_instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{host}:{port}")
        })
    }

    /// The same settings as flags for the node a host spawns, with the
    /// host's name settled (`node_args_carry_every_limit` checks none is
    /// left out).
    pub(crate) fn node_args(&self, instance: &str) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--trace-instance".into(), instance.into()];
        if let Some(e) = &self.otlp_endpoint {
            args.extend(["--otlp-endpoint".into(), e.into()]);
        }
        if let Some(p) = self.otlp_protocol {
            args.extend(["--otlp-protocol".into(), p.as_str().into()]);
        }
        if let Some(r) = self.trace_sample_ratio {
            args.extend(["--trace-sample-ratio".into(), r.to_string().into()]);
        }
        args
    }
}

/// What a process exports, if anything: its settings and its name.
#[derive(Debug)]
pub(crate) struct Exports {
    pub(crate) args: TraceArgs,
    pub(crate) instance: String,
    pub(crate) role: Role,
}

/// Logs to stderr, filtered by `SPILLWAY_LOG` (default `default`), in
/// colour only on a terminal (a log file gets plain text); and, when
/// `exports` says so and the settings ask for it, spans to an OTLP
/// receiver. Call inside the tokio runtime (the gRPC exporter's channel
/// lives on it); keep the returned value until the process ends (dropping
/// it sends what is queued).
pub(crate) fn init(default: &str, exports: Option<Exports>) -> anyhow::Result<Option<Exporting>> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter =
        EnvFilter::try_from_env("SPILLWAY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let plan = match &exports {
        Some(e) => settings::plan(&e.args.settings(), |k| std::env::var(k).ok())?,
        None => None,
    };
    let (Some(plan), Some(exports)) = (plan, exports) else {
        let _ = tracing_subscriber::registry().with(log).try_init();
        return Ok(None);
    };
    let instance = Instance {
        host: exports.instance,
        role: exports.role,
    };
    let (spans, exporting) = Exporting::start(&plan, &instance)?;
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(spans)
        .try_init();
    tracing::info!(url = %plan.url, protocol = %plan.protocol, instance = %instance.id(), "exporting spans");
    Ok(Some(exporting))
}
