//! The chaos harness end to end, as CI runs it: the short scenario set
//! against real hosts (in network namespaces when the tests run as root,
//! on loopback otherwise, where the partition scenario reports itself
//! skipped), and replay printing the same schedule for the same seed.
//!
//! The seed is fixed so CI is repeatable; set `SPILLWAY_CHAOS_SEED` to
//! try another.

use crate::common;

use common::BIN;
use std::process::Command;

fn seed() -> String {
    std::env::var("SPILLWAY_CHAOS_SEED").unwrap_or_else(|_| "20261122".into())
}

#[test]
fn the_short_scenarios_keep_the_delivery_contract() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "chaos",
            "run",
            "--scenario",
            "short",
            "--seed",
            &seed(),
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Kept, with what each host logged of the violation's subject, so
        // a failure (in CI too) can be read after the fact.
        let kept = dir.keep();
        let logs = logs_about(&kept, &stdout);
        panic!(
            "chaos run failed (its folder kept: {}):\n{stdout}\n{stderr}\n{logs}",
            kept.display()
        );
    }
    assert!(stdout.contains("no violations"), "{stdout}");
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.is_empty())
        .filter(|l| !l.starts_with("scenario") && !l.is_empty())
        .collect();
    for name in [
        "peer-killed-mid-job",
        "peer-restarted-after-a-long-run",
        "leader-minority",
        "node-crash-loop",
        "executor-crash",
        "lossy-links",
    ] {
        let row = table
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"));
        if row.contains("skipped:") {
            // Only partitions may be skipped, and only without root.
            assert_eq!(name, "leader-minority", "{row}");
            continue;
        }
        let cols: Vec<&str> = row.split_whitespace().collect();
        // scenario net sent done refused failed unanswered lost dup …
        let sent: usize = cols[2].parse().unwrap();
        assert!(sent > 0, "{row}");
        assert_eq!(
            (cols[7], cols[8]),
            ("0", "0"),
            "nothing lost or duplicated: {row}"
        );
        assert!(row.ends_with("ok"), "{row}");
        let history = dir.path().join(name).join("history.json");
        assert!(history.exists(), "{name} kept its history");
    }
}

#[test]
fn a_seed_fixes_the_fault_schedule_and_the_workload() {
    // `plan` prints what `replay` replays, without running it.
    let plan = |seed: &str| {
        let out = Command::new(BIN)
            .args(["chaos", "plan", seed, "--scenario", "all"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (a, b, c) = (plan("7"), plan("7"), plan("8"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.contains("KillHost(BusyPeer)"), "{a}");
    assert!(a.contains("Isolate(Leader)"), "{a}");
    let unknown = Command::new(BIN)
        .args(["chaos", "replay", "1", "--scenario", "nonexistent"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no scenario \"nonexistent\""));
    let list = Command::new(BIN).args(["chaos", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for name in ["leader-minority", "paused-peer", "rejoin-after-partition"] {
        assert!(list.contains(name), "{list}");
    }
}

/// The lines of every host's log under `dir` that name a digest a
/// violation line of `report` names (64 hex digits), at most 60 per log.
fn logs_about(dir: &std::path::Path, report: &str) -> String {
    let digests: Vec<&str> = (report.lines())
        .filter(|l| l.contains("VIOLATION"))
        .flat_map(|l| l.split(|c: char| !c.is_ascii_hexdigit()))
        .filter(|w| w.len() == 64)
        .collect();
    if digests.is_empty() {
        return String::new();
    }
    let mut logs = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "host.log") {
                logs.push(path);
            }
        }
    }
    logs.sort();
    let mut out = String::new();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = (text.lines())
            .filter(|l| digests.iter().any(|d| l.contains(d)))
            .collect();
        out.push_str(&format!(
            "--- {} ({} lines about {digests:?})\n",
            log.display(),
            lines.len()
        ));
        for l in &lines[lines.len().saturating_sub(60)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}
