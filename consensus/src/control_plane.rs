//! One host's member of the control plane: its Raft, log and state machine,
//! and the calls the sidecar makes on them.

use crate::backup::Backup;
use crate::command::{ControlCommand, ControlResponse};
use crate::format::Migration;
use crate::state::ControlState;
use crate::state_machine::StateMachine;
use crate::transport::{Network, Raft, RaftTransport};
use crate::types::Member;
use crate::{LogStore, OpenError};
use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Timing of the control plane. `Default` assumes hosts on one LAN: 100 ms
/// heartbeats, elections after 400–800 ms of silence, a snapshot every 1000
/// entries.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Entries applied since the last snapshot that trigger a new one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the latest snapshot.
    pub keep_behind_snapshot: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
            snapshot_every: 1000,
            keep_behind_snapshot: 100,
        }
    }
}

/// Why the control plane could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The timing values do not make a working Raft (see openraft's rules).
    #[error("invalid control-plane configuration: {0}")]
    Config(String),
    /// This host is not the leader; send the proposal to `leader` (if known).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// Raft stopped or failed; the message says how.
    #[error("raft: {0}")]
    Raft(String),
}

/// What Raft says about this host and the cluster, as this host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// The last entry dropped from the log (compacted into a snapshot).
    pub purged_index: Option<u64>,
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    /// Raft's membership: where each host's sidecar listens.
    pub nodes: BTreeMap<u64, Member>,
    /// On the leader: the last log index each follower and learner holds.
    pub matched: BTreeMap<u64, Option<u64>>,
}

/// See [`ControlPlane::changes`].
pub struct Changes(
    openraft::type_config::alias::WatchReceiverOf<
        crate::TypeConfig,
        openraft::RaftMetrics<crate::TypeConfig>,
    >,
);

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

impl Changes {
    /// Waits for the next change; `false` once Raft has stopped.
    pub async fn next(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// One host's control-plane member.
#[derive(Clone)]
pub struct ControlPlane {
    id: u64,
    raft: Raft,
    state_machine: StateMachine,
    migrations: Vec<Migration>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Opens the log and state machine under `dir` and starts Raft as host
    /// `id`, talking to peers through `transport`.
    pub async fn start<T: RaftTransport>(
        id: u64,
        dir: &Path,
        config: &ControlConfig,
        transport: T,
    ) -> Result<Self, ControlError> {
        let raft_config = openraft::Config {
            cluster_name: "spillway".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_behind_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ControlError::Config(e.to_string()))?;
        let log = LogStore::open(&dir.join("log.redb"))?;
        let state_machine = StateMachine::open(&dir.join("state"))?;
        let migrations = [log.migration(), state_machine.migration()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            Network(transport),
            log,
            state_machine.clone(),
        )
        .await
        .map_err(|e| ControlError::Raft(e.to_string()))?;
        Ok(Self {
            id,
            raft,
            state_machine,
            migrations,
        })
    }

    /// The stores that opening this member brought from an earlier format
    /// to this build's.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// The Raft handle (for a transport to deliver messages to).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Forms a new cluster with `members` as its voters. Called once, on
    /// one host, at `spillway init`.
    pub async fn initialize(&self, members: BTreeMap<u64, Member>) -> Result<(), ControlError> {
        self.raft
            .initialize(members)
            .await
            .map_err(|e| ControlError::Raft(e.to_string()))
    }

    /// Appends `command` to the log and waits until it is committed and
    /// applied here. Returns the answer and the entry's log index.
    pub async fn propose(
        &self,
        command: ControlCommand,
    ) -> Result<(ControlResponse, u64), ControlError> {
        self.raft
            .client_write(command)
            .await
            .map(|r| (r.data, r.log_id.index))
            .map_err(write_error)
    }

    /// The index a linearizable read waits for: every entry committed
    /// before this call is at or below it. Confirms this host still leads
    /// (a round of heartbeats to a quorum) and returns once it has
    /// applied that far. Leader only: elsewhere `NotLeader`.
    pub async fn read_index(&self) -> Result<u64, ControlError> {
        self.raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
            .await
            .map(|read| read.log_id().index)
            .map_err(write_error)
    }

    /// Whether this host's log already belongs to a cluster (it was
    /// initialized, or has received entries from a leader).
    pub async fn is_initialized(&self) -> Result<bool, ControlError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| ControlError::Raft(e.to_string()))
    }

