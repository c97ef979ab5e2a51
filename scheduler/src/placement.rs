//! Placement: run here, send to a peer, queue here, or refuse.
//!
//! Local first while this host's node has a free slot, or while its
//! expected wait is within [`PlacementPolicy::local_wait_bound_ms`].
//! Otherwise the peers that fit (active, a fresh load report with a free
//! slot, the accelerator and labels the job needs) are ranked by cost:
//! expected wait + cold start + round trip, plus a penalty on a host
//! without a GPU for a job that prefers one. Cold start follows residency:
//! the component not on the host's disk costs its transfer at the measured
//! rate plus compile; each of the job's weights not on its disk costs its
//! transfer, and, for a job that will use the host's GPU, each not loaded
//! on a GPU there (its load report says which are) costs its load. So a
//! burst goes preferably to a peer whose GPU already holds the weights. The first candidate is the
//! cheaper of two picked at random among those that fit (so many origins
//! acting on the same stale reports do not all pick the same peer); the
//! rest follow by cost, for the origin to try in turn when a peer refuses.
//! A peer is only worth it when its cost is below the local wait.
//!
//! When the job's tenant has used up its concurrency quota's share on this
//! host ([`TenantRoom::Exhausted`]), it cannot run or queue here: every
//! peer that could run it (accepting, the accelerator and labels it needs,
//! whatever its reported load, since each decides by its own share) is a
//! candidate, ranked by cost the same way, and the quota's refusal is the
//! fallback.

use crate::{Admission, AdmissionPolicy, LocalLoad, admit};
use spillway_proto::{Accelerator, Digest, JobSpec, NodeId, Refusal};
use spillway_topology::{ClusterView, HostView};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Placement settings. `Default`: no local wait tolerated while a peer has
/// room, reports stale after 1 s, 100 ms assumed per job until measured,
/// 100 MB/s assumed for fetches until measured, 4 GB/s for loading weights
/// onto a GPU, up to 3 peers tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementPolicy {
    pub admission: AdmissionPolicy,
    /// A local wait up to this long is preferred to any peer.
    pub local_wait_bound_ms: u64,
    /// A peer's load report older than this counts as unknown.
    pub stale_after: Duration,
    /// Assumed execution time while this host has measured none.
    pub default_exec_ms: u64,
    /// Assumed transfer rate while none has been measured.
    pub default_fetch_bytes_per_s: u64,
    /// Compiling an artifact: a fixed part and a part per MiB.
    pub compile_base_ms: u64,
    pub compile_ms_per_mib: u64,
    /// Loading weights from a host's disk onto its GPU (an H100 loaded
    /// 4 GiB at about 5.2 GB/s: docs/benchmarks.md).
    pub load_bytes_per_s: u64,
    /// Added to a GPU-less host's cost for a job that prefers a GPU.
    pub no_gpu_penalty_ms: u64,
    /// Peers tried, in order, before falling back.
    pub max_attempts: usize,
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        Self {
            admission: AdmissionPolicy::default(),
            local_wait_bound_ms: 0,
            stale_after: Duration::from_secs(1),
            default_exec_ms: 100,
            default_fetch_bytes_per_s: 100_000_000,
            compile_base_ms: 5,
            compile_ms_per_mib: 50,
            load_bytes_per_s: 4_000_000_000,
            no_gpu_penalty_ms: 1_000,
            max_attempts: 3,
        }
    }
}

/// What the scheduler needs to know of the job's artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArtifactFacts {
    /// The component's size.
    pub size: u64,
    /// The hosts where the component is resident.
    pub holders: BTreeSet<NodeId>,
    /// The job's weights (whether a host has them loaded on a GPU is in
    /// its load report).
    pub weights: Vec<WeightsFacts>,
}

/// One of the job's weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsFacts {
    pub digest: Digest,
    pub size: u64,
    /// The hosts that hold them on disk.
    pub holders: BTreeSet<NodeId>,
}

/// The scheduler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A local slot is free: run here now.
    Local,
    /// Wait in the local queue.
    Queue { position: u32 },
    /// Send to these peers, in order, until one accepts; if all refuse,
    /// do what `fallback` says.
    Peer {
        candidates: Vec<NodeId>,
        fallback: Fallback,
    },
    /// Accept nowhere.
    Refuse(Refusal),
}

