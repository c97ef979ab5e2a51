//! The scenarios: a cluster, a load and a fault schedule each. Pure: the
//! schedule is a function of the seed, so `spillway chaos replay SEED`
//! applies the same faults at the same moments to the same hosts.

use crate::rng::SeededRng;
use crate::workload::WorkloadShape;
use serde::Serialize;

/// Whom a fault is aimed at; resolved when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Target {
    /// A host by index.
    Host(usize),
    /// Whoever leads at that moment.
    Leader,
    /// A host that does not lead at that moment (the lowest index).
    Follower,
    /// The host other than host 1 running the most jobs (waiting up to
    /// a second and a half for one to run any).
    BusyPeer,
    /// The host the last `Leader`, `Follower` or `BusyPeer` step resolved to.
    Previous,
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// `kill -9` the host's sidecar; its node exits with it.
    KillHost(Target),
    /// Start a killed host again from its directory (it rejoins).
    RestartHost(Target),
    /// `kill -9` the host's node only (every executor); its sidecar
    /// restarts it.
    KillNode(Target),
    /// `kill -9` one of the host's executors (node processes), by name;
    /// the others run on, and its sidecar restarts it.
    KillExecutor {
        host: Target,
        executor: &'static str,
    },
    /// `SIGSTOP` the host's sidecar and node.
    Pause(Target),
    /// `SIGCONT` them.
    Resume(Target),
    /// Cut the host off from every other host (the client still reaches
    /// it). Needs network namespaces.
    Isolate(Target),
    /// Drop what `from` sends to `to` (and back unless `one_way`).
    /// Needs network namespaces.
    Cut {
        from: Target,
        to: Target,
        one_way: bool,
    },
    /// Split the cluster in two: the leader and one follower on one side,
    /// every other host on the other. Needs network namespaces.
    SplitLeaderPair,
    /// Remove every partition.
    Heal,
}

impl Fault {
    pub fn needs_namespaces(&self) -> bool {
        matches!(
            self,
            Fault::Isolate(_) | Fault::Cut { .. } | Fault::SplitLeaderPair
        )
    }
}

/// A fault at a moment (ms after the load starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Step {
    pub at_ms: u64,
    pub fault: Fault,
}

/// A named scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub hosts: usize,
    pub slots: u32,
    /// Extra `spillway host` flags for every host.
    pub host_flags: &'static [&'static str],
    pub shape: WorkloadShape,
    schedule: fn(&mut SeededRng) -> Vec<Step>,
    /// Part of the short set CI runs.
    pub short: bool,
}

impl Scenario {
    /// The fault schedule for this seed, in time order.
    pub fn schedule(&self, rng: &SeededRng) -> Vec<Step> {
        let mut rng = rng.fork("faults");
        let mut steps = (self.schedule)(&mut rng);
        steps.sort_by_key(|s| s.at_ms);
        steps
    }

    pub fn needs_namespaces(&self) -> bool {
        self.schedule(&SeededRng::new(0))
            .iter()
            .any(|s| s.fault.needs_namespaces())
    }
}

/// The default load: six seconds of mixed jobs of 100 to 300 ms each
/// (about 2.5 ns a round), enough that hosts with one slot burst.
const LOAD: WorkloadShape = WorkloadShape {
    jobs: 48,
    spread_ms: 6_000,
    idempotent: 0.5,
    rounds: (40_000_000, 120_000_000),
    targets: &[],
    deadline_ms: None,
};

/// Jittered: `base` plus up to `spread` ms.
fn at(rng: &mut SeededRng, base: u64, spread: u64) -> u64 {
    base + rng.range(0, spread)
}

