//! The node's Unix-socket server: the async shell around [`Executor`].
//!
//! One connection per sidecar (normally exactly one). On each connection the
//! node sends `Hello`, then serves `Execute`, `Cancel` and the artifact
//! frames (`PutArtifact` and its chunks, `ReadArtifact`) concurrently; each
//! job runs on a blocking thread while it holds one
//! of the node's slots. If the connection drops, the node cancels every job
//! that came on it: nobody is left to receive the result.

use crate::executor::Executor;
use crate::incoming::{Incoming, Progress};
use crate::state::JobControl;
use crate::{NodeConfig, NodeError};
use spillway_proto::frame_io;
use spillway_proto::{
    Completion, Execute, Failure, FromNode, Hello, JobId, LoadReport, MAX_FRAME_LEN,
    PROTOCOL_VERSION, Refusal, ToNode,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

/// How long a job waits for a slot that a finished job is still freeing
/// before it is refused with `slots_exhausted`.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// How often a load report goes out when nothing changes.
const LOAD_INTERVAL: Duration = Duration::from_secs(1);
/// The least time between two reports of GPU memory taken, so jobs that
/// create buffers in a tight loop do not flood the sidecar.
const CHARGE_REPORT_GAP: Duration = Duration::from_millis(20);

/// Node-wide state shared by all connections.
#[derive(Debug)]
struct Node {
    executor: Executor,
    slots: Arc<Semaphore>,
    completed: AtomicU64,
    failed: AtomicU64,
    /// The newest sidecar connection's writer: where the GPU watchdog's
    /// answer goes.
    latest: Latest,
}

type Latest = Arc<Mutex<Option<mpsc::Sender<FromNode>>>>;

impl Node {
    /// The message that answers `job`, counted and logged.
    fn reply(&self, job: JobId, outcome: Result<Completion, Failure>, exec_us: u64) -> FromNode {
        match outcome {
            Ok(done) => {
                self.completed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(exec_us = done.exec_us, "job completed");
                FromNode::Completed(done)
            }
            Err(failure) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(code = failure.code(), "job failed: {failure}");
                FromNode::Failed {
                    job,
                    failure,
                    exec_us,
                }
            }
        }
    }

    fn load(&self) -> LoadReport {
        let slots = self.executor.config().slots;
        let starts = self.executor.instance_starts();
        LoadReport {
            warm_starts: starts.warm,
            cold_starts: starts.cold,
            warm_ready: starts.ready,
            slots,
            running: slots - self.slots.available_permits() as u32,
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            weights: self.executor.gpu_weights(),
            gpu_memory: self.executor.recent_gpu_memory(),
        }
    }
}

/// Runs the node until `shutdown` resolves.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let socket = config.socket.clone();
    let executor = tokio::task::spawn_blocking(move || Executor::new(config))
        .await
        .expect("executor construction does not panic")?;
    let latest = Latest::default();
    executor.on_gpu_overrun({
        let latest = latest.clone();
        move |overrun| answer_overrun(&latest, overrun)
    });
    let node = Arc::new(Node {
        slots: Arc::new(Semaphore::new(executor.config().slots as usize)),
        executor,
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latest,
    });
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|source| NodeError::Io {
        what: "cannot listen on",
        path: socket.clone(),
        source,
    })?;
    restrict_to_owner(&socket);
    tracing::info!(socket = %socket.display(), resident = node.executor.resident().len(), "node ready");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(node.clone(), stream));
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            },
            () = &mut shutdown => break,
        }
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// The socket is the node's only door: only its owner (the sidecar's user)
/// may connect.
fn restrict_to_owner(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!("cannot restrict {}: {e}", path.display());
    }
}

/// How the connection reaches each job it sent: its cancel flag and its
/// output window.
type Jobs = Arc<Mutex<HashMap<JobId, (Arc<AtomicBool>, Arc<crate::OutputWindow>)>>>;
/// Artifacts arriving on one connection, by request number; dropped (their
/// part files removed) when the connection closes.
type Uploads = Arc<Mutex<HashMap<u64, Incoming>>>;