/// Whether the job's tenant has room in its concurrency quota's share on
/// this host (a tenant without a quota always has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRoom {
    Here,
    /// Its share here is used up: only a peer, under its own share, may
    /// run the job; this is the refusal when none does.
    Exhausted(Refusal),
}

/// What the origin does when every candidate peer refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    Queue,
    Refuse(Refusal),
}

/// Decides where `job` runs. `now` judges report freshness; `pick` is a
/// random number (the caller draws it) for the two-choice pick.
pub fn place(
    job: &JobSpec,
    artifact: &ArtifactFacts,
    view: &ClusterView,
    local: &LocalLoad,
    policy: &PlacementPolicy,
    room: &TenantRoom,
    (now, pick): (Instant, u64),
) -> Decision {
    if let TenantRoom::Exhausted(refusal) = room {
        return beyond_the_quota(job, artifact, view, policy, refusal, pick);
    }
    let local_fits = local_fits(job, view, local);
    let local_admission = local_fits.then(|| admit(job, local, &policy.admission));
    if local_admission == Some(Admission::RunNow) {
        return Decision::Local;
    }
    // Only a host that would queue the job has a wait to beat.
    let local_wait = matches!(local_admission, Some(Admission::Queue { .. }))
        .then(|| local_wait_ms(local, policy));
    if let (Some(wait), Some(Admission::Queue { position })) = (local_wait, &local_admission)
        && wait <= policy.local_wait_bound_ms
    {
        return Decision::Queue {
            position: *position,
        };
    }
    // Running here on a CPU costs a GPU-preferring job what it costs on a
    // GPU-less peer, so the two compare fairly.
    let local_cost = local_wait.map(|wait| wait + gpu_penalty(job, local.has_gpu, policy));
    let mut ranked: Vec<(u64, NodeId)> = view
        .peers()
        .filter(|h| peer_fits(job, h, now, policy))
        .map(|h| (cost_ms(job, artifact, h, view, policy), h.id))
        .filter(|(cost, _)| local_cost.is_none_or(|local| *cost < local))
        .collect();
    let fallback = match &local_admission {
        Some(Admission::Queue { .. }) => Fallback::Queue,
        Some(Admission::Refuse(r)) => Fallback::Refuse(r.clone()),
        Some(Admission::RunNow) => unreachable!("returned above"),
        None => Fallback::Refuse(nowhere(job, view, local, policy)),
    };
    if ranked.is_empty() {
        return match (local_admission, fallback) {
            (Some(Admission::Queue { position }), _) => Decision::Queue { position },
            (_, Fallback::Refuse(r)) => Decision::Refuse(r),
            (_, Fallback::Queue) => unreachable!("a queue fallback comes from a queue admission"),
        };
    }
    ranked.sort();
    let first = two_choice(&ranked, pick);
    let chosen = ranked.remove(first);
    let candidates = std::iter::once(chosen)
        .chain(ranked)
        .take(policy.max_attempts.max(1))
        .map(|(_, id)| id)
        .collect();
    Decision::Peer {
        candidates,
        fallback,
    }
}

/// The tenant's share here is used up: every peer that could run the job,
/// by cost (the first of them the cheaper of two drawn), or the quota's
/// refusal when there is none.
fn beyond_the_quota(
    job: &JobSpec,
    artifact: &ArtifactFacts,
    view: &ClusterView,
    policy: &PlacementPolicy,
    refusal: &Refusal,
    pick: u64,
) -> Decision {
    let mut ranked: Vec<(u64, NodeId)> = view
        .peers()
        .filter(|h| {
            h.accepting
                && (job.accelerator != Accelerator::Required || h.gpus > 0)
                && h.has_labels(&job.placement)
        })
        .map(|h| (cost_ms(job, artifact, h, view, policy), h.id))
        .collect();
    if ranked.is_empty() {
        return Decision::Refuse(refusal.clone());
    }
    ranked.sort();
    let first = two_choice(&ranked, pick);
    let chosen = ranked.remove(first);
    Decision::Peer {
        candidates: std::iter::once(chosen)
            .chain(ranked)
            .map(|(_, id)| id)
            .collect(),
        fallback: Fallback::Refuse(refusal.clone()),
    }
}

