//! Keeps each executor (node process) running: spawn it, connect, serve
//! its link, and when it dies (crash, `kill -9`, a poisoned CUDA context)
//! restart it with exponential backoff. One loop per executor, each on
//! its own: one executor's fault and restarts leave the others serving.
//! While one is down the host reports itself degraded; jobs go to the
//! others, or wait in the queue where none can take them.
//!
//! The node gets a pipe as its stdin and exits when that pipe closes, so a
//! node never outlives its sidecar, even one killed with `kill -9`.

use crate::config::{ExecutorLaunch, NodeLaunch};
use crate::link::NodeLink;
use crate::metrics::Metrics;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How long a started node may take to open its socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_RETRY: Duration = Duration::from_millis(25);
/// How long a node whose connection ended is given to show that its
/// process ended too (then the restart says why it did).
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// A node that stayed up this long restarts with the first backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Keeps `executor` running over `link` until `stop`, restarting it after
/// `restart_backoff.0`, doubling to `restart_backoff.1`.
pub(crate) async fn supervise(
    executor: ExecutorLaunch,
    link: Arc<NodeLink>,
    metrics: Arc<Metrics>,
    restart_backoff: (Duration, Duration),
    mut stop: watch::Receiver<bool>,
) {
    metrics.node_restart_causes(Cause::ALL.map(Cause::label));
    let (first, cap) = restart_backoff;
    let mut backoff = first;
    loop {
        let started = Instant::now();
        let (cause, reason) = run_once(&link, &executor, &mut stop).await;
        if *stop.borrow() {
            break;
        }
        if started.elapsed() > STABLE_AFTER {
            backoff = first;
        }
        tracing::warn!(executor = %executor.name, %reason, cause = cause.label(), ?backoff, "executor down; host degraded until it is back");
        link.note_restart();
        metrics.node_restarted(cause.label());
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(cap);
    }
}

async fn run_once(
    link: &NodeLink,
    executor: &ExecutorLaunch,
    stop: &mut watch::Receiver<bool>,
) -> (Cause, String) {
    let mut child = match &executor.launch {
        NodeLaunch::Spawn { program, args } => {
            match Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
            {
                Ok(child) => Some(child),
                Err(e) => {
                    return (
                        Cause::NotStarted,
                        format!("cannot start {}: {e}", program.display()),
                    );
                }
            }
        }
        NodeLaunch::Connect => None,
    };
    // Held for as long as the node should live: `Child::wait` would close it.
    let _stdin = child.as_mut().and_then(|c| c.stdin.take());
    let stream = match connect(&executor.socket, child.as_mut(), stop).await {
        Ok(stream) => stream,
        Err(reason) => {
            stop_child(child).await;
            return (Cause::NotStarted, reason);
        }
    };
    let serve = link.serve(stream);
    tokio::pin!(serve);
    let ended = tokio::select! {
        reason = &mut serve => {
            // The connection ended first; if the process ended with it
            // (killed, crashed), say why it did.
            match child.as_mut() {
                Some(c) => match tokio::time::timeout(EXIT_GRACE, c.wait()).await {
                    Ok(status) => (exit_cause(&status), exit_reason(status)),
                    Err(_) => (Cause::Lost, reason),
                },
                None => (Cause::Lost, reason),
            }
        }
        status = wait_child(child.as_mut()) => {
            // The socket closes with the process; let the link tear down.
            let _ = serve.await;
            (exit_cause(&status), exit_reason(status))
        }
        _ = stop.changed() => {
            if let Some(c) = child.as_mut() {
                let _ = c.start_kill();
            }
            let _ = serve.await;
            (Cause::Lost, "sidecar shutting down".to_owned())
        }
    };
    stop_child(child).await;
    ended
}

/// Why the node went down, as `spillway_node_restarts_total{cause}` counts
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// A GPU fault poisoned its CUDA context (exit 75).
    DeviceFault,
    /// It ended itself to stop a job's GPU work past its deadline (exit 76).
    GpuOverrun,
    /// It exited otherwise, or was killed.
    Exited,
    /// It could not be started, or never opened its socket.
    NotStarted,
    /// Its connection ended while it still ran.
    Lost,
}

impl Cause {
    const ALL: [Cause; 5] = [
        Cause::DeviceFault,
        Cause::GpuOverrun,
        Cause::Exited,
        Cause::NotStarted,
        Cause::Lost,
    ];

    fn label(self) -> &'static str {
        match self {
            Cause::DeviceFault => "device_fault",
            Cause::GpuOverrun => "gpu_overrun",
            Cause::Exited => "exited",
            Cause::NotStarted => "not_started",
            Cause::Lost => "connection_lost",
        }
    }
}

/// The cause of an ended node process, from its exit status.
fn exit_cause(status: &std::io::Result<std::process::ExitStatus>) -> Cause {
    match status
        .as_ref()
        .ok()
        .and_then(std::process::ExitStatus::code)
    {
        Some(spillway_proto::EXIT_DEVICE_FAULT) => Cause::DeviceFault,
        Some(spillway_proto::EXIT_GPU_OVERRUN) => Cause::GpuOverrun,
        _ => Cause::Exited,
    }
}

async fn connect(
    socket: &std::path::Path,
    mut child: Option<&mut Child>,
    stop: &mut watch::Receiver<bool>,
) -> Result<UnixStream, String> {
    let started = Instant::now();
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return Ok(stream),
            Err(e) if started.elapsed() > CONNECT_TIMEOUT => {
                return Err(format!("cannot connect to {}: {e}", socket.display()));
            }
            Err(_) => {}
        }
        if let Some(c) = child.as_deref_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(format!("node exited before opening its socket: {status}"));
        }
        tokio::select! {
            () = tokio::time::sleep(CONNECT_RETRY) => {}
            _ = stop.changed() => return Err("sidecar shutting down".into()),
        }
    }
}

/// Why the node process ended, in words for the log.
fn exit_reason(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) if s.code() == Some(spillway_proto::EXIT_DEVICE_FAULT) => {
            "node exited after a GPU fault poisoned its CUDA context".to_owned()
        }
        Ok(s) if s.code() == Some(spillway_proto::EXIT_GPU_OVERRUN) => {
            "node exited to stop a job's GPU work that ran past its deadline".to_owned()
        }
        Ok(s) => format!("node exited: {s}"),
        Err(e) => format!("waiting for the node: {e}"),
    }
}

async fn wait_child(child: Option<&mut Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

async fn stop_child(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn an_exit_status_names_its_cause() {
        let exited = |code: i32| Ok(std::process::ExitStatus::from_raw(code << 8));
        let cases = [
            (
                exited(spillway_proto::EXIT_DEVICE_FAULT),
                Cause::DeviceFault,
            ),
            (exited(spillway_proto::EXIT_GPU_OVERRUN), Cause::GpuOverrun),
            (exited(0), Cause::Exited),
            (exited(1), Cause::Exited),
            // Killed by SIGKILL: no exit code.
            (Ok(std::process::ExitStatus::from_raw(9)), Cause::Exited),
            (Err(std::io::Error::other("wait failed")), Cause::Exited),
        ];
        for (status, cause) in cases {
            assert_eq!(exit_cause(&status), cause, "{status:?}");
        }
    }
}
