//! Reading and writing frames on async streams (the `io` feature): the
//! node's and the sidecar's sockets, and the peers' QUIC streams.
//!
//! What it is not: the format (`frame`, pure).

use crate::frame::{self, FrameError, HEADER_LEN};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed: the connection is gone.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a frame of this protocol.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read<T, R>(r: &mut R, max: usize) -> Result<Option<T>, ReadError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; HEADER_LEN];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = frame::body_len(header, max)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(frame::decode_body(&body)?))
}

/// Writes one frame.
pub async fn write<T, W>(w: &mut W, msg: &T) -> std::io::Result<()>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    w.write_all(&frame::encode(msg)).await
}