async fn serve(node: Arc<Node>, stream: UnixStream) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<FromNode>(1024);
    *node.latest.lock().expect("latest lock") = Some(tx.clone());
    // The node's finished spans (when the host exports spans) leave
    // through this connection: the node opens no network socket.
    spillway_telemetry::relay::deliver_to({
        let tx = tx.clone();
        move |records| {
            let _ = tx.try_send(FromNode::Spans(records));
        }
    });
    let writer_task = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let written = frame_io::write(&mut writer, &msg).await;
            if reports_device_fault(&msg) {
                // The answer is out (or cannot be sent): now leave, since
                // the CUDA context is unusable for every later job.
                exit_after_device_fault();
            }
            if reports_overrun(&msg) {
                exit_after_overrun();
            }
            if let Err(e) = written {
                tracing::warn!("sidecar connection lost while writing: {e}");
                break;
            }
        }
    });

    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        node_version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        capabilities: node.executor.capabilities(),
        resident: node.executor.resident(),
    };
    let _ = tx.send(FromNode::Hello(hello)).await;
    let _ = tx.send(FromNode::Load(node.load())).await;

    let reporter = {
        let (node, tx) = (node.clone(), tx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LOAD_INTERVAL);
            let mut last_charge_report = tokio::time::Instant::now();
            loop {
                // Each interval, and soon after a job takes GPU memory (at
                // most every CHARGE_REPORT_GAP), so a short job's bytes are
                // seen; the job's end reports the give-back.
                tokio::select! {
                    _ = tick.tick() => {
                        if tx.send(FromNode::Load(node.load())).await.is_err() {
                            break;
                        }
                    }
                    () = node.executor.tenant_gpu_charged() => {
                        tokio::time::sleep_until(last_charge_report + CHARGE_REPORT_GAP).await;
                        last_charge_report = tokio::time::Instant::now();
                    }
                }
                if tx.send(node.executor.tenant_gpu()).await.is_err() {
                    break;
                }
            }
        })
    };

    let jobs: Jobs = Arc::default();
    let uploads: Uploads = Arc::default();
    loop {
        match frame_io::read::<ToNode, _>(&mut reader, MAX_FRAME_LEN).await {
            Ok(Some(msg)) => handle(&node, &jobs, &uploads, &tx, msg),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("dropping sidecar connection: {e}");
                break;
            }
        }
    }
    for (cancel, _) in jobs.lock().expect("jobs lock").values() {
        cancel.store(true, Ordering::Relaxed);
    }
    reporter.abort();
    drop(tx);
    let _ = writer_task.await;
}

