//! `spillway up`: a local cluster on loopback, each host a real `spillway
//! host` process (sidecar plus its node), for trying Spillway, the demo, the
//! benchmark and the integration tests.

use anyhow::{Context, bail};
use spillway_sidecar::{AdminToken, owner_only};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Hosts to start: the first founds the cluster, the others join it
    /// with tickets (up to 3 voters; the rest are learners).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    hosts: u32,
    /// Slots per host (default 4; with `--demo` on several hosts, this
    /// machine's cores shared among the hosts, at least 1).
    #[arg(long)]
    slots: Option<u32>,
    /// Jobs per host that may wait for a slot before 503 queue_full.
    #[arg(long, default_value_t = 64)]
    queue: u32,
    /// State directory (default: a fresh temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run the demo workload, print its table, stop the cluster and exit.
    #[arg(long)]
    demo: bool,
    /// Give each host's node one GPU of its own: host N uses GPU N-1 (as
    /// separate GPU machines would); a host with no such GPU runs CPU-only.
    #[arg(long)]
    pin_gpus: bool,
    /// Start the nodes with the fault-test GPU kernels (tests only).
    #[arg(long, hide = true)]
    test_kernels: bool,
}

/// One host process of a local cluster.
#[derive(Debug)]
pub(crate) struct LocalHost {
    child: Child,
    pub(crate) endpoint: String,
    pub(crate) log: PathBuf,
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
        let first = start_host(&first_dir, 1, options, Role::Founder).await?;
        let mut cluster = Self {
            dir,
            token,
            hosts: vec![first],
        };
        cluster.wait_ready(&cluster.hosts[0]).await?;
        for i in 2..=hosts {
            let host_dir = cluster.dir.join(format!("host-{i}"));
            let role = if host_dir.join("sidecar/membership.json").exists() {
                Role::Member
            } else {
                let client = crate::client::Client::new(
                    &cluster.hosts[0].endpoint,
                    Some(cluster.token.clone()),
                );
                let answer = client.create_ticket(600).await?;
                let ticket = answer["ticket"].as_str().unwrap_or_default().to_owned();
                Role::Joiner(ticket)
            };
            let host = start_host(&host_dir, i, options, role).await?;
            cluster.wait_ready(&host).await?;
            cluster.hosts.push(host);
        }
        cluster.wait_members(hosts as usize).await?;
        Ok(cluster)
    }

    /// Waits until the cluster lists `n` active members, up to 3 of them
    /// voters, and has a leader.
    async fn wait_members(&self, n: usize) -> anyhow::Result<()> {
        let client = crate::client::Client::new(&self.hosts[0].endpoint, Some(self.token.clone()));
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
            let health = http.get(format!("{}/healthz", host.endpoint)).send().await;
            if let Ok(r) = health
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["node_up"] == true
            {
                return Ok(());
            }
            if Instant::now() > until {
                bail!(
                    "{} did not become ready; see {}",
                    host.endpoint,
                    host.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The lines a shell can `eval`, then one endpoint per host.
    pub(crate) fn env_lines(&self) -> String {
        let mut s = format!(
            "export SPILLWAY_ENDPOINT={}\nexport SPILLWAY_TOKEN={}\n",
            self.hosts[0].endpoint, self.token
        );
        for h in &self.hosts {
            s.push_str(&h.endpoint);
            s.push('\n');
        }
        s
    }

    /// Sends SIGKILL to host `index`'s `spillway host` process (its node
    /// notices the closed socket and exits).
    pub(crate) fn kill(&mut self, index: usize) -> std::io::Result<()> {
        self.hosts[index].child.start_kill()
    }

    /// Stops every host: closes its stdin (a graceful shutdown), then kills
    /// what is still running after a few seconds.
    pub(crate) async fn stop(self) {
        for mut h in self.hosts {
            drop(h.child.stdin.take());
            if tokio::time::timeout(Duration::from_secs(10), h.child.wait())
                .await
                .is_err()
            {
                let _ = h.child.kill().await;
            }
        }
    }
}

/// How each host of a local cluster runs.
#[derive(Debug, Clone, Copy)]
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
}

/// How a host of a local cluster starts.
#[derive(Debug)]
enum Role {
    /// Founds the cluster (or rejoins it on a second `up --dir`).
    Founder,
    /// Joins with this ticket.
    Joiner(String),
    /// Already a member (a second `up --dir`).
    Member,
}

/// Starts host number `index` (from 1) of a local cluster.
async fn start_host(
    dir: &Path,
    index: u32,
    options: HostOptions,
    role: Role,
) -> anyhow::Result<LocalHost> {
    owner_only::create_dir(dir)?;
    let log = dir.join("host.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("host").env_remove("SPILLWAY_JOIN_TICKET");
    match role {
        Role::Founder => {
            command.arg("--init");
        }
        // Through the environment, not argv: a ticket is a secret and argv
        // is visible to every user of the machine.
        Role::Joiner(ticket) => {
            command.env("SPILLWAY_JOIN_TICKET", ticket);
        }
        Role::Member => {}
    }
    let mut child = command
        .arg("--dir")
        .arg(dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--slots",
            &options.slots.to_string(),
            "--queue",
            &options.queue.to_string(),
            "--stop-on-stdin-close",
        ])
        .args(options.test_kernels.then_some("--test-kernels"))
        .args(options.pin_gpus.then(|| format!("--gpus={}", index - 1)))
        .args(
            options
                .warm_instances
                .map(|n| format!("--warm-instances={n}")),
        )
        .args(
            options
                .synthetic_service_ms
                .map(|ms| format!("--synthetic-service-ms={ms}")),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .context("starting spillway host")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let endpoint = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return Some(addr.trim().to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(endpoint) = endpoint else {
        bail!("the host did not start; see {}", log.display());
    };
    // Keep draining its stdout so the host never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(LocalHost {
        child,
        endpoint,
        log,
    })
}

pub(crate) async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let slots = args.slots.unwrap_or_else(|| {
        if args.demo && args.hosts > 1 {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            (cores / args.hosts).max(1)
        } else {
            4
        }
    });
    let options = HostOptions {
        slots,
        queue: args.queue,
        test_kernels: args.test_kernels,
        synthetic_service_ms: None,
        pin_gpus: args.pin_gpus,
        warm_instances: None,
    };
    let cluster = LocalCluster::start(args.dir, args.hosts, options).await?;
    let env = cluster.env_lines();
    // It holds the admin token.
    owner_only::write(&cluster.dir.join("env"), env.as_bytes())?;
    print!("{env}");
    eprintln!(
        "{} host(s) up in {:.1}s; state in {}, logs in host-*/host.log; `eval \"$(head -2 {}/env)\"` in another shell",
        cluster.hosts.len(),
        started.elapsed().as_secs_f64(),
        cluster.dir.display(),
        cluster.dir.display(),
    );
    if args.demo {
        let outcome = crate::demo::run(&cluster, slots).await;
        cluster.stop().await;
        return outcome;
    }
    crate::serve::shutdown_signal(false).await;
    eprintln!("stopping the cluster");
    cluster.stop().await;
    Ok(ExitCode::SUCCESS)
}
