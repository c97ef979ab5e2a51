//! The host's executors: the node processes this sidecar runs jobs on,
//! one [`NodeLink`] each (one per GPU where the operator asks for it, so
//! a fault on one GPU ends only the jobs on that GPU's executor).
//!
//! A job takes a slot in the host's queue first (`queue`, over the slots
//! of every executor that is up), then an executor here
//! ([`Executors::assign`], by the pure [`choice::choose`]). What the rest
//! of the sidecar reads as "the node" ([`Executors::status`]) is every
//! executor's status merged: up while any is, their slots, GPUs, weights
//! and held artifacts together. Executors share one artifact store on
//! disk, so an artifact stored through one is there for all.
//!
//! What it is not: keeping each executor running (`supervisor`, one loop
//! per executor) or the frames to one executor (`link`).

pub(crate) mod choice;
mod gpu_share;
mod isolation;

pub(crate) use isolation::gpu_isolation;

use crate::link::{JobFailed, JobOutput, NodeLink, NodeStatus};
use crate::peer::ExecutorStatus;
use crate::spool::Spooled;
use choice::{Asking, Candidate, Choice};
use gpu_share::{ExecutorShares, Seen, ShareHeld};
use spillway_proto::{Digest, Execute, Failure, JobSpec, LoadReport, Refusal, TenantId};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// How often a job waiting for an executor looks again when nothing it
/// waits on tells it (an executor coming up).
const LOOK_AGAIN: Duration = Duration::from_millis(20);

/// One executor: its name, the tenants it is kept for and its link.
#[derive(Debug)]
pub(crate) struct Executor {
    pub(crate) name: String,
    /// The tenants the operator keeps it for; empty: shared.
    pub(crate) confined_to: Vec<TenantId>,
    pub(crate) link: Arc<NodeLink>,
}

/// Every executor of the host.
#[derive(Debug)]
pub(crate) struct Executors {
    list: Vec<Executor>,
    /// Jobs the sidecar has on each executor now.
    running: Mutex<Vec<u32>>,
    /// Told whenever a job leaves an executor.
    freed: Notify,
    /// Each capped tenant's host share of GPU memory, split among them.
    shares: Arc<ExecutorShares>,
}

/// A job's place on one executor, held until the job ends.
#[derive(Debug)]
pub(crate) struct Assigned<'a> {
    executors: &'a Executors,
    index: usize,
    /// The job's part of its tenant's split, once [`Assigned::fit`] gave
    /// it one; dropped (given back) with the job.
    share: Option<ShareHeld>,
}

impl Drop for Assigned<'_> {
    fn drop(&mut self) {
        self.executors.running.lock().expect("executors lock")[self.index] -= 1;
        self.executors.freed.notify_waiters();
    }
}

impl Assigned<'_> {
    pub(crate) fn executor(&self) -> &Executor {
        &self.executors.list[self.index]
    }

    /// `exec` as this executor runs it: a capped tenant's cap (its host's
    /// share of its GPU memory quota) becomes this executor's part of it,
    /// split among the executors the tenant may use (`gpu_share`), so that
    /// what the tenant holds on all of them, on any GPUs, stays within the
    /// host's share. The part is held until the job ends.
    pub(crate) fn fit(&mut self, exec: &mut Execute) {
        let tenant = &exec.spec.tenant;
        let Some(cap) = exec.spec.tenant_gpu_bytes else {
            self.executors.shares.forget(tenant);
            return;
        };
        let list = &self.executors.list;
        if list.len() == 1 {
            // Nothing to share the cap with.
            return;
        }
        let confined = list.iter().any(|e| e.confined_to.contains(tenant));
        let seen: Vec<Seen> = (list.iter().enumerate())
            .filter(|(_, e)| choice::tenancy_allows(tenant, &e.confined_to, confined))
            .map(|(i, e)| seen_on(i, &e.link.status(), tenant))
            .collect();
        let (part, held) =
            (self.executors.shares).take(tenant, cap, self.index as u64, &seen, Instant::now());
        exec.spec.tenant_gpu_bytes = Some(part);
        self.share = Some(held);
    }

    /// Runs the job on this executor, its chunks collected.
    pub(crate) async fn execute(&self, exec: Execute) -> Result<JobOutput, JobFailed> {
        self.executor().link.execute(exec).await
    }

    /// Runs the job on this executor, its chunks into `sink` as they come
    /// (`NodeLink::execute_into`).
    pub(crate) async fn execute_into(
        &self,
        exec: Execute,
        sink: &mpsc::Sender<Vec<u8>>,
    ) -> Result<JobOutput, JobFailed> {
        self.executor().link.execute_into(exec, sink).await
    }
}

