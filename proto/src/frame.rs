//! Framing: `[len: u32 big-endian][version: u8][postcard body]`, where `len`
//! counts the version byte and the body.
//!
//! Readers call [`body_len`] on the 4-byte header first, which checks the
//! length against the maximum before anything is allocated, then read that
//! many bytes and call [`decode_body`]. [`decode`] does both on a buffer, for
//! callers that already hold the bytes. Malformed input of any kind yields a
//! [`FrameError`], never a panic.

use serde::{Serialize, de::DeserializeOwned};

/// The protocol version carried in every frame.
pub const PROTOCOL_VERSION: u8 = 6;

/// The default largest frame: 64 MiB, enough for a job's input or output
/// (artifacts travel in chunks of [`crate::ARTIFACT_CHUNK`]).
pub const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// What can be wrong with a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces more bytes than the reader accepts; drop the
    /// connection (the stream cannot be resynchronised).
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    /// A frame must hold at least the version byte.
    #[error("empty frame")]
    Empty,
    /// The peer speaks another protocol version; upgrade one side.
    #[error("protocol version {got} is not supported (this side speaks {PROTOCOL_VERSION})")]
    Version { got: u8 },
    /// The body is not a valid message.
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// The body decoded but left bytes over.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// More bytes are needed ([`decode`] only).
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete { needed: usize },
}

/// Encodes `msg` as one frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + 1];
    out[HEADER_LEN] = PROTOCOL_VERSION;
    // Serialising our own message types into a Vec cannot fail.
    let out = postcard::to_extend(msg, out).expect("postcard serialisation into a Vec");
    let len = u32::try_from(out.len() - HEADER_LEN).expect("frame length fits in u32");
    let mut out = out;
    out[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads the header: the number of bytes that follow it.
pub fn body_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(len)
}

/// Decodes the bytes after the header (version byte and body).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (&version, rest) = body.split_first().ok_or(FrameError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: version });
    }
    let (msg, left) =
        postcard::take_from_bytes(rest).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !left.is_empty() {
        return Err(FrameError::Trailing(left.len()));
    }
    Ok(msg)
}

/// Decodes one frame from the front of `buf`, returning it and the number of
/// bytes it used.
pub fn decode<T: DeserializeOwned>(buf: &[u8], max: usize) -> Result<(T, usize), FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err(FrameError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let len = body_len(header.try_into().expect("4 bytes"), max)?;
    let end = HEADER_LEN + len;
    let Some(body) = buf.get(HEADER_LEN..end) else {
        return Err(FrameError::Incomplete {
            needed: end - buf.len(),
        });
    };
    Ok((decode_body(body)?, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{Failure, Refusal};
    use crate::ids::{Digest, JobId, TenantId};
    use crate::message::*;
    use proptest::prelude::*;

    fn sample_messages() -> Vec<FromNode> {
        vec![
            FromNode::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                node_version: "0.1.0".into(),
                pid: 42,
                capabilities: Capabilities {
                    slots: 4,
                    backends: vec![Backend::Cpu],
                    gpus: vec![],
                    max_memory_bytes: 1 << 30,
                    epoch_tick_ms: 10,
                    sharing: vec![],
                },
                resident: vec![Digest::of(b"a")],
            }),
            FromNode::Output {
                job: JobId(7),
                seq: 0,
                chunk: b"chunk".to_vec(),
            },
            FromNode::Failed {
                job: JobId(9),
                failure: Failure::Refused(Refusal::QueueFull { retry_after_ms: 5 }),
                exec_us: 0,
            },
        ]
    }

    #[test]
    fn messages_round_trip() {
        for msg in sample_messages() {
            let bytes = encode(&msg);
            let (back, used) = decode::<FromNode>(&bytes, MAX_FRAME_LEN).unwrap();
            assert_eq!(back, msg);
            assert_eq!(used, bytes.len());
        }
        let exec = ToNode::Execute(Box::new(Execute {
            job: JobId(1),
            spec: JobSpec {
                tenant: TenantId::admin(),
                function: "echo".into(),
                digest: Digest::of(b"x"),
                accelerator: Accelerator::None,
                deadline_ms: 1000,
                memory_limit_bytes: 1 << 20,
                idempotent: false,
                placement: Default::default(),
                tenant_gpu_bytes: None,
                kernel_packs: Vec::new(),
                weights: Vec::new(),
            },
            input: vec![1, 2, 3],
            remaining_ms: 999,
            output_window: 0,
            trace: Some(crate::TraceCarrier {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: "congo=t61rcWkgMzE".into(),
            }),
        }));
        let bytes = encode(&exec);
        assert_eq!(decode::<ToNode>(&bytes, MAX_FRAME_LEN).unwrap().0, exec);
    }

    #[test]
    fn oversized_header_is_refused_before_reading_the_body() {
        let header = (1u32 << 31).to_be_bytes();
        assert_eq!(
            body_len(header, MAX_FRAME_LEN),
            Err(FrameError::TooLarge {
                len: 1 << 31,
                max: MAX_FRAME_LEN
            })
        );
    }

    #[test]
    fn wrong_version_is_typed() {
        let mut bytes = encode(&ToNode::Cancel { job: JobId(1) });
        bytes[HEADER_LEN] = 99;
        assert_eq!(
            decode::<ToNode>(&bytes, MAX_FRAME_LEN).unwrap_err(),
            FrameError::Version { got: 99 }
        );
    }

    #[test]
    fn truncation_at_every_point_is_incomplete() {
        for msg in sample_messages() {
            let bytes = encode(&msg);
            for cut in 0..bytes.len() {
                assert!(matches!(
                    decode::<FromNode>(&bytes[..cut], MAX_FRAME_LEN),
                    Err(FrameError::Incomplete { .. })
                ));
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<FromNode>(&bytes, 4096);
            let _ = decode::<ToNode>(&bytes, 4096);
        }

        #[test]
        fn random_bodies_behind_a_valid_header_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let mut frame = (body.len() as u32 + 1).to_be_bytes().to_vec();
            frame.push(PROTOCOL_VERSION);
            frame.extend_from_slice(&body);
            let _ = decode::<FromNode>(&frame, 4096);
            let _ = decode::<ToNode>(&frame, 4096);
        }

        #[test]
        fn truncated_and_mutated_frames_are_typed_errors(
            cut in 0usize..64, flip in 0usize..64, bit in 0u8..8
        ) {
            let mut bytes = encode(&sample_messages()[0]);
            let flip = flip % bytes.len();
            bytes[flip] ^= 1 << bit;
            let cut = cut.min(bytes.len());
            let _ = decode::<FromNode>(&bytes[..bytes.len() - cut], MAX_FRAME_LEN);
        }
    }
}
