//! The sidecar's end of the Unix socket: sends jobs to the node and matches
//! every answer to the job or upload that is waiting for it.
//!
//! A connection lives from the node's `Hello` until either side closes it.
//! When it ends, every job still waiting ends with `executor_lost` (it may
//! have run) and every upload with `node_unavailable`: nothing waits forever.
//! Between connections the link is *down* and callers wait for it to come up
//! again (bounded by their deadline).

use crate::spool::Spooled;
use spillway_proto::frame_io;
use spillway_proto::{
    ARTIFACT_CHUNK, Capabilities, Completion, Digest, Execute, Failure, FromNode, JobId,
    LoadReport, MAX_FRAME_LEN, PROTOCOL_VERSION, Refusal, ToNode,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

/// How long past a job's deadline the sidecar waits for its node's answer
/// before it answers the job itself, whatever the node is doing.
const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sidecar knows of its node right now.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeStatus {
    pub(crate) up: bool,
    pub(crate) pid: Option<u32>,
    pub(crate) capabilities: Option<Capabilities>,
    pub(crate) load: Option<(LoadReport, Instant)>,
    /// The artifacts the node holds (from its hello, plus what it stored
    /// since).
    pub(crate) held: Arc<BTreeSet<Digest>>,
    pub(crate) restarts: u64,
    /// `gpu` buffer bytes each tenant's running jobs hold on the node, as
    /// it last reported.
    pub(crate) tenant_gpu: Arc<Vec<(spillway_proto::TenantId, u64)>>,
    /// Bytes each tenant's cap refused on this executor, counted across
    /// its node's restarts (never going down), in tenant order.
    pub(crate) tenant_gpu_refused: Arc<Vec<(spillway_proto::TenantId, u64)>>,
}

/// A finished job: the emitted chunks followed by the returned bytes.
#[derive(Debug)]
pub(crate) struct JobOutput {
    pub(crate) body: Vec<u8>,
    pub(crate) completion: Completion,
    /// The executor that ran it (on the host that ran it).
    pub(crate) executor: String,
}

/// A job that ended without a result, and how long it ran on the node
/// (`None` when the node never reported it: lost, or never sent).
#[derive(Debug)]
pub(crate) struct JobFailed {
    pub(crate) failure: Failure,
    pub(crate) exec_us: Option<u64>,
    /// Some of its output was passed on before it ended (a streamed job):
    /// running it again would pass that on twice.
    pub(crate) streamed: bool,
}

impl From<Failure> for JobFailed {
    fn from(failure: Failure) -> Self {
        Self {
            failure,
            exec_us: None,
            streamed: false,
        }
    }
}

/// Where the answer to an artifact request goes.
enum Pending {
    /// The next step of an upload, or why not.
    Upload(oneshot::Sender<Result<UploadStep, Failure>>),
    /// A chunk of a stored artifact and its whole size, or why not.
    Read(oneshot::Sender<Result<(u64, Vec<u8>), Failure>>),
}

/// The node's answer to one step of an upload.
enum UploadStep {
    /// It has this many bytes: send the next chunk.
    Progress(u64),
    /// It stored the whole artifact.
    Stored(Digest, u64),
}

impl Pending {
    fn fail(self, failure: Failure) {
        match self {
            Pending::Upload(done) => {
                let _ = done.send(Err(failure));
            }
            Pending::Read(done) => {
                let _ = done.send(Err(failure));
            }
        }
    }
}

/// Tells the node to drop a half-sent upload unless disarmed (the upload
/// failed, or whoever waited for it went away).
struct AbandonOnDrop<'a> {
    link: &'a NodeLink,
    request: u64,
    armed: bool,
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut conn = self.link.conn.lock().expect("link lock");
            conn.requests.remove(&self.request);
            if let Some(tx) = &conn.tx {
                let _ = tx.try_send(ToNode::AbandonArtifact {
                    request: self.request,
                });
            }
        }
    }
}

struct PendingJob {
    chunks: Chunks,
    done: oneshot::Sender<Result<JobOutput, JobFailed>>,
}

/// Bytes a streamed job's guest may have emitted that its consumer has not
/// taken yet ([`NodeLink::execute_into`]).
pub(crate) const OUTPUT_WINDOW: u64 = 256 << 10;

/// Where a job's emitted chunks go while it runs.
enum Chunks {
    /// Kept, to come before the returned bytes in the output.
    Collect(Vec<u8>),
    /// Handed on as they arrive (a burst job's chunks go to its origin).
    Forward(mpsc::UnboundedSender<Vec<u8>>),
}