    /// Adds host `id` as a learner without waiting for it to catch up.
    /// Leader only.
    pub async fn add_learner(&self, id: u64, member: Member) -> Result<(), ControlError> {
        self.raft
            .add_learner(id, member, false)
            .await
            .map(|_| ())
            .map_err(write_error)
    }

    /// Makes the given learners voters and the given voters learners (or
    /// removes them from Raft entirely with `retain: false`). Leader only.
    pub async fn change_voters(
        &self,
        add: BTreeSet<u64>,
        remove: BTreeSet<u64>,
        retain: bool,
    ) -> Result<(), ControlError> {
        if !add.is_empty() {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(add), true)
                .await
                .map_err(write_error)?;
        }
        if !remove.is_empty() {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(remove), retain)
                .await
                .map_err(write_error)?;
        }
        Ok(())
    }

    /// Hands leadership to voter `to` (this host stops accepting writes and
    /// `to` starts an election at once). Leader only; elsewhere ignored.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), ControlError> {
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| ControlError::Raft(e.to_string()))
    }

    /// Removes learners from Raft (they stop receiving the log). Leader only.
    pub async fn remove_learners(&self, ids: BTreeSet<u64>) -> Result<(), ControlError> {
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(ids), false)
            .await
            .map(|_| ())
            .map_err(write_error)
    }

    /// Raft's view: role, term, leader, indexes and membership.
    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        RaftStatus {
            id: self.id,
            role: match m.state {
                openraft::ServerState::Leader => "leader",
                openraft::ServerState::Follower => "follower",
                openraft::ServerState::Candidate => "candidate",
                openraft::ServerState::Learner => "learner",
                openraft::ServerState::Shutdown => "shutdown",
            },
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.map(|id| id.index),
            applied_index: m.last_applied.map(|id| id.index),
            snapshot_index: m.snapshot.map(|id| id.index),
            purged_index: m.purged.map(|id| id.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            nodes: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
            matched: m
                .replication
                .iter()
                .flatten()
                .map(|(id, log)| (*id, log.map(|l| l.index)))
                .collect(),
        }
    }

    /// A subscription to Raft's changes (an entry applied, a new leader
    /// or term, a membership change).
    pub fn changes(&self) -> Changes {
        Changes(self.raft.metrics())
    }

    /// The current leader, as this host knows it.
    pub async fn leader(&self) -> Option<u64> {
        self.raft.current_leader().await
    }

    /// The control state as applied on this host.
    pub async fn state(&self) -> ControlState {
        self.state_machine.state().await
    }

    /// A backup of the control state as applied here (`backup.rs`), taken
    /// by host `taken_by` at `now_unix_ms`. Call it after a linearizable
    /// read for a backup that holds every acknowledged change.
    pub async fn backup(&self, taken_by: u64, now_unix_ms: u64) -> Result<Backup, ControlError> {
        let (state, at) = self.state_machine.state_at().await;
        Backup::of(&state, at, taken_by, now_unix_ms).ok_or_else(|| {
            ControlError::Raft("nothing to back up: the cluster is not founded yet".into())
        })
    }

    /// The index of the last entry applied here.
    pub fn applied_index(&self) -> Option<u64> {
        self.raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map(|id| id.index)
    }

    /// The index of the latest snapshot here, and of the last purged entry.
    pub fn snapshot_and_purged(&self) -> (Option<u64>, Option<u64>) {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        (m.snapshot.map(|id| id.index), m.purged.map(|id| id.index))
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// Stops Raft (the storage stays, for a restart).
    pub async fn shutdown(&self) -> Result<(), ControlError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| ControlError::Raft(e.to_string()))
    }
}

/// A leader-only call's error: `NotLeader` where Raft names where to go.
fn write_error<E>(e: openraft::error::RaftError<crate::TypeConfig, E>) -> ControlError
where
    E: std::error::Error + openraft::TryAsRef<openraft::error::ForwardToLeader<crate::TypeConfig>>,
{
    match e.forward_to_leader() {
        Some(f) => ControlError::NotLeader {
            leader: f.leader_id,
        },
        None => ControlError::Raft(e.to_string()),
    }
}