fn handle(
    node: &Arc<Node>,
    jobs: &Jobs,
    uploads: &Uploads,
    tx: &mpsc::Sender<FromNode>,
    msg: ToNode,
) {
    match msg {
        ToNode::Execute(exec) => execute(node, jobs, tx, *exec),
        ToNode::Cancel { job } => {
            if let Some((cancel, _)) = jobs.lock().expect("jobs lock").get(&job) {
                tracing::info!(job = %job, "cancel requested");
                cancel.store(true, Ordering::Relaxed);
            }
        }
        ToNode::OutputCredit { job, bytes } => {
            if let Some((_, output)) = jobs.lock().expect("jobs lock").get(&job) {
                output.grant(bytes);
            }
        }
        ToNode::PutArtifact {
            request,
            digest,
            size,
        } => {
            let (node, uploads) = (node.clone(), uploads.clone());
            answer(tx, request, move || {
                let incoming = node.executor.begin_upload(digest, size)?;
                uploads
                    .lock()
                    .expect("uploads lock")
                    .insert(request, incoming);
                Ok(FromNode::ArtifactProgress {
                    request,
                    received: 0,
                })
            });
        }
        ToNode::ArtifactChunk { request, bytes } => {
            let (node, uploads) = (node.clone(), uploads.clone());
            answer(tx, request, move || {
                // The sidecar sends a chunk only after the answer to the one
                // before, so the upload is here, not being written.
                let mut incoming = uploads
                    .lock()
                    .expect("uploads lock")
                    .remove(&request)
                    .ok_or_else(|| Failure::InvalidArtifact {
                        reason: format!("no upload numbered {request} is in progress"),
                    })?;
                match incoming.take(&bytes)? {
                    Progress::More(received) => {
                        uploads
                            .lock()
                            .expect("uploads lock")
                            .insert(request, incoming);
                        Ok(FromNode::ArtifactProgress { request, received })
                    }
                    Progress::Complete => {
                        let received = incoming.finish()?;
                        let size = received.size;
                        let digest = node.executor.put_received(received)?;
                        Ok(FromNode::ArtifactStored {
                            request,
                            digest,
                            size,
                        })
                    }
                }
            });
        }
        ToNode::AbandonArtifact { request } => {
            // Its part file goes with it.
            uploads.lock().expect("uploads lock").remove(&request);
        }
        ToNode::ReadArtifact {
            request,
            digest,
            offset,
        } => {
            let node = node.clone();
            answer(tx, request, move || {
                let (size, bytes) = node.executor.artifact_chunk(&digest, offset)?;
                Ok(FromNode::ArtifactChunk {
                    request,
                    size,
                    bytes,
                })
            });
        }
    }
}

/// Does an artifact request's blocking `work` off the connection's reader
/// and sends its answer (`ArtifactRejected` with the failure if it fails).
fn answer(
    tx: &mpsc::Sender<FromNode>,
    request: u64,
    work: impl FnOnce() -> Result<FromNode, Failure> + Send + 'static,
) {
    let tx = tx.clone();
    tokio::spawn(async move {
        let reply = tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|e| {
                Err(Failure::Internal {
                    message: e.to_string(),
                })
            })
            .unwrap_or_else(|failure| FromNode::ArtifactRejected { request, failure });
        let _ = tx.send(reply).await;
    });
}

