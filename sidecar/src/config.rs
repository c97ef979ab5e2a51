//! The sidecar's configuration.

use spillway_consensus::ControlConfig;
use spillway_scheduler::{AdmissionPolicy, PlacementPolicy};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What a host does about its cluster at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClusterStart {
    /// Rejoin the cluster the state directory belongs to (every start
    /// after the first).
    #[default]
    Rejoin,
    /// Found a new cluster with this host as its first voter (`spillway
    /// init`). On a directory that already belongs to a cluster, rejoins it.
    Init,
    /// Join with this ticket (`spillway join`). On a directory that
    /// already belongs to the ticket's cluster, rejoins it.
    Join(String),
    /// Found a new cluster from a backup (`spillway restore`): a new id,
    /// this host its first voter, the backup's tenants, tokens (the old
    /// admin token among them), functions and artifact records. Refused on
    /// a directory that belongs to a cluster already.
    Restore(Box<spillway_consensus::Backup>),
}

/// One executor (a node process) the sidecar runs jobs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorLaunch {
    /// Its name in logs and in `/v1/cluster` (`0`, `1`, …).
    pub name: String,
    /// Its Unix socket.
    pub socket: PathBuf,
    pub launch: NodeLaunch,
    /// The tenants the operator keeps it for (their kernel packs untrusted
    /// beside other tenants' memory): they run only on executors kept for
    /// them, and no other tenant runs here. Empty: shared.
    pub confined_to: Vec<spillway_proto::TenantId>,
}

impl ExecutorLaunch {
    /// A shared executor connected to, or spawned by, its socket.
    pub fn shared(name: impl Into<String>, socket: PathBuf, launch: NodeLaunch) -> Self {
        Self {
            name: name.into(),
            socket,
            launch,
            confined_to: Vec::new(),
        }
    }
}

/// How the sidecar gets an executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeLaunch {
    /// Spawn `program args…` and supervise it (`spillway host`). The node
    /// must listen on its executor's `socket`.
    Spawn {
        program: PathBuf,
        args: Vec<OsString>,
    },
    /// Connect to a node someone else runs (`spillway sidecar`), reconnecting
    /// with backoff when it goes away.
    Connect,
}

/// The most `max_artifact_bytes` may be: artifacts are spooled and sent in
/// chunks, so this bounds disk, not memory.
pub(crate) const MAX_ARTIFACT_LIMIT: usize = 16 << 30;

/// The most `max_weights_bytes` may be (a weights file is spooled, sent
/// and served in chunks or mapped, so this bounds disk, not memory).
pub(crate) const MAX_WEIGHTS_LIMIT: u64 = 1 << 40;

/// What the HTTP ingress allows: connections, how slow a client may be,
/// and request bodies held in memory at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressLimits {
    /// Connections open at once (also bounded by the open-file limit);
    /// past it a connection is answered 503 and closed.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive, and how long a
    /// keep-alive connection may sit idle before it is closed.
    pub header_timeout: Duration,
    /// The longest a request body may pause between bytes (408
    /// `body_timeout` past it).
    pub body_timeout: Duration,
    /// Request bodies held in memory at once, over all requests (invoke
    /// inputs; uploads are spooled to disk): a body is counted at its
    /// announced length, or the input limit when it announces none; past
    /// the budget a request is 503 `overloaded`.
    pub max_body_bytes_in_flight: usize,
}

impl Default for IngressLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            max_body_bytes_in_flight: 256 << 20,
        }
    }
}

