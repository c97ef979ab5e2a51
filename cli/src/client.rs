//! A small client for the HTTP API, shared by the client commands, the demo
//! and the benchmark.

use anyhow::{Context, bail};
use futures::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use spillway_sidecar::api;
use spillway_sidecar::{ArtifactRecord, FunctionRecord};

#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

/// How to invoke: the request headers beyond the input.
#[derive(Debug, Clone, Default)]
pub(crate) struct InvokeOptions {
    /// `spillway-deadline-ms`: shorten the function's deadline.
    pub(crate) deadline_ms: Option<u64>,
    /// `spillway-idempotency-key`: a repeat gets the first outcome.
    pub(crate) idempotency_key: Option<String>,
    /// `spillway-placement: local`: never burst to a peer.
    pub(crate) here_only: bool,
}

/// What an operator does to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberChange {
    Drain,
    Undrain,
    Remove,
}

/// A streamed invocation's answer, its chunks already handed on.
#[derive(Debug)]
pub(crate) struct Streamed {
    pub(crate) status: StatusCode,
    /// A failure's body (a success's chunks went to the caller).
    pub(crate) body: Vec<u8>,
    /// How a streamed job ended (`None`: it was answered whole).
    pub(crate) trailers: Option<HeaderMap>,
}

impl Streamed {
    /// The failure a streamed job ended with, after its first chunk:
    /// `(code, message)`.
    pub(crate) fn failure(&self) -> Option<(String, String)> {
        let t = self.trailers.as_ref()?;
        let text = |name| t.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let outcome = text(api::header::OUTCOME);
        (outcome != "ok").then(|| {
            (
                outcome.to_owned(),
                text(api::header::ERROR_MESSAGE).to_owned(),
            )
        })
    }
}

/// The answer to an invocation, successful or not.
#[derive(Debug)]
pub(crate) struct Invocation {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Invocation {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    /// The error code of a failed invocation.
    pub(crate) fn error_code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        Some(v["error"]["code"].as_str()?.to_owned())
    }

    /// The receipt of a finished job, read from the answer's headers.
    pub(crate) fn parsed_receipt(&self) -> Result<api::Receipt, api::ReceiptError> {
        api::Receipt::read_from(&self.headers)
    }

    /// The receipt as JSON: the job's receipt when it finished, else its
    /// id (when it got one) and the error.
    pub(crate) fn receipt(&self) -> Value {
        let mut r = match self.parsed_receipt() {
            Ok(receipt) if self.status.is_success() => {
                serde_json::to_value(&receipt).unwrap_or_default()
            }
            _ => serde_json::json!({
                "job_id": self.headers.get(api::header::JOB_ID).and_then(|v| v.to_str().ok()),
            }),
        };
        r["status"] = self.status.as_u16().into();
        r["output_len"] = self.body.len().into();
        match std::str::from_utf8(&self.body) {
            Ok(text) if self.status.is_success() => r["output"] = text.into(),
            Ok(_) => {
                r["error"] =
                    serde_json::from_slice(&self.body).unwrap_or(Value::Null)["error"].clone()
            }
            Err(_) => r["output_hex"] = hex_string(&self.body).into(),
        }
        r
    }
}

/// The longest a client request waits out rate limits, all retries together.
const RATE_LIMIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long to wait before sending a request again, after an answer of
/// `status` that asked for `retry_after_ms`, having waited `waited` so far:
/// `None` to take the answer as it is.
fn retry_wait(
    status: StatusCode,
    retry_after_ms: Option<u64>,
    waited: std::time::Duration,
) -> Option<std::time::Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let wait = std::time::Duration::from_millis(retry_after_ms.unwrap_or(1000).clamp(1, 5_000));
    (waited + wait <= RATE_LIMIT_PATIENCE).then_some(wait)
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the CLI speaks https: the system's trust store plus a private CA,
/// and a client certificate for a host that asks for one (mutual TLS).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ClientTls {
    /// Also trust this CA (PEM) for the host's certificate: a cluster's
    /// private CA.
    #[arg(long = "ca", env = "SPILLWAY_CA", value_name = "FILE", global = true)]
    ca: Option<std::path::PathBuf>,
    /// Present this certificate (PEM) to a host that requires client
    /// certificates; with --client-key.
    #[arg(long, env = "SPILLWAY_CLIENT_CERT", value_name = "FILE", global = true)]
    client_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --client-cert.
    #[arg(long, env = "SPILLWAY_CLIENT_KEY", value_name = "FILE", global = true)]
    client_key: Option<std::path::PathBuf>,
}