#[derive(Default)]
struct Conn {
    tx: Option<mpsc::Sender<ToNode>>,
    jobs: HashMap<JobId, PendingJob>,
    requests: HashMap<u64, Pending>,
    next_request: u64,
    /// The refused-bytes counters this connection's node last reported
    /// (they start again at 0 with each node).
    refused_seen: HashMap<spillway_proto::TenantId, u64>,
}

pub(crate) struct NodeLink {
    /// Its executor's name, for logs and receipts.
    name: String,
    conn: Mutex<Conn>,
    status: watch::Sender<NodeStatus>,
}

impl std::fmt::Debug for NodeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLink")
            .field("name", &self.name)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

fn unavailable() -> Failure {
    Refusal::NodeUnavailable {
        retry_after_ms: 500,
    }
    .into()
}

/// Cancels a job on the node unless disarmed: whoever waited for it went
/// away before it ended.
struct CancelOnDrop<'a> {
    link: &'a NodeLink,
    job: JobId,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(job = %self.job, "the caller went away; cancelling the job");
            self.link.cancel(self.job);
            // Its answer, when it comes, has nobody to go to.
            self.link
                .conn
                .lock()
                .expect("link lock")
                .jobs
                .remove(&self.job);
        }
    }
}

impl NodeLink {
    pub(crate) fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            conn: Mutex::default(),
            status: watch::channel(NodeStatus::default()).0,
        }
    }

    pub(crate) fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// Told of every change to the status.
    pub(crate) fn subscribe(&self) -> watch::Receiver<NodeStatus> {
        self.status.subscribe()
    }

    pub(crate) fn note_restart(&self) {
        self.status.send_modify(|s| s.restarts += 1);
    }

    /// Sends a job and waits for its end. Dropping the future before the
    /// end (the client or the origin went away) cancels the job on the
    /// node, which interrupts the guest.
    pub(crate) async fn execute(&self, exec: Execute) -> Result<JobOutput, JobFailed> {
        self.run(exec, Chunks::Collect(Vec::new())).await
    }

    /// Like [`NodeLink::execute`], but each chunk the guest emits is sent
    /// into `sink` as it comes (all of them before the end), and the
    /// output's body is only the returned bytes.
    ///
    /// Back-pressure: the guest may run ahead of `sink` by at most
    /// [`OUTPUT_WINDOW`] bytes (its `emit` waits on the node); each chunk
    /// `sink` takes reopens the window by its size. So a consumer that
    /// stops taking stops the guest, and nothing between them grows. A
    /// `sink` that closes (its consumer went away) or takes nothing until
    /// the job's deadline ends the call, which cancels the job on the node.
    pub(crate) async fn execute_into(
        &self,
        mut exec: Execute,
        sink: &mpsc::Sender<Vec<u8>>,
    ) -> Result<JobOutput, JobFailed> {
        exec.output_window = OUTPUT_WINDOW;
        let job = exec.job;
        let deadline_ms = exec.spec.deadline_ms;
        let give_up_at =
            tokio::time::Instant::now() + Duration::from_millis(exec.remaining_ms) + DEADLINE_GRACE;
        let (tx, mut chunks) = mpsc::unbounded_channel();
        let run = self.run(exec, Chunks::Forward(tx));
        let mut run = std::pin::pin!(run);
        // Each chunk into the sink, then its bytes back to the node's window.
        let pass_on = async |chunk: Vec<u8>| -> Result<(), JobFailed> {
            let len = chunk.len() as u64;
            match tokio::time::timeout_at(give_up_at, sink.send(chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Failure::Cancelled.into()),
                Err(_) => return Err(Failure::DeadlineExceeded { deadline_ms }.into()),
            }
            self.credit(job, len).await;
            Ok(())
        };
        let mut streamed = false;
        let outcome = loop {
            tokio::select! {
                biased;
                Some(chunk) = chunks.recv() => {
                    pass_on(chunk).await.map_err(|e| JobFailed { streamed, ..e })?;
                    streamed = true;
                }
                outcome = &mut run => break outcome,
            }
        };
        // Chunks still queued were emitted before the end: they go first.
        while let Ok(chunk) = chunks.try_recv() {
            pass_on(chunk)
                .await
                .map_err(|e| JobFailed { streamed, ..e })?;
            streamed = true;
        }
        outcome.map_err(|e| JobFailed { streamed, ..e })
    }

    /// Reopens a streamed job's output window by `bytes`.
    async fn credit(&self, job: JobId, bytes: u64) {
        let tx = self.conn.lock().expect("link lock").tx.clone();
        if let Some(tx) = tx {
            let _ = tx.send(ToNode::OutputCredit { job, bytes }).await;
        }
    }

    async fn run(&self, exec: Execute, chunks: Chunks) -> Result<JobOutput, JobFailed> {
        let (done, rx) = oneshot::channel();
        let job = exec.job;
        let deadline_ms = exec.spec.deadline_ms;
        let answer_by = Duration::from_millis(exec.remaining_ms) + DEADLINE_GRACE;
        let tx = {
            let mut conn = self.conn.lock().expect("link lock");
            let Some(tx) = conn.tx.clone() else {
                return Err(unavailable().into());
            };
            conn.jobs.insert(job, PendingJob { chunks, done });
            tx
        };
        if tx.send(ToNode::Execute(Box::new(exec))).await.is_err() {
            // The connection closed before the job left: it never ran.
            self.conn.lock().expect("link lock").jobs.remove(&job);
            return Err(unavailable().into());
        }
        let mut guard = CancelOnDrop {
            link: self,
            job,
            armed: true,
        };
        let Ok(answer) = tokio::time::timeout(answer_by, rx).await else {
            // The node did not end the job at its deadline (a host call
            // that does not look at the clock): answer here; the armed
            // guard cancels it on the node.
            tracing::warn!(job = %job, "the node did not end the job by its deadline; answered here");
            return Err(Failure::DeadlineExceeded { deadline_ms }.into());
        };
        let outcome =
            answer.unwrap_or_else(|_| Err(Failure::ExecutorLost { may_have_run: true }.into()));
        guard.armed = false;
        outcome
    }

    /// Asks the node to interrupt a job.
    pub(crate) fn cancel(&self, job: JobId) {
        let tx = self.conn.lock().expect("link lock").tx.clone();
        if let Some(tx) = tx {
            let _ = tx.try_send(ToNode::Cancel { job });
        }
    }

    /// Hands a spooled artifact to the node, which validates and stores
    /// it: announced with its digest and size, then sent in chunks of
    /// [`ARTIFACT_CHUNK`], each after the node took the one before, so at
    /// most one chunk is in flight. If this future is dropped midway the
    /// node drops what it has.
    pub(crate) async fn put_artifact(&self, spooled: &Spooled) -> Result<(Digest, u64), Failure> {
        let (done, rx) = oneshot::channel();
        let request = self
            .request(None, Pending::Upload(done), |request| ToNode::PutArtifact {
                request,
                digest: spooled.digest,
                size: spooled.size,
            })
            .await?;
        let mut guard = AbandonOnDrop {
            link: self,
            request,
            armed: true,
        };
        let mut step = rx.await.unwrap_or_else(|_| Err(unavailable()));
        let mut chunks = spooled
            .reader(ARTIFACT_CHUNK)
            .await
            .map_err(|e| Failure::Internal {
                message: format!("cannot read the spooled artifact: {e}"),
            })?;
        let mut sent = 0u64;
        loop {
            match step? {
                UploadStep::Stored(digest, size) => {
                    guard.armed = false;
                    return Ok((digest, size));
                }
                UploadStep::Progress(received) if received == sent => {}
                UploadStep::Progress(received) => {
                    return Err(Failure::Internal {
                        message: format!("the node has {received} bytes of the {sent} sent"),
                    });
                }
            }
            let bytes = chunks
                .next()
                .await
                .map_err(|e| Failure::Internal {
                    message: format!("cannot read the spooled artifact: {e}"),
                })?
                .ok_or_else(|| Failure::Internal {
                    message: "the node wants more bytes than the artifact has".into(),
                })?;
            sent += bytes.len() as u64;
            let (done, rx) = oneshot::channel();
            self.request(Some(request), Pending::Upload(done), |request| {
                ToNode::ArtifactChunk { request, bytes }
            })
            .await?;
            step = rx.await.unwrap_or_else(|_| Err(unavailable()));
        }
    }

    /// The node holds `digest` now (stored through another executor into
    /// the store they share).
    pub(crate) fn note_stored(&self, digest: Digest) {
        self.status.send_if_modified(|s| {
            if s.held.contains(&digest) {
                return false;
            }
            Arc::make_mut(&mut s.held).insert(digest);
            true
        });
    }

    /// The node discarded its damaged copy of `digest`: it no longer holds
    /// it (the residency loop then reports the eviction).
    pub(crate) fn forget_artifact(&self, digest: &Digest) {
        self.status.send_modify(|s| {
            if s.held.contains(digest) {
                Arc::make_mut(&mut s.held).remove(digest);
            }
        });
    }

    /// Reads at most [`ARTIFACT_CHUNK`] bytes of a stored artifact from
    /// `offset`, and its whole size (for a peer fetching it). At offset 0
    /// the node checks its whole copy first.
    pub(crate) async fn read_artifact(
        &self,
        digest: Digest,
        offset: u64,
    ) -> Result<(u64, Vec<u8>), Failure> {
        let (done, rx) = oneshot::channel();
        self.request(None, Pending::Read(done), |request| ToNode::ReadArtifact {
            request,
            digest,
            offset,
        })
        .await?;
        rx.await.unwrap_or_else(|_| Err(unavailable()))
    }

    /// Sends a request whose answer goes to `pending`: numbered afresh, or
    /// the next step of `request`. Returns its number.
    async fn request(
        &self,
        request: Option<u64>,
        pending: Pending,
        message: impl FnOnce(u64) -> ToNode,
    ) -> Result<u64, Failure> {
        let (tx, request) = {
            let mut conn = self.conn.lock().expect("link lock");
            let Some(tx) = conn.tx.clone() else {
                return Err(unavailable());
            };
            let request = request.unwrap_or_else(|| {
                conn.next_request += 1;
                conn.next_request
            });
            conn.requests.insert(request, pending);
            (tx, request)
        };
        if tx.send(message(request)).await.is_err() {
            self.conn
                .lock()
                .expect("link lock")
                .requests
                .remove(&request);
            return Err(unavailable());
        }
        Ok(request)
    }

    /// Serves one connection to the node until it closes. Returns why it
    /// ended.
    pub(crate) async fn serve(&self, stream: UnixStream) -> String {
        let (mut reader, mut writer) = stream.into_split();
        let hello = match tokio::time::timeout(
            HELLO_TIMEOUT,
            frame_io::read::<FromNode, _>(&mut reader, MAX_FRAME_LEN),
        )
        .await
        {
            Ok(Ok(Some(FromNode::Hello(hello)))) => hello,
            Ok(Ok(other)) => return format!("expected hello, got {other:?}"),
            Ok(Err(e)) => return format!("reading hello: {e}"),
            Err(_) => return "no hello within 10 s".into(),
        };
        if hello.protocol != PROTOCOL_VERSION {
            return format!(
                "node speaks protocol {}, sidecar {PROTOCOL_VERSION}",
                hello.protocol
            );
        }
        tracing::info!(
            executor = %self.name,
            pid = hello.pid,
            slots = hello.capabilities.slots,
            "node connected"
        );

        let (tx, mut rx) = mpsc::channel::<ToNode>(1024);
        let writer_task = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let Err(e) = frame_io::write(&mut writer, &msg).await {
                    tracing::warn!("writing to node: {e}");
                    break;
                }
            }
        });
        self.conn.lock().expect("link lock").tx = Some(tx);
        self.status.send_modify(|s| {
            s.up = true;
            s.pid = Some(hello.pid);
            s.held = Arc::new(hello.resident.iter().copied().collect());
            s.capabilities = Some(hello.capabilities.clone());
        });

        let reason = loop {
            match frame_io::read::<FromNode, _>(&mut reader, MAX_FRAME_LEN).await {
                Ok(Some(msg)) => self.dispatch(msg),
                Ok(None) => break "node closed the connection".to_owned(),
                Err(e) => break format!("reading from node: {e}"),
            }
        };
        self.teardown();
        writer_task.abort();
        reason
    }

    fn dispatch(&self, msg: FromNode) {
        let mut conn = self.conn.lock().expect("link lock");
        match msg {
            FromNode::Load(load) => {
                self.status
                    .send_modify(|s| s.load = Some((load, Instant::now())));
            }
            FromNode::TenantGpu { held, refused } => {
                let seen = &mut conn.refused_seen;
                self.status.send_modify(|s| {
                    s.tenant_gpu = Arc::new(held);
                    let mut total = s.tenant_gpu_refused.to_vec();
                    count_refused(&mut total, seen, &refused);
                    s.tenant_gpu_refused = Arc::new(total);
                });
            }
            // The node's spans, exported on its behalf (it opens no
            // network socket).
            FromNode::Spans(records) => spillway_telemetry::relay::submit(records),
            FromNode::Output { job, chunk, .. } => {
                match conn.jobs.get_mut(&job).map(|p| &mut p.chunks) {
                    Some(Chunks::Collect(chunks)) => chunks.extend_from_slice(&chunk),
                    Some(Chunks::Forward(tx)) => {
                        let _ = tx.send(chunk);
                    }
                    None => {}
                }
            }
            FromNode::Completed(completion) => {
                if let Some(p) = conn.jobs.remove(&completion.job) {
                    let body = match p.chunks {
                        Chunks::Collect(mut chunks) => {
                            chunks.extend_from_slice(&completion.output);
                            chunks
                        }
                        Chunks::Forward(_) => completion.output.clone(),
                    };
                    let _ = p.done.send(Ok(JobOutput {
                        body,
                        completion,
                        executor: self.name.clone(),
                    }));
                }
            }
            FromNode::Failed {
                job,
                failure,
                exec_us,
            } => {
                if let Some(p) = conn.jobs.remove(&job) {
                    let exec_us = Some(exec_us).filter(|us| *us > 0);
                    let _ = p.done.send(Err(JobFailed {
                        failure,
                        exec_us,
                        streamed: false,
                    }));
                }
            }
            FromNode::ArtifactStored {
                request,
                digest,
                size,
            } => {
                self.status.send_modify(|s| {
                    Arc::make_mut(&mut s.held).insert(digest);
                });
                if let Some(Pending::Upload(done)) = conn.requests.remove(&request) {
                    let _ = done.send(Ok(UploadStep::Stored(digest, size)));
                }
            }
            FromNode::ArtifactProgress { request, received } => {
                if let Some(Pending::Upload(done)) = conn.requests.remove(&request) {
                    let _ = done.send(Ok(UploadStep::Progress(received)));
                }
            }
            FromNode::ArtifactRejected { request, failure } => {
                if let Some(pending) = conn.requests.remove(&request) {
                    pending.fail(failure);
                }
            }
            FromNode::ArtifactChunk {
                request,
                size,
                bytes,
            } => {
                if let Some(Pending::Read(done)) = conn.requests.remove(&request) {
                    let _ = done.send(Ok((size, bytes)));
                }
            }
            FromNode::Hello(_) => tracing::warn!("ignoring a second hello from the node"),
        }
    }

    /// Ends everything that was waiting on the closed connection.
    fn teardown(&self) {
        let mut conn = self.conn.lock().expect("link lock");
        conn.tx = None;
        conn.refused_seen.clear();
        self.status.send_modify(|s| {
            s.up = false;
            s.pid = None;
            // The node's jobs, and their buffers, are gone with it.
            s.tenant_gpu = Arc::default();
        });
        let lost = conn.jobs.len();
        for (job, p) in conn.jobs.drain() {
            tracing::warn!(job = %job, executor = %self.name, "executor lost");
            let _ = p
                .done
                .send(Err(Failure::ExecutorLost { may_have_run: true }.into()));
        }
        for (_, pending) in conn.requests.drain() {
            pending.fail(unavailable());
        }
        if lost > 0 {
            tracing::warn!(lost, "node connection ended with jobs in flight");
        }
    }
}

