//! Hosts of a multi-host test cluster: each a real `spillway host`
//! process in its own directory, and a small authenticated API client.

use super::BIN;
use serde_json::{Value, json};
use spillway_launch::{HostLaunch, HostProcess, LaunchError, Role};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One `spillway host` process (killed when dropped).
#[derive(Debug)]
pub struct Host {
    pub process: HostProcess,
    pub dir: PathBuf,
    pub endpoint: String,
    /// The admin token, when this start printed it (founding only).
    pub token: Option<String>,
}

impl Host {
    /// Starts `spillway host` in `dir` with `extra` flags (`--init` to
    /// found a cluster; `--slots 2` unless given) and a join ticket; waits
    /// until it serves HTTP. A host that exits first is the `Err`, with
    /// its log.
    pub fn start(dir: &Path, extra: &[&str], ticket: Option<&str>) -> Result<Self, String> {
        Self::start_env(dir, extra, ticket, &[])
    }

    /// [`Host::start`] with `env` set for the host's processes.
    pub fn start_env(
        dir: &Path,
        extra: &[&str],
        ticket: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let role = match ticket {
            Some(t) => Role::Join(t.to_owned()),
            None if extra.contains(&"--init") => Role::Found,
            None => Role::Rejoin,
        };
        let launch = HostLaunch::new(BIN, dir)
            .role(role)
            .flags(
                (!extra.contains(&"--slots"))
                    .then_some(["--slots", "2"])
                    .into_iter()
                    .flatten(),
            )
            .flags(["--snapshot-every", "20"])
            .flags(extra.iter().filter(|f| **f != "--init"));
        let launch = env.iter().fold(launch, |l, (k, v)| l.env(k, v));
        match launch.start(Duration::from_secs(60)) {
            Ok(process) => Ok(Self {
                dir: dir.to_path_buf(),
                endpoint: process.endpoint().to_owned(),
                token: process.admin_token().map(str::to_owned),
                process,
            }),
            Err(LaunchError::Exited { log }) => Err(std::fs::read_to_string(log).unwrap()),
            Err(other) => panic!("{other}"),
        }
    }

    pub fn kill9(mut self) -> PathBuf {
        self.process.kill();
        self.dir.clone()
    }
}

/// Forms a cluster on loopback under `root`: host 1 founds it (with
/// `flags[0]`), the others join with tickets (with `flags[i]`); waits until
/// every host is active and healthy.
pub async fn form(root: &Path, flags: &[&[&str]]) -> (Api, Vec<Host>) {
    form_env(root, flags, &[]).await
}

/// [`form`] with `env` set for every host's processes.
pub async fn form_env(root: &Path, flags: &[&[&str]], env: &[(&str, &str)]) -> (Api, Vec<Host>) {
    let first = [&["--init"][..], flags[0]].concat();
    let h1 = Host::start_env(&root.join("h1"), &first, None, env).unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        token: h1.token.clone().expect("the founder prints the token"),
    };
    let mut hosts = vec![h1];
    for (i, extra) in flags.iter().enumerate().skip(1) {
        let ticket = api.ticket(&hosts[0], 600).await;
        let dir = root.join(format!("h{}", i + 1));
        hosts.push(Host::start_env(&dir, extra, Some(&ticket), env).unwrap());
    }
    let n = flags.len();
    api.wait(&hosts[0], "every host active and healthy", |v| {
        members(v)
            .iter()
            .filter(|m| m["state"] == "active" && m["healthy"] == true)
            .count()
            == n
    })
    .await;
    (api, hosts)
}

pub struct Api {
    pub http: reqwest::Client,
    pub token: String,
}