impl ClientTls {
    /// `builder` trusting the CA and holding the client certificate, if any.
    fn apply(&self, builder: reqwest::ClientBuilder) -> anyhow::Result<reqwest::ClientBuilder> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let mut builder = builder;
        if let Some(path) = &self.ca {
            for cert in reqwest::Certificate::from_pem_bundle(&read(path)?)
                .with_context(|| format!("{}: not PEM certificates", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
                    format!(
                        "{} with {}: not a certificate and its key",
                        cert.display(),
                        key.display()
                    )
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => bail!("a client certificate needs both --client-cert and --client-key"),
        }
        Ok(builder)
    }
}

impl Client {
    /// A client for a loopback cluster this binary started (plain HTTP, or
    /// https with the system's trust store).
    pub(crate) fn new(endpoint: &str, token: Option<String>) -> Self {
        Self::with_tls(endpoint, token, &ClientTls::default()).expect("a client without files")
    }

    /// The host it talks to.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client with `tls`'s CA and client certificate.
    pub(crate) fn with_tls(
        endpoint: &str,
        token: Option<String>,
        tls: &ClientTls,
    ) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder().pool_max_idle_per_host(64);
        Ok(Self {
            http: tls
                .apply(builder)?
                .build()
                .context("building the HTTP client")?,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Starts an async job (`Prefer: respond-async`): its view, with its id.
    pub(crate) async fn invoke_async(
        &self,
        name: &str,
        input: Vec<u8>,
        options: &InvokeOptions,
    ) -> anyhow::Result<Value> {
        let mut r = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/functions/{name}/invoke"),
            )
            .header("prefer", "respond-async")
            .body(input);
        if let Some(ms) = options.deadline_ms {
            r = r.header(api::header::DEADLINE_MS, ms);
        }
        if options.here_only {
            r = r.header(api::header::PLACEMENT, "local");
        }
        Self::json(r).await
    }

    /// An async job's view (`cancel`: cancelled first if it still runs).
    pub(crate) async fn job(&self, id: &str, cancel: bool) -> anyhow::Result<Value> {
        let method = match cancel {
            true => reqwest::Method::DELETE,
            false => reqwest::Method::GET,
        };
        Self::json(self.request(method, &format!("/v1/jobs/{id}"))).await
    }

    /// POSTs `body` to `path` and hands back the answer unread (for an
    /// answer to read as it streams: the OpenAI API's).
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<reqwest::Response> {
        self.request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .context("cannot reach the host (is SPILLWAY_ENDPOINT right?)")
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.endpoint));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends `r` and reads its JSON answer (see [`Self::json_from`]).
    async fn json<T: serde::de::DeserializeOwned>(r: reqwest::RequestBuilder) -> anyhow::Result<T> {
        Self::json_from(|| {
            r.try_clone()
                .context("a request body that cannot be resent")
        })
        .await
    }

