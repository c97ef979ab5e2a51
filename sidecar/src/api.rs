//! The HTTP API's vocabulary, shared by the server (`http`) and every
//! client (the CLI, the demo, the chaos harness): the `spillway-*` header
//! names, and the [`Receipt`] a finished invoke carries in its headers,
//! written by the server and read by clients with the same code.
//!
//! What it is not: the routes (`http`) or a client (`spillway`'s
//! `client.rs`). Tests that check the wire itself read raw headers on
//! purpose.

use http::{HeaderMap, HeaderValue};

/// The `spillway-*` headers.
pub mod header {
    /// The job's id (on every answer once the job has one).
    pub const JOB_ID: &str = "spillway-job-id";
    /// The host that ran the job (`n1`).
    pub const NODE: &str = "spillway-node";
    /// The executor (node process) that ran the job, on that host.
    pub const EXECUTOR: &str = "spillway-executor";
    /// Whether the job ran on a peer of the host that took the request.
    pub const BURST: &str = "spillway-burst";
    /// `cpu` or `cuda`.
    pub const BACKEND: &str = "spillway-backend";
    /// The GPU index a CUDA job ran on.
    pub const GPU: &str = "spillway-gpu";
    /// Milliseconds from the request's arrival to the job's start.
    pub const QUEUE_MS: &str = "spillway-queue-ms";
    /// Milliseconds the job ran on its node.
    pub const EXEC_MS: &str = "spillway-exec-ms";
    /// Bytes of weights the job loaded onto its GPU (0: all resident).
    pub const WEIGHTS_LOADED: &str = "spillway-weights-loaded-bytes";
    /// Bytes of artifacts the host that ran the job fetched from peers
    /// before it could start (0 when it held them all).
    pub const FETCHED: &str = "spillway-fetched-bytes";
    /// A streamed answer's trailer: `ok`, or the error code it ended with.
    pub const OUTCOME: &str = "spillway-outcome";
    /// A streamed answer's trailer on a failure: the error's message.
    pub const ERROR_MESSAGE: &str = "spillway-error-message";
    /// A streamed answer's trailer on a failure: whether the job may have
    /// run (`true`/`false`), where known.
    pub const MAY_HAVE_RUN: &str = "spillway-may-have-run";
    /// This answer is the first outcome of an earlier request with the
    /// same idempotency key.
    pub const IDEMPOTENT_REPLAY: &str = "spillway-idempotent-replay";
    /// Request: shorten the function's deadline.
    pub const DEADLINE_MS: &str = "spillway-deadline-ms";
    /// Request: a repeat with this key gets the first outcome.
    pub const IDEMPOTENCY_KEY: &str = "spillway-idempotency-key";
    /// Request: `local` keeps the job on the host that took it.
    pub const PLACEMENT: &str = "spillway-placement";
    /// Request (uploads): the publisher's signature of the artifact.
    pub const SIGNATURE: &str = "spillway-signature";
}

/// What a finished invoke's answer says about the job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Receipt {
    pub job_id: String,
    /// The host that ran it (`n1`).
    pub node: String,
    /// The executor that ran it there (`0`, `1`, …), where the answer says.
    pub executor: Option<String>,
    pub burst: bool,
    /// `cpu` or `cuda`.
    pub backend: String,
    /// The GPU it ran on, for a CUDA job.
    pub gpu: Option<u32>,
    pub queue_ms: f64,
    pub exec_ms: f64,
    /// Bytes of weights the job loaded onto its GPU (0 when its tensors
    /// were resident already, or it ran on the CPU).
    pub weights_loaded_bytes: u64,
    /// Bytes of artifacts the host that ran it fetched from peers first.
    pub fetched_bytes: u64,
    /// A remembered first outcome, answered again for its idempotency key.
    pub idempotent_replay: bool,
}

