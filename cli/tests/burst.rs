//! Peer burst with real processes on loopback: a full host sends jobs to
//! its peers, each job runs exactly once, the peer fetches the artifact on
//! its first burst job and is warm for the next, and a client that goes
//! away stops the guest on the peer.

use crate::common;

use common::hosts::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Three hosts of `slots` slots each, gossiping every 100 ms; host 1
/// holds the `spin` function's artifact.
async fn three_hosts(root: &Path, slots: &str) -> (Api, Vec<Option<Host>>) {
    three_hosts_with(root, slots, &[]).await
}

/// [`three_hosts`] with `extra` flags on every host.
async fn three_hosts_with(root: &Path, slots: &str, extra: &[&str]) -> (Api, Vec<Option<Host>>) {
    let flags = [&["--slots", slots, "--gossip-ms", "100"][..], extra].concat();
    let (api, hosts) = form(root, &[&flags, &flags, &flags]).await;
    // Options, so a test can take a host out to kill it.
    let hosts: Vec<Option<Host>> = hosts.into_iter().map(Some).collect();
    api.put_artifact(h(&hosts, 1), &api.token, "spin").await;
    (api, hosts)
}

async fn register(api: &Api, host: &Host, name: &str, artifact: &str, extra: Value) {
    let mut spec = serde_json::json!({"name": name, "artifact": artifact, "deadline_ms": 30_000});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    api.create_function(host, &api.token, &spec).await;
}

/// One invocation's status and receipt headers.
#[derive(Debug)]
struct Receipt {
    status: u16,
    node: String,
    burst: String,
    job: String,
    exec_ms: f64,
    body: String,
}

async fn invoke(api: &Api, host: &Host, name: &str, input: Vec<u8>) -> Receipt {
    invoke_at(api, &host.endpoint, name, input).await
}

async fn invoke_at(api: &Api, endpoint: &str, name: &str, input: Vec<u8>) -> Receipt {
    let r = api
        .http
        .post(format!("{endpoint}/v1/functions/{name}/invoke"))
        .bearer_auth(&api.token)
        .body(input)
        .timeout(Duration::from_secs(90))
        .send()
        .await
        .unwrap();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (node, burst, job) = (
        header("spillway-node"),
        header("spillway-burst"),
        header("spillway-job-id"),
    );
    let exec_ms = header("spillway-exec-ms").parse().unwrap_or(0.0);
    Receipt {
        status: r.status().as_u16(),
        node,
        burst,
        job,
        exec_ms,
        body: r.text().await.unwrap(),
    }
}

