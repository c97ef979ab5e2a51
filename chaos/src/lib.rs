//! The chaos harness: Spillway's delivery contract checked under real
//! faults.
//!
//! A run starts real `spillway host` processes (each in its own network
//! namespace when it runs as root, on loopback otherwise), sends a seeded
//! workload of jobs with known answers, applies a seeded fault schedule
//! (kill -9, restart, SIGSTOP, node crashes, partitions, lossy links),
//! records every request, outcome, fault, leader report and node
//! execution in a [`History`], heals, and checks the invariants over it.
//! `spillway chaos` is its command line.
//!
//! - pure: [`rng`], [`workload`], [`scenario`], [`history`],
//!   [`invariants`] (one file each), [`report`]; [`parsers`]: the checks
//!   the fuzz targets (`fuzz/`) run and CI replays over their corpus;
//! - I/O: [`netns`] (namespaces, bridge, blackhole routes), [`cluster`]
//!   (the processes and the faults on them), [`run`] (the run itself).
//!
//! It is a test tool: nothing here runs in a production host.

pub mod cluster;
pub mod history;
pub mod invariants;
pub mod netns;
pub mod parsers;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod workload;

pub use history::History;
pub use report::ScenarioReport;
pub use run::{NetChoice, RunError, RunOptions, run_scenario};
pub use scenario::Scenario;
