//! One scenario, run for real: form the cluster, publish the workload's
//! function, send the jobs while the fault schedule plays, heal, wait for
//! the cluster to converge and serve, gather the nodes' journals and
//! caches, and check the invariants.

use crate::cluster::{Cluster, ClusterError, HostSetup};
use crate::history::{
    Attempt, Execution, FaultRecord, FinalHost, FinalState, History, JobRecord, LeaderObservation,
    Outage, Outcome,
};
use crate::netns::NetLab;
use crate::report::ScenarioReport;
use crate::rng::SeededRng;
use crate::scenario::{Fault, Scenario, Step, Target};
use crate::workload::{self, JobPlan, ONCE_FUNCTION, RETRY_FUNCTION};
use serde_json::{Value, json};
use spillway_proto::Digest;
use spillway_sidecar::api::{Receipt, header};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The guest every job runs.
const SPIN_WAT: &str = include_str!("../../examples/guests/spin.wat");
/// The functions' deadline.
const DEADLINE_MS: u64 = 10_000;
/// How long past its deadline a client waits for an answer.
const GRACE_MS: u64 = 5_000;
/// How long after healing the cluster has to converge and serve.
const CONVERGE_BOUND_MS: u64 = 30_000;
/// How long the final residency table may take to catch up with what the
/// nodes hold (twelve of the residency loop's periods).
const RESIDENCY_SETTLE_MS: u64 = 3_000;
/// A node's execution journal, in its own folder.
const JOURNAL_FILE: &str = "executions.log";
/// Attempts an idempotent job gets.
const ATTEMPTS: usize = 4;
/// How often each host is asked who leads.
const OBSERVE_EVERY: Duration = Duration::from_millis(100);

/// Which network the hosts share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetChoice {
    /// Namespaces when running as root, loopback otherwise.
    Auto,
    Loopback,
    Namespaces,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `spillway` binary the hosts run.
    pub program: PathBuf,
    pub seed: u64,
    pub net: NetChoice,
    /// Where each scenario's hosts and history go.
    pub dir: PathBuf,
}

/// A run that could not be carried out (as opposed to one that found
/// violations, which is a [`ScenarioReport`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("network namespaces were asked for but cannot be used: {0}")]
    NoNamespaces(String),
}

/// Subnets handed out to runs in this process (each run builds its own).
static SUBNET: AtomicU8 = AtomicU8::new(0);

fn next_subnet() -> u8 {
    let base = (std::process::id() % 25) as u8 * 10;
    base.wrapping_add(SUBNET.fetch_add(1, Ordering::Relaxed) % 10) % 250
}

