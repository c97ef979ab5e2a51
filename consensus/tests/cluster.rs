//! Three control-plane members in one process, over the in-memory
//! transport, on real storage: they elect a leader, replicate, fail over
//! when the leader stops, and a restarted member whose log was compacted
//! past catches up from a snapshot.

use spillway_consensus::{
    ControlCommand, ControlConfig, ControlError, ControlPlane, Member, MemoryTransport,
};
use spillway_proto::Digest;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn config() -> ControlConfig {
    ControlConfig {
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
        snapshot_every: 10,
        keep_behind_snapshot: 2,
    }
}

async fn start(id: u64, dir: &Path, t: &MemoryTransport) -> ControlPlane {
    let member = ControlPlane::start(id, &dir.join(format!("host-{id}")), &config(), t.clone())
        .await
        .expect("start");
    t.register(id, member.raft().clone());
    member
}

fn put(name: &str) -> ControlCommand {
    ControlCommand::PutArtifact {
        name: name.into(),
        digest: Digest::of(name.as_bytes()),
        size: 1,
        tenant: spillway_proto::TenantId::admin(),
        signature: None,
        kind: spillway_proto::ArtifactKind::Component,
    }
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every host names the same leader, one of them.
async fn wait_for_leader(hosts: &BTreeMap<u64, ControlPlane>) -> u64 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = agreed_leader(hosts).await {
            return l;
        }
        assert!(Instant::now() < until, "timed out waiting for a leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn agreed_leader(hosts: &BTreeMap<u64, ControlPlane>) -> Option<u64> {
    let mut leaders = Vec::new();
    for h in hosts.values() {
        leaders.push(h.leader().await);
    }
    let first = leaders[0]?;
    (leaders.iter().all(|l| *l == Some(first)) && hosts.contains_key(&first)).then_some(first)
}

/// Writes `command` through the leader, following a change of leader: a
/// loaded machine can miss a heartbeat and elect again right after a
/// fail-over, and a Raft client retries at whoever leads then. Returns the
/// host that committed it.
async fn write(hosts: &BTreeMap<u64, ControlPlane>, command: ControlCommand) -> u64 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let leader = wait_for_leader(hosts).await;
        match hosts[&leader].propose(command.clone()).await {
            Ok(_) => return leader,
            Err(ControlError::NotLeader { leader: now }) => {
                eprintln!("{leader} no longer leads (now {now:?}); retrying");
                assert!(
                    Instant::now() < until,
                    "no leader kept long enough to write"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("propose: {e}"),
        }
    }
}

/// Hosts 1 to 3 on `t`, initialized as the three voters.
async fn three_voters(dir: &Path, t: &MemoryTransport) -> BTreeMap<u64, ControlPlane> {
    let mut hosts = BTreeMap::new();
    for id in 1..=3 {
        hosts.insert(id, start(id, dir, t).await);
    }
    let voters: BTreeMap<u64, Member> = (1..=3).map(|id| (id, Member::default())).collect();
    hosts[&1].initialize(voters).await.expect("initialize");
    hosts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_replicate_fail_over_and_catch_up_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let t = MemoryTransport::default();
    let mut hosts = three_voters(dir.path(), &t).await;

    let leader = write(&hosts, put("first")).await;
    eventually("replication to all", Duration::from_secs(5), || async {
        for h in hosts.values() {
            if h.state()
                .await
                .artifact(&spillway_proto::TenantId::admin(), "first")
                .is_none()
            {
                return false;
            }
        }
        true
    })
    .await;

    // The leader stops; the other two elect a new one and keep committing.
    let old = leader;
    let old_term = hosts[&old].term();
    hosts[&old].shutdown().await.unwrap();
    t.unregister(old);
    hosts.remove(&old);
    let stopped = Instant::now();
    let first = wait_for_leader(&hosts).await;
    eprintln!("new leader {first} after {:?}", stopped.elapsed());
    assert_ne!(first, old);
    assert!(hosts[&first].term() > old_term);
    // Keep writing until the leader has compacted its log past everything
    // the stopped host has (it purges once no replication is reading there).
    let stopped_at = 2; // the blank entry of the first term and "first"
    let until = Instant::now() + Duration::from_secs(20);
    let mut written = 0;
    loop {
        let leader = write(&hosts, put(&format!("later-{written}"))).await;
        written += 1;
        let (snapshot, purged) = hosts[&leader].snapshot_and_purged();
        if written >= 25 && purged.is_some_and(|p| p > stopped_at + 1) {
            eprintln!(
                "leader snapshot at {snapshot:?}, purged through {purged:?} after {written} writes"
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "the leader never compacted its log ({snapshot:?}, {purged:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The old leader restarts from its own storage and catches up, through a
    // snapshot since the entries it lacks are gone from the leader's log.
    let back = start(old, dir.path(), &t).await;
    eventually(
        "the restarted host to catch up",
        Duration::from_secs(10),
        || async {
            back.state()
                .await
                .artifact(
                    &spillway_proto::TenantId::admin(),
                    &format!("later-{}", written - 1),
                )
                .is_some()
        },
    )
    .await;
    let state = back.state().await;
    assert!(
        state
            .artifact(&spillway_proto::TenantId::admin(), "first")
            .is_some()
    );
    assert!((0..written).all(|i| {
        state
            .artifact(&spillway_proto::TenantId::admin(), &format!("later-{i}"))
            .is_some()
    }));
    let (snapshot, _) = back.snapshot_and_purged();
    assert!(snapshot.is_some(), "caught up from a snapshot");
    for h in hosts.values().chain([&back]) {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_hands_leadership_to_the_voter_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let t = MemoryTransport::default();
    let hosts = three_voters(dir.path(), &t).await;
    let leader = write(&hosts, put("before")).await;
    let next = (1..=3).find(|id| *id != leader).unwrap();
    hosts[&leader]
        .transfer_leader(next)
        .await
        .expect("transfer");
    eventually("the named voter leads", Duration::from_secs(5), || {
        let hosts = &hosts;
        async move { agreed_leader(hosts).await == Some(next) }
    })
    .await;
    write(&hosts, put("after")).await;
    for h in hosts.values() {
        h.shutdown().await.unwrap();
    }
}
