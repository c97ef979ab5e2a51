//! `spillway bench weights-transfer`: a weights file of `--size-mib` MiB
//! uploaded to host 1 of two loopback hosts through the streamed client
//! path, then fetched by host 2 for its first job that names them, with
//! each `spillway host` process's resident memory sampled before and its
//! peak (`VmHWM`) after each step. The target: neither sidecar grows by
//! more than a few tens of MiB whatever the file's size (the bytes go
//! through the spool on disk a chunk at a time, and the node maps them).
//! The file is written one row at a time into a fresh directory, removed
//! afterwards.

use super::{build, cores};
use crate::client::InvokeOptions;
use crate::local_cluster::{HostOptions, LocalCluster};
use anyhow::{Context, bail};
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

/// Resident and peak resident memory of process `pid`, in bytes.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib << 10)
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Writes a safetensors file of one f32 tensor `w` of `rows`×1024 (about
/// `mib` MiB) at `path`, a MiB at a time; returns (rows, cols).
fn write_weights(path: &std::path::Path, mib: u64) -> anyhow::Result<(u64, u64)> {
    let cols = 1024u64;
    let rows = (mib << 20) / 4 / cols;
    let bytes = rows * cols * 4;
    let mut header = format!(
        "{{\"w\":{{\"dtype\":\"F32\",\"shape\":[{rows},{cols}],\"data_offsets\":[0,{bytes}]}}}}"
    );
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(&(header.len() as u64).to_le_bytes())?;
    file.write_all(header.as_bytes())?;
    let row: Vec<u8> = (0..cols)
        .flat_map(|i| (i as f32 / cols as f32).to_le_bytes())
        .collect();
    for _ in 0..rows {
        file.write_all(&row)?;
    }
    file.flush()?;
    Ok((rows, cols))
}

pub(crate) async fn run(size_mib: u64) -> anyhow::Result<ExitCode> {
    let dir = crate::local_cluster::fresh_dir()?;
    let path = dir.join("w.safetensors");
    let written = write_weights(&path, size_mib);
    let (rows, cols) = match written {
        Ok(shape) => shape,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let size = std::fs::metadata(&path)?.len();
    let options = HostOptions {
        slots: 1,
        queue: 8,
        ..HostOptions::default()
    };
    let cluster = LocalCluster::start(None, 2, options).await?;
    let result = measure(&cluster, &path, size, (rows, cols)).await;
    cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(
    cluster: &LocalCluster,
    path: &std::path::Path,
    size: u64,
    (rows, cols): (u64, u64),
) -> anyhow::Result<ExitCode> {
    let (p1, p2) = (cluster.hosts[0].pid(), cluster.hosts[1].pid());
    let h1 = cluster.client(0);
    let h2 = cluster.client(1);
    let guest = include_str!("../../../examples/guests/weights_gemm.wat");
    h1.put_artifact("g", guest.as_bytes().to_vec(), None)
        .await?;

    let (before1, _) = memory(p1)?;
    let started = Instant::now();
    let stored = h1.put_artifact_file("w", path, None, |_| {}).await?;
    let upload = started.elapsed();
    let (_, peak1) = memory(p1)?;
    if stored.kind != spillway_proto::ArtifactKind::Weights {
        bail!("the file was stored as {:?}, not weights", stored.kind);
    }
    h1.create_function(&json!({
        "name": "g", "artifact": "g", "weights": ["w"], "accelerator": "none",
        "deadline_ms": 300_000,
    }))
    .await?;

    // Host 2's first job naming the weights fetches them from host 1.
    let mut input = Vec::new();
    for s in ["w", "w"] {
        input.extend((s.len() as u32).to_le_bytes());
        input.extend(s.as_bytes());
    }
    let n = cols;
    let k = rows.min(64);
    input.extend((n as u32).to_le_bytes());
    input.extend((k as u32).to_le_bytes());
    input.extend((0..k).flat_map(|i| (i as f32).to_le_bytes()));
    let (before2, _) = memory(p2)?;
    let started = Instant::now();
    let answer = h2
        .invoke(
            "g",
            input,
            &InvokeOptions {
                here_only: true,
                ..Default::default()
            },
        )
        .await?;
    let fetch_and_run = started.elapsed();
    let (_, peak2) = memory(p2)?;
    if !answer.status.is_success() {
        bail!(
            "the job on host 2 failed: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "weights transfer: {:.0} MiB safetensors, two loopback hosts, {} cores, {} build",
        mib(size),
        cores(),
        build()
    );
    println!(
        "{:<34} {:>9} {:>11} {:>12} {:>12}",
        "step", "seconds", "MiB/s", "rss_before", "peak_after"
    );
    for (step, took, before, peak) in [
        ("upload to host 1 (streamed)", upload, before1, peak1),
        (
            "host 2: fetch from host 1 + job",
            fetch_and_run,
            before2,
            peak2,
        ),
    ] {
        println!(
            "{step:<34} {:>9.2} {:>11.0} {:>9.1} MiB {:>9.1} MiB",
            took.as_secs_f64(),
            mib(size) / took.as_secs_f64(),
            mib(before),
            mib(peak)
        );
    }
    let growth = peak1
        .saturating_sub(before1)
        .max(peak2.saturating_sub(before2));
    println!(
        "largest sidecar growth: {:.1} MiB for a {:.0} MiB file (target: a few tens of MiB)",
        mib(growth),
        mib(size)
    );
    Ok(ExitCode::SUCCESS)
}