    /// Sends the request `make` builds and reads its JSON answer. A request
    /// the host rate-limits (429) is made and sent again after the wait the
    /// host names, for up to [`RATE_LIMIT_PATIENCE`] in all: every request
    /// sent this way is safe to repeat (uploads name their artifact;
    /// changes go through the log).
    async fn json_from<T: serde::de::DeserializeOwned>(
        make: impl Fn() -> anyhow::Result<reqwest::RequestBuilder>,
    ) -> anyhow::Result<T> {
        let mut waited = std::time::Duration::ZERO;
        let (status, bytes) = loop {
            let response = make()?
                .send()
                .await
                .context("cannot reach the host (is SPILLWAY_ENDPOINT right?)")?;
            let status = response.status();
            let bytes = response.bytes().await?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let asked = v["error"]["retry_after_ms"].as_u64();
            match retry_wait(status, asked, waited) {
                Some(wait) => {
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
                None => break (status, bytes),
            }
        };
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            bail!(
                "{} {}: {}",
                status.as_u16(),
                v["error"]["code"].as_str().unwrap_or("error"),
                v["error"]["message"]
                    .as_str()
                    .unwrap_or(&String::from_utf8_lossy(&bytes))
            );
        }
        serde_json::from_slice(&bytes).context("the host answered with unexpected JSON")
    }

    /// Uploads an artifact, with the publisher's `signature` header value
    /// if it is signed.
    pub(crate) async fn put_artifact(
        &self,
        name: &str,
        bytes: Vec<u8>,
        signature: Option<&str>,
    ) -> anyhow::Result<ArtifactRecord> {
        let mut r = self
            .request(reqwest::Method::PUT, &format!("/v1/artifacts/{name}"))
            .body(bytes);
        if let Some(s) = signature {
            r = r.header(api::header::SIGNATURE, s);
        }
        Self::json(r).await
    }

