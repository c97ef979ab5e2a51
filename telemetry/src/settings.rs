//! Whether a process exports its spans, where, and how: the project's own
//! flags first, then the standard OpenTelemetry variables, as every
//! OpenTelemetry SDK reads them. Pure: the environment comes in as a
//! lookup function, so the table below is the whole behaviour.
//!
//! | what | flag | variables, first found wins |
//! | --- | --- | --- |
//! | endpoint | `--otlp-endpoint` (a base URL) | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is), `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL) |
//! | protocol | `--otlp-protocol` | `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`; default `http/protobuf` |
//! | sampling | `--trace-sample-ratio` | `OTEL_TRACES_SAMPLER` (+ `_ARG`), read by the SDK itself |
//! | off | (no endpoint) | `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` |
//!
//! Export is opt-in: with no endpoint from any source nothing leaves the
//! process. For HTTP a base URL gets `/v1/traces` appended, as the
//! specification says; a gRPC endpoint is used as given.

use std::fmt;

/// The flags a process was given (all optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSettings {
    /// Base URL of an OTLP receiver, e.g. `http://127.0.0.1:4318`.
    pub endpoint: Option<String>,
    pub protocol: Option<Protocol>,
    /// Fraction of new traces kept, 0.0 to 1.0; a trace the caller sampled
    /// (its `traceparent` says so) is always kept.
    pub sample_ratio: Option<f64>,
}

/// OTLP's two transports that this build carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    /// The value as `OTEL_EXPORTER_OTLP_PROTOCOL` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(SettingsError::Protocol(other.to_owned())),
        }
    }
}

/// A setting that cannot be used; the process refuses to start rather
/// than run without the traces its operator asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// Fix the protocol: only these two are built in.
    #[error("OTLP protocol `{0}` is not supported: use `grpc` or `http/protobuf`")]
    Protocol(String),
    /// Fix the ratio.
    #[error("trace sample ratio {0} is not between 0 and 1")]
    Ratio(f64),
    /// Fix the endpoint: it must be an http(s) URL.
    #[error("OTLP endpoint `{0}` is not an http:// or https:// URL")]
    Endpoint(String),
}

/// Where and how spans go, when they go at all.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPlan {
    /// The URL the exporter sends to, complete (`/v1/traces` included for
    /// HTTP).
    pub url: String,
    pub protocol: Protocol,
    /// `None`: the SDK reads `OTEL_TRACES_SAMPLER` (default: parent-based,
    /// always on).
    pub sample_ratio: Option<f64>,
}

/// The plan for `flags` in an environment read through `env`; `None` when
/// nothing is to be exported.
pub fn plan(
    flags: &TraceSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ExportPlan>, SettingsError> {
    let set = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let protocol = match flags.protocol {
        Some(p) => p,
        None => match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            Some(p) => p.parse()?,
            None => Protocol::HttpProtobuf,
        },
    };
    // (URL, whether it is a base that takes the signal's path).
    let endpoint = match &flags.endpoint {
        Some(base) => Some((base.trim().to_owned(), true)),
        None => set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|url| (url, false))
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| (base, true))),
    };
    let Some((url, is_base)) = endpoint else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(SettingsError::Endpoint(url));
    }
    let url = match (protocol, is_base) {
        (Protocol::HttpProtobuf, true) => format!("{}/v1/traces", url.trim_end_matches('/')),
        _ => url,
    };
    if let Some(r) = flags.sample_ratio
        && !(0.0..=1.0).contains(&r)
    {
        return Err(SettingsError::Ratio(r));
    }
    Ok(Some(ExportPlan {
        url,
        protocol,
        sample_ratio: flags.sample_ratio,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn flags(endpoint: Option<&str>, protocol: Option<Protocol>) -> TraceSettings {
        TraceSettings {
            endpoint: endpoint.map(str::to_owned),
            protocol,
            sample_ratio: None,
        }
    }

    #[test]
    fn the_plan_from_flags_and_environment() {
        use Protocol::*;
        type Row = (
            &'static str,
            TraceSettings,
            &'static [(&'static str, &'static str)],
            Option<(&'static str, Protocol)>,
        );
        let rows: Vec<Row> = vec![
            ("nothing configured: off", flags(None, None), &[], None),
            (
                "a flag, HTTP by default: the signal path appended",
                flags(Some("http://c:4318"), None),
                &[],
                Some(("http://c:4318/v1/traces", HttpProtobuf)),
            ),
            (
                "a flag with a trailing slash",
                flags(Some("http://c:4318/"), None),
                &[],
                Some(("http://c:4318/v1/traces", HttpProtobuf)),
            ),
            (
                "a flag and gRPC: used as given",
                flags(Some("http://c:4317"), Some(Grpc)),
                &[],
                Some(("http://c:4317", Grpc)),
            ),
            (
                "the standard base endpoint",
                flags(None, None),
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
                Some(("http://c:4318/v1/traces", HttpProtobuf)),
            ),
            (
                "the traces endpoint is used as is and wins over the base",
                flags(None, None),
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom"),
                ],
                Some(("http://t:9/custom", HttpProtobuf)),
            ),
            (
                "the standard protocol variable",
                flags(None, None),
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                Some(("http://c:4317", Grpc)),
            ),
            (
                "the traces protocol wins over the general one",
                flags(None, None),
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ],
                Some(("http://c:4318/v1/traces", HttpProtobuf)),
            ),
            (
                "a flag wins over the variables",
                flags(Some("http://flag:1"), Some(Grpc)),
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:2"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ],
                Some(("http://flag:1", Grpc)),
            ),
            (
                "the SDK switched off",
                flags(Some("http://c:4318"), None),
                &[("OTEL_SDK_DISABLED", "true")],
                None,
            ),
            (
                "the traces exporter set to none",
                flags(None, None),
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_EXPORTER", "none"),
                ],
                None,
            ),
            (
                "an empty variable counts as unset",
                flags(None, None),
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")],
                None,
            ),
        ];
        for (what, flags, vars, want) in rows {
            let got = plan(&flags, env(vars)).unwrap();
            let got = got.map(|p| (p.url, p.protocol));
            let want = want.map(|(u, p)| (u.to_owned(), p));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn settings_that_cannot_be_used_are_named() {
        let e = plan(
            &flags(None, None),
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e, SettingsError::Protocol("http/json".into()));
        let e = plan(&flags(Some("c:4318"), None), env(&[])).unwrap_err();
        assert_eq!(e, SettingsError::Endpoint("c:4318".into()));
        let ratio = TraceSettings {
            sample_ratio: Some(1.5),
            ..flags(Some("http://c:4318"), None)
        };
        assert_eq!(
            plan(&ratio, env(&[])).unwrap_err(),
            SettingsError::Ratio(1.5)
        );
        // Off wins over a bad setting: nothing is built.
        assert_eq!(
            plan(
                &flags(None, None),
                env(&[
                    ("OTEL_SDK_DISABLED", "true"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "x")
                ])
            ),
            Ok(None)
        );
    }
}
