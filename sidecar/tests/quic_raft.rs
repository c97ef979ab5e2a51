//! The control plane over real QUIC on loopback: three hosts with pinned
//! ed25519 identities elect a leader and replicate; a host whose key is not
//! pinned cannot complete a handshake, so none of its messages reaches Raft.

use spillway_consensus::{
    ControlCommand, ControlConfig, ControlError, ControlPlane, Member, RaftTransport,
};
use spillway_proto::Digest;
use spillway_sidecar::peer::{
    HostIdentity, PeerClient, PeerEndpoint, PinnedPeers, QuicTransport, serve_raft,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct Host {
    control: ControlPlane,
    client: PeerClient,
    endpoint: PeerEndpoint,
}

fn config() -> ControlConfig {
    ControlConfig {
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
        ..ControlConfig::default()
    }
}

fn endpoint(identity: &HostIdentity, peers: &PinnedPeers) -> PeerEndpoint {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    PeerEndpoint::bind(socket, identity, peers.clone()).unwrap()
}

async fn leader_of(hosts: &BTreeMap<u64, Host>) -> u64 {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let mut seen = Vec::new();
        for h in hosts.values() {
            seen.push(h.control.leader().await);
        }
        if let Some(Some(l)) = seen.first()
            && seen.iter().all(|s| s == &Some(*l))
        {
            return *l;
        }
        assert!(Instant::now() < until, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_agree_over_quic_and_an_unpinned_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let identities: Vec<HostIdentity> = (0..3).map(|_| HostIdentity::generate().unwrap()).collect();
    let pinned = PinnedPeers::default();
    for id in &identities {
        pin(&pinned, id);
    }
    let mut hosts = BTreeMap::new();
    for (i, identity) in identities.iter().enumerate() {
        let id = i as u64 + 1;
        let endpoint = endpoint(identity, &pinned);
        let client = PeerClient::new(endpoint.clone());
        let transport = QuicTransport::new(client.clone());
        let control = ControlPlane::start(
            id,
            &dir.path().join(id.to_string()),
            &config(),
            transport.clone(),
        )
        .await
        .unwrap();
        tokio::spawn(serve_raft(
            endpoint.clone(),
            pinned.clone(),
            control.raft().clone(),
        ));
        hosts.insert(
            id,
            Host {
                control,
                client,
                endpoint,
            },
        );
    }
    let addresses: Vec<_> = hosts
        .iter()
        .map(|(id, h)| (*id, h.endpoint.local_addr().unwrap()))
        .collect();
    for h in hosts.values() {
        for (id, addr) in &addresses {
            h.client.set_address(*id, *addr);
        }
    }
    let members: BTreeMap<u64, Member> = addresses
        .iter()
        .map(|(id, addr)| {
            (
                *id,
                Member {
                    quic_addr: addr.to_string(),
                    http_addr: String::new(),
                },
            )
        })
        .collect();
    hosts[&1].control.initialize(members).await.unwrap();

    // A client retries on another leader, as a real one would: right after
    // start-up a slow first handshake can cost the first leader its term.
    let put = ControlCommand::PutArtifact {
        name: "echo".into(),
        digest: Digest::of(b"echo"),
        size: 3,
        tenant: spillway_proto::TenantId::admin(),
        signature: None,
        kind: spillway_proto::ArtifactKind::Component,
    };
    let until = Instant::now() + Duration::from_secs(15);
    let leader = loop {
        assert!(Instant::now() < until, "no leader accepted the proposal");
        let leader = leader_of(&hosts).await;
        match hosts[&leader].control.propose(put.clone()).await {
            Ok(_) => break leader,
            Err(ControlError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("propose: {e}"),
        }
    };
    let until = Instant::now() + Duration::from_secs(10);
    for h in hosts.values() {
        while h
            .control
            .state()
            .await
            .artifact(&spillway_proto::TenantId::admin(), "echo")
            .is_none()
        {
            assert!(Instant::now() < until, "not replicated over QUIC");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // An intruder with a key of its own: it even pins the members, but they
    // do not pin it, so its vote request never reaches their Raft.
    let intruder = HostIdentity::generate().unwrap();
    let its_view = PinnedPeers::default();
    for id in &identities {
        pin(&its_view, id);
    }
    let intruder_client = PeerClient::new(endpoint(&intruder, &its_view));
    intruder_client.set_address(leader, addresses[leader as usize - 1].1);
    let intruder_transport = QuicTransport::new(intruder_client);
    let term_before = hosts[&leader].control.term();
    let vote = spillway_consensus::raft::VoteRequest::new(
        spillway_consensus::raft::Vote::new(term_before + 10, 99),
        None,
    );
    let refused = intruder_transport.vote(leader, vote).await;
    assert!(refused.is_err(), "the intruder got an answer: {refused:?}");
    eprintln!("intruder refused: {}", refused.unwrap_err());
    assert_eq!(
        hosts[&leader].control.term(),
        term_before,
        "no frame of the intruder was processed"
    );
    assert_eq!(leader_of(&hosts).await, leader);

    for h in hosts.values() {
        h.control.shutdown().await.unwrap();
        h.endpoint.close();
    }
}

fn pin(peers: &PinnedPeers, identity: &HostIdentity) {
    peers.pin(identity.public_key());
}
