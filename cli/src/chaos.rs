//! `spillway chaos`: run the chaos scenarios (the `spillway-chaos` crate)
//! against real hosts started from this binary, print a table, and exit
//! non-zero on any violation of the delivery contract.

use anyhow::{Context, bail};
use spillway_chaos::rng::SeededRng;
use spillway_chaos::scenario::{self, Scenario};
use spillway_chaos::{NetChoice, RunOptions, ScenarioReport, run_scenario};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ChaosCommand {
    /// Run scenarios with a seed (a random one when not given).
    Run(RunArgs),
    /// Run scenarios again with the seed a failing run printed: the same
    /// workload and the same faults at the same moments.
    Replay(ReplayArgs),
    /// Print what a seed does, without running it: each scenario's fault
    /// schedule and workload.
    Plan(ReplayArgs),
    /// List the scenarios.
    List,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// A scenario name, `all`, or `short` (the set CI runs).
    #[arg(long, default_value = "all")]
    scenario: String,
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    seed: u64,
    /// A scenario name, `all`, or `short`.
    #[arg(long, default_value = "all")]
    scenario: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// `auto` (namespaces when root), `loopback` or `namespaces`.
    #[arg(long, default_value = "auto", value_parser = parse_net)]
    net: NetChoice,
    /// Where hosts' directories, logs and each scenario's history.json go
    /// (default: a new directory under the system's temp dir, kept).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn parse_net(s: &str) -> Result<NetChoice, String> {
    match s {
        "auto" => Ok(NetChoice::Auto),
        "loopback" => Ok(NetChoice::Loopback),
        "namespaces" => Ok(NetChoice::Namespaces),
        other => Err(format!("{other:?}: expected auto, loopback or namespaces")),
    }
}

pub(crate) async fn run(cmd: ChaosCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ChaosCommand::List => {
            for s in scenario::ALL {
                let short = if s.short { " [short]" } else { "" };
                println!("{:<24} {}{short}", s.name, s.about);
            }
            Ok(ExitCode::SUCCESS)
        }
        ChaosCommand::Run(args) => {
            let seed = match args.seed {
                Some(s) => s,
                None => {
                    let mut b = [0u8; 8];
                    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("drawing a seed: {e}"))?;
                    u64::from_le_bytes(b) >> 16
                }
            };
            execute(&args.scenario, seed, args.common, false).await
        }
        ChaosCommand::Replay(args) => execute(&args.scenario, args.seed, args.common, true).await,
        ChaosCommand::Plan(args) => {
            for s in select(&args.scenario)? {
                print_plan(s, args.seed);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn select(name: &str) -> anyhow::Result<Vec<&'static Scenario>> {
    Ok(match name {
        "all" => scenario::ALL.iter().collect(),
        "short" => scenario::ALL.iter().filter(|s| s.short).collect(),
        one => match scenario::find(one) {
            Some(s) => vec![s],
            None => {
                let names: Vec<_> = scenario::ALL.iter().map(|s| s.name).collect();
                bail!(
                    "no scenario {one:?}; there are: all, short, {}",
                    names.join(", ")
                )
            }
        },
    })
}

/// A scenario's schedule and workload for `seed`.
fn print_plan(s: &Scenario, seed: u64) {
    let rng = SeededRng::new(seed).fork(s.name);
    println!("{} (seed {seed}): {}", s.name, s.about);
    for step in s.schedule(&rng) {
        println!("  at {:>5} ms  {:?}", step.at_ms, step.fault);
    }
    let jobs = spillway_chaos::workload::generate(&rng, s.hosts, &s.shape);
    let idempotent = jobs.iter().filter(|j| j.idempotent).count();
    let mut per_host = vec![0; s.hosts];
    for j in &jobs {
        per_host[j.host] += 1;
    }
    let digest =
        spillway_proto::Digest::of(&jobs.iter().flat_map(|j| j.input()).collect::<Vec<u8>>());
    println!(
        "  {} jobs ({idempotent} idempotent) over {} ms, per host {per_host:?}, inputs {}",
        jobs.len(),
        s.shape.spread_ms,
        &digest.to_hex()[..16]
    );
}

async fn execute(
    which: &str,
    seed: u64,
    common: Common,
    show_schedule: bool,
) -> anyhow::Result<ExitCode> {
    let scenarios = select(which)?;
    let dir = match common.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("spillway-chaos-{seed}-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let options = RunOptions {
        program: std::env::current_exe().context("locating the spillway binary")?,
        seed,
        net: common.net,
        dir: dir.clone(),
    };
    println!(
        "chaos: seed {seed}, {} scenario(s), runs under {}",
        scenarios.len(),
        dir.display()
    );
    let mut reports: Vec<ScenarioReport> = Vec::new();
    for s in scenarios {
        if show_schedule {
            print_plan(s, seed);
        }
        let report = run_scenario(s, &options)
            .await
            .with_context(|| format!("scenario {}", s.name))?;
        println!("{}", ScenarioReport::HEADER);
        println!("{}", report.row());
        for v in &report.violations {
            println!("  VIOLATION {v}");
        }
        reports.push(report);
    }
    println!();
    println!("{}", ScenarioReport::HEADER);
    for r in &reports {
        println!("{}", r.row());
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.scenario.as_str())
        .collect();
    if failed.is_empty() {
        println!("no violations (seed {seed})");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "violations in {}: replay with `spillway chaos replay {seed} --scenario {}`; histories under {}",
        failed.join(", "),
        failed[0],
        dir.display()
    );
    Ok(ExitCode::FAILURE)
}
