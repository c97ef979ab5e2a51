//! A local cluster started through the real binary (`spillway up`), and a
//! few helpers. Every test gets its own cluster in its own directory.
#![allow(dead_code, unreachable_pub)]

pub mod hosts;
pub mod pki;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_spillway");

#[derive(Debug)]
pub struct Cluster {
    child: Child,
    pub endpoint: String,
    pub token: String,
    pub http: reqwest::Client,
    /// Node processes started apart from the sidecar (`start_apart`).
    nodes: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The hosts watch their stdin: when `up` dies they shut down too.
        let _ = self.child.kill();
        let _ = self.child.wait();
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// A component `examples/guests/build.sh` built into `target/guests`.
pub fn built(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../target/guests/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{path}: {e}: build the example guests first (examples/guests/build.sh; ./scripts/test runs it)")
    })
}

/// Runs one of the example model's Python scripts
/// (`examples/models/tiny_lm/SCRIPT`); its standard output.
pub fn tiny_lm(script: &str, args: &[&str]) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/tiny_lm");
    let out = Command::new("python3")
        .arg(dir.join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 {script}: {e} (scripts/test installs numpy)"));
    assert!(
        out.status.success(),
        "python3 {script} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A safetensors file of `tensors` (name, dtype, shape, little-endian
/// bytes), written by the format's own crate.
pub fn safetensors(tensors: &[(&str, safetensors::Dtype, &[usize], Vec<u8>)]) -> Vec<u8> {
    let views = tensors.iter().map(|(name, dtype, shape, bytes)| {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.to_vec(), bytes).unwrap();
        (*name, view)
    });
    safetensors::serialize(views, None).unwrap()
}

/// Little-endian bytes of `values`.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn guest(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../examples/guests/{name}.wat",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Reads `child`'s stdout until `parse` has found its endpoint and admin
/// token (each line may give either), then drains the rest on a thread.
fn endpoint_and_token(
    child: &mut Child,
    parse: impl Fn(&str) -> (Option<String>, Option<String>),
) -> (String, String) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut endpoint, mut token) = (None, None);
    while endpoint.is_none() || token.is_none() {
        let line = lines
            .next()
            .expect("it printed its address and token")
            .unwrap();
        let (e, t) = parse(&line);
        endpoint = endpoint.or(e);
        token = token.or(t);
    }
    std::thread::spawn(move || for _ in lines {});
    (endpoint.unwrap(), token.unwrap())
}

impl Cluster {
    pub fn start(slots: u32, queue: u32) -> Self {
        Self::start_with(slots, queue, &[])
    }

