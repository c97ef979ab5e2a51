//! What a run recorded: every attempt of every job with its outcome, the
//! faults as they happened, who each host said led in which term, every
//! execution the nodes journaled, and the cluster's state after healing.
//!
//! The invariants read only this, so each can be tested on a history with
//! a violation planted in it. Times are milliseconds since the run began.

use crate::workload::JobPlan;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One scenario run, start to end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub scenario: String,
    pub seed: u64,
    /// Each host's id (`n1`, …) by index.
    pub hosts: Vec<String>,
    pub jobs: Vec<JobRecord>,
    pub faults: Vec<FaultRecord>,
    /// Periods in which a host could not answer (killed, paused).
    pub outages: Vec<Outage>,
    pub leaders: Vec<LeaderObservation>,
    pub executions: Vec<Execution>,
    pub end: Option<FinalState>,
}

/// A job and every attempt made to get it done (an idempotent job is
/// retried under its key; any other is sent once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub plan: JobPlan,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub host: usize,
    pub sent_ms: u64,
    pub ended_ms: u64,
    pub outcome: Outcome,
}

/// What one HTTP request ended in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// 200: the body and the receipt.
    Completed {
        job_id: String,
        ran_on: String,
        burst: bool,
        replay: bool,
        body: String,
    },
    /// A typed error: a JSON body with a `code`.
    Error {
        status: u16,
        code: String,
        may_have_run: Option<bool>,
        job_id: Option<String>,
    },
    /// An answer that is neither (the contract says every end is typed).
    Untyped { status: u16, body: String },
    /// The connection failed or broke before an answer.
    Unanswered { reason: String },
    /// The connection stayed open and nothing came back in time.
    NoAnswer { waited_ms: u64 },
}

impl Outcome {
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Outcome::Completed { job_id, .. } => Some(job_id),
            Outcome::Error { job_id, .. } => job_id.as_deref(),
            _ => None,
        }
    }

    /// A refusal or failure that says the job never ran.
    pub fn never_ran(&self) -> bool {
        matches!(
            self,
            Outcome::Error {
                may_have_run: Some(false),
                ..
            }
        )
    }
}

/// A fault as the harness applied it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub at_ms: u64,
    /// What was done, with hosts by id (`kill -9 n2`, `partition n1 | n2 n3`).
    pub action: String,
    /// The hosts it touched (indexes).
    pub hosts: Vec<usize>,
    /// For faults aimed at the leader: who led when it was applied.
    pub leader_before: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    pub host: usize,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// One host's answer to "who leads?".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderObservation {
    pub at_ms: u64,
    pub host: usize,
    pub term: u64,
    pub leader: Option<String>,
}

/// One line of a node's execution journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub host: usize,
    pub job_id: String,
    pub input_digest: String,
    pub unix_ms: u64,
}

/// The cluster after the faults were healed and the load stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalState {
    /// When the last fault was healed.
    pub healed_ms: u64,
    /// How long after healing every host reported the same state (none:
    /// not within the bound).
    pub converged_after_ms: Option<u64>,
    pub bound_ms: u64,
    /// Each host's last report (by index).
    pub hosts: Vec<FinalHost>,
    /// How long after healing each host first ran a job (by index).
    pub served_after_ms: Vec<Option<u64>>,
    /// The residency table: digest → the hosts listed as holding it.
    pub residency: BTreeMap<String, Vec<String>>,
    /// What each host's node really holds on disk, checked by digest.
    pub held: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalHost {
    pub applied_index: Option<u64>,
    pub fingerprint: Option<String>,
}

impl History {
    /// The host's id, for messages.
    pub fn host(&self, index: usize) -> &str {
        self.hosts.get(index).map_or("?", String::as_str)
    }

    /// Whether `host` was down or paused at some point in `from..=to`.
    pub fn out_between(&self, host: usize, from: u64, to: u64) -> bool {
        self.outages
            .iter()
            .any(|o| o.host == host && o.from_ms <= to && from <= o.to_ms)
    }

