//! A streamed job's way out: the chunks its guest emits, on their way to
//! the client as they come, and where the job runs now (which the
//! response's first headers name). The job's side holds a [`StreamTo`],
//! the HTTP side the [`StreamFrom`] made with it.
//!
//! Bounded: the channel holds a few chunks; behind it the node's output
//! window (`NodeLink::execute_into`) or, across a burst hop, QUIC's flow
//! control, so a client that stops reading holds the guest's `emit`,
//! never memory.

use spillway_proto::NodeId;
use tokio::sync::{mpsc, watch};

/// Chunks the channel holds before the job's side waits.
const CHUNKS_BUFFERED: usize = 8;

/// Where a streamed job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunningOn {
    pub(crate) host: NodeId,
    /// On a peer (a burst), not on this host.
    pub(crate) burst: bool,
}

/// The job's side of a stream.
#[derive(Debug)]
pub(crate) struct StreamTo {
    /// The guest's chunks, as emitted.
    pub(crate) chunks: mpsc::Sender<Vec<u8>>,
    /// Set before the job starts on this host's node, or once a peer took
    /// it.
    pub(crate) running_on: watch::Sender<Option<RunningOn>>,
}

/// The HTTP side of a stream.
#[derive(Debug)]
pub(crate) struct StreamFrom {
    pub(crate) chunks: mpsc::Receiver<Vec<u8>>,
    pub(crate) running_on: watch::Receiver<Option<RunningOn>>,
}

/// A new stream's two ends.
pub(crate) fn channel() -> (StreamTo, StreamFrom) {
    let (chunks_tx, chunks_rx) = mpsc::channel(CHUNKS_BUFFERED);
    let (on_tx, on_rx) = watch::channel(None);
    (
        StreamTo {
            chunks: chunks_tx,
            running_on: on_tx,
        },
        StreamFrom {
            chunks: chunks_rx,
            running_on: on_rx,
        },
    )
}
