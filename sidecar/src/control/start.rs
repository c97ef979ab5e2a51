//! How a host takes its place: found a cluster, join one with a ticket, or
//! rejoin the one its state directory belongs to.

use super::local::LocalMembership;
use super::{Control, tasks};
use crate::config::ClusterStart;
use crate::executors::Executors;
use crate::peer::client::exchange;
use crate::peer::{ConnectError, TlsRefusal, tls_refusal};
use crate::peer::{
    HostIdentity, JoinAccepted, JoinRequest, JoinTicket, PeerClient, PeerEndpoint, PeerReply,
    PeerRequest, PinnedPeers, QuicTransport,
};
use crate::{AdminToken, SidecarConfig, SidecarError};
use spillway_consensus::{
    ControlCommand, ControlPlane, ControlResponse, JOIN_VERSION, JoinRefusal, Member, MemberEntry,
    MemberState,
};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a new cluster may take to elect its first leader.
const FIRST_LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to a ticket's member may take.
const JOIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the admitting member may take to answer.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

fn io(what: &'static str, path: &std::path::Path) -> impl Fn(std::io::Error) -> SidecarError {
    let path = path.to_path_buf();
    move |source| SidecarError::Io {
        what,
        path: path.clone(),
        source,
    }
}

/// Binds the peer UDP socket: the configured address, or with port 0 the
/// port this host served on last time when it is free.
fn bind_peer_socket(
    config: &SidecarConfig,
    local: Option<&LocalMembership>,
) -> Result<UdpSocket, SidecarError> {
    let wanted = config.peer_addr;
    if wanted.port() == 0
        && let Some(previous) = local.and_then(|l| l.quic_addr.parse::<SocketAddr>().ok())
        && previous.ip() == wanted.ip()
        && let Ok(socket) = UdpSocket::bind(previous)
    {
        return Ok(socket);
    }
    UdpSocket::bind(wanted).map_err(|source| SidecarError::Bind {
        addr: wanted,
        source,
    })
}

/// Where the member counts what it does (the `spillway_raft_*` series;
/// plain prometheus-client handles, so this module needs none of the
/// metrics module).
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    /// Proposal to applied here.
    pub(crate) proposals: prometheus_client::metrics::histogram::Histogram,
    /// Leaders seen taking over.
    pub(crate) leader_changes: prometheus_client::metrics::counter::Counter,
}