    /// How often each input digest was journaled as started.
    pub fn runs_by_input(&self) -> BTreeMap<&str, usize> {
        let mut runs = BTreeMap::new();
        for e in &self.executions {
            *runs.entry(e.input_digest.as_str()).or_default() += 1;
        }
        runs
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A small clean history: every invariant holds on it; each
    //! invariant's tests plant one violation.
    use super::*;
    use crate::workload::JobPlan;

    pub(crate) fn plan(id: u64, idempotent: bool) -> JobPlan {
        JobPlan {
            id,
            at_ms: id * 10,
            host: 0,
            idempotent,
            rounds: 100,
            seed: 1000 + id,
            deadline_ms: None,
        }
    }

    fn completed(plan: &JobPlan, job_id: &str) -> Outcome {
        Outcome::Completed {
            job_id: job_id.into(),
            ran_on: "n2".into(),
            burst: true,
            replay: false,
            body: String::from_utf8(plan.expected()).unwrap(),
        }
    }

    pub(crate) fn clean() -> History {
        let once = plan(0, false);
        let retried = plan(1, true);
        let refused = plan(2, false);
        let executions = vec![
            Execution {
                host: 1,
                job_id: "j1".into(),
                input_digest: once.input_digest().to_hex(),
                unix_ms: 1,
            },
            // The idempotent job ran twice: its first executor was lost.
            Execution {
                host: 2,
                job_id: "j2".into(),
                input_digest: retried.input_digest().to_hex(),
                unix_ms: 2,
            },
            Execution {
                host: 1,
                job_id: "j3".into(),
                input_digest: retried.input_digest().to_hex(),
                unix_ms: 3,
            },
        ];
        History {
            scenario: "fixture".into(),
            seed: 7,
            hosts: vec!["n1".into(), "n2".into(), "n3".into()],
            jobs: vec![
                JobRecord {
                    attempts: vec![Attempt {
                        host: 0,
                        sent_ms: 0,
                        ended_ms: 30,
                        outcome: completed(&once, "j1"),
                    }],
                    plan: once,
                },
                JobRecord {
                    attempts: vec![
                        Attempt {
                            host: 0,
                            sent_ms: 10,
                            ended_ms: 40,
                            outcome: Outcome::Error {
                                status: 502,
                                code: "executor_lost".into(),
                                may_have_run: Some(true),
                                job_id: Some("j2".into()),
                            },
                        },
                        Attempt {
                            host: 1,
                            sent_ms: 40,
                            ended_ms: 90,
                            outcome: completed(&retried, "j3"),
                        },
                    ],
                    plan: retried,
                },
                JobRecord {
                    attempts: vec![Attempt {
                        host: 2,
                        sent_ms: 20,
                        ended_ms: 21,
                        outcome: Outcome::Error {
                            status: 503,
                            code: "queue_full".into(),
                            may_have_run: Some(false),
                            job_id: Some("j4".into()),
                        },
                    }],
                    plan: refused,
                },
            ],
            faults: vec![FaultRecord {
                at_ms: 35,
                action: "kill -9 n3".into(),
                hosts: vec![2],
                leader_before: None,
            }],
            outages: vec![Outage {
                host: 2,
                from_ms: 35,
                to_ms: 200,
            }],
            leaders: vec![
                LeaderObservation {
                    at_ms: 0,
                    host: 0,
                    term: 1,
                    leader: Some("n1".into()),
                },
                LeaderObservation {
                    at_ms: 0,
                    host: 1,
                    term: 1,
                    leader: Some("n1".into()),
                },
                LeaderObservation {
                    at_ms: 50,
                    host: 1,
                    term: 2,
                    leader: None,
                },
                LeaderObservation {
                    at_ms: 60,
                    host: 1,
                    term: 2,
                    leader: Some("n2".into()),
                },
            ],
            executions,
            end: Some(FinalState {
                healed_ms: 200,
                converged_after_ms: Some(120),
                bound_ms: 10_000,
                hosts: vec![
                    FinalHost {
                        applied_index: Some(40),
                        fingerprint: Some("ab".into()),
                    };
                    3
                ],
                served_after_ms: vec![Some(5), Some(5), Some(300)],
                residency: [("d1".to_owned(), vec!["n1".to_owned(), "n2".to_owned()])].into(),
                held: [
                    ("n1".to_owned(), ["d1".to_owned()].into()),
                    ("n2".to_owned(), ["d1".to_owned(), "d2".to_owned()].into()),
                    ("n3".to_owned(), BTreeSet::new()),
                ]
                .into(),
            }),
        }
    }
}