/// Each member's count of completed jobs, as its own node reports it.
fn completed(view: &Value) -> BTreeMap<String, u64> {
    members(view)
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["completed"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn fetches_logged(host: &Host) -> usize {
    std::fs::read_to_string(host.dir.join("host.log"))
        .unwrap()
        .matches("fetched artifact")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_jobs_on_two_slots_burst_to_peers_and_each_runs_once() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = three_hosts(root.path(), "2").await;
    register(&api, h(&hosts, 1), "spin", "spin", serde_json::json!({})).await;
    // About 50-100 ms of CPU per job: 40 of them are several times what
    // two slots clear before the loop ends.
    let rounds = 40_000_000u32.to_le_bytes().to_vec();

    let jobs = (0..40).map(|_| {
        let (api, host, input) = (&api, h(&hosts, 1), rounds.clone());
        async move { invoke(api, host, "spin", input).await }
    });
    let receipts = futures::future::join_all(jobs).await;

    let mut per_host: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for r in &receipts {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body.len(), 16, "a spin result: {r:?}");
        assert_eq!(r.burst == "true", r.node != "n1", "{r:?}");
        assert!(ids.insert(r.job.clone()), "one receipt per job: {r:?}");
        *per_host.entry(r.node.clone()).or_default() += 1;
    }
    eprintln!("jobs per host: {per_host:?}");
    assert!(
        per_host.keys().any(|n| n != "n1"),
        "some jobs ran on a peer: {per_host:?}"
    );

    // Each node's own count agrees with the receipts: nothing ran twice.
    let view = api
        .wait(h(&hosts, 1), "every node's load report", |v| {
            let c = completed(v);
            per_host.iter().all(|(n, k)| c.get(n) == Some(k))
        })
        .await;
    assert_eq!(completed(&view).values().sum::<u64>(), 40, "{view:#}");

    // A peer that ran burst jobs fetched the artifact once (on its first
    // burst job), holds it now, and the log's residency lists it.
    for (i, node) in [(2, "n2"), (3, "n3")] {
        let ran = per_host.get(node).copied().unwrap_or(0);
        if ran == 0 {
            continue;
        }
        assert_eq!(fetches_logged(h(&hosts, i)), 1, "{node} ran {ran} jobs");
        api.wait(h(&hosts, 1), "residency lists the peer", |v| {
            member(v, node)["resident_artifacts"].as_u64() == Some(1)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_going_away_stops_the_guest_on_the_peer() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = three_hosts(root.path(), "1").await;
    register(&api, h(&hosts, 1), "spin", "spin", serde_json::json!({})).await;
    // 4e9 rounds: far longer than the test; only a cancel ends it early.
    let forever = 4_000_000_000u32.to_le_bytes().to_vec();
    // Host 1's one slot is taken by a long job of its own.
    let busy = {
        let (http, token, endpoint) = (
            api.http.clone(),
            api.token.clone(),
            h(&hosts, 1).endpoint.clone(),
        );
        let input = forever.clone();
        tokio::spawn(async move {
            let _ = http
                .post(format!("{endpoint}/v1/functions/spin/invoke"))
                .bearer_auth(token)
                .body(input)
                .timeout(Duration::from_secs(3))
                .send()
                .await;
        })
    };
    api.wait(h(&hosts, 1), "host 1 busy, peers reporting", |v| {
        member(v, "n1")["running"] == 1
    })
    .await;

    // The next job bursts; its client gives up after a second.
    let gave_up = api
        .http
        .post(format!(
            "{}/v1/functions/spin/invoke",
            h(&hosts, 1).endpoint
        ))
        .bearer_auth(&api.token)
        .body(forever.clone())
        .timeout(Duration::from_millis(1500))
        .send();
    let peer_running = async {
        api.wait(h(&hosts, 1), "a peer runs the burst job", |v| {
            ["n2", "n3"].iter().any(|n| member(v, n)["running"] == 1)
        })
        .await
    };
    let (outcome, view) = tokio::join!(gave_up, peer_running);
    assert!(outcome.is_err(), "the client timed out");
    let peer = ["n2", "n3"]
        .into_iter()
        .find(|n| member(&view, n)["running"] == 1)
        .unwrap();

    // The guest on the peer stops: its slot frees and the node counts a
    // failed (cancelled) job, long before the guest could have finished.
    let stopped_by = Instant::now() + Duration::from_secs(10);
    let after = api
        .wait(h(&hosts, 1), "the peer's guest stopped", |v| {
            member(v, peer)["running"] == 0 && member(v, peer)["failed"] == 1
        })
        .await;
    assert!(Instant::now() < stopped_by);
    assert_eq!(member(&after, peer)["completed"], 0);
    busy.abort();
}

/// Starts `input` on `function` through `host` on a task of its own.
fn spawn_invoke(
    api: &Api,
    host: &Host,
    function: &str,
    input: Vec<u8>,
) -> tokio::task::JoinHandle<Receipt> {
    let api = Api {
        http: api.http.clone(),
        token: api.token.clone(),
    };
    let (endpoint, function) = (host.endpoint.clone(), function.to_owned());
    tokio::spawn(async move { invoke_at(&api, &endpoint, &function, input).await })
}

/// The peer (of `peers`) whose node runs a job now.
async fn peer_running(api: &Api, via: &Host, peers: &[&'static str]) -> &'static str {
    let view = api
        .wait(via, "a peer runs the burst job", |v| {
            peers.iter().any(|n| member(v, n)["running"] == 1)
        })
        .await;
    peers
        .iter()
        .copied()
        .find(|n| member(&view, n)["running"] == 1)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_job_reruns_idempotent_jobs_and_loses_the_others() {
    let root = tempfile::tempdir().unwrap();
    let (api, mut hosts) = three_hosts(root.path(), "1").await;
    let long = serde_json::json!({"deadline_ms": 60_000});
    register(&api, h(&hosts, 1), "spin", "spin", long.clone()).await;
    let mut idempotent = long.clone();
    idempotent["idempotent"] = true.into();
    register(&api, h(&hosts, 1), "spin-again", "spin", idempotent).await;

    // Calibrate: rounds for about 3 s of guest time on this machine.
    let probe_rounds = 50_000_000.0;
    let probe = invoke(
        &api,
        h(&hosts, 1),
        "spin",
        (probe_rounds as u32).to_le_bytes().to_vec(),
    )
    .await;
    assert_eq!(probe.status, 200, "{probe:?}");
    let rounds = (probe_rounds * 3000.0 / probe.exec_ms.max(1.0)).min(2e9) as u32;
    let forever = 4_000_000_000u32.to_le_bytes().to_vec();

    // Host 1's one slot is held by a long job of its own.
    let busy = spawn_invoke(&api, h(&hosts, 1), "spin", forever.clone());
    api.wait(h(&hosts, 1), "host 1 busy", |v| {
        member(v, "n1")["running"] == 1
    })
    .await;

    // An idempotent job bursts to a peer, which is killed while it runs:
    // the job runs again elsewhere and completes.
    let rerun = spawn_invoke(
        &api,
        h(&hosts, 1),
        "spin-again",
        rounds.to_le_bytes().to_vec(),
    );
    let first = peer_running(&api, h(&hosts, 1), &["n2", "n3"]).await;
    let first_index: usize = first[1..].parse().unwrap();
    hosts[first_index - 1].take().unwrap().kill9();
    let r = rerun.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body.len(), 16, "{r:?}");
    assert_ne!(r.node, first, "it completed on a live host: {r:?}");

    // A job that is not idempotent bursts to the last peer, which is
    // killed too: it ends executor_lost, may_have_run true.
    let second = if first == "n2" { "n3" } else { "n2" };
    let lost = spawn_invoke(&api, h(&hosts, 1), "spin", forever.clone());
    assert_eq!(peer_running(&api, h(&hosts, 1), &[second]).await, second);
    let second_index: usize = second[1..].parse().unwrap();
    hosts[second_index - 1].take().unwrap().kill9();
    let r = lost.await.unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    let error: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(error["error"]["code"], "executor_lost", "{error}");
    assert_eq!(error["error"]["may_have_run"], true, "{error}");

    // Host 1's own job still has its outcome coming; nothing was lost.
    busy.abort();
}

/// The one artifact file in host `host`'s node cache.
fn stored_artifact(host: &Host) -> std::path::PathBuf {
    let dir = host.dir.join("node/artifacts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_copy_is_never_fetched_the_job_fails_typed_and_the_copy_is_evicted() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = three_hosts(root.path(), "2").await;
    register(&api, h(&hosts, 1), "spin", "spin", serde_json::json!({})).await;
    let rounds = 1_000_000u32.to_le_bytes().to_vec();

    // Host 1 is the only holder; its stored copy is damaged on disk.
    let path = stored_artifact(h(&hosts, 1));
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();

    // Host 2 must fetch it to run the job: it fails typed, never ran.
    let r = invoke(&api, h(&hosts, 2), "spin", rounds.clone()).await;
    assert_eq!(r.status, 502, "{r:?}");
    let error: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(error["error"]["code"], "artifact_corrupt", "{error}");
    assert_eq!(error["error"]["may_have_run"], false, "{error}");
    let view = api.cluster(h(&hosts, 2)).await;
    assert_eq!(member(&view, "n2")["completed"], 0, "{view:#}");
    assert_eq!(member(&view, "n2")["resident_artifacts"], 0, "{view:#}");
    assert!(
        !h(&hosts, 2).dir.join("node/artifacts").exists()
            || std::fs::read_dir(h(&hosts, 2).dir.join("node/artifacts"))
                .unwrap()
                .all(|e| e.unwrap().path().extension().is_none_or(|x| x != "wasm")),
        "nothing was stored on host 2"
    );

    // Host 1 discarded its damaged copy, and the log no longer lists it.
    assert!(!path.exists(), "the damaged file is gone");
    api.wait(h(&hosts, 2), "host 1's copy evicted from residency", |v| {
        member(v, "n1")["resident_artifacts"] == 0
    })
    .await;

    // Uploaded again, the next job fetches a good copy and runs on host 2.
    api.put_artifact(h(&hosts, 1), &api.token, "spin").await;
    assert_eq!(std::fs::read(&path).unwrap(), good);
    api.wait(h(&hosts, 2), "host 1 holds it again", |v| {
        member(v, "n1")["resident_artifacts"] == 1
    })
    .await;
    let r = invoke(&api, h(&hosts, 2), "spin", rounds).await;
    assert_eq!((r.status, r.node.as_str()), (200, "n2"), "{r:?}");
    assert_eq!(fetches_logged(h(&hosts, 2)), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_local_keeps_a_job_on_its_host() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = three_hosts(root.path(), "1").await;
    register(&api, h(&hosts, 1), "spin", "spin", serde_json::json!({})).await;
    let forever = 4_000_000_000u32.to_le_bytes().to_vec();
    let busy = spawn_invoke(&api, h(&hosts, 1), "spin", forever);
    api.wait(h(&hosts, 1), "host 1 busy, peers free", |v| {
        member(v, "n1")["running"] == 1 && member(v, "n2")["running"] == 0
    })
    .await;
    let short = 1_000_000u32.to_le_bytes().to_vec();
    let send = |placement: Option<&'static str>| {
        let mut r = api
            .http
            .post(format!(
                "{}/v1/functions/spin/invoke",
                h(&hosts, 1).endpoint
            ))
            .bearer_auth(&api.token)
            .header("spillway-deadline-ms", "1500")
            .body(short.clone());
        if let Some(p) = placement {
            r = r.header("spillway-placement", p);
        }
        r.send()
    };
    // Kept on host 1: it waits behind the busy slot until its deadline.
    let r = send(Some("local")).await.unwrap();
    let error = common::expect_error(r, 504, "deadline_exceeded").await;
    assert_eq!(error["may_have_run"], false, "{error}");
    // Free to burst, the same job runs on a peer at once.
    let r = send(Some("any")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["spillway-burst"], "true");
    let r = send(Some("nearby")).await.unwrap();
    common::expect_error(r, 400, "bad_placement").await;

    // Chunks a guest emits on a peer come back in order, before its
    // returned bytes, as they do from a local run.
    let r = api
        .http
        .put(format!("{}/v1/artifacts/countdown", h(&hosts, 1).endpoint))
        .bearer_auth(&api.token)
        .body(common::guest("countdown"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    register(
        &api,
        h(&hosts, 1),
        "countdown",
        "countdown",
        serde_json::json!({}),
    )
    .await;
    let r = invoke(&api, h(&hosts, 1), "countdown", vec![5]).await;
    assert_eq!((r.status, r.burst.as_str()), (200, "true"), "{r:?}");
    assert_eq!(r.body, "5\n4\n3\n2\n1\nliftoff\n");
    busy.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_holds_over_lossy_links() {
    // Every host drops 5% of the datagrams it sends, duplicates 5% and
    // delays each by 1-4 ms (so reorders them): joining, the log, gossip,
    // dispatch and artifact fetch all run over these links.
    let root = tempfile::tempdir().unwrap();
    let faults = [
        "--chaos-faults",
        "loss=0.05,dup=0.05,delay=1ms,jitter=3ms,seed=11",
    ];
    let (api, hosts) = three_hosts_with(root.path(), "1", &faults).await;
    register(
        &api,
        h(&hosts, 1),
        "spin",
        "spin",
        serde_json::json!({"idempotent": true}),
    )
    .await;
    let rounds = 20_000_000u32.to_le_bytes().to_vec();
    let jobs = (0..16).map(|_| {
        let (api, host, input) = (&api, h(&hosts, 1), rounds.clone());
        async move { invoke(api, host, "spin", input).await }
    });
    let receipts = futures::future::join_all(jobs).await;
    let mut per_host: BTreeMap<String, u64> = BTreeMap::new();
    for r in &receipts {
        assert_eq!(r.status, 200, "{r:?}");
        *per_host.entry(r.node.clone()).or_default() += 1;
    }
    eprintln!("over lossy links, jobs per host: {per_host:?}");
    assert!(per_host.keys().any(|n| n != "n1"), "{per_host:?}");
    api.wait(h(&hosts, 1), "every node's count", |v| {
        let c = completed(v);
        per_host.iter().all(|(n, k)| c.get(n) == Some(k))
    })
    .await;
}
