//! The checks the fuzz targets run (`fuzz/`, with cargo-fuzz) and the
//! corpus replay runs in CI: each takes arbitrary bytes, feeds them to a
//! parser the network reaches, and panics only when the parser breaks a
//! promise: it panicked, or it accepted something it then cannot
//! reproduce (decode, encode, decode again must give the same bytes).

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spillway_proto::{FromNode, MAX_FRAME_LEN, ToNode, frame};
use spillway_sidecar::ScopedToken;
use spillway_sidecar::http::{InvokeHeaders, request};
use spillway_sidecar::peer::{DispatchReply, JoinTicket, PeerReply, PeerRequest};

/// Frames from the node socket and the peer protocol. The first byte picks
/// the message type, the rest is the frame.
pub fn frame(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => round_trip::<ToNode>(bytes),
        1 => round_trip::<FromNode>(bytes),
        2 => round_trip::<PeerRequest>(bytes),
        3 => round_trip::<PeerReply>(bytes),
        _ => round_trip::<DispatchReply>(bytes),
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    let Ok((msg, used)) = frame::decode::<T>(bytes, MAX_FRAME_LEN) else {
        return;
    };
    assert!(used <= bytes.len(), "used {used} of {} bytes", bytes.len());
    let encoded = frame::encode(&msg);
    let (again, _) = frame::decode::<T>(&encoded, MAX_FRAME_LEN)
        .unwrap_or_else(|e| panic!("a decoded frame does not decode once re-encoded: {e}"));
    assert_eq!(frame::encode(&again), encoded, "re-encoding is not stable");
}

/// Join tickets as pasted by an operator (any text).
pub fn join_ticket(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ticket) = JoinTicket::decode(text) else {
        return;
    };
    let encoded = ticket.encode();
    let again = JoinTicket::decode(&encoded).expect("an encoded ticket decodes");
    assert_eq!(again, ticket);
}

/// An HTTP/1.1 invoke request as it arrives: parsed with `httparse` (as
/// hyper does), then the path, the bearer token and the invoke headers
/// through the sidecar's own parsing.
pub fn invoke_request(data: &[u8]) {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        // hyper refuses requests whose headers do not parse; so does this.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        headers.append(name, value);
    }
    let _function = req
        .path
        .and_then(|p| p.strip_prefix("/v1/functions/"))
        .and_then(|p| p.strip_suffix("/invoke"));
    if let Ok(token) = request::bearer(&headers)
        && let Some(scoped) = ScopedToken::parse(token)
    {
        assert!(!scoped.id.is_empty(), "a parsed token has an id");
    }
    const FUNCTION_DEADLINE_MS: u64 = 30_000;
    if let Ok(parsed) = InvokeHeaders::parse(&headers, FUNCTION_DEADLINE_MS) {
        assert!((1..=FUNCTION_DEADLINE_MS).contains(&parsed.deadline_ms));
        if let Some(key) = &parsed.idempotency_key {
            assert!(
                !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()),
                "key {key:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! The fuzz corpus (`fuzz/corpus/<target>/`), replayed: every input
    //! the fuzzer kept, and every crash it found once fixed, runs here on
    //! each CI run.
    use std::path::PathBuf;

    fn replay(target: &str, check: fn(&[u8])) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{} fails its check", path.display());
            n += 1;
        }
        assert!(
            n >= 5,
            "{target}: only {n} corpus inputs in {}",
            dir.display()
        );
    }

    #[test]
    fn the_frame_corpus_replays() {
        replay("frame", super::frame);
    }

    #[test]
    fn the_join_ticket_corpus_replays() {
        replay("join_ticket", super::join_ticket);
    }

    #[test]
    fn the_invoke_request_corpus_replays() {
        replay("invoke_request", super::invoke_request);
    }
}
