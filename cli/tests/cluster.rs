//! Multi-host clusters of real processes on loopback: forming, serving a
//! function registered elsewhere (artifact fetched over QUIC), surviving
//! `kill -9` of the leader, catching up from a snapshot, learners, join
//! refusals, and no secret in any log.

mod common;

use common::BIN;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// One `spillway host` process.
#[derive(Debug)]
struct Host {
    child: Child,
    _stdin: ChildStdin,
    dir: PathBuf,
    endpoint: String,
    /// The admin token, when this start printed it (founding only).
    token: Option<String>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// Starts `spillway host` in `dir` with `extra` flags (and a join
    /// ticket through the environment); waits until it serves HTTP.
    fn start(dir: &Path, extra: &[&str], ticket: Option<&str>) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("host.log"))
            .unwrap();
        let mut command = Command::new(BIN);
        command
            .args([
                "host",
                "--listen",
                "127.0.0.1:0",
                "--peer-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--slots",
                "2",
                "--snapshot-every",
                "20",
                "--stop-on-stdin-close",
            ])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .env_remove("SPILLWAY_JOIN_TICKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(t) = ticket {
            command.env("SPILLWAY_JOIN_TICKET", t);
        }
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut token = None;
        let endpoint = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(t) = line.strip_prefix("admin token (shown once, store it now): ") {
                        token = Some(t.to_owned());
                    } else if let Some(e) = line.strip_prefix("listening on ") {
                        break e.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.wait();
                    return Err(std::fs::read_to_string(dir.join("host.log")).unwrap());
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            _stdin: stdin,
            dir: dir.to_path_buf(),
            endpoint,
            token,
        })
    }

    fn kill9(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.clone()
    }
}

struct Api {
    http: reqwest::Client,
    token: String,
}

impl Api {
    async fn get(&self, host: &Host, path: &str) -> reqwest::Result<Value> {
        self.http
            .get(format!("{}{path}", host.endpoint))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .json()
            .await
    }

    async fn cluster(&self, host: &Host) -> Value {
        self.get(host, "/v1/cluster").await.unwrap_or(Value::Null)
    }

    async fn ticket(&self, host: &Host, ttl_s: u64) -> String {
        self.ticket_expiring(host, ttl_s).await.0
    }

