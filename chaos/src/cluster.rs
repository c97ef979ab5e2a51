//! The hosts of a run: real `spillway host` processes, each in its own
//! directory (and network namespace when a [`NetLab`] is given), and the
//! faults that act on processes: kill -9, restart, SIGSTOP/SIGCONT, and
//! killing a host's node alone.

use crate::netns::NetLab;
use serde_json::{Value, json};
use spillway_launch::{HostLaunch, HostProcess, LaunchError, Role};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a host has to know its own member name once the cluster is
/// formed.
const NAME_BOUND: Duration = Duration::from_secs(30);
/// How long a host may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Something the harness could not do to its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("host {host} did not start: {source}")]
    Start { host: usize, source: LaunchError },
    #[error("{what}: {why}")]
    Api { what: String, why: String },
    #[error("signalling {pid}: {why}")]
    Signal { pid: u32, why: String },
    #[error(transparent)]
    Net(#[from] crate::netns::NetError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What every host runs with.
#[derive(Debug, Clone)]
pub struct HostSetup {
    /// The `spillway` binary.
    pub program: PathBuf,
    pub slots: u32,
    pub flags: Vec<String>,
}

/// One host: its process (while it runs) and where it lives.
#[derive(Debug)]
pub struct HostProc {
    pub index: usize,
    pub dir: PathBuf,
    pub http: SocketAddr,
    pub peer: SocketAddr,
    process: Option<HostProcess>,
    pub paused: bool,
}

impl HostProc {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn running(&self) -> bool {
        self.process.is_some()
    }

    fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(HostProcess::pid)
    }
}

/// The running cluster.
#[derive(Debug)]
pub struct Cluster {
    pub hosts: Vec<HostProc>,
    pub token: String,
    pub http: reqwest::Client,
    setup: HostSetup,
    pub net: Option<NetLab>,
}

impl Cluster {
    /// Forms a cluster of `n` hosts under `root`: host 1 founds it, the
    /// others join with tickets; returns once every host is active.
    pub async fn form(
        root: &Path,
        n: usize,
        setup: HostSetup,
        net: Option<NetLab>,
    ) -> Result<Self, ClusterError> {
        let mut hosts = Vec::with_capacity(n);
        for index in 0..n {
            let (http, peer) = match &net {
                Some(lab) => {
                    let ip = IpAddr::V4(lab.addr(index));
                    (SocketAddr::new(ip, 8080), SocketAddr::new(ip, 7070))
                }
                None => (free_port()?, free_port()?),
            };
            hosts.push(HostProc {
                index,
                dir: root.join(format!("h{}", index + 1)),
                http,
                peer,
                process: None,
                paused: false,
            });
        }
        let mut cluster = Self {
            hosts,
            token: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            setup,
            net,
        };
        cluster.token = cluster
            .spawn(0, Role::Found)
            .await?
            .expect("the founder prints its token");
        for i in 1..n {
            let ticket = cluster.ticket().await?;
            cluster.spawn(i, Role::Join(ticket)).await?;
        }
        cluster.wait_active(n).await?;
        Ok(cluster)
    }

    /// Starts host `i`'s process; returns the admin token if it printed one.
    async fn spawn(&mut self, i: usize, role: Role) -> Result<Option<String>, ClusterError> {
        let host = &self.hosts[i];
        let launch = HostLaunch::new(&self.setup.program, &host.dir)
            .listen(host.http)
            .peer_listen(host.peer)
            .role(role)
            .flags(["--slots", &self.setup.slots.to_string()])
            .flags(["--snapshot-every", "20", "--execution-journal"])
            // In namespaces the API listens off loopback, on a network
            // only this harness can reach.
            .flags(self.net.is_some().then_some("--insecure-http"))
            .flags(&self.setup.flags)
            .wrapped_in(self.net.iter().flat_map(|lab| lab.exec_prefix(i)))
            .env("RUST_LOG", "info");
        let process = tokio::task::spawn_blocking(move || launch.start(START_TIMEOUT))
            .await
            .map_err(|e| ClusterError::Io(std::io::Error::other(e)))?
            .map_err(|source| ClusterError::Start {
                host: i + 1,
                source,
            })?;
        let token = process.admin_token().map(str::to_owned);
        let host = &mut self.hosts[i];
        host.process = Some(process);
        host.paused = false;
        Ok(token)
    }

