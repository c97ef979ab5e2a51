//! `spillway bench dispatch`: what the burst dispatch protocol costs on top
//! of QUIC itself.
//!
//! Two pairs of endpoints in this process, on loopback, all with the
//! sidecar's own TLS and transport settings and pinned keys:
//!
//! - **dispatch**: the origin opens a stream with a `Dispatch` frame (a
//!   job with `--payload` bytes of input) through `PeerClient`; the peer's
//!   `PeerHandler` answers from a null executor (`Accepted`, then
//!   `Completed` with the input as output). One round trip = open, send,
//!   both answers read.
//! - **raw quinn** (the anchor): a bi-stream carrying the same bytes as the
//!   dispatch frame, echoed back by a bare accept loop.
//! - **tonic** (the second anchor): a gRPC unary echo of the same bytes
//!   over HTTP/2 on loopback TCP, without TLS (`tonic_echo`).
//!
//! Round trips run one at a time (latency), the kinds interleaved so all
//! see the same machine state. The target is dispatch p50 at most 1.2× raw.

use super::cores;
use super::tonic_echo::TonicPair;
use crate::stats::{ms, percentile};
use anyhow::{Context, bail};
use spillway_consensus::PublicKey;
use spillway_proto::{
    Accelerator, Backend, Completion, Digest, Execute, JobId, JobSpec, TenantId, frame,
};
use spillway_sidecar::peer::{
    ArtifactRefusal, Dispatch, DispatchReply, HostIdentity, PeerClient, PeerEndpoint, PeerHandler,
    PeerKind, PeerReply, PeerRequest, PinnedPeers, read_dispatch_reply, serve,
    write_dispatch_reply,
};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A peer whose executor does nothing: every dispatch completes at once
/// with its input as output.
struct NullPeer;

impl PeerHandler for NullPeer {
    async fn handle(&self, _from: PeerKind, _request: PeerRequest) -> PeerReply {
        PeerReply::Error("this bench peer answers dispatches only".into())
    }

    async fn dispatch(&self, _from: PublicKey, job: Dispatch, mut send: quinn::SendStream) {
        if !write_dispatch_reply(&mut send, &DispatchReply::Accepted).await {
            return;
        }
        let completion = Completion {
            job: job.execute.job,
            output: Vec::new(),
            exec_us: 0,
            backend: Backend::Cpu,
            gpu: None,
            weights_loaded_bytes: 0,
            fetched_bytes: 0,
        };
        let done = DispatchReply::completed(job.execute.input, completion, "0".into());
        if write_dispatch_reply(&mut send, &done).await {
            let _ = send.finish();
        }
    }

    fn datagram(&self, _from: PublicKey, _bytes: &[u8]) {}

    type Artifact = std::convert::Infallible;
    async fn artifact(
        &self,
        _digest: Digest,
        _from: u64,
    ) -> Result<Self::Artifact, ArtifactRefusal> {
        Err(ArtifactRefusal::NotHeld)
    }
}

fn dispatch(i: u64, payload: usize) -> Dispatch {
    Dispatch {
        execute: Execute {
            job: JobId(u128::from(i)),
            spec: JobSpec {
                tenant: TenantId::admin(),
                function: "bench".into(),
                digest: Digest::of(b"bench"),
                accelerator: Accelerator::None,
                deadline_ms: 10_000,
                memory_limit_bytes: 0,
                idempotent: true,
                placement: Default::default(),
                tenant_gpu_bytes: None,
                kernel_packs: Vec::new(),
                weights: Vec::new(),
            },
            input: vec![7u8; payload],
            remaining_ms: 10_000,
            output_window: 0,
            trace: None,
        },
        input_len: 0,
        idempotency_key: None,
        attempt: 1,
        borrowed_quota: false,
    }
}

/// Echoes every stream's bytes back (the raw quinn anchor).
async fn echo(endpoint: PeerEndpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    if let Ok(bytes) = recv.read_to_end(64 << 20).await
                        && send.write_all(&bytes).await.is_ok()
                    {
                        let _ = send.finish();
                    }
                });
            }
        });
    }
}

/// The raw quinn anchor: one connection between two endpoints with the
/// sidecar's settings, a bi-stream per echo.
pub(super) struct RawPair {
    client: PeerEndpoint,
    server: PeerEndpoint,
    conn: quinn::Connection,
}

impl RawPair {
    pub(super) async fn start() -> anyhow::Result<Self> {
        let pinned = PinnedPeers::default();
        let (a, b) = (HostIdentity::generate()?, HostIdentity::generate()?);
        pinned.pin(a.public_key());
        pinned.pin(b.public_key());
        let client = endpoint(&a, &pinned)?;
        let server = endpoint(&b, &pinned)?;
        tokio::spawn(echo(server.clone()));
        let conn = client
            .connect(server.local_addr()?)
            .await
            .map_err(|e| anyhow::anyhow!("connecting the raw pair: {e}"))?;
        Ok(Self {
            client,
            server,
            conn,
        })
    }

