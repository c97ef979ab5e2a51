//! `spillway status`: the cluster at a glance.

use super::{client, print_json};
use crate::Target;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let cluster = client(&args.target).cluster().await?;
    if args.json {
        return print_json(&cluster);
    }
    println!(
        "cluster {}  leader {}  term {}  commit {}  applied {} (on host {})",
        cluster["cluster_id"].as_str().unwrap_or("?"),
        cluster["leader"].as_str().unwrap_or("-"),
        cluster["term"],
        cluster["committed_index"],
        cluster["applied_index"],
        cluster["host"].as_str().unwrap_or("?"),
    );
    println!(
        "{:<4} {:<8} {:<9} {:<7} {:<22} {:>5} {:>7} {:>6} {:>8} {:>8}  backends",
        "id",
        "role",
        "state",
        "health",
        "http",
        "slots",
        "running",
        "queued",
        "restarts",
        "resident"
    );
    for m in cluster["members"].as_array().into_iter().flatten() {
        let backends: Vec<&str> = m["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str())
            .collect();
        let role = if m["leader"] == true {
            "leader"
        } else {
            m["role"].as_str().unwrap_or("?")
        };
        println!(
            "{:<4} {:<8} {:<9} {:<7} {:<22} {:>5} {:>7} {:>6} {:>8} {:>8}  {}",
            m["id"].as_str().unwrap_or("?"),
            role,
            m["state"].as_str().unwrap_or("?"),
            if m["healthy"] == true { "ok" } else { "down" },
            m["http_addr"].as_str().unwrap_or("?"),
            m["slots"].to_string(),
            m["running"].to_string(),
            m["queued"].to_string(),
            m["node"]["restarts"].to_string(),
            m["resident_artifacts"].to_string(),
            backends.join(","),
        );
    }
    Ok(ExitCode::SUCCESS)
}
