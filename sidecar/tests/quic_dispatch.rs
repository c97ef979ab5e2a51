//! Burst dispatch over real QUIC on loopback: the input and the output
//! travel raw after their frames, whole, in both directions, also when the
//! endpoints drop, duplicate and reorder datagrams.

use spillway_consensus::PublicKey;
use spillway_proto::{Accelerator, Backend, Completion, Digest, Execute, JobId, JobSpec, TenantId};
use spillway_sidecar::peer::{
    ArtifactRefusal, Dispatch, DispatchReply, Faults, HostIdentity, PeerClient, PeerEndpoint,
    PeerHandler, PeerKind, PeerReply, PeerRequest, PinnedPeers, read_dispatch_reply, serve,
    write_dispatch_reply,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Answers every dispatch with its input reversed.
struct Reverse;

impl PeerHandler for Reverse {
    async fn handle(&self, _from: PeerKind, _request: PeerRequest) -> PeerReply {
        PeerReply::Error("dispatch only".into())
    }

    async fn dispatch(&self, _from: PublicKey, job: Dispatch, mut send: quinn::SendStream) {
        assert_eq!(job.input_len as usize, job.execute.input.len());
        assert!(write_dispatch_reply(&mut send, &DispatchReply::Accepted).await);
        let mut body = job.execute.input;
        body.reverse();
        let completion = Completion {
            job: job.execute.job,
            output: Vec::new(),
            exec_us: 1,
            backend: Backend::Cpu,
            gpu: None,
            weights_loaded_bytes: 0,
            fetched_bytes: 0,
        };
        assert!(
            write_dispatch_reply(
                &mut send,
                &DispatchReply::completed(body, completion, "0".into())
            )
            .await
        );
        let _ = send.finish();
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

fn endpoint(identity: &HostIdentity, pinned: &PinnedPeers) -> PeerEndpoint {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    PeerEndpoint::bind(socket, identity, pinned.clone()).unwrap()
}

fn job(input: Vec<u8>) -> Dispatch {
    Dispatch {
        execute: Execute {
            job: JobId(42),
            spec: JobSpec {
                tenant: TenantId::admin(),
                function: "f".into(),
                digest: Digest::of(b"f"),
                accelerator: Accelerator::None,
                deadline_ms: 5_000,
                memory_limit_bytes: 0,
                idempotent: false,
                placement: Default::default(),
                tenant_gpu_bytes: None,
                kernel_packs: Vec::new(),
                weights: Vec::new(),
            },
            input,
            remaining_ms: 5_000,
            output_window: 0,
            trace: None,
        },
        input_len: 0,
        idempotency_key: None,
        attempt: 1,
        borrowed_quota: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_and_output_arrive_whole_after_their_frames() {
    let (a, b) = (
        HostIdentity::generate().unwrap(),
        HostIdentity::generate().unwrap(),
    );
    let pinned = PinnedPeers::default();
    pinned.pin(a.public_key());
    pinned.pin(b.public_key());
    let (origin, peer) = (endpoint(&a, &pinned), endpoint(&b, &pinned));
    tokio::spawn(serve(peer.clone(), pinned.clone(), Arc::new(Reverse)));
    let client = PeerClient::new(origin.clone());
    client.set_address(2, peer.local_addr().unwrap());

    // Empty, small and a few hundred KiB (many QUIC packets) of input.
    for size in [0usize, 5, 300 << 10] {
        let input: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut recv = client
            .open_dispatch(2, job(input.clone()), Duration::from_secs(5))
            .await
            .unwrap();
        let first = read_dispatch_reply(&mut recv).await.unwrap();
        assert!(matches!(first, Some(DispatchReply::Accepted)), "{first:?}");
        let Some(DispatchReply::Completed { body, body_len, .. }) =
            read_dispatch_reply(&mut recv).await.unwrap()
        else {
            panic!("expected Completed");
        };
        let mut expected = input;
        expected.reverse();
        assert_eq!(body_len as usize, size);
        assert_eq!(body, expected);
        assert!(read_dispatch_reply(&mut recv).await.unwrap().is_none());
    }
    origin.close();
    peer.close();
}

/// One dispatch of `input` to host 2; the body it brought back.
async fn round_trip(client: &PeerClient, input: Vec<u8>) -> Vec<u8> {
    let mut recv = client
        .open_dispatch(2, job(input), Duration::from_secs(10))
        .await
        .unwrap();
    let first = read_dispatch_reply(&mut recv).await.unwrap();
    assert!(matches!(first, Some(DispatchReply::Accepted)), "{first:?}");
    match read_dispatch_reply(&mut recv).await.unwrap() {
        Some(DispatchReply::Completed { body, .. }) => body,
        other => panic!("expected Completed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_survives_loss_duplication_and_reordering() {
    let (a, b) = (
        HostIdentity::generate().unwrap(),
        HostIdentity::generate().unwrap(),
    );
    let pinned = PinnedPeers::default();
    pinned.pin(a.public_key());
    pinned.pin(b.public_key());
    let faulty = |identity: &HostIdentity, seed: u64| {
        let faults = Faults {
            loss: 0.10,
            duplicate: 0.05,
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(4),
            seed,
        };
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        PeerEndpoint::bind_with_faults(socket, identity, pinned.clone(), faults).unwrap()
    };
    let (origin, origin_stats) = faulty(&a, 1);
    let (peer, peer_stats) = faulty(&b, 2);
    tokio::spawn(serve(peer.clone(), pinned.clone(), Arc::new(Reverse)));
    let client = PeerClient::new(origin.clone());
    client.set_address(2, peer.local_addr().unwrap());

    // 30 jobs of 64 KiB each way: about 3000 datagrams, a tenth of them lost.
    for i in 0..30u32 {
        let input: Vec<u8> = (0..64 << 10)
            .map(|j| ((i as usize + j) % 253) as u8)
            .collect();
        let mut expected = input.clone();
        expected.reverse();
        assert_eq!(round_trip(&client, input).await, expected, "job {i}");
    }
    for (side, stats) in [("origin", &origin_stats), ("peer", &peer_stats)] {
        let sent = stats.sent.load(Ordering::Relaxed);
        let dropped = stats.dropped.load(Ordering::Relaxed);
        let duplicated = stats.duplicated.load(Ordering::Relaxed);
        eprintln!("{side}: sent {sent}, dropped {dropped}, duplicated {duplicated}");
        assert!(dropped > 0 && duplicated > 0, "{side}: faults were applied");
    }
    origin.close();
    peer.close();
}
