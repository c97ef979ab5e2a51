//! A rolling restart (docs/operations.md, Upgrades): each of three hosts in
//! turn is drained, stopped gracefully, started again on its directory and
//! undrained, while clients keep invoking across the cluster. No job is
//! lost: every request is answered with its right output, a client moving
//! to another host only when the one it asked was not taking connections
//! (503 or no connection: nothing was accepted).

use crate::common::hosts::{self, Api, Host, member};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A job of about 150 ms: three chunks 50 ms apart, answered whole.
const INPUT: [u8; 2] = [3, 5];
const OUTPUT: &str = "3\n2\n1\nliftoff\n";

/// What the clients saw.
#[derive(Debug, Default)]
struct Tally {
    /// Answered right, by (host index, its start generation).
    ok: Vec<(usize, u32)>,
    /// Answered wrong, or not answered after every host was tried for 30 s.
    lost: Vec<String>,
}

/// Each host's endpoint and how many times it was started again.
type Endpoints = Arc<RwLock<Vec<(String, u32)>>>;

async fn client(
    http: reqwest::Client,
    token: String,
    endpoints: Endpoints,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    c: usize,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let until = Instant::now() + Duration::from_secs(30);
        let mut attempt = c + n;
        loop {
            let (endpoint, generation, index) = {
                let e = endpoints.read().unwrap();
                let i = attempt % e.len();
                (e[i].0.clone(), e[i].1, i)
            };
            attempt += 1;
            let answer = http
                .post(format!("{endpoint}/v1/functions/countdown/invoke"))
                .bearer_auth(&token)
                .header("spillway-idempotency-key", format!("c{c}-{n}"))
                .body(INPUT.to_vec())
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            let retry = match answer {
                Ok(r) if r.status() == 200 => {
                    let body = r.text().await.unwrap_or_default();
                    let mut t = tally.lock().unwrap();
                    if body == OUTPUT {
                        t.ok.push((index, generation));
                    } else {
                        t.lost.push(format!("c{c}-{n} at host {index}: {body:?}"));
                    }
                    false
                }
                // Not taking work (draining, stopping, full): try another.
                Ok(r) if r.status() == 503 => true,
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    tally
                        .lock()
                        .unwrap()
                        .lost
                        .push(format!("c{c}-{n} at host {index}: {status} {body}"));
                    false
                }
                // No connection, or it closed before an answer: the host
                // was stopping.
                Err(_) => true,
            };
            if !retry {
                break;
            }
            if Instant::now() > until {
                tally
                    .lock()
                    .unwrap()
                    .lost
                    .push(format!("c{c}-{n}: no host answered for 30 s"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Host `i` (from 0) while it runs.
fn at(hosts: &[Option<Host>], i: usize) -> &Host {
    hosts[i].as_ref().expect("running")
}

/// Waits until host `id`, seen from `via`, is in `state` and healthy.
async fn until_member(api: &Api, via: &Host, id: &str, state: &str) {
    api.wait(via, &format!("{id} {state} and healthy"), |v| {
        let m = member(v, id);
        m["state"] == state && m["healthy"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_three_hosts_under_load_loses_no_job() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(root.path(), &[&[], &[], &[]]).await;
    let mut hosts: Vec<Option<Host>> = hosts.into_iter().map(Some).collect();
    let token = api.token.clone();
    api.publish(
        at(&hosts, 0),
        &token,
        "countdown",
        json!({"name": "countdown", "artifact": "countdown", "deadline_ms": 10000}),
    )
    .await;
    // Every host knows the function before the load starts.
    for i in 0..3 {
        let host = at(&hosts, i);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let r = api
                .http
                .post(format!("{}/v1/functions/countdown/invoke", host.endpoint))
                .bearer_auth(&token)
                .body(INPUT.to_vec())
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(Instant::now() < until, "host {i}: {}", r.status());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Each host's id, as the cluster knows it.
    let view = api.cluster(at(&hosts, 0)).await;
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let addr = at(&hosts, i)
                .endpoint
                .trim_start_matches("http://")
                .to_owned();
            hosts::members(&view)
                .iter()
                .find(|m| m["http_addr"] == addr.as_str())
                .unwrap_or_else(|| panic!("no member serves {addr}: {view}"))["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();

    let endpoints: Endpoints = Arc::new(RwLock::new(
        (0..3)
            .map(|i| (at(&hosts, i).endpoint.clone(), 0))
            .collect(),
    ));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            tokio::spawn(client(
                api.http.clone(),
                token.clone(),
                endpoints.clone(),
                tally.clone(),
                stop.clone(),
                c,
            ))
        })
        .collect();

    for i in 0..3 {
        let other = (i + 1) % 3;
        let via = at(&hosts, other);
        let id = &ids[i];
        let (status, v) = api
            .post(via, &token, &format!("/v1/members/{id}/drain"), &json!({}))
            .await;
        assert_eq!(status, 200, "{v}");
        // Stop it gracefully: what it accepted it finishes.
        let host = hosts[i].take().unwrap();
        let dir = host.dir.clone();
        tokio::task::spawn_blocking(move || host.process.stop(Duration::from_secs(30)))
            .await
            .unwrap();
        // (The binary would be replaced here.) Start it on its directory.
        let restarted = tokio::task::spawn_blocking(move || Host::start(&dir, &[], None))
            .await
            .unwrap()
            .unwrap();
        {
            let mut e = endpoints.write().unwrap();
            e[i] = (restarted.endpoint.clone(), e[i].1 + 1);
        }
        hosts[i] = Some(restarted);
        let via = at(&hosts, other);
        until_member(&api, via, id, "draining").await;
        let (status, v) = api
            .post(
                via,
                &token,
                &format!("/v1/members/{id}/undrain"),
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        until_member(&api, via, id, "active").await;
        // The restarted host answers clients before the next one goes.
        let until = Instant::now() + Duration::from_secs(30);
        while !tally.lock().unwrap().ok.contains(&(i, 1)) {
            assert!(
                Instant::now() < until,
                "host {i} served nothing after its restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let tally = tally.lock().unwrap();
    assert!(tally.lost.is_empty(), "lost jobs: {:#?}", tally.lost);
    assert!(tally.ok.len() >= 30, "only {} jobs ran", tally.ok.len());
    eprintln!(
        "rolling restart: {} jobs answered, none lost",
        tally.ok.len()
    );
}
