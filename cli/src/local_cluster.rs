//! A local cluster on loopback: each host a real `spillway host` process
//! (started through `spillway-launch`) in `DIR/host-N`, formed through
//! the HTTP API (host 1 founds it, the others join with tickets), for
//! `spillway up`, the demo and the benchmarks.
//!
//! What it is not: the `up` command (`up.rs`) or the launcher itself.

use anyhow::{Context, bail};
use spillway_launch::{HostLaunch, HostProcess, Role};
use spillway_sidecar::{AdminToken, owner_only};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One host process of a local cluster.
#[derive(Debug)]
pub(crate) struct LocalHost {
    process: HostProcess,
}

impl LocalHost {
    /// Its HTTP endpoint.
    pub(crate) fn endpoint(&self) -> &str {
        self.process.endpoint()
    }

    /// The process id of its `spillway host`.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// A running local cluster.
#[derive(Debug)]
pub(crate) struct LocalCluster {
    pub(crate) dir: PathBuf,
    pub(crate) token: String,
    pub(crate) hosts: Vec<LocalHost>,
}

/// How long a host may take to open its HTTP port and connect its node.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn fresh_dir() -> anyhow::Result<PathBuf> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let dir = std::env::temp_dir().join(format!("spillway-{:08x}", u32::from_le_bytes(bytes)));
    owner_only::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The admin token of a local cluster: kept in `DIR/token` (mode 0600) so
/// `spillway up --dir DIR` can print it again; each host stores its hash.
fn cluster_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_owned());
    }
    let secret = AdminToken::generate_secret()?;
    owner_only::write(&path, secret.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

impl LocalCluster {
    /// Starts `hosts` hosts under `dir` and waits until each serves with
    /// its node connected.
    pub(crate) async fn start(
        dir: Option<PathBuf>,
        hosts: u32,
        options: HostOptions,
    ) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(d) => {
                owner_only::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
                std::path::absolute(d)?
            }
            None => fresh_dir()?,
        };
        let token = cluster_token(&dir)?;
        let first_dir = dir.join("host-1");
        AdminToken::install(&first_dir.join("sidecar"), &token)?;
        let first = start_host(&first_dir, 1, options.clone(), Role::Found).await?;
        let mut cluster = Self {
            dir,
            token,
            hosts: vec![first],
        };
        cluster.wait_ready(&cluster.hosts[0]).await?;
        for i in 2..=hosts {
            let host_dir = cluster.dir.join(format!("host-{i}"));
            let role = if host_dir.join("sidecar/membership.json").exists() {
                Role::Rejoin
            } else {
                let client = cluster.client(0);
                let answer = client.create_ticket(600).await?;
                let ticket = answer["ticket"].as_str().unwrap_or_default().to_owned();
                Role::Join(ticket)
            };
            let host = start_host(&host_dir, i, options.clone(), role).await?;
            cluster.wait_ready(&host).await?;
            cluster.hosts.push(host);
        }
        cluster.wait_members(hosts as usize).await?;
        Ok(cluster)
    }

    /// Waits until the cluster lists `n` active members, up to 3 of them
    /// voters, and has a leader.
    async fn wait_members(&self, n: usize) -> anyhow::Result<()> {
        let client = self.client(0);
        let until = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(v) = client.cluster().await {
                let members = || v["members"].as_array().into_iter().flatten();
                let active = members()
                    .filter(|m| m["state"] == "active" && m["role"] != "none")
                    .count();
                let voters = members().filter(|m| m["role"] == "voter").count();
                // Hosts 2 and 3 are promoted to voters once caught up.
                if active >= n && voters >= n.min(3) && !v["leader"].is_null() {
                    return Ok(());
                }
            }
            if Instant::now() > until {
                bail!("the cluster did not reach {n} active members; see host-*/host.log");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&self, host: &LocalHost) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let until = Instant::now() + START_TIMEOUT;
        loop {
            let health = http
                .get(format!("{}/healthz", host.endpoint()))
                .send()
                .await;
            if let Ok(r) = health
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["node_up"] == true
            {
                return Ok(());
            }
            if Instant::now() > until {
                bail!(
                    "{} did not become ready; see {}",
                    host.endpoint(),
                    host.process.log().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An API client of host `index` with the admin token.
    pub(crate) fn client(&self, index: usize) -> crate::client::Client {
        crate::client::Client::new(self.hosts[index].endpoint(), Some(self.token.clone()))
    }

    /// The lines a shell can `eval`, then one endpoint per host.
    pub(crate) fn env_lines(&self) -> String {
        let mut s = format!(
            "export SPILLWAY_ENDPOINT={}\nexport SPILLWAY_TOKEN={}\n",
            self.hosts[0].endpoint(),
            self.token
        );
        for h in &self.hosts {
            s.push_str(h.endpoint());
            s.push('\n');
        }
        s
    }

    /// Sends SIGKILL to host `index`'s `spillway host` process (its node
    /// notices the closed socket and exits).
    pub(crate) fn kill(&mut self, index: usize) {
        self.hosts[index].process.kill();
    }

    /// Stops every host: closes its stdin (a graceful shutdown), then kills
    /// what is still running after a few seconds.
    pub(crate) async fn stop(self) {
        let stops = self
            .hosts
            .into_iter()
            .map(|h| tokio::task::spawn_blocking(move || h.process.stop(Duration::from_secs(10))));
        for stop in stops.collect::<Vec<_>>() {
            let _ = stop.await;
        }
    }
}

/// How each host of a local cluster runs (`Default`: what `spillway
/// host` defaults to, with the launcher's own slots and queue given).
#[derive(Debug, Clone, Default)]
pub(crate) struct HostOptions {
    pub(crate) slots: u32,
    pub(crate) queue: u32,
    pub(crate) test_kernels: bool,
    /// Benchmarks only: the nodes serve every job by waiting this long.
    pub(crate) synthetic_service_ms: Option<u64>,
    /// Host N's node uses GPU N-1 only.
    pub(crate) pin_gpus: bool,
    /// The nodes' `--warm-instances` (`None`: the default).
    pub(crate) warm_instances: Option<u32>,
    /// Host N carries the label `host=N` (placement rules can name it).
    pub(crate) label_hosts: bool,
    /// Every host exports its spans here (`--otlp-endpoint`).
    pub(crate) otlp_endpoint: Option<String>,
    /// Each host's `--executors` (`None`: the default, one).
    pub(crate) executors: Option<String>,
}

/// Starts host number `index` (from 1) of a local cluster.
async fn start_host(
    dir: &Path,
    index: u32,
    options: HostOptions,
    role: Role,
) -> anyhow::Result<LocalHost> {
    owner_only::create_dir(dir)?;
    let launch = HostLaunch::new(std::env::current_exe()?, dir)
        .role(role)
        .flags([
            "--slots",
            &options.slots.to_string(),
            "--queue",
            &options.queue.to_string(),
        ])
        .flags(options.test_kernels.then_some("--test-kernels"))
        .flags(options.pin_gpus.then(|| format!("--gpus={}", index - 1)))
        .flags(
            options
                .executors
                .as_ref()
                .map(|e| format!("--executors={e}")),
        )
        .flags(
            options
                .warm_instances
                .map(|n| format!("--warm-instances={n}")),
        )
        .flags(
            options
                .synthetic_service_ms
                .map(|ms| format!("--synthetic-service-ms={ms}")),
        )
        .flags(options.label_hosts.then(|| format!("--label=host={index}")))
        .flags(
            (options.otlp_endpoint.as_ref())
                .map(|url| format!("--otlp-endpoint={url}"))
                .into_iter()
                .chain(Some(format!("--trace-instance=host-{index}"))),
        );
    let process = tokio::task::spawn_blocking(move || launch.start(START_TIMEOUT))
        .await
        .context("starting spillway host")??;
    Ok(LocalHost { process })
}