impl Api {
    /// Runs the CLI against `host` with the admin token and no standard
    /// input; its standard output (it must succeed).
    pub fn cli(&self, host: &Host, args: &[&str]) -> String {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env("SPILLWAY_ENDPOINT", &host.endpoint)
            .env("SPILLWAY_TOKEN", &self.token)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `host`'s `/metrics` page, as the admin token sees it.
    pub async fn metrics(&self, host: &Host) -> String {
        self.http
            .get(format!("{}/metrics", host.endpoint))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Creates tenant `name` through `host` and a token of it with
    /// `scopes`; the token's secret.
    pub async fn tenant_token(&self, host: &Host, name: &str, scopes: &[&str]) -> String {
        self.tenant_token_with(host, &json!({"name": name}), scopes)
            .await
    }

    /// Creates the tenant `tenant` (its `POST /v1/tenants` body) through
    /// `host` and a token of it with `scopes`; the token's secret.
    pub async fn tenant_token_with(&self, host: &Host, tenant: &Value, scopes: &[&str]) -> String {
        let (status, v) = self.post(host, &self.token, "/v1/tenants", tenant).await;
        assert_eq!(status, 201, "{v}");
        let spec = json!({"scopes": scopes, "tenant": tenant["name"]});
        let (status, v) = self.post(host, &self.token, "/v1/tokens", &spec).await;
        assert_eq!(status, 201, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, host: &Host, path: &str) -> reqwest::Result<Value> {
        self.http
            .get(format!("{}{path}", host.endpoint))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .json()
            .await
    }

    pub async fn cluster(&self, host: &Host) -> Value {
        self.get(host, "/v1/cluster").await.unwrap_or(Value::Null)
    }

    pub async fn ticket(&self, host: &Host, ttl_s: u64) -> String {
        self.ticket_expiring(host, ttl_s).await.0
    }

    /// A ticket and the time (Unix ms) it expires.
    pub async fn ticket_expiring(&self, host: &Host, ttl_s: u64) -> (String, u64) {
        let r: Value = self
            .http
            .post(format!("{}/v1/tickets", host.endpoint))
            .bearer_auth(&self.token)
            .json(&json!({ "ttl_s": ttl_s }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ticket = r["ticket"].as_str().expect("a ticket").to_owned();
        (ticket, r["expires_unix_ms"].as_u64().expect("an expiry"))
    }

    pub async fn put_function(&self, host: &Host, name: &str, artifact: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/functions", host.endpoint))
            .bearer_auth(&self.token)
            .json(&json!({"name": name, "artifact": artifact, "deadline_ms": 5000}))
            .send()
            .await
            .unwrap()
    }

    /// Uploads the example guest `guest` as artifact `guest` on `host`,
    /// acting with `token`.
    pub async fn put_artifact(&self, host: &Host, token: &str, guest: &str) {
        let r = self
            .http
            .put(format!("{}/v1/artifacts/{guest}", host.endpoint))
            .bearer_auth(token)
            .body(super::guest(guest))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// Uploads `bytes` as artifact `name` on `host` with the admin token,
    /// allowing minutes (an interpreter component compiles for seconds);
    /// the answer, whatever it is.
    pub async fn upload(&self, host: &Host, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.upload_as(host, &self.token, name, bytes).await
    }

    /// [`Api::upload`], acting with `token`.
    pub async fn upload_as(
        &self,
        host: &Host,
        token: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        self.http
            .put(format!("{}/v1/artifacts/{name}", host.endpoint))
            .bearer_auth(token)
            .body(bytes)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .unwrap()
    }

    /// POSTs `body` to `path` on `host`, acting with `token`: the status
    /// and the JSON answer.
    pub async fn post(&self, host: &Host, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", host.endpoint))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Registers the function `spec` on `host`, acting with `token`.
    pub async fn create_function(&self, host: &Host, token: &str, spec: &Value) {
        let r = self
            .http
            .post(format!("{}/v1/functions", host.endpoint))
            .bearer_auth(token)
            .json(spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    /// Uploads the example guest `guest` as artifact `guest` and registers
    /// the function `spec` on `host`, acting with `token`.
    pub async fn publish(&self, host: &Host, token: &str, guest: &str, spec: Value) {
        self.put_artifact(host, token, guest).await;
        self.create_function(host, token, &spec).await;
    }

    /// Waits until member `id`'s node is up and has said which backends it
    /// has (as `host` sees it); whether CUDA is one.
    pub async fn has_cuda(&self, host: &Host, id: &str) -> bool {
        let v = self
            .wait(host, "the node's backends", |v| {
                let m = member(v, id);
                m["node"]["up"] == true && m["backends"].as_array().is_some_and(|b| !b.is_empty())
            })
            .await;
        member(&v, id)["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == "cuda")
    }

    /// Waits until `host` sees `pred` hold of the cluster view.
    pub async fn wait(&self, host: &Host, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_on(host, "/v1/cluster", what, pred).await
    }

    /// Waits (30 s at most) until `pred` holds of what `host` answers at
    /// `path` (`Null` while it answers nothing readable).
    pub async fn wait_on(
        &self,
        host: &Host,
        path: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get(host, path).await.unwrap_or(Value::Null);
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < until, "{what}: last view {v:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn h(hosts: &[Option<Host>], i: usize) -> &Host {
    hosts[i - 1].as_ref().expect("host running")
}

pub fn members(v: &Value) -> Vec<Value> {
    v["members"].as_array().cloned().unwrap_or_default()
}

pub fn member(v: &Value, id: &str) -> Value {
    members(v)
        .into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or(Value::Null)
}

pub fn roles(v: &Value) -> Vec<(String, String)> {
    members(v)
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or("?").to_owned(),
                m["role"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}