/// Starts this host's control-plane member: its QUIC endpoint (which the
/// caller serves, through `peer_routes`), its Raft and its loops.
pub(crate) async fn start(
    config: &SidecarConfig,
    http_addr: SocketAddr,
    executors: Arc<Executors>,
    observed: Observed,
) -> Result<Arc<Control>, SidecarError> {
    let dir = &config.dir;
    let identity = HostIdentity::load_or_create(dir)?;
    let mut local = LocalMembership::load(dir).map_err(io("cannot read", dir))?;
    let socket = bind_peer_socket(config, local.as_ref())?;
    let pinned = PinnedPeers::default();
    let endpoint = match config.chaos_faults {
        None => PeerEndpoint::bind(socket, &identity, pinned.clone()),
        Some(faults) => PeerEndpoint::bind_with_faults(socket, &identity, pinned.clone(), faults)
            .map(|(endpoint, _)| endpoint),
    }
    .map_err(|source| SidecarError::Bind {
        addr: config.peer_addr,
        source,
    })?;
    let quic_addr = endpoint.local_addr().map_err(|source| SidecarError::Bind {
        addr: config.peer_addr,
        source,
    })?;
    let client = PeerClient::new(endpoint.clone());
    let me = MemberEntry {
        id: 0,
        key: identity.public_key(),
        quic_addr: quic_addr.to_string(),
        http_addr: http_addr.to_string(),
        labels: config.labels.clone(),
        gpus: Vec::new(),
        state: MemberState::Joining,
    };

    let mut found: Option<String> = None;
    match (&local, &config.cluster) {
        (Some(l), ClusterStart::Join(text)) => {
            let ticket = JoinTicket::decode(text)?;
            if ticket.body.cluster_id != l.cluster_id {
                return Err(JoinRefusal::WrongCluster {
                    ticket: ticket.body.cluster_id,
                    cluster: l.cluster_id.clone(),
                }
                .into());
            }
            tracing::warn!(
                host = l.id,
                "this host is already a member of {}; ignoring --join",
                l.cluster_id
            );
        }
        (Some(l), ClusterStart::Restore(_)) => {
            return Err(SidecarError::RestoreIntoMember {
                dir: dir.clone(),
                cluster: l.cluster_id.clone(),
            });
        }
        (Some(_), _) => {}
        (None, ClusterStart::Rejoin) => return Err(SidecarError::NoCluster(dir.clone())),
        (None, ClusterStart::Init | ClusterStart::Restore(_)) => {
            found = Some(new_cluster_id()?);
        }
        (None, ClusterStart::Join(text)) => {
            let ticket = JoinTicket::decode(text)?;
            let accepted = join(&ticket, &me).await?;
            let l = LocalMembership {
                cluster_id: accepted.cluster_id,
                id: accepted.id,
                quic_addr: me.quic_addr.clone(),
                http_addr: me.http_addr.clone(),
                peers: accepted.members,
            };
            l.save(dir).map_err(io("cannot write", dir))?;
            tracing::info!(host = l.id, cluster = %l.cluster_id, "joined");
            local = Some(l);
        }
    }
    let id = local.as_ref().map_or(1, |l| l.id);
    for peer in local.iter().flat_map(|l| &l.peers) {
        pinned.pin(peer.key);
        if let Ok(addr) = peer.quic_addr.parse() {
            client.set_address(peer.id, addr);
        }
    }

    let plane = ControlPlane::start(
        id,
        &dir.join("raft"),
        &config.control,
        QuicTransport::new(client.clone()),
    )
    .await?;
    for m in plane.migrations() {
        tracing::info!(
            store = %m.store.display(),
            from = m.from,
            to = m.to,
            "control state migrated to this build's format"
        );
    }
    let control = Arc::new(Control {
        id,
        joins: Default::default(),
        plane,
        client,
        endpoint,
        pinned,
        identity,
        state: watch::channel(Arc::default()).0,
        executors,
        max_voters: config.max_voters,
        http_addr,
        last_catch_up: tokio::sync::Mutex::new(None),
        saved_peers: Mutex::new(local.as_ref().map(|l| l.peers.clone()).unwrap_or_default()),
        next_build_check: Mutex::new(None),
        proposals: observed.proposals,
    });
    if let Some(cluster_id) = found {
        let admin_token_hash = match &config.cluster {
            // The backup's admin token stays the cluster's: no new one.
            ClusterStart::Restore(backup) => backup.contents.admin_token_hash,
            _ => new_admin_token(dir, config)?,
        };
        bootstrap(&control, cluster_id, admin_token_hash, me.clone()).await?;
        if let ClusterStart::Restore(backup) = &config.cluster {
            restore(&control, backup).await?;
        }
        let state = control.plane.state().await;
        local = Some(LocalMembership {
            cluster_id: state.cluster_id().to_owned(),
            id,
            quic_addr: me.quic_addr.clone(),
            http_addr: me.http_addr.clone(),
            peers: Vec::new(),
        });
    }
    if let Some(l) = local.as_mut() {
        l.quic_addr.clone_from(&me.quic_addr);
        l.http_addr.clone_from(&me.http_addr);
        l.save(dir).map_err(io("cannot write", dir))?;
    }
    control.refresh(dir).await;
    tokio::spawn(tasks::sync(control.clone(), dir.clone()));
    tokio::spawn(tasks::reconcile(control.clone()));
    tokio::spawn(tasks::count_leader_changes(
        control.clone(),
        observed.leader_changes,
    ));
    tokio::spawn(tasks::residency(control.clone()));
    tracing::info!(host = id, quic = %quic_addr, key = %control.identity().public_key_hex(), "control plane started");
    println!("peer endpoint quic://{quic_addr} (host {id})");
    Ok(control)
}

fn new_cluster_id() -> Result<String, SidecarError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| crate::TokenError::Random(e.to_string()))?;
    Ok(format!("sw-{}", hex::encode(bytes)))
}

