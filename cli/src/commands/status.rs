//! `spillway status`: the cluster at a glance, once or (`--watch`) redrawn
//! until interrupted.

use super::{client, print_json};
use crate::Target;
use crate::client::Client;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[arg(long)]
    json: bool,
    /// Redraw every `--every-ms` until interrupted (on a terminal, in
    /// place).
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    /// How often `--watch` redraws, in ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    every_ms: u64,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.target)?;
    if args.json {
        return print_json(&client.cluster().await?);
    }
    if !args.watch {
        print!("{}", view(&client).await?);
        return Ok(ExitCode::SUCCESS);
    }
    use std::io::IsTerminal as _;
    let terminal = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(args.every_ms));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        let frame = match view(&client).await {
            Ok(frame) => frame,
            // The host may be restarting: say so and keep watching.
            Err(e) => format!("{}: {e:#}\n", client.endpoint()),
        };
        if terminal {
            // Home, the frame, then clear what an older, longer one left.
            print!("\x1b[H{frame}\x1b[J");
        } else {
            println!("{frame}");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
}

/// One frame: the cluster as `client`'s host sees it.
async fn view(client: &Client) -> anyhow::Result<String> {
    let cluster = client.cluster().await?;
    // Digest to the names this token sees it under (others stay digests).
    let names: HashMap<String, String> = client
        .artifacts()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.digest, a.name))
        .collect();
    Ok(render(&cluster, &names))
}

/// The text of `spillway status` for `cluster` (`GET /v1/cluster`), naming
/// weights by `names` (digest to name).
fn render(cluster: &Value, names: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}  leader {}  term {}  commit {}  applied {} (on host {})",
        cluster["cluster_id"].as_str().unwrap_or("?"),
        cluster["leader"].as_str().unwrap_or("-"),
        cluster["term"],
        cluster["committed_index"],
        cluster["applied_index"],
        cluster["host"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        out,
        "{:<4} {:<8} {:<9} {:<8} {:<22} {:>5} {:>7} {:>6} {:>8} {:>8}  backends",
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
        let _ = writeln!(
            out,
            "{:<4} {:<8} {:<9} {:<8} {:<22} {:>5} {:>7} {:>6} {:>8} {:>8}  {}",
            m["id"].as_str().unwrap_or("?"),
            role,
            m["state"].as_str().unwrap_or("?"),
            match (m["healthy"] == true, m["node"]["up"] == true) {
                (true, _) => "ok",
                // Some executors up, not all.
                (false, true) => "degraded",
                (false, false) => "down",
            },
            m["http_addr"].as_str().unwrap_or("?"),
            m["slots"].to_string(),
            m["running"].to_string(),
            m["queued"].to_string(),
            m["node"]["restarts"].to_string(),
            m["resident_artifacts"].to_string(),
            backends.join(","),
        );
        // Its executors, where it runs several.
        let executors = m["node"]["executors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for e in executors.iter().filter(|_| executors.len() > 1) {
            let kept: Vec<&str> = (e["confined_to"].as_array().into_iter().flatten())
                .filter_map(|t| t.as_str())
                .collect();
            let _ = writeln!(
                out,
                "     executor {}: {} pid {}, {}/{} running, restarts {}, gpus {}{}",
                e["name"].as_str().unwrap_or("?"),
                if e["up"] == true { "up" } else { "down" },
                e["pid"],
                e["running"],
                e["slots"],
                e["restarts"],
                e["gpus"],
                match kept.is_empty() {
                    true => String::new(),
                    false => format!(", kept for {}", kept.join(",")),
                },
            );
        }
        // Its GPUs: how each is shared, and the tenants' caps there.
        for g in m["gpus"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "     {}", gpu_line(g));
        }
        // Weights resident on its GPUs, named as the cluster knows them.
        for w in m["node"]["weights_on_gpus"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let digest = w["digest"].as_str().unwrap_or("?");
            let _ = writeln!(
                out,
                "     gpu {}: weights {} ({:.1} MiB)",
                w["gpu"],
                names.get(digest).map_or(digest, String::as_str),
                w["bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20)
            );
        }
    }
    out
}

