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
    let client = client(&args.target)?;
    let cluster = client.cluster().await?;
    if args.json {
        return print_json(&cluster);
    }
    // Digest to the names this token sees it under (others stay digests).
    let names: std::collections::HashMap<String, String> = client
        .artifacts()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.digest, a.name))
        .collect();
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
        // Weights resident on its GPUs, named as the cluster knows them.
        for w in m["node"]["weights_on_gpus"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let digest = w["digest"].as_str().unwrap_or("?");
            println!(
                "     gpu {}: weights {} ({:.1} MiB)",
                w["gpu"],
                names.get(digest).map_or(digest, String::as_str),
                w["bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