/// How a sidecar runs. `Default` assumes one host on loopback: HTTP on
/// 7070, QUIC on 7071, a queue of 64, 8 MiB inputs, 256 MiB artifacts, 30 s
/// deadlines, 3 voters.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The HTTP ingress address.
    pub http_addr: SocketAddr,
    /// State directory: admin token hash, registry, cluster id.
    pub dir: PathBuf,
    /// The node processes jobs run on: one, or one per GPU (a fault on a
    /// GPU then ends only its executor's jobs). At least one, and one
    /// shared by every tenant.
    pub executors: Vec<ExecutorLaunch>,
    /// Jobs each executor runs at once (the node's own `--slots`);
    /// corrected by each executor's hello if it differs.
    pub slots: u32,
    /// Jobs that may wait for a slot before `queue_full`.
    pub queue_capacity: u32,
    /// Largest invocation input; larger is 413.
    pub max_input_bytes: usize,
    /// Connections, client timeouts and bodies in memory.
    pub ingress: IngressLimits,
    /// Serve the per-tenant metrics (which name tenants) without a token,
    /// for a metrics port only the operator can reach.
    pub public_tenant_metrics: bool,
    /// Uploads a tenant may make a second on this host (a burst of as
    /// many).
    pub publish_rate_per_s: f64,
    /// Largest component or kernel pack upload (and fetch from a peer);
    /// larger is 413.
    pub max_artifact_bytes: usize,
    /// Largest weights (safetensors) upload and fetch; larger is 413.
    pub max_weights_bytes: u64,
    /// Deadline of functions that do not set one, and the most any may set.
    pub default_deadline: Duration,
    pub max_deadline: Duration,
    /// Node restart backoff: first delay and cap (doubling in between).
    pub restart_backoff: (Duration, Duration),
    /// The QUIC peer address (port 0: any; a restart reuses the last one).
    pub peer_addr: SocketAddr,
    /// Found, join or rejoin a cluster.
    pub cluster: ClusterStart,
    /// Raft timing and snapshot policy.
    pub control: ControlConfig,
    /// Voters the cluster keeps (further hosts are learners): 1 to 7.
    pub max_voters: usize,
    /// This host's labels (for placement rules).
    pub labels: BTreeMap<String, String>,
    /// Whether jobs may burst to peers when this host is full (off: local
    /// queueing only).
    pub burst: bool,
    /// How often this host gossips its load to its peers (20 ms to 10 s).
    pub gossip_every: Duration,
    /// Peers tried for one job before it falls back to the local queue.
    pub burst_attempts: usize,
    /// How long this host remembers a job's outcome under its idempotency
    /// key (0: idempotency keys are not remembered).
    pub idempotency_ttl: Duration,
    /// The most output bytes remembered under idempotency keys (oldest
    /// forgotten first).
    pub idempotency_max_bytes: usize,
    /// How long an async job's result is kept after it ends.
    pub async_ttl: Duration,
    /// The most bytes of async jobs' results kept (oldest first out).
    pub async_max_bytes: usize,
    /// Chaos tests only: drop, duplicate and delay the datagrams this host
    /// sends to its peers.
    pub chaos_faults: Option<crate::peer::Faults>,
    /// TLS on the HTTP API (none: plain HTTP).
    pub tls: Option<crate::TlsFiles>,
    /// How often the TLS files are checked for a change (SIGHUP reloads at
    /// once).
    pub tls_reload_every: Duration,
    /// Serve plain HTTP off loopback (behind a TLS-terminating proxy);
    /// without it such a listener is refused.
    pub insecure_http: bool,
    /// Founding only: write the admin token to this file (0600) instead
    /// of printing it.
    pub admin_token_file: Option<PathBuf>,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            dir: PathBuf::from("."),
            executors: vec![ExecutorLaunch::shared(
                "0",
                PathBuf::from("node.sock"),
                NodeLaunch::Connect,
            )],
            slots: 4,
            queue_capacity: 64,
            max_input_bytes: 8 << 20,
            max_artifact_bytes: 256 << 20,
            max_weights_bytes: 8 << 30,
            ingress: IngressLimits::default(),
            public_tenant_metrics: false,
            publish_rate_per_s: 10.0,
            default_deadline: Duration::from_secs(30),
            max_deadline: Duration::from_secs(300),
            restart_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            peer_addr: SocketAddr::from(([127, 0, 0, 1], 7071)),
            cluster: ClusterStart::Rejoin,
            control: ControlConfig::default(),
            max_voters: 3,
            labels: BTreeMap::new(),
            burst: true,
            gossip_every: Duration::from_millis(250),
            burst_attempts: 3,
            idempotency_ttl: Duration::from_secs(600),
            async_ttl: Duration::from_secs(3600),
            async_max_bytes: 256 << 20,
            idempotency_max_bytes: 64 << 20,
            chaos_faults: None,
            tls: None,
            tls_reload_every: Duration::from_secs(2),
            insecure_http: false,
            admin_token_file: None,
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("slots must be between 1 and 1024, got {0}")]
    Slots(u32),
    #[error("queue capacity must be at most 100000, got {0}")]
    Queue(u32),
    #[error("{what} must be between 1 byte and 60 MiB (the frame limit), got {got}")]
    Size { what: &'static str, got: usize },
    #[error("max_weights_bytes must be between 1 byte and 1 TiB, got {0}")]
    WeightsSize(u64),
    #[error("max_artifact_bytes must be between 1 byte and 16 GiB, got {0}")]
    ArtifactSize(usize),
    #[error("the publish rate must be a positive number of uploads a second, got {0}")]
    PublishRate(String),
    #[error("max_connections must be between 1 and 1000000, got {0}")]
    MaxConnections(usize),
    #[error("the {what} timeout must be between 100 ms and 10 min, got {got:?}")]
    ClientTimeout { what: &'static str, got: Duration },
    #[error(
        "max_body_bytes_in_flight ({budget}) must be at least max_input_bytes ({input}), or no input of the largest size could be read"
    )]
    BodyBudget { budget: usize, input: usize },
    #[error("max_voters must be between 1 and 7, got {0}")]
    MaxVoters(usize),
    #[error("the gossip interval must be between 20 ms and 10 s, got {0:?}")]
    Gossip(Duration),
    #[error("burst attempts must be between 1 and 16, got {0}")]
    BurstAttempts(usize),
    #[error("the idempotency TTL must be at most 24 h, got {0:?}")]
    IdempotencyTtl(Duration),
    #[error(
        "the default deadline ({default:?}) must be positive and at most the maximum ({max:?})"
    )]
    Deadline { default: Duration, max: Duration },
    #[error("a host needs 1 to 64 executors, got {0}")]
    Executors(usize),
    #[error("two executors are named {0:?}, or share a socket")]
    ExecutorTwice(String),
    #[error(
        "every executor is kept for some tenants: keep at least one shared, or the other tenants' jobs have nowhere to run"
    )]
    NoSharedExecutor,
}