/// Runs `scenario` with `options.seed`.
pub async fn run_scenario(
    scenario: &Scenario,
    options: &RunOptions,
) -> Result<ScenarioReport, RunError> {
    let rng = SeededRng::new(options.seed).fork(scenario.name);
    let namespaces = match options.net {
        NetChoice::Loopback => Err("--net loopback".to_owned()),
        NetChoice::Namespaces => match NetLab::available() {
            Ok(()) => Ok(()),
            Err(why) => return Err(RunError::NoNamespaces(why)),
        },
        NetChoice::Auto => NetLab::available(),
    };
    let net_name = if namespaces.is_ok() {
        "namespaces"
    } else {
        "loopback"
    };
    if let (Err(why), true) = (&namespaces, scenario.needs_namespaces()) {
        let why = format!("partitions need network namespaces ({why})");
        return Ok(ScenarioReport::skipped(
            scenario.name,
            options.seed,
            net_name,
            Some(why),
        ));
    }
    let lab = match namespaces {
        Ok(()) => {
            Some(NetLab::build_free(next_subnet(), scenario.hosts).map_err(ClusterError::from)?)
        }
        Err(_) => None,
    };
    let dir = options.dir.join(scenario.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(ClusterError::from)?;
    let setup = HostSetup {
        program: options.program.clone(),
        slots: scenario.slots,
        flags: scenario.host_flags.iter().map(|f| f.to_string()).collect(),
    };
    tracing::info!(
        scenario = scenario.name,
        seed = options.seed,
        net = net_name,
        "forming the cluster"
    );
    let mut cluster = Cluster::form(&dir, scenario.hosts, setup, lab).await?;
    let outcome = drive(scenario, options.seed, &rng, &mut cluster).await;
    cluster.stop().await;
    let history = outcome?;
    let report = ScenarioReport::from_history(&history, net_name);
    let json = serde_json::to_vec_pretty(&history).expect("the history encodes");
    std::fs::write(dir.join("history.json"), json).map_err(ClusterError::from)?;
    Ok(report)
}

/// Shared by the job tasks, the observers and the fault driver.
#[derive(Debug)]
struct Recorder {
    start: Instant,
    http: reqwest::Client,
    token: String,
    endpoints: Vec<String>,
    seed: u64,
    leaders: Mutex<Vec<LeaderObservation>>,
    stop: AtomicBool,
}

impl Recorder {
    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

async fn drive(
    scenario: &Scenario,
    seed: u64,
    rng: &SeededRng,
    cluster: &mut Cluster,
) -> Result<History, RunError> {
    publish(cluster).await?;
    let n = cluster.hosts.len();
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        names.push(cluster.name_of(i).await?);
    }
    let jobs = workload::generate(rng, n, &scenario.shape);
    let steps = scenario.schedule(rng);
    let recorder = Arc::new(Recorder {
        start: Instant::now(),
        http: cluster.http.clone(),
        token: cluster.token.clone(),
        endpoints: cluster.hosts.iter().map(|h| h.endpoint()).collect(),
        seed,
        leaders: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let observers: Vec<_> = (0..n)
        .map(|i| tokio::spawn(observe(recorder.clone(), i)))
        .collect();
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|plan| tokio::spawn(send(recorder.clone(), plan)))
        .collect();
    let mut faults = Vec::new();
    let mut outages = Vec::new();
    apply_schedule(
        cluster,
        &recorder,
        &names,
        &steps,
        &mut faults,
        &mut outages,
    )
    .await?;
    let mut records = Vec::with_capacity(tasks.len());
    for t in tasks {
        records.push(t.await.expect("a job task does not panic"));
    }
    // Heal whatever the schedule left broken.
    cluster.restore().await?;
    if let Some(lab) = &mut cluster.net {
        lab.heal().map_err(ClusterError::from)?;
    }
    let healed_ms = recorder.ms();
    for o in outages
        .iter_mut()
        .filter(|o: &&mut Outage| o.to_ms == u64::MAX)
    {
        o.to_ms = healed_ms;
    }
    let end = settle(cluster, &recorder, &names, healed_ms).await;
    recorder.stop.store(true, Ordering::Relaxed);
    for o in observers {
        let _ = o.await;
    }
    let leaders = std::mem::take(&mut *recorder.leaders.lock().expect("leaders lock"));
    Ok(History {
        scenario: scenario.name.to_owned(),
        seed,
        executions: journals(cluster),
        hosts: names,
        jobs: records,
        faults,
        outages,
        leaders,
        end: Some(end),
    })
}

async fn publish(cluster: &Cluster) -> Result<(), RunError> {
    cluster
        .put_artifact("spin", SPIN_WAT.as_bytes().to_vec())
        .await?;
    for (name, idempotent) in [(ONCE_FUNCTION, false), (RETRY_FUNCTION, true)] {
        cluster
            .post(
                0,
                "/v1/functions",
                json!({"name": name, "artifact": "spin", "deadline_ms": DEADLINE_MS,
                       "idempotent": idempotent, "accelerator": "none"}),
            )
            .await?;
    }
    Ok(())
}

/// Asks host `i` who leads, every [`OBSERVE_EVERY`], until the run ends.
async fn observe(rec: Arc<Recorder>, i: usize) {
    let url = format!("{}/v1/cluster/local", rec.endpoints[i]);
    while !rec.stop.load(Ordering::Relaxed) {
        let answer = rec
            .http
            .get(&url)
            .bearer_auth(&rec.token)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        if let Ok(r) = answer
            && let Ok(v) = r.json::<Value>().await
            && let Some(term) = v["term"].as_u64()
        {
            let observation = LeaderObservation {
                at_ms: rec.ms(),
                host: i,
                term,
                leader: v["leader"].as_str().map(str::to_owned),
            };
            rec.leaders.lock().expect("leaders lock").push(observation);
        }
        tokio::time::sleep(OBSERVE_EVERY).await;
    }
}

/// Sends one job at its time; an idempotent job is retried under its key
/// at the next host while its outcome says it may be retried.
async fn send(rec: Arc<Recorder>, plan: JobPlan) -> JobRecord {
    tokio::time::sleep_until(rec.start + Duration::from_millis(plan.at_ms)).await;
    let mut attempts = Vec::new();
    let mut host = plan.host;
    let tries = if plan.idempotent { ATTEMPTS } else { 1 };
    for _ in 0..tries {
        let sent_ms = rec.ms();
        let outcome = invoke(&rec, host, &plan).await;
        let again = plan.idempotent && retryable(&outcome);
        attempts.push(Attempt {
            host,
            sent_ms,
            ended_ms: rec.ms(),
            outcome,
        });
        if !again {
            break;
        }
        host = (host + 1) % rec.endpoints.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    JobRecord { plan, attempts }
}

fn retryable(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Completed { .. } | Outcome::Untyped { .. } => false,
        Outcome::Error { status, .. } => matches!(status, 429 | 502 | 503),
        Outcome::Unanswered { .. } | Outcome::NoAnswer { .. } => true,
    }
}

async fn invoke(rec: &Recorder, host: usize, plan: &JobPlan) -> Outcome {
    let deadline = plan.deadline_ms.unwrap_or(DEADLINE_MS);
    let wait = Duration::from_millis(deadline + GRACE_MS);
    let mut request = rec
        .http
        .post(format!(
            "{}/v1/functions/{}/invoke",
            rec.endpoints[host],
            plan.function()
        ))
        .bearer_auth(&rec.token)
        .timeout(wait)
        .body(plan.input());
    if let Some(key) = plan.idempotency_key(rec.seed) {
        request = request.header(header::IDEMPOTENCY_KEY, key);
    }
    if let Some(ms) = plan.deadline_ms {
        request = request.header(header::DEADLINE_MS, ms.to_string());
    }
    let started = Instant::now();
    let transport = |e: reqwest::Error| match e.is_timeout() {
        true => Outcome::NoAnswer {
            waited_ms: started.elapsed().as_millis() as u64,
        },
        false => Outcome::Unanswered {
            reason: error_chain(&e),
        },
    };
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    let status = response.status().as_u16();
    let receipt = Receipt::read_from(response.headers());
    let job_id = response
        .headers()
        .get(header::JOB_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return transport(e),
    };
    if status == 200 {
        return match receipt {
            Ok(r) => Outcome::Completed {
                job_id: r.job_id,
                ran_on: r.node,
                burst: r.burst,
                replay: r.idempotent_replay,
                body: String::from_utf8_lossy(&body).into_owned(),
            },
            Err(e) => Outcome::Untyped {
                status,
                body: format!("a 200 without a receipt: {e}"),
            },
        };
    }
    // Errors are `{"error": {"code", "message", …}}`.
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v["error"]["code"].is_string() => Outcome::Error {
            status,
            code: v["error"]["code"].as_str().unwrap_or_default().to_owned(),
            may_have_run: v["error"]["may_have_run"].as_bool(),
            job_id: v["error"]["job_id"].as_str().map(str::to_owned).or(job_id),
        },
        _ => Outcome::Untyped {
            status,
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Plays the schedule against the cluster.
async fn apply_schedule(
    cluster: &mut Cluster,
    rec: &Recorder,
    names: &[String],
    steps: &[Step],
    faults: &mut Vec<FaultRecord>,
    outages: &mut Vec<Outage>,
) -> Result<(), RunError> {
    let mut previous = None;
    for step in steps {
        tokio::time::sleep_until(rec.start + Duration::from_millis(step.at_ms)).await;
        let leader = current_leader(cluster, names).await;
        let busy = match uses_busy_peer(step.fault) {
            true => Some(busiest_peer(cluster).await),
            false => None,
        };
        let mut resolve = |t: Target| -> usize {
            let host = match t {
                Target::Host(i) => i,
                Target::Leader => leader.unwrap_or(0),
                Target::Follower => (0..names.len()).find(|i| Some(*i) != leader).unwrap_or(1),
                Target::BusyPeer => busy.unwrap_or(1),
                Target::Previous => previous.unwrap_or(0),
            };
            if matches!(t, Target::Leader | Target::Follower | Target::BusyPeer) {
                previous = Some(host);
            }
            host
        };
        let aimed_at_leader = |t: Target| {
            matches!(t, Target::Leader)
                .then(|| leader.map(|l| names[l].clone()))
                .flatten()
        };
        let at_ms = rec.ms();
        let (action, hosts, leader_before) = match step.fault {
            Fault::KillHost(t) => {
                let i = resolve(t);
                cluster.kill(i).await?;
                outages.push(Outage {
                    host: i,
                    from_ms: at_ms,
                    to_ms: u64::MAX,
                });
                (format!("kill -9 {}", names[i]), vec![i], aimed_at_leader(t))
            }
            Fault::RestartHost(t) => {
                let i = resolve(t);
                cluster.restart(i).await?;
                close(outages, i, rec.ms());
                (format!("restart {}", names[i]), vec![i], None)
            }
            Fault::KillNode(t) => {
                let i = resolve(t);
                cluster.kill_node(i)?;
                (format!("kill -9 the node of {}", names[i]), vec![i], None)
            }
            Fault::KillExecutor { host, executor } => {
                let i = resolve(host);
                cluster.kill_executor(i, executor)?;
                (
                    format!("kill -9 executor {executor} of {}", names[i]),
                    vec![i],
                    None,
                )
            }
            Fault::Pause(t) => {
                let i = resolve(t);
                cluster.pause(i, true)?;
                outages.push(Outage {
                    host: i,
                    from_ms: at_ms,
                    to_ms: u64::MAX,
                });
                (format!("SIGSTOP {}", names[i]), vec![i], aimed_at_leader(t))
            }
            Fault::Resume(t) => {
                let i = resolve(t);
                cluster.pause(i, false)?;
                close(outages, i, rec.ms());
                (format!("SIGCONT {}", names[i]), vec![i], None)
            }
            Fault::Isolate(t) => {
                let i = resolve(t);
                lab(cluster)?.isolate(i).map_err(ClusterError::from)?;
                let others: Vec<&str> = (0..names.len())
                    .filter(|o| *o != i)
                    .map(|o| names[o].as_str())
                    .collect();
                (
                    format!("partition {} | {}", names[i], others.join(" ")),
                    vec![i],
                    aimed_at_leader(t),
                )
            }
            Fault::Cut { from, to, one_way } => {
                let (a, b) = (resolve(from), resolve(to));
                let lab = lab(cluster)?;
                lab.cut(a, b).map_err(ClusterError::from)?;
                if !one_way {
                    lab.cut(b, a).map_err(ClusterError::from)?;
                }
                let arrow = if one_way { "->" } else { "<->" };
                (
                    format!("drop {} {arrow} {}", names[a], names[b]),
                    vec![a, b],
                    None,
                )
            }
            Fault::SplitLeaderPair => {
                let l = leader.unwrap_or(0);
                let partner = (0..names.len()).find(|i| *i != l).unwrap_or(1);
                let side = [l, partner];
                lab(cluster)?.split(&side).map_err(ClusterError::from)?;
                let others: Vec<&str> = (0..names.len())
                    .filter(|o| !side.contains(o))
                    .map(|o| names[o].as_str())
                    .collect();
                (
                    format!(
                        "partition {} {} | {}",
                        names[l],
                        names[partner],
                        others.join(" ")
                    ),
                    side.to_vec(),
                    leader.map(|l| names[l].clone()),
                )
            }
            Fault::Heal => {
                lab(cluster)?.heal().map_err(ClusterError::from)?;
                ("heal".to_owned(), Vec::new(), None)
            }
        };
        tracing::info!(at_ms, %action, "fault");
        faults.push(FaultRecord {
            at_ms,
            action,
            hosts,
            leader_before,
        });
    }
    Ok(())
}

fn lab(cluster: &mut Cluster) -> Result<&mut NetLab, RunError> {
    cluster
        .net
        .as_mut()
        .ok_or_else(|| RunError::NoNamespaces("a partition step on loopback".into()))
}

fn close(outages: &mut [Outage], host: usize, at: u64) {
    for o in outages
        .iter_mut()
        .filter(|o| o.host == host && o.to_ms == u64::MAX)
    {
        o.to_ms = at;
    }
}

fn uses_busy_peer(fault: Fault) -> bool {
    match fault {
        Fault::KillHost(t)
        | Fault::KillNode(t)
        | Fault::KillExecutor { host: t, .. }
        | Fault::Pause(t)
        | Fault::Isolate(t) => t == Target::BusyPeer,
        _ => false,
    }
}

/// The host other than the first running the most jobs, once one runs any
/// (or after a second and a half, whichever runs most then).
async fn busiest_peer(cluster: &Cluster) -> usize {
    let until = Instant::now() + Duration::from_millis(1_500);
    loop {
        let mut best = (0, 1);
        for i in 1..cluster.hosts.len() {
            if let Ok(v) = cluster.get(i, "/v1/cluster/local").await {
                let running = v["running"].as_u64().unwrap_or(0);
                if running > best.0 {
                    best = (running, i);
                }
            }
        }
        if best.0 > 0 || Instant::now() > until {
            return best.1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader reported with the highest term by any running host.
async fn current_leader(cluster: &Cluster, names: &[String]) -> Option<usize> {
    let mut best: Option<(u64, String)> = None;
    for (i, h) in cluster.hosts.iter().enumerate() {
        if !h.running() || h.paused {
            continue;
        }
        let Ok(v) = cluster.get(i, "/v1/cluster/local").await else {
            continue;
        };
        if let (Some(term), Some(leader)) = (v["term"].as_u64(), v["leader"].as_str())
            && best.as_ref().is_none_or(|(t, _)| term > *t)
        {
            best = Some((term, leader.to_owned()));
        }
    }
    let (_, leader) = best?;
    names.iter().position(|n| *n == leader)
}

/// After healing: waits until every host reports the same state and runs
/// a job, then reads residency and what each node holds.
async fn settle(cluster: &Cluster, rec: &Recorder, names: &[String], healed_ms: u64) -> FinalState {
    let bound = Duration::from_millis(CONVERGE_BOUND_MS);
    let healed = Instant::now();
    let n = cluster.hosts.len();
    let mut last = vec![
        FinalHost {
            applied_index: None,
            fingerprint: None,
        };
        n
    ];
    let mut converged_after_ms = None;
    let mut residency = BTreeMap::new();
    while healed.elapsed() < bound {
        for (i, slot) in last.iter_mut().enumerate() {
            if let Ok(v) = cluster.get(i, "/v1/cluster/local").await {
                *slot = FinalHost {
                    applied_index: v["applied_index"].as_u64(),
                    fingerprint: v["state_fingerprint"].as_str().map(str::to_owned),
                };
                if i == 0 {
                    residency = residency_of(&v);
                }
            }
        }
        if last[0].fingerprint.is_some() && last.iter().all(|h| *h == last[0]) {
            converged_after_ms = Some(healed.elapsed().as_millis() as u64);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut served_after_ms = Vec::with_capacity(n);
    for i in 0..n {
        served_after_ms.push(probe(rec, i, healed, bound).await);
    }
    // Residency is reported by each host's loop (every 250 ms), after what
    // its node did: a copy discarded or stored a moment ago is in the log
    // a loop or two later. So the table is read again, with what the
    // nodes hold, until they agree or RESIDENCY_SETTLE_MS has passed; a
    // table that still names a host without the bytes then is a violation.
    let held_now = || -> BTreeMap<String, BTreeSet<String>> {
        names
            .iter()
            .zip(&cluster.hosts)
            .map(|(name, h)| (name.clone(), held(&h.dir.join("node").join("artifacts"))))
            .collect()
    };
    let mut held = held_now();
    let settle_until = Instant::now() + Duration::from_millis(RESIDENCY_SETTLE_MS);
    while !residency_agrees(&residency, &held) && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(v) = cluster.get(0, "/v1/cluster/local").await {
            residency = residency_of(&v);
        }
        held = held_now();
    }
    FinalState {
        healed_ms,
        converged_after_ms,
        bound_ms: CONVERGE_BOUND_MS,
        hosts: last,
        served_after_ms,
        residency,
        held,
    }
}

/// Whether every holder `residency` names holds the bytes.
fn residency_agrees(
    residency: &BTreeMap<String, Vec<String>>,
    held: &BTreeMap<String, BTreeSet<String>>,
) -> bool {
    residency.iter().all(|(digest, holders)| {
        holders
            .iter()
            .all(|h| held.get(h).is_some_and(|d| d.contains(digest)))
    })
}

fn residency_of(v: &Value) -> BTreeMap<String, Vec<String>> {
    v["residency"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(d, hosts)| {
                    let hosts = hosts
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|h| h.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    (d.clone(), hosts)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a fresh job on host `i`, kept there, until one completes; the
/// time after healing it took.
async fn probe(rec: &Recorder, i: usize, healed: Instant, bound: Duration) -> Option<u64> {
    let mut n = 0u64;
    while healed.elapsed() < bound {
        n += 1;
        let mut input = 1000u32.to_le_bytes().to_vec();
        input.extend_from_slice(&(u64::MAX - (i as u64) * 1_000_000 - n).to_le_bytes());
        let answer = rec
            .http
            .post(format!(
                "{}/v1/functions/{ONCE_FUNCTION}/invoke",
                rec.endpoints[i]
            ))
            .bearer_auth(&rec.token)
            .header(header::PLACEMENT, "local")
            .timeout(Duration::from_secs(5))
            .body(input)
            .send()
            .await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return Some(healed.elapsed().as_millis() as u64);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The digests of the artifacts in a node's cache whose bytes match their
/// name.
fn held(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".wasm")?.to_owned();
            let bytes = std::fs::read(e.path()).ok()?;
            (Digest::of(&bytes).to_hex() == name).then_some(name)
        })
        .collect()
}

/// Every line of every node's execution journal: a host's one node's in
/// its node folder, or each executor's in its own (`executors/NAME`).
fn journals(cluster: &Cluster) -> Vec<Execution> {
    cluster
        .hosts
        .iter()
        .flat_map(|h| {
            let node = h.dir.join("node");
            let executors = std::fs::read_dir(node.join("executors"))
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path());
            let texts: Vec<String> = std::iter::once(node.clone())
                .chain(executors)
                .filter_map(|d| std::fs::read_to_string(d.join(JOURNAL_FILE)).ok())
                .collect();
            let host = h.index;
            texts
                .iter()
                .flat_map(|t| t.lines())
                .filter_map(|line| {
                    let f: Vec<&str> = line.split(' ').collect();
                    (f.len() == 5).then(|| Execution {
                        host,
                        job_id: f[1].to_owned(),
                        input_digest: f[4].to_owned(),
                        unix_ms: f[0].parse().unwrap_or(0),
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residency_agrees_only_when_every_named_holder_holds_the_bytes() {
        let held: BTreeMap<String, BTreeSet<String>> = BTreeMap::from([
            (
                "n1".to_owned(),
                BTreeSet::from(["d1".to_owned(), "d2".to_owned()]),
            ),
            ("n2".to_owned(), BTreeSet::from(["d1".to_owned()])),
        ]);
        let table = |rows: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
            rows.iter()
                .map(|(d, hs)| (d.to_string(), hs.iter().map(|h| h.to_string()).collect()))
                .collect()
        };
        type Rows<'a> = &'a [(&'a str, &'a [&'a str])];
        let cases: [(Rows<'_>, bool); 5] = [
            (&[], true),
            (&[("d1", &["n1", "n2"])], true),
            (&[("d2", &["n1"])], true),
            (&[("d2", &["n1", "n2"])], false),
            (&[("d1", &["n3"])], false),
        ];
        for (rows, agrees) in cases {
            assert_eq!(residency_agrees(&table(rows), &held), agrees, "{rows:?}");
        }
    }
}
