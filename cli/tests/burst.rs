//! Peer burst with real processes on loopback: a full host sends jobs to
//! its peers, each job runs exactly once, the peer fetches the artifact on
//! its first burst job and is warm for the next, and a client that goes
//! away stops the guest on the peer.

mod common;

use common::hosts::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Three hosts of `slots` slots each, gossiping every 100 ms; host 1
/// holds the `spin` function's artifact.
async fn three_hosts(root: &Path, slots: &str) -> (Api, Vec<Option<Host>>) {
    let flags = ["--slots", slots, "--gossip-ms", "100"];
    let h1 = Host::start(&root.join("h1"), &[&["--init"][..], &flags].concat(), None).unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        token: h1.token.clone().expect("the founder prints the token"),
    };
    let mut hosts = vec![Some(h1)];
    for i in 2..=3 {
        let ticket = api.ticket(h(&hosts, 1), 600).await;
        let dir = root.join(format!("h{i}"));
        hosts.push(Some(Host::start(&dir, &flags, Some(&ticket)).unwrap()));
    }
    api.wait(h(&hosts, 1), "three active members", |v| {
        members(v)
            .iter()
            .filter(|m| m["state"] == "active" && m["healthy"] == true)
            .count()
            == 3
    })
    .await;
    let r = api
        .http
        .put(format!("{}/v1/artifacts/spin", h(&hosts, 1).endpoint))
        .bearer_auth(&api.token)
        .body(common::guest("spin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (api, hosts)
}

async fn register(api: &Api, host: &Host, name: &str, artifact: &str, extra: Value) {
    let mut spec = serde_json::json!({"name": name, "artifact": artifact, "deadline_ms": 30_000});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let r = api
        .http
        .post(format!("{}/v1/functions", host.endpoint))
        .bearer_auth(&api.token)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// One invocation's status and receipt headers.
#[derive(Debug)]
struct Receipt {
    status: u16,
    node: String,
    burst: String,
    job: String,
    body: String,
}

async fn invoke(api: &Api, host: &Host, name: &str, input: Vec<u8>) -> Receipt {
    let r = api
        .http
        .post(format!("{}/v1/functions/{name}/invoke", host.endpoint))
        .bearer_auth(&api.token)
        .body(input)
        .timeout(Duration::from_secs(60))
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
    let status = r.status().as_u16();
    Receipt {
        status,
        node,
        burst,
        job,
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