/// Adds to `total` what a node's refused-bytes counters (`now`) grew by
/// since `seen`, its last report on this connection, and remembers `now`.
fn count_refused(
    total: &mut Vec<(spillway_proto::TenantId, u64)>,
    seen: &mut HashMap<spillway_proto::TenantId, u64>,
    now: &[(spillway_proto::TenantId, u64)],
) {
    for (tenant, bytes) in now {
        let before = seen.insert(tenant.clone(), *bytes).unwrap_or(0);
        let grew = bytes.saturating_sub(before);
        match total.iter_mut().find(|(t, _)| t == tenant) {
            Some((_, sum)) => *sum = sum.saturating_add(grew),
            None => total.push((tenant.clone(), grew)),
        }
    }
    total.sort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::TenantId;

    #[test]
    fn refused_bytes_add_up_across_a_nodes_restarts() {
        let acme = TenantId("acme".into());
        let mut total = Vec::new();
        let mut seen = HashMap::new();
        count_refused(&mut total, &mut seen, &[(acme.clone(), 10)]);
        count_refused(&mut total, &mut seen, &[(acme.clone(), 25)]);
        assert_eq!(total, vec![(acme.clone(), 25)]);
        // The node restarted: its counter starts again from 0.
        seen.clear();
        count_refused(&mut total, &mut seen, &[(acme.clone(), 4)]);
        assert_eq!(total, vec![(acme.clone(), 29)]);
        count_refused(&mut total, &mut seen, &[(acme.clone(), 4)]);
        assert_eq!(total, vec![(acme, 29)]);
    }
}