/// One GPU of a member: `gpu 0: H100, 80.0 GiB, 2 contexts (one shared,
/// kept for acme), mps; caps globex 64.0 MiB (11.0 used)`.
fn gpu_line(g: &serde_json::Value) -> String {
    let mib = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0) / f64::from(1 << 20);
    let iso = &g["isolation"];
    let sharing = if iso.is_null() {
        "isolation not recorded".to_owned()
    } else {
        let mut how = Vec::new();
        if iso["shared_context"] == true {
            how.push("one shared".to_owned());
        }
        for kept in iso["kept_for"].as_array().into_iter().flatten() {
            let tenants: Vec<&str> = (kept.as_array().into_iter().flatten())
                .filter_map(|t| t.as_str())
                .collect();
            how.push(format!("kept for {}", tenants.join("+")));
        }
        let mut line = format!("{} contexts ({})", iso["contexts"], how.join(", "));
        for driver in ["mps", "mig"] {
            if iso[driver] == true {
                line.push_str(", ");
                line.push_str(driver);
            }
        }
        line
    };
    let caps: Vec<String> = (g["tenants"].as_array().into_iter().flatten())
        .filter(|t| !t["cap_bytes"].is_null())
        .map(|t| {
            format!(
                "{} {:.1} MiB ({:.1} used)",
                t["tenant"].as_str().unwrap_or("?"),
                mib(&t["cap_bytes"]),
                mib(&t["used_bytes"])
            )
        })
        .collect();
    let mut line = format!(
        "gpu {}: {}, {:.1} GiB, {sharing}",
        g["index"],
        g["model"].as_str().unwrap_or("?"),
        mib(&g["memory_bytes"]) / 1024.0,
    );
    if !caps.is_empty() {
        line.push_str("; caps ");
        line.push_str(&caps.join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_frame_shows_every_member_and_names_its_weights() {
        let cluster = json!({
            "cluster_id": "sw-1", "leader": "n1", "term": 3, "committed_index": 40,
            "applied_index": 40, "host": "n2",
            "members": [
                {"id": "n1", "leader": true, "role": "voter", "state": "active", "healthy": true,
                 "http_addr": "10.0.0.1:7070", "slots": 8, "running": 2, "queued": 0,
                 "resident_artifacts": 3, "backends": ["cuda", "cpu"],
                 "gpus": [{"index": 0, "model": "H100", "memory_bytes": 85_899_345_920u64,
                   "isolation": {"contexts": 2, "shared_context": true, "kept_for": [["acme"]],
                                 "mps": true, "mig": false},
                   "tenants": [{"tenant": "globex", "cap_bytes": 67_108_864, "used_bytes": 11_534_336},
                               {"tenant": "acme", "cap_bytes": null, "used_bytes": 5}]}],
                 "node": {"up": true, "restarts": 0, "weights_on_gpus": [
                     {"gpu": 0, "digest": "abc", "bytes": 3_145_728}],
                     "executors": [{"name": "0", "up": true, "pid": 7}]}},
                {"id": "n3", "leader": false, "role": "voter", "state": "active", "healthy": false,
                 "http_addr": "10.0.0.3:7070", "slots": 3, "running": 1, "queued": 0,
                 "resident_artifacts": 3, "backends": ["cuda", "cpu"],
                 "node": {"up": true, "restarts": 1, "weights_on_gpus": [], "executors": [
                     {"name": "0", "up": false, "pid": null, "running": 0, "slots": 3,
                      "restarts": 1, "gpus": [0], "confined_to": []},
                     {"name": "1", "up": true, "pid": 42, "running": 1, "slots": 3,
                      "restarts": 0, "gpus": [1], "confined_to": ["acme"]}]}},
                {"id": "n2", "leader": false, "role": "learner", "state": "draining",
                 "healthy": false, "http_addr": "10.0.0.2:7070", "slots": null,
                 "running": null, "queued": null, "resident_artifacts": 0,
                 "backends": null, "node": null}
            ]
        });
        let names = HashMap::from([("abc".to_owned(), "tiny-lm".to_owned())]);
        let text = render(&cluster, &names);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "cluster sw-1  leader n1  term 3  commit 40  applied 40 (on host n2)"
        );
        assert!(
            lines[2].starts_with("n1   leader   active    ok       10.0.0.1:7070"),
            "{text}"
        );
        assert!(lines[2].ends_with("cuda,cpu"), "{text}");
        assert_eq!(
            lines[3],
            "     gpu 0: H100, 80.0 GiB, 2 contexts (one shared, kept for acme), mps; caps globex 64.0 MiB (11.0 used)"
        );
        assert_eq!(lines[4], "     gpu 0: weights tiny-lm (3.0 MiB)");
        assert!(
            lines[5].starts_with("n3   voter    active    degraded"),
            "{text}"
        );
        assert_eq!(
            lines[6],
            "     executor 0: down pid null, 0/3 running, restarts 1, gpus [0]"
        );
        assert_eq!(
            lines[7],
            "     executor 1: up pid 42, 1/3 running, restarts 0, gpus [1], kept for acme"
        );
        assert!(
            lines[8].starts_with("n2   learner  draining  down"),
            "{text}"
        );
        assert_eq!(lines.len(), 9);
    }
}