/// Why headers do not hold a receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the answer has no {0} header")]
    Missing(&'static str),
    #[error("the {header} header is not valid: {value:?}")]
    Malformed { header: &'static str, value: String },
}

impl Receipt {
    /// Sets the receipt's headers on an answer.
    pub fn write_to(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        set(header::JOB_ID, self.job_id.clone());
        set(header::NODE, self.node.clone());
        if let Some(executor) = &self.executor {
            set(header::EXECUTOR, executor.clone());
        }
        set(header::BURST, self.burst.to_string());
        set(header::BACKEND, self.backend.clone());
        if let Some(gpu) = self.gpu {
            set(header::GPU, gpu.to_string());
        }
        set(header::QUEUE_MS, format!("{:.3}", self.queue_ms));
        set(header::EXEC_MS, format!("{:.3}", self.exec_ms));
        set(
            header::WEIGHTS_LOADED,
            self.weights_loaded_bytes.to_string(),
        );
        set(header::FETCHED, self.fetched_bytes.to_string());
        if self.idempotent_replay {
            set(header::IDEMPOTENT_REPLAY, "true".into());
        }
    }

    /// Reads a receipt from an answer's headers.
    pub fn read_from(headers: &HeaderMap) -> Result<Self, ReceiptError> {
        let text = |name: &'static str| -> Result<Option<&str>, ReceiptError> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(Some).map_err(|_| ReceiptError::Malformed {
                    header: name,
                    value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                }),
            }
        };
        let required = |name: &'static str| text(name)?.ok_or(ReceiptError::Missing(name));
        fn parse<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ReceiptError> {
            v.parse().map_err(|_| ReceiptError::Malformed {
                header: name,
                value: v.to_owned(),
            })
        }
        let flag = |name: &'static str| -> Result<bool, ReceiptError> {
            text(name)?.map_or(Ok(false), |v| parse(name, v))
        };
        Ok(Self {
            job_id: required(header::JOB_ID)?.to_owned(),
            node: required(header::NODE)?.to_owned(),
            executor: text(header::EXECUTOR)?.map(str::to_owned),
            burst: flag(header::BURST)?,
            backend: required(header::BACKEND)?.to_owned(),
            gpu: text(header::GPU)?
                .map(|v| parse(header::GPU, v))
                .transpose()?,
            queue_ms: parse(header::QUEUE_MS, required(header::QUEUE_MS)?)?,
            exec_ms: parse(header::EXEC_MS, required(header::EXEC_MS)?)?,
            weights_loaded_bytes: text(header::WEIGHTS_LOADED)?
                .map_or(Ok(0), |v| parse(header::WEIGHTS_LOADED, v))?,
            fetched_bytes: text(header::FETCHED)?.map_or(Ok(0), |v| parse(header::FETCHED, v))?,
            idempotent_replay: flag(header::IDEMPOTENT_REPLAY)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_reads_back_as_written_and_bad_headers_are_named() {
        let receipt = Receipt {
            job_id: "0123abcd".into(),
            node: "n2".into(),
            executor: Some("1".into()),
            burst: true,
            backend: "cuda".into(),
            gpu: Some(1),
            queue_ms: 0.125,
            exec_ms: 12.5,
            weights_loaded_bytes: 1 << 20,
            fetched_bytes: 3 << 20,
            idempotent_replay: false,
        };
        let mut headers = HeaderMap::new();
        receipt.write_to(&mut headers);
        assert_eq!(headers[header::EXEC_MS], "12.500");
        assert_eq!(Receipt::read_from(&headers), Ok(receipt.clone()));

        let cpu = Receipt {
            backend: "cpu".into(),
            executor: None,
            gpu: None,
            idempotent_replay: true,
            ..receipt
        };
        let mut headers = HeaderMap::new();
        cpu.write_to(&mut headers);
        assert!(headers.get(header::GPU).is_none());
        assert!(headers.get(header::EXECUTOR).is_none());
        assert_eq!(Receipt::read_from(&headers), Ok(cpu));

        headers.remove(header::NODE);
        assert_eq!(
            Receipt::read_from(&headers),
            Err(ReceiptError::Missing(header::NODE))
        );
        headers.insert(header::NODE, HeaderValue::from_static("n1"));
        headers.insert(header::QUEUE_MS, HeaderValue::from_static("soon"));
        assert!(matches!(
            Receipt::read_from(&headers),
            Err(ReceiptError::Malformed {
                header: header::QUEUE_MS,
                ..
            })
        ));
    }
}