/// Makes this host the single voter of a new cluster and writes the
/// founding entry. Safe to repeat after a crash half way.
async fn bootstrap(
    control: &Control,
    cluster_id: String,
    admin_token_hash: [u8; 32],
    me: MemberEntry,
) -> Result<(), SidecarError> {
    let plane = &control.plane;
    if !plane.is_initialized().await? {
        let member = Member {
            quic_addr: me.quic_addr.clone(),
            http_addr: me.http_addr.clone(),
        };
        plane
            .initialize(BTreeMap::from([(control.id, member)]))
            .await?;
    }
    let until = Instant::now() + FIRST_LEADER_TIMEOUT;
    while plane.leader().await != Some(control.id) {
        if Instant::now() > until {
            return Err(SidecarError::Cluster(
                "the new cluster elected no leader within 10 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !plane.state().await.cluster_id().is_empty() {
        return Ok(());
    }
    let command = ControlCommand::Bootstrap {
        cluster_id,
        admin_token_hash,
        first: MemberEntry {
            id: control.id,
            state: MemberState::Active,
            ..me
        },
    };
    match control.propose(command).await {
        Ok(ControlResponse::Done) => Ok(()),
        Ok(other) => Err(SidecarError::Cluster(format!(
            "founding the cluster: {other:?}"
        ))),
        Err(e) => Err(SidecarError::Cluster(format!("founding the cluster: {e}"))),
    }
}

/// A founding host's admin token, made once (a restart mid-founding finds
/// it): shown exactly once, or written to `admin_token_file`, which a
/// service's user alone reads, rather than to a journal others may read.
/// Only its hash is kept.
fn new_admin_token(
    dir: &std::path::Path,
    config: &SidecarConfig,
) -> Result<[u8; 32], SidecarError> {
    let token = AdminToken::load_or_create(dir)?;
    if let Some(secret) = &token.created {
        match &config.admin_token_file {
            Some(path) => {
                crate::owner_only::write(path, format!("{secret}\n").as_bytes())
                    .map_err(io("cannot write the admin token to", path))?;
                println!("admin token written to {}", path.display());
            }
            None => println!("admin token (shown once, store it now): {secret}"),
        }
    }
    Ok(token.hash_bytes())
}

/// Takes over `backup`'s contents in the cluster this host has just
/// founded (again after a crash between the two: the log applies it only
/// to a cluster with nothing of its own, and it is not asked twice).
async fn restore(
    control: &Control,
    backup: &spillway_consensus::Backup,
) -> Result<(), SidecarError> {
    let state = control.plane.state().await;
    if state.tenants().next().is_some() || state.tokens().next().is_some() {
        return Ok(());
    }
    let command = ControlCommand::Restore(Box::new(backup.contents.clone()));
    match control.propose(command).await {
        Ok(ControlResponse::Done) => {
            tracing::info!(
                from = %backup.cluster_id,
                index = backup.index,
                term = backup.term,
                cluster = %state.cluster_id(),
                "restored from a backup"
            );
            Ok(())
        }
        Ok(other) => Err(SidecarError::Cluster(format!(
            "restoring the backup: {other:?}"
        ))),
        Err(e) => Err(SidecarError::Cluster(format!("restoring the backup: {e}"))),
    }
}

/// Asks the ticket's members, in turn, to admit this host.
async fn join(ticket: &JoinTicket, me: &MemberEntry) -> Result<JoinAccepted, SidecarError> {
    if ticket.body.version != JOIN_VERSION {
        return Err(JoinRefusal::VersionIncompatible {
            ours: JOIN_VERSION,
            theirs: ticket.body.version,
        }
        .into());
    }
    let one_time = ticket.identity()?;
    let pins = PinnedPeers::default();
    for m in &ticket.body.members {
        pins.pin(m.key);
    }
    let mut failures = Vec::new();
    let mut wrong_host = None;
    // A member that does not pin the ticket's key refuses the handshake:
    // it never knew the ticket, the ticket was used, or (just issued) the
    // member has not applied it yet. Only when every member refuses, a few
    // rounds apart, is the ticket unknown.
    for round in 0..HANDSHAKE_ROUNDS {
        if round > 0 {
            tokio::time::sleep(HANDSHAKE_ROUND_GAP).await;
        }
        failures.clear();
        let mut refused = 0;
        for m in &ticket.body.members {
            let Ok(addr) = m.quic_addr.parse::<SocketAddr>() else {
                failures.push(format!("member {}: bad address {:?}", m.id, m.quic_addr));
                continue;
            };
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            let socket = UdpSocket::bind(bind)
                .map_err(|source| SidecarError::Bind { addr: bind, source })?;
            let endpoint = PeerEndpoint::bind(socket, &one_time, pins.clone())
                .map_err(|source| SidecarError::Bind { addr: bind, source })?;
            let outcome = ask(&endpoint, addr, ticket, me).await;
            endpoint.close();
            match outcome {
                Ok(Ok(accepted)) => return Ok(accepted),
                Ok(Err(refusal)) => return Err(refusal.into()),
                Err(AskError::HandshakeRefused) => {
                    refused += 1;
                    failures.push(format!("{addr}: does not accept the ticket's key"));
                }
                Err(AskError::NotTheMember(reason)) => {
                    wrong_host = Some(m.quic_addr.clone());
                    failures.push(format!("{addr}: {reason}"));
                }
                Err(AskError::Other(reason)) => failures.push(format!("{addr}: {reason}")),
            }
        }
        if refused < ticket.body.members.len() {
            break;
        }
        if round + 1 == HANDSHAKE_ROUNDS {
            return Err(JoinRefusal::UnknownTicket.into());
        }
    }
    if let Some(addr) = wrong_host {
        // A host answered where the ticket's member should be, but with
        // another key: the ticket is for another cluster than the one there.
        return Err(JoinRefusal::WrongCluster {
            ticket: ticket.body.cluster_id.clone(),
            cluster: format!("the one at {addr}"),
        }
        .into());
    }
    Err(SidecarError::JoinUnreachable(failures.join("; ")))
}

enum AskError {
    /// The host at the address is not the member the ticket names.
    NotTheMember(String),
    /// The member refused the handshake: it does not pin the ticket's key.
    HandshakeRefused,
    Other(String),
}

/// Rounds over the ticket's members while every one refuses the
/// handshake, and the pause between them: a ticket just issued reaches
/// every member's pins within a moment.
const HANDSHAKE_ROUNDS: u32 = 4;
const HANDSHAKE_ROUND_GAP: Duration = Duration::from_millis(250);

async fn ask(
    endpoint: &PeerEndpoint,
    addr: SocketAddr,
    ticket: &JoinTicket,
    me: &MemberEntry,
) -> Result<Result<JoinAccepted, JoinRefusal>, AskError> {
    let conn = match tokio::time::timeout(JOIN_CONNECT_TIMEOUT, endpoint.connect(addr)).await {
        Err(_) => return Err(AskError::Other("no answer".into())),
        Ok(Err(e @ ConnectError::NotPinned { .. })) => {
            return Err(AskError::NotTheMember(e.to_string()));
        }
        Ok(Err(ConnectError::Refused { .. })) => return Err(AskError::HandshakeRefused),
        Ok(Err(e @ ConnectError::Failed { .. })) => return Err(AskError::Other(e.to_string())),
        Ok(Ok(conn)) => conn,
    };
    let request = PeerRequest::Join(JoinRequest {
        version: JOIN_VERSION,
        ticket: ticket.clone(),
        member: me.clone(),
    });
    match tokio::time::timeout(JOIN_TIMEOUT, exchange(&conn, &request, &[])).await {
        Ok(Ok(PeerReply::Joined(outcome))) => Ok(outcome),
        Ok(Ok(other)) => Err(AskError::Other(format!("unexpected reply {other:?}"))),
        // A member that does not pin the ticket's key (never issued, or
        // used) refuses the handshake; quinn reports it when the stream is
        // used, and the connection's close reason says it was TLS's.
        Ok(Err(_))
            if conn
                .close_reason()
                .is_some_and(|e| tls_refusal(&e) == Some(TlsRefusal::ByPeer)) =>
        {
            Err(AskError::HandshakeRefused)
        }
        Ok(Err(e)) => Err(AskError::Other(e.to_string())),
        Err(_) => Err(AskError::Other("no answer to the join request".into())),
    }
}