/// Whether `executors` can serve every tenant: 1 to 64, names and sockets
/// unique, at least one shared.
fn executors_usable(executors: &[ExecutorLaunch]) -> Result<(), ConfigError> {
    if !(1..=64).contains(&executors.len()) {
        return Err(ConfigError::Executors(executors.len()));
    }
    for (i, e) in executors.iter().enumerate() {
        let later = &executors[i + 1..];
        if later
            .iter()
            .any(|o| o.name == e.name || o.socket == e.socket)
        {
            return Err(ConfigError::ExecutorTwice(e.name.clone()));
        }
    }
    if executors.iter().all(|e| !e.confined_to.is_empty()) {
        return Err(ConfigError::NoSharedExecutor);
    }
    Ok(())
}

impl SidecarConfig {
    /// Checks every value, returning the config unchanged when it is usable.
    pub fn validate(self) -> Result<Self, ConfigError> {
        executors_usable(&self.executors)?;
        if !(1..=1024).contains(&self.slots) {
            return Err(ConfigError::Slots(self.slots));
        }
        if self.queue_capacity > 100_000 {
            return Err(ConfigError::Queue(self.queue_capacity));
        }
        if !(1..=60 << 20).contains(&self.max_input_bytes) {
            return Err(ConfigError::Size {
                what: "max_input_bytes",
                got: self.max_input_bytes,
            });
        }
        if !(1..=MAX_ARTIFACT_LIMIT).contains(&self.max_artifact_bytes) {
            return Err(ConfigError::ArtifactSize(self.max_artifact_bytes));
        }
        if !(1..=MAX_WEIGHTS_LIMIT).contains(&self.max_weights_bytes) {
            return Err(ConfigError::WeightsSize(self.max_weights_bytes));
        }
        let ingress = &self.ingress;
        if !(1..=1_000_000).contains(&ingress.max_connections) {
            return Err(ConfigError::MaxConnections(ingress.max_connections));
        }
        for (what, got) in [
            ("header", ingress.header_timeout),
            ("body", ingress.body_timeout),
        ] {
            if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&got) {
                return Err(ConfigError::ClientTimeout { what, got });
            }
        }
        if !(self.publish_rate_per_s.is_finite() && self.publish_rate_per_s > 0.0) {
            return Err(ConfigError::PublishRate(
                self.publish_rate_per_s.to_string(),
            ));
        }
        if ingress.max_body_bytes_in_flight < self.max_input_bytes {
            return Err(ConfigError::BodyBudget {
                budget: ingress.max_body_bytes_in_flight,
                input: self.max_input_bytes,
            });
        }
        if !(1..=7).contains(&self.max_voters) {
            return Err(ConfigError::MaxVoters(self.max_voters));
        }
        if !(Duration::from_millis(20)..=Duration::from_secs(10)).contains(&self.gossip_every) {
            return Err(ConfigError::Gossip(self.gossip_every));
        }
        if !(1..=16).contains(&self.burst_attempts) {
            return Err(ConfigError::BurstAttempts(self.burst_attempts));
        }
        if self.idempotency_ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::IdempotencyTtl(self.idempotency_ttl));
        }
        if self.default_deadline.is_zero() || self.default_deadline > self.max_deadline {
            return Err(ConfigError::Deadline {
                default: self.default_deadline,
                max: self.max_deadline,
            });
        }
        Ok(self)
    }
}

