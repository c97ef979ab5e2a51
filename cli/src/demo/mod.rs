//! The demo workload of `spillway up --demo`: upload every example guest,
//! register a function for each, invoke each once through the HTTP API and
//! print one table row per invocation with its receipt. The hostile guests
//! must fail in their typed way; anything unexpected makes the demo fail.
//! With several hosts, [`burst`] then shows a burst at host 1, with burst
//! on and off.

mod burst;

use crate::local_cluster::LocalCluster;
use serde_json::json;
use spillway_sidecar::api;
use std::process::ExitCode;

/// An example guest, embedded so the demo runs from any directory.
struct Guest {
    name: &'static str,
    wat: &'static str,
    deadline_ms: u64,
    input: fn() -> Vec<u8>,
    /// `None`: must succeed; `Some(code)`: must fail with that error code.
    expect_error: Option<&'static str>,
    show: fn(&[u8]) -> String,
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The gemm demo input: A (2×3) and B (3×2).
fn gemm_input() -> Vec<u8> {
    let (m, n, k) = (2u32, 2u32, 3u32);
    let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0];
    let mut input: Vec<u8> = [m, n, k].iter().flat_map(|v| v.to_le_bytes()).collect();
    input.extend(a.iter().chain(&b).flat_map(|v| v.to_le_bytes()));
    input
}

fn show_matrix(out: &[u8]) -> String {
    let values: Vec<String> = out
        .chunks_exact(4)
        .map(|c| format!("{}", f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    format!("C = [{}]", values.join(", "))
}

fn guests() -> Vec<Guest> {
    macro_rules! wat {
        ($name:literal) => {
            include_str!(concat!("../../../examples/guests/", $name, ".wat"))
        };
    }
    vec![
        Guest {
            name: "echo",
            wat: wat!("echo"),
            deadline_ms: 10_000,
            input: || b"hello, spillway".to_vec(),
            expect_error: None,
            show: text,
        },
        Guest {
            name: "uppercase",
            wat: wat!("uppercase"),
            deadline_ms: 10_000,
            input: || b"hello, spillway".to_vec(),
            expect_error: None,
            show: text,
        },
        Guest {
            name: "spin",
            wat: wat!("spin"),
            deadline_ms: 10_000,
            input: || 2_000_000u32.to_le_bytes().to_vec(),
            expect_error: None,
            show: text,
        },
        Guest {
            name: "gemm",
            wat: wat!("gemm"),
            deadline_ms: 10_000,
            input: gemm_input,
            expect_error: None,
            show: show_matrix,
        },
        Guest {
            name: "countdown",
            wat: wat!("countdown"),
            deadline_ms: 10_000,
            input: || vec![3],
            expect_error: None,
            show: |out| text(out).replace('\n', " "),
        },
        Guest {
            name: "noop",
            wat: wat!("noop"),
            deadline_ms: 10_000,
            input: Vec::new,
            expect_error: None,
            show: text,
        },
        Guest {
            name: "infinite-loop",
            wat: wat!("infinite_loop"),
            deadline_ms: 500,
            input: Vec::new,
            expect_error: Some("deadline_exceeded"),
            show: text,
        },
        Guest {
            name: "memory-hog",
            wat: wat!("memory_hog"),
            deadline_ms: 10_000,
            input: Vec::new,
            expect_error: Some("memory_limit_exceeded"),
            show: text,
        },
        Guest {
            name: "deep-recursion",
            wat: wat!("deep_recursion"),
            deadline_ms: 10_000,
            input: Vec::new,
            expect_error: Some("guest_trap"),
            show: text,
        },
        Guest {
            name: "table-hog",
            wat: wat!("table_hog"),
            deadline_ms: 10_000,
            input: Vec::new,
            expect_error: Some("memory_limit_exceeded"),
            show: text,
        },
        Guest {
            name: "huge-copy",
            wat: wat!("huge_copy"),
            deadline_ms: 10_000,
            input: Vec::new,
            expect_error: Some("guest_trap"),
            show: text,
        },
        Guest {
            name: "bad-pointer",
            wat: wat!("bad_pointer"),
            deadline_ms: 10_000,
            input: Vec::new,
            expect_error: Some("guest_trap"),
            show: text,
        },
    ]
}

pub(crate) async fn run(cluster: &LocalCluster, slots: u32) -> anyhow::Result<ExitCode> {
    let client = cluster.client(0);
    let guests = guests();
    for g in &guests {
        let stored = client
            .put_artifact(g.name, g.wat.as_bytes().to_vec(), None)
            .await?;
        client
            .create_function(&json!({
                "name": g.name, "artifact": stored.digest, "accelerator": "preferred",
                "deadline_ms": g.deadline_ms, "memory_limit_bytes": 32 << 20,
            }))
            .await?;
    }
    println!();
    println!(
        "{:<15} {:<4} {:<4} {:<34} {:<10} {:<4} {:<7} {:>8} {:>9}",
        "function", "ok", "http", "result", "job", "node", "backend", "queue_ms", "exec_ms"
    );
    let mut all_as_expected = true;
    for g in &guests {
        let answer = client
            .invoke(g.name, (g.input)(), &Default::default())
            .await?;
        let (result, as_expected) = if answer.status.is_success() {
            ((g.show)(&answer.body), g.expect_error.is_none())
        } else {
            let code = answer.error_code().unwrap_or_else(|| "?".into());
            let ok = g.expect_error == Some(code.as_str());
            (format!("error: {code}"), ok)
        };
        all_as_expected &= as_expected;
        let receipt = answer.parsed_receipt().ok();
        let field = |f: fn(&api::Receipt) -> String| receipt.as_ref().map_or("-".into(), f);
        let job = answer.header(api::header::JOB_ID);
        println!(
            "{:<15} {:<4} {:<4} {:<34} {:<10} {:<4} {:<7} {:>8} {:>9}",
            g.name,
            if as_expected { "yes" } else { "NO" },
            answer.status.as_u16(),
            truncate(&result, 34),
            truncate(job, 10),
            field(|r| r.node.clone()),
            field(|r| r.backend.clone()),
            field(|r| format!("{:.3}", r.queue_ms)),
            // A failed job's answer carries how long it ran, if it did.
            receipt.as_ref().map_or_else(
                || answer.header(api::header::EXEC_MS).to_owned(),
                |r| format!("{:.3}", r.exec_ms)
            ),
        );
    }
    if cluster.hosts.len() > 1 {
        let burst_ok = burst::run(cluster, slots).await?;
        if !burst_ok {
            println!(
                "demo: the burst did not spread the jobs to the peers, or complete more of them (or as many sooner) than host 1 alone"
            );
        }
        all_as_expected &= burst_ok;
    }
    println!();
    if all_as_expected {
        println!(
            "demo: every guest behaved as expected (hostile guests failed in their typed way)"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("demo: some guests did not behave as expected (rows marked NO)");
        Ok(ExitCode::FAILURE)
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