    /// Starts with extra `spillway up` flags.
    pub fn start_with(slots: u32, queue: u32, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args([
                "up",
                "--hosts",
                "1",
                "--slots",
                &slots.to_string(),
                "--queue",
                &queue.to_string(),
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (endpoint, token) = endpoint_and_token(&mut child, |line| {
            let endpoint = line.strip_prefix("export SPILLWAY_ENDPOINT=");
            let token = line.strip_prefix("export SPILLWAY_TOKEN=");
            (endpoint.map(str::to_owned), token.map(str::to_owned))
        });
        Self {
            child,
            endpoint,
            token,
            http: reqwest::Client::new(),
            nodes: Vec::new(),
            _dir: dir,
        }
    }

    /// A host's halves run apart, as in a pod: one `spillway node` per
    /// entry of `nodes` (each on the CPU backend with `slots`, its own
    /// socket and folder, one shared node directory), then a founding
    /// `spillway sidecar` on all their sockets with `sidecar_flags`.
    pub fn start_apart(nodes: usize, slots: u32, sidecar_flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node_dir = dir.path().join("node");
        let mut sockets = Vec::new();
        let mut children = Vec::new();
        for i in 0..nodes {
            let socket = dir.path().join(format!("node-{i}.sock"));
            let child = Command::new(BIN)
                .args(["node", "--gpus", "none", "--slots", &slots.to_string()])
                .arg("--socket")
                .arg(&socket)
                .arg("--dir")
                .arg(&node_dir)
                .arg("--own-dir")
                .arg(node_dir.join("executors").join(i.to_string()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            children.push(child);
            sockets.push(socket);
        }
        let mut sidecar = Command::new(BIN);
        sidecar
            .args(["sidecar", "--init", "--listen", "127.0.0.1:0"])
            .args([
                "--peer-listen",
                "127.0.0.1:0",
                "--slots",
                &slots.to_string(),
            ])
            .arg("--dir")
            .arg(dir.path().join("sidecar"));
        for socket in &sockets {
            sidecar.arg("--node-socket").arg(socket);
        }
        let mut child = sidecar
            .args(sidecar_flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (endpoint, token) = endpoint_and_token(&mut child, |line| {
            let endpoint =
                (line.split("listening on ").nth(1)).and_then(|v| v.split_whitespace().next());
            let token = line.strip_prefix("admin token (shown once, store it now): ");
            (
                endpoint.map(str::to_owned),
                token.map(|t| t.trim().to_owned()),
            )
        });
        Self {
            child,
            endpoint,
            token,
            http: reqwest::Client::new(),
            nodes: children,
            _dir: dir,
        }
    }

    /// The cluster's directory (`spillway up --dir`).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    pub async fn put_artifact(&self, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.http
            .put(self.url(&format!("/v1/artifacts/{name}")))
            .bearer_auth(&self.token)
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    /// Uploads an example guest and registers it as a function.
    pub async fn deploy(&self, function: &str, guest_name: &str, deadline_ms: u64) {
        let r = self.put_artifact(guest_name, guest(guest_name)).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let r = self
            .http
            .post(self.url("/v1/functions"))
            .bearer_auth(&self.token)
            .json(
                &json!({"name": function, "artifact": guest_name, "deadline_ms": deadline_ms,
                          "memory_limit_bytes": 32 << 20}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    pub async fn invoke(&self, function: &str, input: Vec<u8>) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/v1/functions/{function}/invoke")))
            .bearer_auth(&self.token)
            .body(input)
            .send()
            .await
            .unwrap()
    }

    /// Waits until the sidecar has restarted its node (a new pid, up) after
    /// the node `old_pid` died, and checks the restart was counted.
    pub async fn wait_for_restarted_node(&self, old_pid: u64) {
        let member = self
            .wait_member("a new node", |m| {
                m["node"]["up"] == true && m["node"]["pid"].as_u64().is_some_and(|p| p != old_pid)
            })
            .await;
        assert!(
            member["node"]["restarts"].as_u64().unwrap() >= 1,
            "{member}"
        );
    }

    /// Invokes `function` with an empty input on a task of its own.
    pub fn spawn_invoke(&self, function: &str) -> tokio::task::JoinHandle<reqwest::Response> {
        let request = self
            .http
            .post(self.url(&format!("/v1/functions/{function}/invoke")))
            .bearer_auth(&self.token);
        tokio::spawn(async move { request.send().await.unwrap() })
    }

    /// The host's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = self.http.get(self.url("/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub async fn cluster(&self) -> Value {
        self.http
            .get(self.url("/v1/cluster"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls `/v1/cluster` until `pred` holds for the only member.
    pub async fn wait_member(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let c = self.cluster().await;
            if pred(&c["members"][0]) {
                return c["members"][0].clone();
            }
            assert!(Instant::now() < until, "timed out waiting for {what}: {c}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Cluster {
    /// Waits for the first host's node to be up with its backends known
    /// (the membership's GPU inventory can lag the node's own report) and
    /// returns its member entry and whether it has CUDA.
    pub async fn wait_node_backends(&self) -> (Value, bool) {
        let member = self
            .wait_member("node up with its backends", |m| {
                m["node"]["up"] == true && m["backends"].as_array().is_some_and(|b| !b.is_empty())
            })
            .await;
        let cuda = member["backends"]
            .as_array()
            .is_some_and(|b| b.iter().any(|x| x == "cuda"));
        (member, cuda)
    }
}

/// Runs the `spillway` CLI against `endpoint` as `token`: (success,
/// stdout trimmed, stderr).
pub fn spillway_cli(endpoint: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env("SPILLWAY_ENDPOINT", endpoint)
        .env("SPILLWAY_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends `sig` (`-STOP`, `-CONT`, …) to process `pid` with kill(1).
pub fn signal(pid: &str, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// Waits until `done` answers true, asking every 50 ms for `within` at
/// most; past that the test fails, saying `what` never happened.
pub async fn wait_until(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < until, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gemm guest's input for a 1×1×1 product `a·b`.
pub fn gemm_1x1(a: f32, b: f32) -> Vec<u8> {
    [1u32, 1, 1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain(a.to_le_bytes())
        .chain(b.to_le_bytes())
        .collect()
}

/// Asserts an error response: status and JSON code. Returns the error object.
pub async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    let body: Value = r.json().await.expect("errors are JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"].clone()
}

/// Sends a request's head over a raw connection, announcing a body of
/// `length` bytes, and sends none of it: the answer (status and body) the
/// server gives within five seconds. `headers` are whole lines, each ending
/// in `\r\n`. This shows that the server decided from the head alone.
pub async fn head_only(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &str,
    length: u64,
) -> (u16, String) {
    head_then(endpoint, (method, path, headers, length), &[]).await
}

/// [`head_only`], then the body's `first` bytes (and no more): the answer
/// the server gives from those.
pub async fn head_then(
    endpoint: &str,
    (method, path, headers, length): (&str, &str, &str, u64),
    first: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}content-length: {length}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(first).await.unwrap();
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((status, body)) = complete_response(&answer) {
            return (status, body);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .expect("answered before any body byte was sent")
            .unwrap();
        assert!(n > 0, "closed without a whole answer: {answer:?}");
        answer.extend_from_slice(&chunk[..n]);
    }
}

/// A whole HTTP/1.1 response with a `content-length`, or `None` while
/// bytes are missing.
fn complete_response(bytes: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    (body.len() >= length).then(|| (status, body[..length].to_owned()))
}

/// `spillway` started with exactly the given arguments (`host --config
/// F`, `restore F …`), serving once it prints `listening on`; killed when
/// dropped (its node follows it).
pub struct Started {
    child: Child,
    pub endpoint: String,
    /// What it printed before it served.
    pub printed: Vec<String>,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(args: &[&str], log: &Path) -> Started {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("SPILLWAY_JOIN_TICKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let (lines, heard) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let until = Instant::now() + Duration::from_secs(60);
    let mut printed = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(line) = heard.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{args:?} did not serve: {printed:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        if let Some(endpoint) = line.strip_prefix("listening on ") {
            let endpoint = endpoint.trim().to_owned();
            return Started {
                child,
                endpoint,
                printed,
            };
        }
        printed.push(line);
    }
}