impl Executors {
    pub(crate) fn new(list: Vec<Executor>) -> Self {
        assert!(!list.is_empty(), "a host has at least one executor");
        let running = Mutex::new(vec![0; list.len()]);
        Self {
            list,
            running,
            freed: Notify::new(),
            shares: Arc::default(),
        }
    }

    /// Each executor as `/v1/cluster` and peers show it.
    pub(crate) fn each(&self) -> Vec<ExecutorStatus> {
        let running = self.running.lock().expect("executors lock").clone();
        (self.list.iter().zip(running))
            .map(|(e, running)| {
                let s = e.link.status();
                let capabilities = s.capabilities.as_ref();
                ExecutorStatus {
                    name: e.name.clone(),
                    up: s.up,
                    pid: s.pid,
                    restarts: s.restarts,
                    slots: capabilities.map_or(0, |c| c.slots),
                    running,
                    gpus: capabilities
                        .map_or_else(Vec::new, |c| c.gpus.iter().map(|g| g.index).collect()),
                    confined_to: e.confined_to.clone(),
                    sharing: capabilities.map_or_else(Vec::new, |c| c.sharing.clone()),
                }
            })
            .collect()
    }

    /// Each capped tenant's part of the host's GPU memory share on each
    /// executor it may use, in bytes, as (tenant, executor name, bytes),
    /// once jobs of the tenant have been assigned (`gpu_share`).
    pub(crate) fn gpu_shares(&self) -> Vec<(TenantId, String, u64)> {
        (self.shares.all().into_iter())
            .flat_map(|(tenant, parts)| {
                (parts.into_iter())
                    .filter_map(|(at, bytes)| {
                        let name = &self.list.get(usize::try_from(at).ok()?)?.name;
                        Some((tenant.clone(), name.clone(), bytes))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How many executors are up, of how many.
    pub(crate) fn up(&self) -> (usize, usize) {
        let up = self.list.iter().filter(|e| e.link.status().up).count();
        (up, self.list.len())
    }

    /// Every executor's status merged: what the rest of the host reads as
    /// its node.
    pub(crate) fn status(&self) -> NodeStatus {
        merged(self.list.iter().map(|e| e.link.status()).collect())
    }

    /// The slots of every executor that ever said hello (up or not: a
    /// down one's jobs wait for it or for another), `None` before any did.
    pub(crate) fn slots(&self) -> Option<u32> {
        let known: Vec<u32> = (self.list.iter())
            .filter_map(|e| e.link.status().capabilities.map(|c| c.slots))
            .collect();
        (!known.is_empty()).then(|| known.iter().sum())
    }

    /// Whether `spec` may run on any executor at all, up or not (one that
    /// never said hello may have a GPU).
    fn has_a_home(&self, spec: &JobSpec) -> bool {
        let candidates: Vec<Candidate<'_>> = (self.list.iter())
            .map(|e| Candidate {
                up: true,
                slots: 1,
                running: 0,
                has_gpu: (e.link.status().capabilities).is_none_or(|c| !c.gpus.is_empty()),
                confined_to: &e.confined_to,
                weights_loaded: 0,
                lost_the_job: false,
                no_gpu_share: false,
            })
            .collect();
        choice::has_a_home(&asking(spec), &candidates)
    }

    /// An executor for `spec`, other than `avoid` (where it was lost
    /// before) when another can take it, waiting until `deadline` while
    /// every one it may use is down or busy; `None` if the deadline came
    /// first. Refused at once where no executor for its tenant can ever
    /// take it (it requires a GPU, and those with one are kept for other
    /// tenants).
    pub(crate) async fn assign(
        &self,
        spec: &JobSpec,
        avoid: Option<&str>,
        deadline: Instant,
    ) -> Result<Option<Assigned<'_>>, Refusal> {
        if !self.has_a_home(spec) {
            return Err(Refusal::NoAccelerator);
        }
        loop {
            // Registered before looking, so a job that ends in between
            // still wakes this one.
            let freed = self.freed.notified();
            if let Some(assigned) = self.assign_now(spec, avoid) {
                return Ok(Some(assigned));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let until = (tokio::time::Instant::now() + LOOK_AGAIN).min(deadline.into());
            tokio::select! {
                () = freed => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// An executor for a peer's burst job now, or `None`: it never waits.
    pub(crate) fn try_assign(&self, spec: &JobSpec) -> Option<Assigned<'_>> {
        self.assign_now(spec, None)
    }

    fn assign_now(&self, spec: &JobSpec, avoid: Option<&str>) -> Option<Assigned<'_>> {
        let statuses: Vec<NodeStatus> = self.list.iter().map(|e| e.link.status()).collect();
        let split = self.shares.of(&spec.tenant);
        let mut running = self.running.lock().expect("executors lock");
        let candidates: Vec<Candidate<'_>> = (self.list.iter().zip(&statuses))
            .zip(running.iter())
            .enumerate()
            .map(|(i, ((e, s), &running))| Candidate {
                lost_the_job: avoid == Some(e.name.as_str()),
                no_gpu_share: (split.as_ref())
                    .is_some_and(|split| !split.contains_key(&(i as u64))),
                ..candidate(e, s, running, spec)
            })
            .collect();
        match choice::choose(&asking(spec), &candidates) {
            Choice::Run(index) => {
                running[index] += 1;
                Some(Assigned {
                    executors: self,
                    index,
                    share: None,
                })
            }
            Choice::Wait => None,
        }
    }

    /// Waits until any executor is up, or `deadline`. Returns whether one
    /// is.
    pub(crate) async fn wait_up(&self, deadline: Instant) -> bool {
        let mut statuses: Vec<_> = self.list.iter().map(|e| e.link.subscribe()).collect();
        loop {
            if statuses.iter_mut().any(|s| s.borrow_and_update().up) {
                return true;
            }
            let changed =
                futures::future::select_all(statuses.iter_mut().map(|s| Box::pin(s.changed())));
            if tokio::time::timeout_at(deadline.into(), changed)
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// The first executor that is up, to store or read an artifact
    /// through (the store on disk is shared).
    fn any_up(&self) -> Option<&NodeLink> {
        self.list.iter().map(|e| &*e.link).find(|l| l.status().up)
    }

    /// Hands a spooled artifact to the executors' shared store
    /// (`NodeLink::put_artifact`, through one that is up).
    pub(crate) async fn put_artifact(&self, spooled: &Spooled) -> Result<(Digest, u64), Failure> {
        let link = self.any_up().ok_or_else(unavailable)?;
        let stored = link.put_artifact(spooled).await?;
        // The others find it on disk at its first use; they hold it now.
        for e in &self.list {
            e.link.note_stored(stored.0);
        }
        Ok(stored)
    }

    /// A chunk of a stored artifact (`NodeLink::read_artifact`).
    pub(crate) async fn read_artifact(
        &self,
        digest: Digest,
        offset: u64,
    ) -> Result<(u64, Vec<u8>), Failure> {
        let link = self.any_up().ok_or_else(unavailable)?;
        link.read_artifact(digest, offset).await
    }

    /// Whether the host holds the component and every kernel pack and
    /// weights file of `spec`.
    pub(crate) fn holds_all(&self, spec: &JobSpec) -> bool {
        let status = self.status();
        spec.artifacts().all(|d| status.held.contains(&d))
    }

    /// Forgets the artifact a job's `result` says its node lacks or
    /// discarded (`UnknownArtifact`, or `InvalidArtifact`: the job's
    /// component), so the residency loop reports it gone and the next job
    /// fetches a copy. Any job's, the host's own or a peer's.
    pub(crate) fn forget_what_failed(&self, spec: &JobSpec, result: &Result<JobOutput, JobFailed>) {
        match result {
            Err(JobFailed {
                failure: Failure::UnknownArtifact { digest },
                ..
            }) => self.forget_artifact(digest),
            Err(JobFailed {
                failure: Failure::InvalidArtifact { .. },
                ..
            }) => self.forget_artifact(&spec.digest),
            _ => {}
        }
    }

    /// An executor discarded its damaged copy of `digest`: the shared
    /// store no longer holds it.
    pub(crate) fn forget_artifact(&self, digest: &Digest) {
        for e in &self.list {
            e.link.forget_artifact(digest);
        }
    }
}

/// The bytes `tenant`'s jobs hold on an executor, as it last reported.
fn held_by(status: &NodeStatus, tenant: &TenantId) -> u64 {
    (status.tenant_gpu.iter())
        .find(|(t, _)| t == tenant)
        .map_or(0, |(_, bytes)| *bytes)
}

/// What executor `index` (status `status`) says of `tenant`'s GPU memory:
/// the bytes it holds (the larger of the ledger's buffers and weights and
/// its pools' use) and the bytes its cap refused.
fn seen_on(index: usize, status: &NodeStatus, tenant: &TenantId) -> Seen {
    let in_pools: u64 = (status.load.iter())
        .flat_map(|(load, _)| &load.gpu_memory)
        .flat_map(|g| &g.tenants)
        .filter(|p| &p.tenant == tenant)
        .map(|p| p.used_bytes)
        .sum();
    let refused = (status.tenant_gpu_refused.iter())
        .find(|(t, _)| t == tenant)
        .map_or(0, |(_, bytes)| *bytes);
    Seen {
        executor: index as u64,
        held: held_by(status, tenant).max(in_pools),
        refused,
    }
}

fn asking(spec: &JobSpec) -> Asking<'_> {
    Asking {
        tenant: &spec.tenant,
        accelerator: spec.accelerator,
    }
}

fn unavailable() -> Failure {
    Refusal::NodeUnavailable {
        retry_after_ms: 500,
    }
    .into()
}

/// What the choice needs of one executor for `spec`.
fn candidate<'a>(
    executor: &'a Executor,
    status: &NodeStatus,
    running: u32,
    spec: &JobSpec,
) -> Candidate<'a> {
    let capabilities = status.capabilities.as_ref();
    let loaded: BTreeSet<Digest> = (status.load.iter())
        .flat_map(|(load, _)| &load.weights)
        .map(|w| w.digest)
        .collect();
    Candidate {
        up: status.up,
        slots: capabilities.map_or(0, |c| c.slots),
        running,
        has_gpu: capabilities.is_some_and(|c| !c.gpus.is_empty()),
        confined_to: &executor.confined_to,
        weights_loaded: (spec.weights.iter())
            .filter(|w| loaded.contains(&w.digest))
            .count(),
        lost_the_job: false,
        no_gpu_share: false,
    }
}

/// Executors' statuses as one node's: up while any is; the slots, load,
/// GPUs and tenants' bytes of those up added or listed together (a GPU two
/// executors share once, its tenants' pools from both); the artifacts any
/// holds (the store is shared) and the restarts of all. With none up, the
/// first's as it stands. One executor's status is its own.
pub(crate) fn merged(mut statuses: Vec<NodeStatus>) -> NodeStatus {
    if statuses.len() == 1 {
        return statuses.pop().expect("one status");
    }
    let restarts = statuses.iter().map(|s| s.restarts).sum();
    let mut held = BTreeSet::new();
    for s in &statuses {
        held.extend(s.held.iter().copied());
    }
    let first_up = statuses.iter().position(|s| s.up).unwrap_or(0);
    let mut statuses = statuses.into_iter().skip(first_up);
    let mut all = statuses.next().unwrap_or_default();
    for s in statuses.filter(|s| s.up) {
        all.capabilities = match (all.capabilities.take(), s.capabilities) {
            (Some(mut a), Some(b)) => {
                a.slots += b.slots;
                for backend in b.backends {
                    if !a.backends.contains(&backend) {
                        a.backends.push(backend);
                    }
                }
                for gpu in b.gpus {
                    if !a.gpus.iter().any(|g| g.index == gpu.index) {
                        a.gpus.push(gpu);
                    }
                }
                for gpu in b.sharing {
                    if !a.sharing.iter().any(|g| g.gpu == gpu.gpu) {
                        a.sharing.push(gpu);
                    }
                }
                Some(a)
            }
            (a, b) => a.or(b),
        };
        all.load = match (all.load.take(), s.load) {
            (Some((a, at)), Some((b, bt))) => Some((merged_load(a, b), at.min(bt))),
            (a, b) => a.or(b),
        };
        all.tenant_gpu = Arc::new(per_tenant_sum(&all.tenant_gpu, &s.tenant_gpu));
        all.tenant_gpu_refused = Arc::new(per_tenant_sum(
            &all.tenant_gpu_refused,
            &s.tenant_gpu_refused,
        ));
    }
    all.restarts = restarts;
    if held.len() != all.held.len() {
        all.held = Arc::new(held);
    }
    all
}

/// Two executors' bytes per tenant, added up.
fn per_tenant_sum(a: &[(TenantId, u64)], b: &[(TenantId, u64)]) -> Vec<(TenantId, u64)> {
    let mut sum = a.to_vec();
    for (tenant, bytes) in b {
        match sum.iter_mut().find(|(t, _)| t == tenant) {
            Some((_, s)) => *s += bytes,
            None => sum.push((tenant.clone(), *bytes)),
        }
    }
    sum
}

fn merged_load(mut a: LoadReport, b: LoadReport) -> LoadReport {
    a.slots += b.slots;
    a.running += b.running;
    a.completed += b.completed;
    a.failed += b.failed;
    a.warm_starts += b.warm_starts;
    a.cold_starts += b.cold_starts;
    a.warm_ready += b.warm_ready;
    a.weights.extend(b.weights);
    for gpu in b.gpu_memory {
        match a.gpu_memory.iter_mut().find(|g| g.gpu == gpu.gpu) {
            Some(shared) => {
                shared.weights_bytes += gpu.weights_bytes;
                shared.tenants.extend(gpu.tenants);
                shared.tenants.sort_by(|x, y| x.tenant.cmp(&y.tenant));
            }
            None => a.gpu_memory.push(gpu),
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::{Backend, Capabilities, GpuDevice, GpuMemory, TenantGpuPool};

    fn up(slots: u32, gpus: &[u32], completed: u64) -> NodeStatus {
        NodeStatus {
            up: true,
            pid: Some(slots * 100),
            capabilities: Some(Capabilities {
                slots,
                backends: vec![Backend::Cpu],
                gpus: (gpus.iter())
                    .map(|&index| GpuDevice {
                        index,
                        model: "H100".into(),
                        memory_bytes: 80 << 30,
                        compute_capability: (9, 0),
                    })
                    .collect(),
                max_memory_bytes: 1 << 30,
                epoch_tick_ms: 10,
                sharing: Vec::new(),
            }),
            load: Some((
                LoadReport {
                    slots,
                    completed,
                    gpu_memory: (gpus.iter())
                        .map(|&gpu| GpuMemory {
                            gpu,
                            used_bytes: 1,
                            total_bytes: 80 << 30,
                            weights_bytes: 5,
                            tenants: Vec::new(),
                        })
                        .collect(),
                    ..LoadReport::default()
                },
                Instant::now(),
            )),
            held: Arc::new([Digest::of(&[slots as u8])].into()),
            restarts: 1,
            tenant_gpu: Arc::new(vec![(TenantId::admin(), 10)]),
            tenant_gpu_refused: Arc::new(vec![(TenantId::admin(), u64::from(slots))]),
        }
    }

    #[test]
    fn an_executor_shows_what_a_tenant_holds_and_was_refused_there() {
        let acme = TenantId("acme".into());
        let pool = |tenant: &TenantId, used_bytes| TenantGpuPool {
            tenant: tenant.clone(),
            cap_bytes: Some(64),
            reserved_bytes: used_bytes,
            used_bytes,
        };
        let with = |ledger, pools: Vec<TenantGpuPool>| NodeStatus {
            tenant_gpu: Arc::new(vec![(acme.clone(), ledger)]),
            tenant_gpu_refused: Arc::new(vec![(acme.clone(), 3)]),
            load: Some((
                LoadReport {
                    gpu_memory: vec![GpuMemory {
                        gpu: 0,
                        used_bytes: 0,
                        total_bytes: 80,
                        weights_bytes: 0,
                        tenants: pools,
                    }],
                    ..LoadReport::default()
                },
                Instant::now(),
            )),
            ..NodeStatus::default()
        };
        let other = TenantId("other".into());
        // (case, status, held)
        let cases = [
            ("the ledger's, larger", with(7, vec![pool(&acme, 5)]), 7),
            ("the pools', larger", with(7, vec![pool(&acme, 9)]), 9),
            ("another's pool not", with(7, vec![pool(&other, 90)]), 7),
        ];
        for (case, status, held) in cases {
            let seen = seen_on(2, &status, &acme);
            let want = Seen {
                executor: 2,
                held,
                refused: 3,
            };
            assert_eq!(seen, want, "{case}");
        }
        let nothing = seen_on(0, &NodeStatus::default(), &acme);
        assert_eq!((nothing.held, nothing.refused), (0, 0));
    }

    #[test]
    fn the_merged_status_adds_what_is_up_and_lists_each_gpu_once() {
        let down = NodeStatus {
            up: false,
            restarts: 2,
            held: Arc::new([Digest::of(b"d")].into()),
            ..NodeStatus::default()
        };
        let s = merged(vec![down.clone(), up(2, &[0], 3), up(4, &[0, 1], 5)]);
        assert!(s.up);
        assert_eq!(s.pid, Some(200), "the first executor that is up");
        assert_eq!(s.restarts, 4);
        assert_eq!(s.held.len(), 3, "what any holds, a down one's too");
        let c = s.capabilities.unwrap();
        assert_eq!(c.slots, 6, "the slots of those up");
        assert_eq!(c.backends, vec![Backend::Cpu]);
        let gpus: Vec<u32> = c.gpus.iter().map(|g| g.index).collect();
        assert_eq!(gpus, vec![0, 1], "a shared GPU once");
        let (load, _) = s.load.unwrap();
        assert_eq!((load.slots, load.completed), (6, 8));
        let memory: Vec<(u32, u64)> = (load.gpu_memory.iter())
            .map(|g| (g.gpu, g.weights_bytes))
            .collect();
        assert_eq!(
            memory,
            vec![(0, 10), (1, 5)],
            "both executors' weights on GPU 0"
        );
        assert_eq!(*s.tenant_gpu, vec![(TenantId::admin(), 20)]);
        assert_eq!(*s.tenant_gpu_refused, vec![(TenantId::admin(), 6)]);

        let none_up = merged(vec![down.clone(), down.clone()]);
        assert!(!none_up.up);
        assert_eq!(none_up.restarts, 4);
        let one = up(2, &[0], 3);
        let alone = merged(vec![one.clone()]);
        assert_eq!(
            (alone.capabilities, alone.held, alone.restarts),
            (one.capabilities, one.held, one.restarts),
            "one executor's status is its own"
        );
    }
}