/// Whether this host could run the job at all (accelerator, labels).
fn local_fits(job: &JobSpec, view: &ClusterView, local: &LocalLoad) -> bool {
    let labels_ok = job.placement.is_empty()
        || view
            .local_host()
            .is_some_and(|h| h.has_labels(&job.placement));
    let accelerator_ok = job.accelerator != Accelerator::Required || local.has_gpu;
    labels_ok && accelerator_ok
}

/// How long a newcomer would wait here for a slot.
fn local_wait_ms(local: &LocalLoad, policy: &PlacementPolicy) -> u64 {
    let slots = u64::from(local.slots.max(1));
    let busy = u64::from(local.running) + u64::from(local.queued);
    let ahead = (busy + 1).saturating_sub(slots);
    let mean = if local.mean_exec_ms == 0 {
        policy.default_exec_ms
    } else {
        local.mean_exec_ms
    };
    if !local.node_up {
        // A restarting node: at least one mean execution away.
        return (ahead.max(1) * mean).div_ceil(slots);
    }
    (ahead * mean).div_ceil(slots)
}

/// Whether peer `h` can take the job now, as far as this host knows.
fn peer_fits(job: &JobSpec, h: &HostView, now: Instant, policy: &PlacementPolicy) -> bool {
    let Some(load) = h.load.filter(|l| l.fresh(now, policy.stale_after)) else {
        return false; // unknown load: not a candidate
    };
    h.accepting
        && load.free() > 0
        && (job.accelerator != Accelerator::Required || h.gpus > 0)
        && h.has_labels(&job.placement)
}

/// Expected cost of running the job on peer `h`, in milliseconds.
fn cost_ms(
    job: &JobSpec,
    artifact: &ArtifactFacts,
    h: &HostView,
    view: &ClusterView,
    policy: &PlacementPolicy,
) -> u64 {
    // A fitting peer has a free slot: its expected wait is zero.
    let rate = if view.fetch_bytes_per_s == 0 {
        policy.default_fetch_bytes_per_s
    } else {
        view.fetch_bytes_per_s
    };
    let transfer = |size: u64| size.saturating_mul(1000) / rate.max(1);
    let component = if artifact.holders.contains(&h.id) {
        0
    } else {
        let compile = policy.compile_base_ms + (artifact.size >> 20) * policy.compile_ms_per_mib;
        transfer(artifact.size) + compile
    };
    // Weights are loaded onto a GPU only for a job that will use one there.
    let on_gpu = job.accelerator != Accelerator::None && h.gpus > 0;
    let loaded = h.load.map(|l| l.report.weights).unwrap_or_default();
    let weights: u64 = artifact
        .weights
        .iter()
        .map(|w| {
            let fetch = if w.holders.contains(&h.id) {
                0
            } else {
                transfer(w.size)
            };
            let load = if on_gpu && !loaded.contains(&w.digest) {
                w.size.saturating_mul(1000) / policy.load_bytes_per_s.max(1)
            } else {
                0
            };
            fetch + load
        })
        .sum();
    let cold = component + weights;
    let rtt = h.rtt.map_or(0, |d| d.as_millis() as u64);
    cold + rtt + gpu_penalty(job, h.gpus > 0, policy)
}

/// What running a GPU-preferring job on a host without a GPU costs extra.
fn gpu_penalty(job: &JobSpec, has_gpu: bool, policy: &PlacementPolicy) -> u64 {
    if job.accelerator == Accelerator::Preferred && !has_gpu {
        policy.no_gpu_penalty_ms
    } else {
        0
    }
}

/// The index of the cheaper of two entries of `ranked` (sorted by cost)
/// drawn at random by `pick`.
fn two_choice(ranked: &[(u64, NodeId)], pick: u64) -> usize {
    let n = ranked.len() as u64;
    if n == 1 {
        return 0;
    }
    let a = pick % n;
    let mut b = (pick / n) % (n - 1);
    if b >= a {
        b += 1;
    }
    let (a, b) = (a as usize, b as usize);
    // On a tie `a` wins: it is the uniformly random one.
    if ranked[b].0 < ranked[a].0 { b } else { a }
}

