//! A burst aimed at one host, for the `up --demo` burst table and
//! `spillway bench burst`: a fixed number of invocations sent at a fixed
//! rate whatever the answers do (open loop, [`fire`]) or by a fixed number
//! of clients each waiting for its answer ([`fire_closed`]), each outcome
//! recorded with its receipt, then summarised: jobs per host, burst share, refusals and
//! failures by code, latency percentiles and throughput.
//!
//! The load is bounded (it sends `jobs` requests and stops) and each
//! request has a client timeout, so a run always ends.

use crate::stats::{ms, percentile};
use spillway_sidecar::api;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to send, where, and how fast.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) endpoint: String,
    pub(crate) token: String,
    pub(crate) function: String,
    pub(crate) input: Vec<u8>,
    pub(crate) jobs: usize,
    pub(crate) rate_per_s: f64,
    /// Send `spillway-placement: local` (burst off for these jobs).
    pub(crate) here_only: bool,
}

/// One answer.
#[derive(Debug)]
struct Answer {
    /// The receipt's host, for a job that completed.
    node: Option<String>,
    burst: bool,
    /// The error code, for one that did not.
    code: Option<String>,
    latency: Duration,
}

/// What a load came to.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) jobs: usize,
    pub(crate) ok: usize,
    pub(crate) per_host: BTreeMap<String, usize>,
    pub(crate) burst: usize,
    pub(crate) errors: BTreeMap<String, usize>,
    /// Latency of completed jobs, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// From the first request sent to the last answer.
    pub(crate) elapsed: Duration,
}

impl Summary {
    /// Completed jobs per second over the run.
    pub(crate) fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The share of completed jobs that ran on a peer.
    pub(crate) fn burst_share(&self) -> f64 {
        self.burst as f64 / (self.ok.max(1)) as f64
    }
}

/// How long one request may take before it counts as `client_timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The client and the invoke URL of a load.
fn client(load: &Load) -> (reqwest::Client, Arc<String>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("a default HTTP client");
    let url = Arc::new(format!(
        "{}/v1/functions/{}/invoke",
        load.endpoint, load.function
    ));
    (http, url)
}

/// Sends one invocation and reads its answer.
async fn send_one(http: &reqwest::Client, url: &str, load: &Load) -> Answer {
    let mut request = http
        .post(url)
        .bearer_auth(&load.token)
        .timeout(REQUEST_TIMEOUT)
        .body(load.input.clone());
    if load.here_only {
        request = request.header(api::header::PLACEMENT, "local");
    }
    let sent = Instant::now();
    let answer = request.send().await;
    let latency = sent.elapsed();
    match answer {
        Ok(r) if r.status().is_success() => {
            let receipt = api::Receipt::read_from(r.headers()).ok();
            let node = receipt.as_ref().map(|r| r.node.clone());
            let burst = receipt.as_ref().is_some_and(|r| r.burst);
            let _ = r.bytes().await;
            Answer {
                node,
                burst,
                code: None,
                latency,
            }
        }
        Ok(r) => {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            let code = body["error"]["code"].as_str().unwrap_or("http_error");
            Answer {
                node: None,
                burst: false,
                code: Some(code.to_owned()),
                latency,
            }
        }
        Err(e) => Answer {
            node: None,
            burst: false,
            code: Some(if e.is_timeout() {
                "client_timeout".into()
            } else {
                "connection_error".into()
            }),
            latency,
        },
    }
}

/// Open loop: sends `load.jobs` invocations at `load.rate_per_s`, whatever
/// the answers do, and waits for every answer.
pub(crate) async fn fire(load: &Load) -> Summary {
    let (http, url) = client(load);
    let every = Duration::from_secs_f64(1.0 / load.rate_per_s.max(1e-3));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(load.jobs);
    for i in 0..load.jobs {
        // The i-th request goes at its time, answered or not.
        tokio::time::sleep_until((started + every * i as u32).into()).await;
        let (http, url, load) = (http.clone(), url.clone(), load.clone());
        tasks.push(tokio::spawn(
            async move { send_one(&http, &url, &load).await },
        ));
    }
    let mut answers = Vec::with_capacity(load.jobs);
    for task in tasks {
        answers.push(task.await.ok());
    }
    summarize(answers, started)
}

/// Closed loop: `concurrency` clients each send their next invocation as
/// soon as the last is answered, `load.jobs` in all (the rate is unused).
pub(crate) async fn fire_closed(load: &Load, concurrency: usize) -> Summary {
    let (http, url) = client(load);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (http, url, load, next) = (http.clone(), url.clone(), load.clone(), next.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < load.jobs {
                    answers.push(Some(send_one(&http, &url, &load).await));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(load.jobs);
    for client in clients {
        match client.await {
            Ok(a) => answers.extend(a),
            Err(_) => answers.push(None),
        }
    }
    summarize(answers, started)
}

/// Sums the answers (`None`: a client task panicked).
fn summarize(answers: Vec<Option<Answer>>, started: Instant) -> Summary {
    let mut summary = Summary {
        jobs: answers.len(),
        ..Summary::default()
    };
    for answer in answers {
        let Some(answer) = answer else {
            *summary.errors.entry("client_panic".into()).or_default() += 1;
            continue;
        };
        match (answer.node, answer.code) {
            (Some(node), None) => {
                summary.ok += 1;
                summary.burst += usize::from(answer.burst);
                *summary.per_host.entry(node).or_default() += 1;
                summary.latencies.push(answer.latency);
            }
            (_, code) => {
                *summary
                    .errors
                    .entry(code.unwrap_or_else(|| "no_receipt".into()))
                    .or_default() += 1;
            }
        }
    }
    summary.elapsed = started.elapsed();
    summary.latencies.sort();
    summary
}

/// Prints one row per labelled summary: jobs per host (`hosts` named in
/// order), burst share, failures, p50/p99 and throughput.
pub(crate) fn print_table(hosts: &[String], rows: &[(&str, &Summary)]) {
    let mut heading = format!("{:<10} {:>5} {:>5}", "mode", "jobs", "ok");
    for h in hosts {
        heading.push_str(&format!(" {h:>5}"));
    }
    heading.push_str(&format!(
        " {:>6} {:>9} {:>9} {:>8}  {}",
        "burst", "p50_ms", "p99_ms", "jobs/s", "not ok"
    ));
    println!("{heading}");
    for (label, s) in rows {
        let mut line = format!("{label:<10} {:>5} {:>5}", s.jobs, s.ok);
        for h in hosts {
            line.push_str(&format!(" {:>5}", s.per_host.get(h).copied().unwrap_or(0)));
        }
        let errors: Vec<String> = s.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        line.push_str(&format!(
            " {:>5.0}% {:>9.1} {:>9.1} {:>8.1}  {}",
            s.burst_share() * 100.0,
            ms(percentile(&s.latencies, 0.50)),
            ms(percentile(&s.latencies, 0.99)),
            s.throughput(),
            if errors.is_empty() {
                "-".to_owned()
            } else {
                errors.join(", ")
            },
        ));
        println!("{line}");
    }
}
