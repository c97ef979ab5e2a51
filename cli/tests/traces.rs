//! Traces across hops, received by a real OTLP receiver
//! (`otlp_receiver.py`, on the official `opentelemetry-proto`
//! definitions): a client's `traceparent` on a job that bursts from host 1
//! to host 2 comes back as one trace, from host 1's sidecar (over
//! OTLP/HTTP, set by flags), host 2's sidecar and host 2's node (over
//! OTLP/gRPC, set by the standard `OTEL_*` variables), every span's parent
//! in the trace, down to the guest's `gpu` call.

use crate::common::{self, hosts};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The receiver process (killed when dropped) and the file it writes.
struct Receiver {
    child: Child,
    out: std::path::PathBuf,
    http: u16,
    grpc: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Starts it in `dir`, with a gRPC side when `grpc`.
    fn start(dir: &Path, grpc: bool) -> Self {
        let out = dir.join("spans.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&out)
            .args(grpc.then_some("--grpc"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (scripts/test installs opentelemetry-proto and grpcio)");
        // It says its ports on its first line once it listens.
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        let port = |kind: &str| {
            ready
                .split(',')
                .find_map(|p| p.trim().strip_prefix(kind)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("the receiver did not start: {ready:?}"))
        };
        Self {
            http: port("http "),
            grpc: if grpc { port("grpc ") } else { 0 },
            child,
            out,
        }
    }

    /// Waits (30 s at most) until `found` makes something of the spans
    /// received so far; its last complaint otherwise.
    async fn wait_for<T>(&self, found: impl Fn(&[Value]) -> Result<T, String>) -> T {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            match found(&spans) {
                Ok(it) => return it,
                Err(why) => assert!(Instant::now() < until, "{why}: {spans:#?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        let Ok(file) = std::fs::File::open(&self.out) else {
            return Vec::new();
        };
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }
}

/// The TCP and UDP sockets process `pid` holds (its descriptors matched
/// against the kernel's tables by inode).
fn inet_sockets_of(pid: u64) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    ["tcp", "tcp6", "udp", "udp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9).map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .filter(|inode| inodes.contains(inode))
        .count()
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The trace's spans as (instance, name) → span, once it holds `want`
/// and every span's parent is the client's or another span of it.
fn whole_trace(
    spans: &[Value],
    want: &[(&str, &str)],
) -> Result<BTreeMap<(String, String), Value>, String> {
    let trace: Vec<&Value> = spans
        .iter()
        .filter(|s| s["trace_id"] == CLIENT_TRACE)
        .collect();
    let ids: Vec<&str> = trace
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    let by: BTreeMap<(String, String), Value> = trace
        .iter()
        .map(|s| {
            let key = (
                s["instance"].as_str().unwrap_or("").to_owned(),
                s["name"].as_str().unwrap().to_owned(),
            );
            (key, (*s).clone())
        })
        .collect();
    for (instance, name) in want {
        if !by.contains_key(&(instance.to_string(), name.to_string())) {
            return Err(format!("no {name} span from {instance} yet"));
        }
    }
    for s in &trace {
        let parent = s["parent_span_id"].as_str().unwrap();
        if parent != CLIENT_SPAN && !ids.contains(&parent) {
            return Err(format!(
                "{s}: its parent {parent} is not in the trace (yet)"
            ));
        }
    }
    Ok(by)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_jobs_trace_crosses_both_hosts_and_the_node() {
    let root = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(root.path(), true);
    let h1_to = format!("http://127.0.0.1:{}", receiver.http);
    let h2_to = format!("http://127.0.0.1:{}", receiver.grpc);
    let base = ["--slots", "1", "--gossip-ms", "100"];
    // Host 1 by its flags (which win over the variables); host 2 by the
    // standard OTEL_* variables alone, as any OpenTelemetry SDK reads them.
    let h1 = [
        &base[..],
        &[
            "--otlp-endpoint",
            &h1_to,
            "--otlp-protocol",
            "http/protobuf",
            "--trace-instance",
            "h1",
        ],
    ]
    .concat();
    let h2 = [&base[..], &["--trace-instance", "h2"]].concat();
    // Batches go out every 200 ms (the standard variable) instead of 5 s.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", h2_to.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("OTEL_SERVICE_NAME", "spillway-test"),
    ];
    let (api, hosts) = hosts::form_env(root.path(), &[&h1, &h2], &env).await;
    for name in ["countdown", "gemm"] {
        let spec = json!({"name": name, "artifact": name, "deadline_ms": 30000});
        api.publish(&hosts[0], &api.token, name, spec).await;
    }

    // Host 1's one slot is held (a job kept there); the traced job finds
    // host 2 free and bursts. Sent again until it does.
    let client = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let mut job = None;
    for _ in 0..10 {
        let filler = {
            let (http, endpoint, token) = (
                api.http.clone(),
                hosts[0].endpoint.clone(),
                api.token.clone(),
            );
            tokio::spawn(async move {
                http.post(format!("{endpoint}/v1/functions/countdown/invoke"))
                    .bearer_auth(token)
                    .header("spillway-placement", "local")
                    .body(vec![9u8, 15])
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        };
        api.wait(&hosts[0], "host 1 busy, host 2 free", |v| {
            let m = hosts::members(v);
            m.iter().any(|m| m["running"] == 1) && m.iter().any(|m| m["running"] == 0)
        })
        .await;
        let r = api
            .http
            .post(format!("{}/v1/functions/gemm/invoke", hosts[0].endpoint))
            .bearer_auth(&api.token)
            .header("traceparent", &client)
            .header("tracestate", "congo=t61rcWkgMzE")
            .body(common::gemm_1x1(2.0, 3.0))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let burst = r
            .headers()
            .get("spillway-burst")
            .is_some_and(|v| v == "true");
        let id = r.headers()["spillway-job-id"].to_str().unwrap().to_owned();
        assert_eq!(r.bytes().await.unwrap().as_ref(), 6.0f32.to_le_bytes());
        assert_eq!(filler.await.unwrap(), 200);
        if burst {
            job = Some(id);
            break;
        }
    }
    let job = job.expect("the traced job burst to host 2 within 10 tries");

    let want = [
        ("h1/sidecar", "ingress"),
        ("h1/sidecar", "place"),
        ("h1/sidecar", "dispatch"),
        ("h2/sidecar", "burst_in"),
        ("h2/node", "node.execute"),
        ("h2/node", "guest"),
        ("h2/node", "gpu.gemm"),
    ];
    let trace = receiver.wait_for(|spans| whole_trace(spans, &want)).await;
    let span = |i: &str, n: &str| trace[&(i.to_owned(), n.to_owned())].clone();
    // The chain of parents, hop by hop.
    let (ingress, dispatch, burst_in) = (
        span("h1/sidecar", "ingress"),
        span("h1/sidecar", "dispatch"),
        span("h2/sidecar", "burst_in"),
    );
    let (execute, guest, gemm) = (
        span("h2/node", "node.execute"),
        span("h2/node", "guest"),
        span("h2/node", "gpu.gemm"),
    );
    assert_eq!(ingress["parent_span_id"], CLIENT_SPAN);
    assert_eq!(burst_in["parent_span_id"], dispatch["span_id"]);
    assert_eq!(guest["parent_span_id"], execute["span_id"]);
    assert_eq!(gemm["parent_span_id"], guest["span_id"]);
    // The node's span hangs from host 2's sidecar, not from host 1's.
    let h2_sidecar: Vec<&Value> = trace
        .iter()
        .filter(|((i, _), _)| i == "h2/sidecar")
        .map(|(_, s)| s)
        .collect();
    assert!(
        h2_sidecar
            .iter()
            .any(|s| s["span_id"] == execute["parent_span_id"]),
        "{execute}"
    );
    // The job and its tenant on every hop; the call's kernel and sizes.
    for s in [&ingress, &burst_in, &execute] {
        assert_eq!(s["attributes"]["job"], job, "{s}");
        assert_eq!(s["attributes"]["tenant"], "admin", "{s}");
    }
    assert_eq!(gemm["attributes"]["kernel"], "gemm");
    assert_eq!(gemm["attributes"]["backend"], "cpu");
    assert_eq!(gemm["attributes"]["buffers"], "[1, 1, 1]");
    assert_eq!(
        span("h1/sidecar", "place")["attributes"]["decision"],
        "peer"
    );
    // Who each process is: the service name from OTEL_SERVICE_NAME.
    assert!(trace.values().all(|s| s["service_name"] == "spillway-test"));
    // The node's spans left through its sidecar: the node itself holds
    // no network socket, tracing on or not.
    // (The count is real: the sidecar's own QUIC and HTTP sockets show.)
    assert!(inet_sockets_of(u64::from(hosts[1].process.pid())) > 0);
    let view = api.cluster(&hosts[1]).await;
    for m in hosts::members(&view) {
        let pid = m["node"]["pid"].as_u64().expect("a node pid");
        assert_eq!(
            inet_sockets_of(pid),
            0,
            "node {pid} of {} holds a network socket",
            m["id"]
        );
    }
    drop(hosts);
}

/// A collector that is down costs no job anything: a host exporting to
/// a port where nothing listens answers every job, its spans dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_fails_no_job() {
    let root = tempfile::tempdir().unwrap();
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let to = format!("http://127.0.0.1:{port}");
    let env = [
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
    ];
    let (api, hosts) = hosts::form_env(root.path(), &[&["--otlp-endpoint", &to]], &env).await;
    api.publish(
        &hosts[0],
        &api.token,
        "gemm",
        json!({"name": "gemm", "artifact": "gemm", "deadline_ms": 30000}),
    )
    .await;
    for i in 0..40u8 {
        let r = api
            .http
            .post(format!("{}/v1/functions/gemm/invoke", hosts[0].endpoint))
            .bearer_auth(&api.token)
            .header(
                "traceparent",
                format!("00-{CLIENT_TRACE}-{:016x}-01", u64::from(i) + 1),
            )
            .body(common::gemm_1x1(2.0, f32::from(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            (2.0 * f32::from(i)).to_le_bytes()
        );
    }
    let log = std::fs::read_to_string(hosts[0].dir.join("host.log")).unwrap();
    assert!(log.contains("exporting spans"), "{log}");
}

/// On a GPU host (skips, saying so, elsewhere): a GPU job's `gpu.gemm`
/// span says the CUDA backend and the GPU; the host's metrics and cluster
/// view carry the GPU's memory as its driver reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_jobs_call_is_traced_and_its_gpus_memory_reported() {
    let root = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(root.path(), false);
    let to = format!("http://127.0.0.1:{}", receiver.http);
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "200")];
    let flags = ["--otlp-endpoint", &to, "--trace-instance", "g1"];
    let (api, hosts) = hosts::form_env(root.path(), &[&flags], &env).await;
    if !api.has_cuda(&hosts[0], "n1").await {
        eprintln!("skipped: no CUDA driver or GPU on this host");
        return;
    }
    let spec = json!({"name": "gemm", "artifact": "gemm", "accelerator": "required", "deadline_ms": 30000});
    api.publish(&hosts[0], &api.token, "gemm", spec).await;
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let r = api
        .http
        .post(format!("{}/v1/functions/gemm/invoke", hosts[0].endpoint))
        .bearer_auth(&api.token)
        .header("traceparent", format!("00-{trace}-{CLIENT_SPAN}-01"))
        .body(common::gemm_1x1(2.0, 3.0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["spillway-backend"], "cuda");
    assert_eq!(r.bytes().await.unwrap().as_ref(), 6.0f32.to_le_bytes());
    let gemm = receiver
        .wait_for(|spans| {
            (spans.iter())
                .find(|s| s["trace_id"] == trace && s["name"] == "gpu.gemm")
                .cloned()
                .ok_or_else(|| "no gpu.gemm span".to_owned())
        })
        .await;
    assert_eq!(gemm["attributes"]["backend"], "cuda", "{gemm}");
    assert_eq!(gemm["attributes"]["gpu"], 0, "{gemm}");
    // Its time on the device, from CUDA events around the call.
    assert!(gemm["attributes"]["device_us"].is_number(), "{gemm}");
    assert_eq!(gemm["instance"], "g1/node");
    // The GPU's memory: in the cluster view and on /metrics.
    let view = api
        .wait(&hosts[0], "the GPU's memory reported", |v| {
            hosts::members(v)[0]["node"]["gpu_memory"]
                .as_array()
                .is_some_and(|g| !g.is_empty())
        })
        .await;
    let gpu = hosts::members(&view)[0]["node"]["gpu_memory"][0].clone();
    let (used, total) = (
        gpu["used_bytes"].as_u64().unwrap(),
        gpu["total_bytes"].as_u64().unwrap(),
    );
    assert!(used > 0 && used < total, "{gpu}");
    let page = api.metrics(&hosts[0]).await;
    let line = page
        .lines()
        .find(|l| l.starts_with("spillway_gpu_memory_total_bytes{gpu=\"0\"}"))
        .unwrap_or_else(|| panic!("no GPU memory series: {page}"));
    assert_eq!(
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap(),
        total
    );
}
