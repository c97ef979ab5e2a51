//! `spillway bench control-log`: what one control-log write costs.
//!
//! Three voters run in this process, each with its own redb log (fsynced
//! on every append, as on a host) and its own QUIC endpoint on loopback
//! with pinned identities, so an entry takes the same path as between
//! hosts: leader append and fsync, replication over QUIC, follower fsyncs,
//! commit on a majority, apply. Proposals go straight to the leader's
//! `ControlPlane` (no HTTP, no forwarding), and each one is a small
//! `PutArtifact` over 16 names, so the state stays the same size. Level 1
//! is commit latency; higher levels measure throughput with that many
//! proposals in flight (openraft batches them into shared appends).

use super::cores;
use crate::stats::{ms, percentile};
use anyhow::{Context, bail};
use spillway_consensus::{ControlCommand, ControlConfig, ControlError, ControlPlane, Member};
use spillway_proto::Digest;
use spillway_sidecar::peer::{
    HostIdentity, PeerClient, PeerEndpoint, PinnedPeers, QuicTransport, serve_raft,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Voter {
    plane: ControlPlane,
    endpoint: PeerEndpoint,
}

pub(crate) async fn run(
    requests: usize,
    levels: &[usize],
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if requests == 0 || levels.contains(&0) {
        bail!("--requests and every --concurrency level must be positive");
    }
    let (dir, remove) = match dir {
        Some(d) => (d, false),
        None => (crate::local_cluster::fresh_dir()?, true),
    };
    let voters = form(&dir).await?;
    let outcome = measure(&voters, requests, levels, &dir).await;
    for v in &voters {
        let _ = v.plane.shutdown().await;
        v.endpoint.close();
    }
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

/// Three voters over loopback QUIC, with a leader.
async fn form(dir: &Path) -> anyhow::Result<Vec<Voter>> {
    let pinned = PinnedPeers::default();
    let identities = (0..3)
        .map(|_| HostIdentity::generate())
        .collect::<Result<Vec<_>, _>>()?;
    for identity in &identities {
        pinned.pin(identity.public_key());
    }
    let mut voters = Vec::new();
    let mut clients = Vec::new();
    for (i, identity) in identities.iter().enumerate() {
        let id = i as u64 + 1;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let endpoint = PeerEndpoint::bind(socket, identity, pinned.clone())?;
        let client = PeerClient::new(endpoint.clone());
        let plane = ControlPlane::start(
            id,
            &dir.join(format!("voter-{id}")),
            &ControlConfig::default(),
            QuicTransport::new(client.clone()),
        )
        .await?;
        tokio::spawn(serve_raft(
            endpoint.clone(),
            pinned.clone(),
            plane.raft().clone(),
        ));
        voters.push(Voter { plane, endpoint });
        clients.push(client);
    }
    let mut members = BTreeMap::new();
    for (i, v) in voters.iter().enumerate() {
        let addr = v.endpoint.local_addr()?;
        for c in &clients {
            c.set_address(i as u64 + 1, addr);
        }
        members.insert(
            i as u64 + 1,
            Member {
                quic_addr: addr.to_string(),
                http_addr: String::new(),
            },
        );
    }
    voters[0].plane.initialize(members).await?;
    Ok(voters)
}

fn command(i: usize) -> ControlCommand {
    let name = format!("bench-{}", i % 16);
    ControlCommand::PutArtifact {
        digest: Digest::of(name.as_bytes()),
        name,
        size: 1,
        tenant: spillway_proto::TenantId::admin(),
        signature: None,
        kind: spillway_proto::ArtifactKind::Component,
    }
}

/// The voter that accepts a write (a new cluster may re-elect once while
/// its first handshakes complete).
async fn leader(voters: &[Voter]) -> anyhow::Result<&ControlPlane> {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        for v in voters {
            match v.plane.propose(command(0)).await {
                Ok(_) => return Ok(&v.plane),
                Err(ControlError::NotLeader { .. }) => {}
                Err(e) => return Err(e).context("proposing"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no voter became leader within 20 s")
}

async fn measure(
    voters: &[Voter],
    requests: usize,
    levels: &[usize],
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let leader = leader(voters).await?;
    println!(
        "control log, 3 voters in one process over loopback QUIC, redb fsync on every append, logs in {}; {} host cores; {requests} proposals per level",
        dir.display(),
        cores()
    );
    println!(
        "{:>11} {:>9} {:>9} {:>9} {:>14}",
        "concurrency", "p50_ms", "p99_ms", "max_ms", "commits_per_s"
    );
    for &c in levels {
        load(leader, c, requests / 10).await?;
        let (mut latencies, elapsed) = load(leader, c, requests).await?;
        latencies.sort();
        println!(
            "{:>11} {:>9.3} {:>9.3} {:>9.3} {:>14.0}",
            c,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default()),
            latencies.len() as f64 / elapsed.as_secs_f64(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `total` proposals from `concurrency` concurrent proposers.
async fn load(
    leader: &ControlPlane,
    concurrency: usize,
    total: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (plane, next) = (leader.clone(), next.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                plane.propose(command(i)).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        })
    });
    let mut all = Vec::with_capacity(total);
    for w in futures::future::join_all(workers).await {
        all.extend(w??);
    }
    Ok((all, started.elapsed()))
}
