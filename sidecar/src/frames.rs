//! Reading and writing `proto` frames on the sidecar's async socket (the
//! node has the same few lines: the two processes share only `proto`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use spillway_proto::frame::{self, FrameError, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub(crate) async fn read<T, R>(r: &mut R, max: usize) -> Result<Option<T>, ReadError>
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
pub(crate) async fn write<T, W>(w: &mut W, msg: &T) -> std::io::Result<()>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    w.write_all(&frame::encode(msg)).await
}