    /// A ticket and the time (Unix ms) it expires.
    async fn ticket_expiring(&self, host: &Host, ttl_s: u64) -> (String, u64) {
        let r: Value = self
            .http
            .post(format!("{}/v1/tickets", host.endpoint))
            .bearer_auth(&self.token)
            .json(&json!({ "ttl_s": ttl_s }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ticket = r["ticket"].as_str().expect("a ticket").to_owned();
        (ticket, r["expires_unix_ms"].as_u64().expect("an expiry"))
    }

    async fn put_function(&self, host: &Host, name: &str, artifact: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/functions", host.endpoint))
            .bearer_auth(&self.token)
            .json(&json!({"name": name, "artifact": artifact, "deadline_ms": 5000}))
            .send()
            .await
            .unwrap()
    }

    /// Waits until `host` sees `pred` hold of the cluster view.
    async fn wait(&self, host: &Host, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.cluster(host).await;
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < until, "{what}: last view {v:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn h(hosts: &[Option<Host>], i: usize) -> &Host {
    hosts[i - 1].as_ref().expect("host running")
}

fn members(v: &Value) -> Vec<Value> {
    v["members"].as_array().cloned().unwrap_or_default()
}

fn member(v: &Value, id: &str) -> Value {
    members(v)
        .into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or(Value::Null)
}

fn roles(v: &Value) -> Vec<(String, String)> {
    members(v)
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or("?").to_owned(),
                m["role"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_functions_survive_the_leader_and_add_learners() {
    let root = tempfile::tempdir().unwrap();
    let h1 = Host::start(&root.path().join("h1"), &["--init"], None).unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        token: h1.token.clone().expect("the founder prints the token"),
    };
    let mut hosts = vec![Some(h1)];
    for i in 2..=3 {
        let ticket = api.ticket(hosts[0].as_ref().unwrap(), 600).await;
        let dir = root.path().join(format!("h{i}"));
        hosts.push(Some(Host::start(&dir, &[], Some(&ticket)).unwrap()));
    }
    let formed = api
        .wait(h(&hosts, 1), "three voters", |v| {
            members(v)
                .iter()
                .filter(|m| m["role"] == "voter" && m["state"] == "active")
                .count()
                == 3
        })
        .await;
    assert_eq!(formed["leader"], "n1");

    // Registered through host 1, invoked through host 3: runs on host 3's
    // node, which fetched the artifact from host 1 over QUIC.
    let r = api
        .http
        .put(format!("{}/v1/artifacts/echo", h(&hosts, 1).endpoint))
        .bearer_auth(&api.token)
        .body(common::guest("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        api.put_function(h(&hosts, 1), "echo", "echo")
            .await
            .status(),
        201
    );
    let r = api
        .http
        .post(format!(
            "{}/v1/functions/echo/invoke",
            h(&hosts, 3).endpoint
        ))
        .bearer_auth(&api.token)
        .body("across hosts")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let r = (headers, body);
    assert_eq!(r.0["spillway-node"], "n3");
    assert_eq!(r.1, "across hosts");
    api.wait(h(&hosts, 1), "residency lists host 3", |v| {
        member(v, "n3")["resident_artifacts"] == 1
    })
    .await;

    // kill -9 of the leader's sidecar (the host process; its node follows).
    let before = api.cluster(h(&hosts, 1)).await;
    let old_applied = before["applied_index"].as_u64().unwrap();
    let leader_dir = hosts[0].take().unwrap().kill9();
    let killed = Instant::now();
    let view = api
        .wait(h(&hosts, 2), "a new leader", |v| {
            v["leader"].is_string() && v["leader"] != "n1"
        })
        .await;
    let elected = killed.elapsed();
    eprintln!("new leader {} after {elected:?}", view["leader"]);
    assert!(
        elected < Duration::from_secs(3),
        "election took {elected:?}"
    );

    // Writes continue, through either survivor; enough of them that the
    // log is compacted past what the old leader holds.
    for i in 0..45 {
        let via = h(&hosts, 2 + i % 2);
        let r = api.put_function(via, &format!("f{i}"), "echo").await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let leader_view = api
        .wait(h(&hosts, 2), "compaction", |v| {
            v["purged_index"].as_u64().is_some_and(|p| p > old_applied)
        })
        .await;
    let target = leader_view["committed_index"].as_u64().unwrap();

    // The old leader restarts and catches up, from a snapshot.
    hosts[0] = Some(Host::start(&leader_dir, &[], None).unwrap());
    let caught = api
        .wait(h(&hosts, 1), "the old leader catches up", |v| {
            v["applied_index"].as_u64().is_some_and(|a| a >= target)
        })
        .await;
    assert!(
        caught["snapshot_index"]
            .as_u64()
            .is_some_and(|s| s > old_applied),
        "caught up from a snapshot: {caught:#}"
    );
    let functions = api.get(h(&hosts, 1), "/v1/functions").await.unwrap();
    assert_eq!(functions.as_array().unwrap().len(), 46);

    // A 4th and 5th host join as learners (3 voters is the default).
    for i in 4..=5 {
        let ticket = api.ticket(h(&hosts, 2), 600).await;
        let dir = root.path().join(format!("h{i}"));
        hosts.push(Some(Host::start(&dir, &[], Some(&ticket)).unwrap()));
    }
    let view = api
        .wait(h(&hosts, 2), "two learners", |v| {
            members(v)
                .iter()
                .filter(|m| m["role"] == "learner" && m["state"] == "active")
                .count()
                == 2
        })
        .await;
    eprintln!("roles: {:?}", roles(&view));
    assert_eq!(
        members(&view)
            .iter()
            .filter(|m| m["role"] == "voter")
            .count(),
        3
    );
    // A learner serves reads of the log too.
    let on_learner = api
        .wait(h(&hosts, 5), "the learner has the functions", |v| {
            v["applied_index"].as_u64().is_some_and(|a| a >= target)
        })
        .await;
    assert_eq!(on_learner["cluster_id"], view["cluster_id"]);

    // Nothing logged contains the admin token, a ticket or a private key.
    drop(hosts);
    let mut secrets = vec![api.token.clone()];
    for i in 1..=5 {
        let pem = std::fs::read_to_string(root.path().join(format!("h{i}/sidecar/identity.pem")))
            .unwrap();
        secrets.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::to_owned),
        );
    }
    for i in 1..=5 {
        let log = std::fs::read_to_string(root.path().join(format!("h{i}/host.log"))).unwrap();
        assert!(!log.contains("swj1_"), "a ticket was logged by host {i}");
        for s in &secrets {
            assert!(!log.contains(s.as_str()), "a secret was logged by host {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_expired_and_foreign_tickets_are_refused_with_their_reason() {
    let root = tempfile::tempdir().unwrap();
    let a = Host::start(&root.path().join("a1"), &["--init"], None).unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        token: a.token.clone().unwrap(),
    };

    let ticket = api.ticket(&a, 600).await;
    let _a2 = Host::start(&root.path().join("a2"), &[], Some(&ticket)).unwrap();
    let err = Host::start(&root.path().join("a3"), &[], Some(&ticket)).unwrap_err();
    assert!(err.contains("ticket_already_used"), "{err}");

    let (short, expires_unix_ms) = api.ticket_expiring(&a, 1).await;
    let until = Instant::now() + Duration::from_secs(5);
    while unix_ms() <= expires_unix_ms {
        assert!(Instant::now() < until, "the clock did not pass the expiry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = Host::start(&root.path().join("a4"), &[], Some(&short)).unwrap_err();
    assert!(err.contains("ticket_expired"), "{err}");

    // A host of cluster B handed a ticket of cluster A.
    let b = Host::start(&root.path().join("b1"), &["--init"], None).unwrap();
    let b_dir = b.kill9();
    let fresh = api.ticket(&a, 600).await;
    let err = Host::start(&b_dir, &[], Some(&fresh)).unwrap_err();
    assert!(err.contains("wrong_cluster"), "{err}");

    // Garbage is named as such.
    let err = Host::start(&root.path().join("a5"), &[], Some("swj1_zz")).unwrap_err();
    assert!(err.contains("damaged"), "{err}");
}