    /// Uploads the file at `path` as artifact `name`, streamed from disk a
    /// MiB at a time (never read whole), telling `sent` of each chunk as it
    /// goes; `signature` as for [`Self::put_artifact`].
    pub(crate) async fn put_artifact_file(
        &self,
        name: &str,
        path: &std::path::Path,
        signature: Option<&str>,
        sent: impl Fn(u64) + Clone + Send + Sync + 'static,
    ) -> anyhow::Result<ArtifactRecord> {
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        let make = || {
            let file =
                std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
            let sent = sent.clone();
            let chunks = tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file),
                1 << 20,
            )
            .inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    sent(chunk.len() as u64);
                }
            });
            let mut r = self
                .request(reqwest::Method::PUT, &format!("/v1/artifacts/{name}"))
                .header(reqwest::header::CONTENT_LENGTH, size)
                .body(reqwest::Body::wrap_stream(chunks));
            if let Some(s) = signature {
                r = r.header(api::header::SIGNATURE, s);
            }
            Ok(r)
        };
        Self::json_from(make).await
    }

    pub(crate) async fn artifacts(&self) -> anyhow::Result<Vec<ArtifactRecord>> {
        Self::json(self.request(reqwest::Method::GET, "/v1/artifacts")).await
    }

    pub(crate) async fn create_function(&self, spec: &Value) -> anyhow::Result<FunctionRecord> {
        Self::json(
            self.request(reqwest::Method::POST, "/v1/functions")
                .json(spec),
        )
        .await
    }

    pub(crate) async fn functions(&self) -> anyhow::Result<Vec<FunctionRecord>> {
        Self::json(self.request(reqwest::Method::GET, "/v1/functions")).await
    }

    /// `method path` with an optional JSON body; the JSON answer.
    pub(crate) async fn json_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut r = self.request(method, path);
        if let Some(body) = body {
            r = r.json(&body);
        }
        Self::json(r).await
    }

    pub(crate) async fn create_ticket(&self, ttl_s: u64) -> anyhow::Result<Value> {
        Self::json(
            self.request(reqwest::Method::POST, "/v1/tickets")
                .json(&serde_json::json!({ "ttl_s": ttl_s })),
        )
        .await
    }

    /// `drain`: POST …/drain; `remove`: DELETE.
    pub(crate) async fn member(&self, id: u64, change: MemberChange) -> anyhow::Result<Value> {
        let r = match change {
            MemberChange::Remove => {
                self.request(reqwest::Method::DELETE, &format!("/v1/members/{id}"))
            }
            MemberChange::Drain => self
                .request(reqwest::Method::POST, &format!("/v1/members/{id}/drain"))
                .json(&serde_json::json!({})),
            MemberChange::Undrain => self
                .request(reqwest::Method::POST, &format!("/v1/members/{id}/undrain"))
                .json(&serde_json::json!({})),
        };
        Self::json(r).await
    }

    /// `GET /v1/backup`: the backup file's bytes.
    pub(crate) async fn backup(&self) -> anyhow::Result<Vec<u8>> {
        let r = self
            .request(reqwest::Method::GET, "/v1/backup")
            .send()
            .await?;
        if !r.status().is_success() {
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            bail!(
                "{status}: {}",
                body["error"]["message"].as_str().unwrap_or("no message")
            );
        }
        Ok(r.bytes().await?.to_vec())
    }

    pub(crate) async fn cluster(&self) -> anyhow::Result<Value> {
        Self::json(self.request(reqwest::Method::GET, "/v1/cluster")).await
    }

    pub(crate) async fn invoke(
        &self,
        name: &str,
        input: Vec<u8>,
        options: &InvokeOptions,
    ) -> anyhow::Result<Invocation> {
        let response = self.send_invoke(name, input, options, false).await?;
        Ok(Invocation {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes().await?.to_vec(),
        })
    }

    /// Runs a function with its output streamed: each chunk goes to
    /// `chunk` as it arrives (only for a successful answer; a failure's
    /// body is kept), and the answer ends with the trailers that say how
    /// the job ended, when it streamed (a job that ended before its first
    /// chunk is answered whole: its receipt is in the headers).
    pub(crate) async fn invoke_streaming(
        &self,
        name: &str,
        input: Vec<u8>,
        options: &InvokeOptions,
        mut chunk: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<Streamed> {
        use http_body_util::BodyExt as _;
        let response = self.send_invoke(name, input, options, true).await?;
        let status = response.status();
        let response: http::Response<reqwest::Body> = response.into();
        let (parts, mut body) = response.into_parts();
        let streaming = parts.headers.contains_key(http::header::TRAILER);
        let (mut kept, mut trailers) = (Vec::new(), None);
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the answer's body broke off")?;
            match frame.into_data() {
                Ok(data) if status.is_success() => chunk(&data)?,
                Ok(data) => kept.extend_from_slice(&data),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        if streaming && trailers.is_none() {
            anyhow::bail!("the stream was cut before its end (no trailers)");
        }
        Ok(Streamed {
            status,
            body: kept,
            trailers,
        })
    }

    async fn send_invoke(
        &self,
        name: &str,
        input: Vec<u8>,
        options: &InvokeOptions,
        stream: bool,
    ) -> anyhow::Result<reqwest::Response> {
        let mut r = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/functions/{name}/invoke"),
            )
            .body(input);
        if stream {
            r = r.header(http::header::TE, "trailers");
        }
        if let Some(ms) = options.deadline_ms {
            r = r.header(api::header::DEADLINE_MS, ms);
        }
        if let Some(key) = &options.idempotency_key {
            r = r.header(api::header::IDEMPOTENCY_KEY, key);
        }
        if options.here_only {
            r = r.header(api::header::PLACEMENT, "local");
        }
        r.send()
            .await
            .context("cannot reach the host (is SPILLWAY_ENDPOINT right?)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_a_rate_limit_is_waited_out_and_only_for_a_while() {
        let ms = Duration::from_millis;
        let limited = StatusCode::TOO_MANY_REQUESTS;
        for (status, asked, waited, wait) in [
            (limited, Some(100), ms(0), Some(ms(100))),
            (limited, None, ms(0), Some(ms(1000))),
            (limited, Some(0), ms(0), Some(ms(1))),
            (limited, Some(60_000), ms(0), Some(ms(5000))),
            (limited, Some(100), ms(29_950), None),
            (StatusCode::SERVICE_UNAVAILABLE, Some(100), ms(0), None),
            (StatusCode::CONFLICT, None, ms(0), None),
            (StatusCode::OK, None, ms(0), None),
        ] {
            assert_eq!(
                retry_wait(status, asked, waited),
                wait,
                "{status} {asked:?} {waited:?}"
            );
        }
    }
}