/// Why no host at all can take the job.
fn nowhere(
    job: &JobSpec,
    view: &ClusterView,
    local: &LocalLoad,
    policy: &PlacementPolicy,
) -> Refusal {
    let gpu_somewhere = local.has_gpu || view.peers().any(|h| h.gpus > 0);
    if job.accelerator == Accelerator::Required && !gpu_somewhere {
        return Refusal::NoAccelerator;
    }
    let labelled = view.hosts.iter().any(|h| h.has_labels(&job.placement));
    if !labelled {
        return Refusal::NoMatchingHost;
    }
    // Some peer could take it, but none has room now (or its load is
    // unknown): about one execution from now, one may.
    let mean = if local.mean_exec_ms == 0 {
        policy.default_exec_ms
    } else {
        local.mean_exec_ms
    };
    Refusal::NoHostFree {
        retry_after_ms: mean.clamp(policy.admission.min_retry_ms, policy.admission.max_retry_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::{Digest, TenantId};
    use spillway_topology::{LoadGossip, LoadSample};
    use std::collections::BTreeMap;

    const LOCAL: NodeId = NodeId(1);

    fn t0() -> Instant {
        // One instant for the whole table; reports are placed relative to it.
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(|| Instant::now() + Duration::from_secs(60))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn job(accelerator: Accelerator, placement: &[(&str, &str)]) -> JobSpec {
        JobSpec {
            tenant: TenantId::admin(),
            function: "f".into(),
            digest: Digest::of(b"f"),
            accelerator,
            deadline_ms: 10_000,
            memory_limit_bytes: 0,
            idempotent: false,
            placement: labels(placement),
            tenant_gpu_bytes: None,
            kernel_packs: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// A host with `free` of 4 slots free, reported `age_ms` ago.
    #[derive(Clone)]
    struct Peer {
        id: u64,
        free: u32,
        age_ms: Option<u64>,
        gpus: u32,
        accepting: bool,
        labels: &'static [(&'static str, &'static str)],
        rtt_ms: u64,
        /// Weights (see [`weights`]) loaded on its GPU, by number.
        loaded: &'static [u8],
    }

    fn peer(id: u64, free: u32) -> Peer {
        Peer {
            id,
            free,
            age_ms: Some(100),
            gpus: 0,
            accepting: true,
            labels: &[],
            rtt_ms: 1,
            loaded: &[],
        }
    }

    /// Weights number `n`'s digest.
    fn weights(n: u8) -> Digest {
        Digest::of(&[n])
    }

    impl Peer {
        fn view(&self) -> HostView {
            HostView {
                id: NodeId(self.id),
                accepting: self.accepting,
                gpus: self.gpus,
                labels: labels(self.labels),
                load: self.age_ms.map(|age| LoadSample {
                    report: LoadGossip {
                        incarnation: 1,
                        seq: 1,
                        slots: 4,
                        running: 4 - self.free,
                        queued: 0,
                        mean_exec_ms: 50,
                        node_up: true,
                        weights: spillway_topology::LoadedWeights::of(
                            self.loaded
                                .iter()
                                .map(|n| weights(*n))
                                .collect::<Vec<_>>()
                                .iter(),
                        ),
                    },
                    received: t0() - Duration::from_millis(age),
                }),
                rtt: Some(Duration::from_millis(self.rtt_ms)),
            }
        }
    }

    /// This host: 2 slots, `running` of them busy, `queued` waiting.
    fn local(running: u32, queued: u32) -> LocalLoad {
        LocalLoad {
            slots: 2,
            running,
            queued,
            node_up: true,
            has_gpu: false,
            mean_exec_ms: 100,
        }
    }

    struct Case {
        name: &'static str,
        job: JobSpec,
        local: LocalLoad,
        local_labels: &'static [(&'static str, &'static str)],
        peers: Vec<Peer>,
        /// Artifact size and the peers that hold it.
        artifact: (u64, &'static [u64]),
        /// The job's weights: number, size, the peers holding them on disk.
        weights: Vec<(u8, u64, &'static [u64])>,
        policy: PlacementPolicy,
        room: TenantRoom,
        want: Decision,
    }

    fn case(name: &'static str, local: LocalLoad, peers: Vec<Peer>, want: Decision) -> Case {
        Case {
            name,
            job: job(Accelerator::None, &[]),
            local,
            local_labels: &[],
            peers,
            // Warm on every peer unless a case says otherwise.
            artifact: (1 << 20, &[2, 3, 4, 5, 6, 7]),
            weights: Vec::new(),
            policy: PlacementPolicy {
                admission: AdmissionPolicy {
                    queue_capacity: 4,
                    ..AdmissionPolicy::default()
                },
                ..PlacementPolicy::default()
            },
            room: TenantRoom::Here,
            want,
        }
    }

    fn to(ids: &[u64], fallback: Fallback) -> Decision {
        Decision::Peer {
            candidates: ids.iter().map(|&i| NodeId(i)).collect(),
            fallback,
        }
    }

    fn run(c: &Case, pick: u64) -> Decision {
        let mut hosts = vec![HostView {
            id: LOCAL,
            accepting: true,
            gpus: u32::from(c.local.has_gpu),
            labels: labels(c.local_labels),
            load: None,
            rtt: None,
        }];
        hosts.extend(c.peers.iter().map(Peer::view));
        let view = ClusterView {
            local: LOCAL,
            hosts,
            fetch_bytes_per_s: 0,
        };
        let artifact = ArtifactFacts {
            size: c.artifact.0,
            holders: c.artifact.1.iter().map(|&i| NodeId(i)).collect(),
            weights: c
                .weights
                .iter()
                .map(|(n, size, holders)| WeightsFacts {
                    digest: weights(*n),
                    size: *size,
                    holders: holders.iter().map(|&i| NodeId(i)).collect(),
                })
                .collect(),
        };
        place(
            &c.job,
            &artifact,
            &view,
            &c.local,
            &c.policy,
            &c.room,
            (t0(), pick),
        )
    }

    #[test]
    fn placement_table() {
        // (4 queued + 1) × 100 ms over 2 slots.
        let queue_full = Refusal::QueueFull {
            retry_after_ms: 250,
        };
        let over_quota = Refusal::QuotaExceeded {
            retry_after_ms: 200,
        };
        let exhausted = |c: Case| Case {
            room: TenantRoom::Exhausted(over_quota.clone()),
            ..c
        };
        let cases = vec![
            exhausted(case(
                "the tenant's share here is used up: every peer that could run it, by cost, whatever its load",
                local(0, 0),
                vec![
                    Peer {
                        rtt_ms: 9,
                        ..peer(2, 4)
                    },
                    peer(3, 0),
                    Peer {
                        age_ms: None,
                        rtt_ms: 5,
                        ..peer(4, 4)
                    },
                    Peer {
                        accepting: false,
                        ..peer(5, 4)
                    },
                ],
                to(&[3, 4, 2], Fallback::Refuse(over_quota.clone())),
            )),
            Case {
                job: job(Accelerator::Required, &[("zone", "a")]),
                ..exhausted(case(
                    "beyond the quota, peers still need the accelerator and labels",
                    local(0, 0),
                    vec![
                        Peer {
                            gpus: 1,
                            labels: &[("zone", "a")],
                            ..peer(2, 4)
                        },
                        Peer {
                            labels: &[("zone", "a")],
                            ..peer(3, 4)
                        },
                        Peer {
                            gpus: 1,
                            ..peer(4, 4)
                        },
                    ],
                    to(&[2], Fallback::Refuse(over_quota.clone())),
                ))
            },
            exhausted(case(
                "the tenant's share here is used up and no peer could run it: the quota's refusal",
                local(0, 0),
                vec![Peer {
                    accepting: false,
                    ..peer(2, 4)
                }],
                Decision::Refuse(over_quota.clone()),
            )),
            case(
                "a free local slot runs here",
                local(1, 0),
                vec![peer(2, 4)],
                Decision::Local,
            ),
            case(
                "local full, a warm free peer: burst",
                local(2, 0),
                vec![peer(2, 4)],
                to(&[2], Fallback::Queue),
            ),
            Case {
                policy: PlacementPolicy {
                    local_wait_bound_ms: 500,
                    ..case("", local(0, 0), vec![], Decision::Local).policy
                },
                ..case(
                    "local full but the wait is within the bound: queue here",
                    local(2, 0),
                    vec![peer(2, 4)],
                    Decision::Queue { position: 0 },
                )
            },
            case(
                "a stale report counts as unknown: queue here",
                local(2, 1),
                vec![Peer {
                    age_ms: Some(5_000),
                    ..peer(2, 4)
                }],
                Decision::Queue { position: 1 },
            ),
            case(
                "no report yet: not a candidate",
                local(2, 0),
                vec![Peer {
                    age_ms: None,
                    ..peer(2, 4)
                }],
                Decision::Queue { position: 0 },
            ),
            case(
                "a full peer is not a candidate",
                local(2, 0),
                vec![peer(2, 0)],
                Decision::Queue { position: 0 },
            ),
            case(
                "a draining peer is not a candidate",
                local(2, 0),
                vec![Peer {
                    accepting: false,
                    ..peer(2, 4)
                }],
                Decision::Queue { position: 0 },
            ),
            case(
                "local queue full, a free peer: burst, else refuse",
                local(2, 4),
                vec![peer(2, 1)],
                to(&[2], Fallback::Refuse(queue_full.clone())),
            ),
            case(
                "local queue full, no free peer: refuse",
                local(2, 4),
                vec![peer(2, 0)],
                Decision::Refuse(queue_full.clone()),
            ),
            case(
                "local node down: a free peer first, else wait for the node",
                LocalLoad {
                    node_up: false,
                    ..local(0, 0)
                },
                vec![peer(2, 2)],
                to(&[2], Fallback::Queue),
            ),
            Case {
                job: job(Accelerator::Required, &[]),
                ..case(
                    "GPU required, none here, a GPU peer has room: burst",
                    local(0, 0),
                    vec![
                        peer(2, 4),
                        Peer {
                            gpus: 1,
                            ..peer(3, 1)
                        },
                    ],
                    to(
                        &[3],
                        Fallback::Refuse(Refusal::NoHostFree {
                            retry_after_ms: 100,
                        }),
                    ),
                )
            },
            Case {
                job: job(Accelerator::Required, &[]),
                ..case(
                    "GPU required, a GPU peer but full: refuse, retry later",
                    local(0, 0),
                    vec![Peer {
                        gpus: 1,
                        ..peer(2, 0)
                    }],
                    Decision::Refuse(Refusal::NoHostFree {
                        retry_after_ms: 100,
                    }),
                )
            },
            Case {
                job: job(Accelerator::Required, &[]),
                ..case(
                    "GPU required, no GPU anywhere: refuse",
                    local(0, 0),
                    vec![peer(2, 4)],
                    Decision::Refuse(Refusal::NoAccelerator),
                )
            },
            Case {
                job: job(Accelerator::Preferred, &[]),
                ..case(
                    "GPU preferred: the GPU peer before the CPU one",
                    local(2, 0),
                    vec![
                        peer(2, 4),
                        Peer {
                            gpus: 1,
                            ..peer(3, 4)
                        },
                    ],
                    to(&[3, 2], Fallback::Queue),
                )
            },
            Case {
                job: job(Accelerator::None, &[("zone", "b")]),
                local_labels: &[("zone", "a")],
                ..case(
                    "labels: only the peer in zone b; this host cannot run it",
                    local(0, 0),
                    vec![
                        Peer {
                            labels: &[("zone", "a")],
                            ..peer(2, 4)
                        },
                        Peer {
                            labels: &[("zone", "b")],
                            ..peer(3, 4)
                        },
                    ],
                    to(
                        &[3],
                        Fallback::Refuse(Refusal::NoHostFree {
                            retry_after_ms: 100,
                        }),
                    ),
                )
            },
            Case {
                job: job(Accelerator::None, &[("zone", "c")]),
                ..case(
                    "labels nobody carries: refuse",
                    local(0, 0),
                    vec![peer(2, 4)],
                    Decision::Refuse(Refusal::NoMatchingHost),
                )
            },
            Case {
                artifact: (64 << 20, &[3]),
                ..case(
                    "the warm peer before the cold one",
                    local(2, 4),
                    vec![peer(2, 4), peer(3, 4)],
                    to(&[3, 2], Fallback::Refuse(queue_full.clone())),
                )
            },
            case(
                "the near peer before the far one",
                local(2, 0),
                vec![
                    Peer {
                        rtt_ms: 40,
                        ..peer(2, 4)
                    },
                    peer(3, 4),
                ],
                to(&[3, 2], Fallback::Queue),
            ),
            Case {
                artifact: (64 << 20, &[]),
                ..case(
                    "a peer costlier than the local wait: queue here",
                    local(2, 0),
                    vec![peer(2, 4)],
                    Decision::Queue { position: 0 },
                )
            },
            // Weights of 2 GB: 20 s to fetch at the default 100 MB/s, 0.5 s
            // to load onto a GPU at 4 GB/s.
            Case {
                job: job(Accelerator::Required, &[]),
                weights: vec![(1, 2_000_000_000, &[3, 4])],
                ..case(
                    "weights: the GPU that holds them first, then one that has them on disk, then one that must fetch them",
                    local(2, 0),
                    vec![
                        Peer {
                            gpus: 1,
                            ..peer(2, 4)
                        },
                        Peer {
                            gpus: 1,
                            ..peer(3, 4)
                        },
                        Peer {
                            gpus: 1,
                            loaded: &[1],
                            ..peer(4, 4)
                        },
                    ],
                    to(
                        &[4, 3, 2],
                        Fallback::Refuse(Refusal::NoHostFree {
                            retry_after_ms: 100,
                        }),
                    ),
                )
            },
            Case {
                job: job(Accelerator::None, &[]),
                weights: vec![(1, 2_000_000_000, &[3])],
                ..case(
                    "weights, CPU job: what a GPU holds does not matter, the disk does",
                    local(2, 0),
                    vec![
                        Peer {
                            gpus: 1,
                            loaded: &[1],
                            ..peer(2, 4)
                        },
                        peer(3, 4),
                    ],
                    to(&[3], Fallback::Queue),
                )
            },
            Case {
                job: job(Accelerator::Required, &[]),
                weights: vec![(1, 2_000_000_000, &[2, 3]), (2, 400_000_000, &[2, 3])],
                ..case(
                    "two weights: the peer holding the larger one loaded before the one holding the smaller",
                    local(2, 0),
                    vec![
                        Peer {
                            gpus: 1,
                            loaded: &[2],
                            ..peer(2, 4)
                        },
                        Peer {
                            gpus: 1,
                            loaded: &[1],
                            ..peer(3, 4)
                        },
                    ],
                    to(
                        &[3, 2],
                        Fallback::Refuse(Refusal::NoHostFree {
                            retry_after_ms: 100,
                        }),
                    ),
                )
            },
            case(
                "at most max_attempts candidates",
                local(2, 4),
                (2..=7).map(|i| peer(i, 4)).collect(),
                to(&[2, 3, 4], Fallback::Refuse(queue_full.clone())),
            ),
        ];
        for c in &cases {
            assert_eq!(run(c, 0), c.want, "case: {}", c.name);
        }
    }

    #[test]
    fn equal_peers_are_spread_by_the_two_choice_pick() {
        let c = case(
            "",
            local(2, 0),
            (2..=5).map(|i| peer(i, 4)).collect(),
            Decision::Local,
        );
        let firsts: BTreeSet<NodeId> = (0..64)
            .map(|pick| match run(&c, pick) {
                Decision::Peer { candidates, .. } => candidates[0],
                other => panic!("expected a burst, got {other:?}"),
            })
            .collect();
        assert_eq!(firsts.len(), 4, "every equal peer is sometimes first");
    }

    #[test]
    fn two_choice_takes_the_cheaper_of_the_two_drawn() {
        let ranked = [(1, NodeId(2)), (5, NodeId(3)), (9, NodeId(4))];
        for pick in 0..32 {
            let i = two_choice(&ranked, pick);
            // The most expensive entry can never win a draw of two.
            assert_ne!(i, 2, "pick {pick}");
        }
        assert_eq!(two_choice(&ranked[..1], 7), 0);
    }
}