    async fn ticket(&self) -> Result<String, ClusterError> {
        let v = self.post(0, "/v1/tickets", json!({"ttl_s": 3600})).await?;
        v["ticket"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| api("creating a ticket", format!("no ticket in {v}")))
    }

    async fn wait_active(&self, n: usize) -> Result<(), ClusterError> {
        let until = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let v = self.get(0, "/v1/cluster").await.unwrap_or(Value::Null);
            let members = v["members"].as_array().cloned().unwrap_or_default();
            let ready = members
                .iter()
                .filter(|m| m["state"] == "active" && m["healthy"] == true)
                .count();
            if ready == n {
                return Ok(());
            }
            if tokio::time::Instant::now() > until {
                return Err(api(
                    "forming the cluster",
                    format!("{ready} of {n} hosts active: {v}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn get(&self, i: usize, path: &str) -> Result<Value, ClusterError> {
        let r = self
            .http
            .get(format!("{}{path}", self.hosts[i].endpoint()))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| api(path, e.to_string()))?;
        r.json().await.map_err(|e| api(path, e.to_string()))
    }

    /// Host `i`'s member name (`n2`), as its `/v1/cluster/local` says. A
    /// host still catching up (over a lossy link it may not have applied
    /// the entry that makes the admin token known) answers an error
    /// instead, so it is asked again, for at most `NAME_BOUND`. (Taking
    /// that error for a name once named host 2 "?", and the residency
    /// check then found n2 holding nothing.)
    pub async fn name_of(&self, i: usize) -> Result<String, ClusterError> {
        let until = tokio::time::Instant::now() + NAME_BOUND;
        loop {
            let v = self.get(i, "/v1/cluster/local").await;
            if let Some(name) = v.as_ref().ok().and_then(|v| v["host"].as_str()) {
                return Ok(name.to_owned());
            }
            if tokio::time::Instant::now() >= until {
                let why = match v {
                    Ok(v) => format!("host {} never named itself: {v}", i + 1),
                    Err(e) => e.to_string(),
                };
                return Err(api("/v1/cluster/local", why));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn post(&self, i: usize, path: &str, body: Value) -> Result<Value, ClusterError> {
        let r = self
            .http
            .post(format!("{}{path}", self.hosts[i].endpoint()))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| api(path, e.to_string()))?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| api(path, e.to_string()))?;
        match status.is_success() {
            true => Ok(v),
            false => Err(api(path, format!("{status}: {v}"))),
        }
    }

    /// Uploads `bytes` as artifact `name` through host 1.
    pub async fn put_artifact(&self, name: &str, bytes: Vec<u8>) -> Result<(), ClusterError> {
        let path = format!("/v1/artifacts/{name}");
        let r = self
            .http
            .put(format!("{}{path}", self.hosts[0].endpoint()))
            .bearer_auth(&self.token)
            .body(bytes)
            .send()
            .await
            .map_err(|e| api(&path, e.to_string()))?;
        match r.status().is_success() {
            true => Ok(()),
            false => Err(api(&path, r.text().await.unwrap_or_default())),
        }
    }

    /// `kill -9` host `i` (its node exits with it: its stdin closes).
    pub async fn kill(&mut self, i: usize) -> Result<(), ClusterError> {
        if let Some(mut process) = self.hosts[i].process.take() {
            process.kill();
        }
        self.hosts[i].paused = false;
        Ok(())
    }

    /// Starts a killed host again from its directory: it rejoins.
    pub async fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        if self.hosts[i].running() {
            return Ok(());
        }
        self.spawn(i, Role::Rejoin).await.map(drop)
    }

    /// `kill -9` host `i`'s node; its sidecar sees it die and restarts it.
    pub fn kill_node(&self, i: usize) -> Result<(), ClusterError> {
        let Some(pid) = self.hosts[i].pid() else {
            return Ok(());
        };
        for node in children(pid) {
            signal(node, "KILL")?;
        }
        Ok(())
    }

    /// `kill -9` host `i`'s executor `name` (the node process whose own
    /// folder is `executors/NAME`); its sidecar restarts it, the others run
    /// on. A host without it is left alone.
    pub fn kill_executor(&self, i: usize, name: &str) -> Result<(), ClusterError> {
        let Some(pid) = self.hosts[i].pid() else {
            return Ok(());
        };
        for node in children(pid) {
            let cmdline = std::fs::read(format!("/proc/{node}/cmdline")).unwrap_or_default();
            let args: Vec<String> = (cmdline.split(|b| *b == 0))
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if executor_of(&args) == Some(name) {
                signal(node, "KILL")?;
            }
        }
        Ok(())
    }

    /// SIGSTOP (or SIGCONT) host `i`'s sidecar and node.
    pub fn pause(&mut self, i: usize, pause: bool) -> Result<(), ClusterError> {
        let Some(pid) = self.hosts[i].pid() else {
            return Ok(());
        };
        let sig = if pause { "STOP" } else { "CONT" };
        for p in std::iter::once(pid).chain(children(pid)) {
            signal(p, sig)?;
        }
        self.hosts[i].paused = pause;
        Ok(())
    }

    /// Every host running and none paused again.
    pub async fn restore(&mut self) -> Result<(), ClusterError> {
        for i in 0..self.hosts.len() {
            if self.hosts[i].paused {
                self.pause(i, false)?;
            }
            self.restart(i).await?;
        }
        Ok(())
    }

    /// Stops every host (their nodes follow).
    pub async fn stop(&mut self) {
        for i in 0..self.hosts.len() {
            let _ = self.pause(i, false);
            let _ = self.kill(i).await;
        }
    }
}

fn api(what: &str, why: String) -> ClusterError {
    ClusterError::Api {
        what: what.to_owned(),
        why,
    }
}

/// A loopback port free right now (the host binds it a moment later).
fn free_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = l.local_addr()?.port();
    // The peer port is UDP: make sure it is free there too.
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port))?;
    Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

/// The processes whose parent is `pid`.
/// The executor a node process is, from its arguments: the name its own
/// folder (`--own-dir …/executors/NAME`) ends in; `None` for a host's only
/// node (it has none).
fn executor_of(args: &[String]) -> Option<&str> {
    let own = args.iter().skip_while(|a| *a != "--own-dir").nth(1)?;
    let path = Path::new(own);
    let parent = path.parent()?.file_name()?;
    (parent == "executors").then(|| path.file_name()?.to_str())?
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // `pid (comm) state ppid …`; comm may hold spaces.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

fn signal(pid: u32, sig: &str) -> Result<(), ClusterError> {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .map_err(|e| ClusterError::Signal {
            pid,
            why: e.to_string(),
        })?;
    match status.success() {
        true => Ok(()),
        false => Err(ClusterError::Signal {
            pid,
            why: format!("kill -{sig} exited {status}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_executor_is_told_by_its_own_folder() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cases = [
            (
                args(&[
                    "spillway",
                    "node",
                    "--own-dir",
                    "/d/node/executors/0",
                    "--slots",
                    "1",
                ]),
                Some("0"),
            ),
            (
                args(&["spillway", "node", "--own-dir", "/d/node/executors/gpu1"]),
                Some("gpu1"),
            ),
            (args(&["spillway", "node", "--dir", "/d/node"]), None),
            (
                args(&["spillway", "node", "--own-dir", "/d/node/other/0"]),
                None,
            ),
            (args(&["spillway", "node", "--own-dir"]), None),
        ];
        for (argv, want) in cases {
            assert_eq!(executor_of(&argv), want, "{argv:?}");
        }
    }
}