/// Every scenario, in the order `--scenario all` runs them.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "peer-killed-mid-job",
        about: "host 1 bursts to its peers; one peer is killed -9 while it runs burst jobs, then restarted",
        hosts: 3,
        slots: 1,
        host_flags: &[],
        shape: WorkloadShape {
            targets: &[0],
            ..LOAD
        },
        schedule: |rng| {
            let kill = at(rng, 1_500, 1_000);
            vec![
                Step {
                    at_ms: kill,
                    fault: Fault::KillHost(Target::BusyPeer),
                },
                Step {
                    at_ms: kill + 2_500,
                    fault: Fault::RestartHost(Target::Previous),
                },
            ]
        },
        short: true,
    },
    Scenario {
        name: "peer-restarted-after-a-long-run",
        about: "a peer that ran for a while is killed -9 and restarted while host 1 keeps bursting; bursts reach it again",
        hosts: 3,
        slots: 1,
        host_flags: &[],
        shape: WorkloadShape {
            jobs: 120,
            spread_ms: 16_000,
            targets: &[0],
            ..LOAD
        },
        schedule: |rng| {
            // Late, so the peer's earlier run sent many load reports.
            let kill = at(rng, 6_000, 1_000);
            vec![
                Step {
                    at_ms: kill,
                    fault: Fault::KillHost(Target::BusyPeer),
                },
                Step {
                    at_ms: kill + 1_000,
                    fault: Fault::RestartHost(Target::Previous),
                },
            ]
        },
        short: true,
    },
    Scenario {
        name: "leader-killed-burst",
        about: "the leader is killed -9 while the cluster bursts, then restarted",
        hosts: 3,
        slots: 1,
        host_flags: &[],
        shape: LOAD,
        schedule: |rng| {
            let kill = at(rng, 1_500, 1_000);
            vec![
                Step {
                    at_ms: kill,
                    fault: Fault::KillHost(Target::Leader),
                },
                Step {
                    at_ms: kill + 3_000,
                    fault: Fault::RestartHost(Target::Previous),
                },
            ]
        },
        short: false,
    },
    Scenario {
        name: "leader-minority",
        about: "the leader is partitioned into the minority, then healed",
        hosts: 3,
        slots: 1,
        host_flags: &[],
        shape: LOAD,
        schedule: |rng| {
            let cut = at(rng, 1_500, 1_000);
            vec![
                Step {
                    at_ms: cut,
                    fault: Fault::Isolate(Target::Leader),
                },
                Step {
                    at_ms: cut + 3_000,
                    fault: Fault::Heal,
                },
            ]
        },
        short: true,
    },
    Scenario {
        name: "leader-majority",
        about: "a follower is partitioned away; the leader keeps the majority; then healed",
        hosts: 3,
        slots: 1,
        host_flags: &[],
        shape: LOAD,
        schedule: |rng| {
            let cut = at(rng, 1_500, 1_000);
            vec![
                Step {
                    at_ms: cut,
                    fault: Fault::Isolate(Target::Follower),
                },
                Step {
                    at_ms: cut + 3_000,
                    fault: Fault::Heal,
                },
            ]
        },
        short: false,
    },
    Scenario {
        name: "one-way-cut",
        about: "one host's packets to another are dropped (one way), then healed",
        hosts: 3,
        slots: 1,
        host_flags: &[],
        shape: LOAD,
        schedule: |rng| {
            let cut = at(rng, 1_500, 1_000);
            let from = rng.pick(3);
            let to = (from + 1 + rng.pick(2)) % 3;
            vec![
                Step {
                    at_ms: cut,
                    fault: Fault::Cut {
                        from: Target::Host(from),
                        to: Target::Host(to),
                        one_way: true,
                    },
                },
                Step {
                    at_ms: cut + 3_000,
                    fault: Fault::Heal,
                },
            ]
        },
        short: false,
    },
    Scenario {
        name: "leader-pair-minority-5",
        about: "five voters split two against three, the leader in the two, then healed",
        hosts: 5,
        slots: 1,
        host_flags: &["--max-voters", "5"],
        shape: WorkloadShape { jobs: 60, ..LOAD },
        schedule: |rng| {
            let cut = at(rng, 1_500, 1_000);
            vec![
                Step {
                    at_ms: cut,
                    fault: Fault::SplitLeaderPair,
                },
                Step {
                    at_ms: cut + 3_000,
                    fault: Fault::Heal,
                },
            ]
        },
        short: false,
    },
    Scenario {
        name: "node-crash-loop",
        about: "one host's node is killed -9 four times in a row; its sidecar restarts it each time",
        hosts: 3,
        slots: 1,
        host_flags: &[],
        shape: LOAD,
        schedule: |rng| {
            let victim = Target::Host(rng.pick(3));
            let first = at(rng, 1_000, 1_000);
            (0..4)
                .map(|i| Step {
                    at_ms: first + i * 700,
                    fault: Fault::KillNode(victim),
                })
                .collect()
        },
        short: true,
    },
    Scenario {
        name: "executor-crash",
        about: "every host runs two executors; one host's executor 0 is killed -9 four times: only its jobs end, idempotent ones run again, executor 1 never stops",
        hosts: 3,
        slots: 1,
        host_flags: &["--executors", "cpu,cpu"],
        shape: LOAD,
        schedule: |rng| {
            let victim = Target::Host(rng.pick(3));
            let first = at(rng, 1_000, 1_000);
            (0..4)
                .map(|i| Step {
                    at_ms: first + i * 1_300,
                    fault: Fault::KillExecutor {
                        host: victim,
                        executor: "0",
                    },
                })
                .collect()
        },
        short: true,
    },
    Scenario {
        name: "lossy-links",
        about: "every host's QUIC datagrams: 10% lost, 5% duplicated, delayed 1-5 ms (reordered)",
        hosts: 3,
        slots: 1,
        host_flags: &["--chaos-faults", "loss=0.1,dup=0.05,delay=1ms,jitter=4ms"],
        shape: LOAD,
        schedule: |_| Vec::new(),
        short: true,
    },
    Scenario {
        name: "paused-peer",
        about: "a peer running burst jobs is paused (SIGSTOP) past their 2 s deadline, then resumed; its late results are discarded",
        hosts: 3,
        slots: 1,
        host_flags: &[],
        shape: WorkloadShape {
            targets: &[0],
            deadline_ms: Some(2_000),
            ..LOAD
        },
        schedule: |rng| {
            let pause = at(rng, 1_500, 1_000);
            vec![
                Step {
                    at_ms: pause,
                    fault: Fault::Pause(Target::BusyPeer),
                },
                Step {
                    at_ms: pause + 3_500,
                    fault: Fault::Resume(Target::Previous),
                },
            ]
        },
        short: false,
    },
    Scenario {
        name: "rejoin-after-partition",
        about: "a host is partitioned away for 8 s while the log moves on (snapshots), then rejoins",
        hosts: 3,
        slots: 1,
        host_flags: &[],
        shape: WorkloadShape {
            spread_ms: 10_000,
            jobs: 80,
            ..LOAD
        },
        schedule: |rng| {
            let cut = at(rng, 1_000, 500);
            let victim = Target::Host(1 + rng.pick(2));
            vec![
                Step {
                    at_ms: cut,
                    fault: Fault::Isolate(victim),
                },
                Step {
                    at_ms: cut + 8_000,
                    fault: Fault::Heal,
                },
            ]
        },
        short: false,
    },
];