fn execute(node: &Arc<Node>, jobs: &Jobs, tx: &mpsc::Sender<FromNode>, exec: Execute) {
    let job = exec.job;
    let cancel = Arc::new(AtomicBool::new(false));
    let output = Arc::new(crate::OutputWindow::new(exec.output_window));
    jobs.lock()
        .expect("jobs lock")
        .insert(job, (cancel.clone(), output.clone()));
    let (node, jobs, tx) = (node.clone(), jobs.clone(), tx.clone());
    let span = tracing::info_span!("node.execute", job = %job, tenant = %exec.spec.tenant, function = %exec.spec.function);
    spillway_telemetry::continue_trace(&span, exec.trace.as_ref());
    tokio::spawn(
        async move {
            // The sidecar sends no more jobs than there are slots, but a
            // job whose answer is out may still be freeing what it held:
            // wait for that rather than refuse.
            let permit =
                match tokio::time::timeout(SLOT_WAIT, node.slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        jobs.lock().expect("jobs lock").remove(&job);
                        let failure = Refusal::SlotsExhausted { retry_after_ms: 10 }.into();
                        let _ = tx
                            .send(FromNode::Failed {
                                job,
                                failure,
                                exec_us: 0,
                            })
                            .await;
                        return;
                    }
                };
            let _ = tx.send(FromNode::Load(node.load())).await;
            let chunks = tx.clone();
            let control = JobControl {
                cancel,
                output,
                emit: Box::new(move |seq, chunk| {
                    let _ = chunks.blocking_send(FromNode::Output { job, seq, chunk });
                }),
            };
            let worker = node.clone();
            let span = tracing::Span::current();
            let answers = tx.clone();
            let delivered = Arc::new(AtomicBool::new(false));
            let delivered_here = delivered.clone();
            // The answer goes out from the job's thread as soon as the
            // outcome is known; the job's instance, buffers and stream are
            // freed after it, while the slot is still held.
            let answered = tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let Execute {
                    job,
                    spec,
                    input,
                    remaining_ms,
                    ..
                } = exec;
                let started = std::time::Instant::now();
                let mut answered = None;
                worker
                    .executor
                    .run_then(job, &spec, input, remaining_ms, control, |outcome| {
                        let exec_us = started.elapsed().as_micros() as u64;
                        let reply = worker.reply(job, outcome, exec_us);
                        let poisoned = reports_device_fault(&reply);
                        delivered_here.store(true, Ordering::Release);
                        answered = Some((answers.blocking_send(reply).is_ok(), poisoned));
                    });
                answered
            })
            .await;
            drop(permit);
            jobs.lock().expect("jobs lock").remove(&job);
            let (sent, poisoned) = match answered {
                Ok(Some(answered)) => answered,
                // A panic after the answer (while freeing): the answer
                // stands.
                Err(e) if delivered.load(Ordering::Acquire) => {
                    tracing::error!(%job, "job panicked after its answer: {e}");
                    (true, false)
                }
                // A panic before it: say so.
                Ok(None) | Err(_) => {
                    let message = match answered {
                        Err(e) => format!("job panicked: {e}"),
                        Ok(_) => "job ended without an outcome".to_owned(),
                    };
                    tracing::error!(%job, "{message}");
                    let reply = node.reply(job, Err(Failure::Internal { message }), 0);
                    (tx.send(reply).await.is_ok(), false)
                }
            };
            // After a device fault the writer exits the process once the
            // answer is written; with no writer left, exit here.
            if !sent && poisoned {
                exit_after_device_fault();
            }
            let _ = tx.send(FromNode::Load(node.load())).await;
            let _ = tx.send(node.executor.tenant_gpu()).await;
        }
        .instrument(span),
    );
}

fn reports_device_fault(msg: &FromNode) -> bool {
    matches!(
        msg,
        FromNode::Failed {
            failure: Failure::DeviceFault { .. },
            ..
        }
    )
}

fn reports_overrun(msg: &FromNode) -> bool {
    matches!(
        msg,
        FromNode::Failed {
            failure: Failure::GpuOverran { .. },
            ..
        }
    )
}

/// How long the watchdog's answer may take to be written before the node
/// exits without it (the sidecar then answers the job at its own grace).
const OVERRUN_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// The GPU watchdog found `overrun`: answer its job on the newest
/// connection, whose writer exits the process once the answer is out;
/// exit here if it cannot be sent or is not out in time. Runs on the
/// watchdog's thread.
fn answer_overrun(latest: &Latest, overrun: crate::Overrun) {
    let tx = latest.lock().expect("latest lock").clone();
    if !overrun.answered
        && let Some(tx) = tx
    {
        let answer = FromNode::Failed {
            job: overrun.job,
            failure: Failure::GpuOverran {
                deadline_ms: overrun.deadline_ms,
            },
            exec_us: overrun.ran.as_micros() as u64,
        };
        if tx.try_send(answer).is_ok() {
            std::thread::sleep(OVERRUN_ANSWER_WAIT);
            tracing::warn!("the watchdog's answer was not written in time");
        }
    }
    exit_after_overrun();
}

/// Ends the node to stop a job's GPU work past its deadline; the sidecar
/// restarts it.
fn exit_after_overrun() -> ! {
    tracing::error!("exiting: a job's GPU work ran past its deadline");
    crate::end_process_now(spillway_proto::EXIT_GPU_OVERRUN)
}

/// Ends the node after a GPU fault poisoned its CUDA context; the sidecar
/// restarts it.
fn exit_after_device_fault() -> ! {
    tracing::error!("exiting: the CUDA context is poisoned");
    std::process::exit(spillway_proto::EXIT_DEVICE_FAULT)
}