impl SidecarConfig {
    /// The scheduler's policy for this host: its queue, and load reports
    /// stale after four missed gossip rounds (at least 1 s).
    pub(crate) fn placement_policy(&self) -> PlacementPolicy {
        PlacementPolicy {
            admission: AdmissionPolicy {
                queue_capacity: self.queue_capacity,
                ..AdmissionPolicy::default()
            },
            stale_after: (self.gossip_every * 4).max(Duration::from_secs(1)),
            max_attempts: self.burst_attempts,
            ..PlacementPolicy::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executors_are_named_once_and_one_is_shared() {
        let one = |name: &str, socket: &str, kept: &[&str]| ExecutorLaunch {
            confined_to: kept
                .iter()
                .map(|t| spillway_proto::TenantId((*t).to_owned()))
                .collect(),
            ..ExecutorLaunch::shared(name, socket.into(), NodeLaunch::Connect)
        };
        let with = |executors| SidecarConfig {
            executors,
            ..Default::default()
        };
        let table = [
            (vec![], Err(ConfigError::Executors(0))),
            (vec![one("0", "a", &[]), one("1", "b", &["acme"])], Ok(())),
            (
                vec![one("0", "a", &[]), one("0", "b", &[])],
                Err(ConfigError::ExecutorTwice("0".into())),
            ),
            (
                vec![one("0", "a", &[]), one("1", "a", &[])],
                Err(ConfigError::ExecutorTwice("0".into())),
            ),
            (
                vec![one("0", "a", &["acme"])],
                Err(ConfigError::NoSharedExecutor),
            ),
        ];
        for (executors, want) in table {
            assert_eq!(with(executors).validate().map(|_| ()), want);
        }
    }

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        SidecarConfig::default().validate().unwrap();
        let bad = SidecarConfig {
            max_input_bytes: 1 << 30,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            ConfigError::Size {
                what: "max_input_bytes",
                got: 1 << 30
            }
        );
        let bad = SidecarConfig {
            max_artifact_bytes: 0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err(), ConfigError::ArtifactSize(0));
        let big = SidecarConfig {
            max_artifact_bytes: 1 << 30,
            ..Default::default()
        };
        big.validate().unwrap();
        let cases = [
            (
                IngressLimits {
                    max_connections: 0,
                    ..Default::default()
                },
                ConfigError::MaxConnections(0),
            ),
            (
                IngressLimits {
                    header_timeout: Duration::from_millis(5),
                    ..Default::default()
                },
                ConfigError::ClientTimeout {
                    what: "header",
                    got: Duration::from_millis(5),
                },
            ),
            (
                IngressLimits {
                    body_timeout: Duration::from_secs(3600),
                    ..Default::default()
                },
                ConfigError::ClientTimeout {
                    what: "body",
                    got: Duration::from_secs(3600),
                },
            ),
            (
                IngressLimits {
                    max_body_bytes_in_flight: 1 << 20,
                    ..Default::default()
                },
                ConfigError::BodyBudget {
                    budget: 1 << 20,
                    input: 8 << 20,
                },
            ),
        ];
        for (ingress, want) in cases {
            let config = SidecarConfig {
                ingress,
                ..Default::default()
            };
            assert_eq!(config.validate().unwrap_err(), want);
        }
    }
}