/// A scenario by name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_fixed_by_the_seed_and_ordered() {
        for s in ALL {
            let a = s.schedule(&SeededRng::new(3));
            assert_eq!(a, s.schedule(&SeededRng::new(3)), "{}", s.name);
            assert!(a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "{}", s.name);
            assert!(
                a.iter().all(|st| st.at_ms < s.shape.spread_ms),
                "{}: faults land inside the load",
                s.name
            );
        }
        let cuts: Vec<_> = (0..20)
            .map(|seed| find("one-way-cut").unwrap().schedule(&SeededRng::new(seed))[0])
            .collect();
        assert!(
            cuts.windows(2).any(|w| w[0] != w[1]),
            "seeds choose the pair"
        );
    }

    #[test]
    fn every_fault_that_breaks_something_is_undone() {
        for s in ALL {
            let steps = s.schedule(&SeededRng::new(11));
            let count = |f: fn(&Fault) -> bool| steps.iter().filter(|st| f(&st.fault)).count();
            assert_eq!(
                count(|f| matches!(f, Fault::KillHost(_))),
                count(|f| matches!(f, Fault::RestartHost(_))),
                "{}",
                s.name
            );
            assert_eq!(
                count(|f| matches!(f, Fault::Pause(_))),
                count(|f| matches!(f, Fault::Resume(_))),
                "{}",
                s.name
            );
            if s.needs_namespaces() {
                assert_eq!(steps.last().unwrap().fault, Fault::Heal, "{}", s.name);
            }
        }
    }

    #[test]
    fn names_are_unique_and_partitions_need_namespaces() {
        let names: std::collections::BTreeSet<_> = ALL.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), ALL.len());
        assert!(find("leader-minority").unwrap().needs_namespaces());
        assert!(!find("peer-killed-mid-job").unwrap().needs_namespaces());
    }
}