    /// One echo of `bytes`: open, send, read it all back.
    pub(super) async fn round_trip(&self, bytes: &[u8]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(bytes).await?;
        send.finish()?;
        let back = recv.read_to_end(64 << 20).await?;
        anyhow::ensure!(back.len() == bytes.len(), "short echo");
        Ok(started.elapsed())
    }

    pub(super) fn close(&self) {
        self.client.close();
        self.server.close();
    }
}

fn endpoint(identity: &HostIdentity, pinned: &PinnedPeers) -> anyhow::Result<PeerEndpoint> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(PeerEndpoint::bind(socket, identity, pinned.clone())?)
}

pub(crate) async fn run(requests: usize, payload: usize) -> anyhow::Result<ExitCode> {
    if requests == 0 {
        bail!("--requests must be positive");
    }
    let pinned = PinnedPeers::default();
    let ids = (0..2)
        .map(|_| HostIdentity::generate())
        .collect::<Result<Vec<_>, _>>()?;
    for id in &ids {
        pinned.pin(id.public_key());
    }
    // Dispatch pair: a PeerClient calling a served NullPeer.
    let origin = endpoint(&ids[0], &pinned)?;
    let peer = endpoint(&ids[1], &pinned)?;
    let client = PeerClient::new(origin.clone());
    client.set_address(2, peer.local_addr()?);
    tokio::spawn(serve(peer.clone(), pinned.clone(), Arc::new(NullPeer)));
    let raw = RawPair::start().await?;
    // The same bytes as a dispatch stream: the frame, then the input.
    let mut sample = dispatch(0, payload);
    let input = std::mem::take(&mut sample.execute.input);
    sample.input_len = input.len() as u64;
    let mut raw_bytes = frame::encode(&PeerRequest::Dispatch(sample));
    raw_bytes.extend_from_slice(&input);
    let mut tonic = TonicPair::start().await?;
    let tonic_bytes = bytes::Bytes::from(raw_bytes.clone());

    let one_dispatch = |i: u64| {
        let client = client.clone();
        async move {
            let started = Instant::now();
            let mut recv = client
                .open_dispatch(2, dispatch(i, payload), Duration::from_secs(5))
                .await
                .context("opening a dispatch stream")?;
            let accepted = read_dispatch_reply(&mut recv)
                .await
                .map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                matches!(accepted, Some(DispatchReply::Accepted)),
                "expected Accepted, got {accepted:?}"
            );
            let done = read_dispatch_reply(&mut recv)
                .await
                .map_err(anyhow::Error::msg)?;
            match done {
                Some(DispatchReply::Completed { body, .. }) if body.len() == payload => {}
                other => bail!("expected Completed, got {other:?}"),
            }
            anyhow::Ok(started.elapsed())
        }
    };
    let warm_up = (requests / 10).max(10);
    for i in 0..warm_up {
        one_dispatch(i as u64).await?;
        raw.round_trip(&raw_bytes).await?;
        tonic.round_trip(&tonic_bytes).await?;
    }
    let mut dispatch_times = Vec::with_capacity(requests);
    let mut raw_times = Vec::with_capacity(requests);
    let mut tonic_times = Vec::with_capacity(requests);
    for i in 0..requests {
        dispatch_times.push(one_dispatch(i as u64).await?);
        raw_times.push(raw.round_trip(&raw_bytes).await?);
        tonic_times.push(tonic.round_trip(&tonic_bytes).await?);
    }
    dispatch_times.sort();
    raw_times.sort();
    tonic_times.sort();
    println!(
        "dispatch round trip: loopback QUIC in one process, {} cores, {payload} B input, {requests} round trips each, one at a time, interleaved",
        cores()
    );
    println!("{:<28} {:>9} {:>9} {:>9}", "", "p50_ms", "p90_ms", "p99_ms");
    for (label, times) in [
        ("dispatch (null executor)", &dispatch_times),
        ("raw quinn bi-stream echo", &raw_times),
        ("tonic unary echo (h2, TCP)", &tonic_times),
    ] {
        println!(
            "{label:<28} {:>9.3} {:>9.3} {:>9.3}",
            ms(percentile(times, 0.50)),
            ms(percentile(times, 0.90)),
            ms(percentile(times, 0.99)),
        );
    }
    let ratio = percentile(&dispatch_times, 0.5).as_secs_f64()
        / percentile(&raw_times, 0.5).as_secs_f64().max(1e-9);
    println!("p50 ratio dispatch / raw: {ratio:.2}x (target: at most 1.2x)");
    let vs_tonic = percentile(&dispatch_times, 0.5).as_secs_f64()
        / percentile(&tonic_times, 0.5).as_secs_f64().max(1e-9);
    println!(
        "p50 ratio dispatch / tonic: {vs_tonic:.2}x (tonic has no TLS here; dispatch has TLS 1.3)"
    );
    origin.close();
    peer.close();
    raw.close();
    Ok(ExitCode::SUCCESS)
}
