//! The HTTP listener: accepts connections up to a cap and serves each with
//! hyper under a header-read timeout, which also closes a keep-alive
//! connection left idle that long, until shutdown; then the requests in
//! flight finish and every connection is closed.
//!
//! A connection past the cap is answered `503` with `Retry-After` (if the
//! socket takes it at once) and closed, without reading it. So a flood of
//! idle or slow connections costs a bounded number of file descriptors
//! and never keeps others out for longer than the header timeout.
//!
//! With TLS (`crate::tls`), each accepted connection is handshaken under the same
//! header timeout before hyper sees it; one that fails the handshake (plain
//! HTTP, no client certificate under mutual TLS) is closed.
//!
//! What it is not: routing or request limits (`router`, `body`).

use crate::config::IngressLimits;
use crate::tls::ServerTls;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What a connection past the cap is told before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: 80\r\nconnection: close\r\n\r\n{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections\"}}\n";

/// File descriptors kept for everything but HTTP connections: the node's
/// socket, QUIC, the Raft log, spool files, the state directory.
const RESERVED_FILES: u64 = 256;

/// The connection cap a host can honour with `open_files` descriptors.
pub(crate) fn connection_cap(wanted: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(RESERVED_FILES).max(1);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Raises this process's open-file limit to its hard limit; the limit now
/// in force.
pub(crate) fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Whether a host may serve on `addr` as configured: TLS anywhere; plain
/// HTTP on loopback; plain HTTP elsewhere only when the operator said so
/// (`--insecure-http`, for a TLS-terminating proxy in front), with a
/// warning, since tokens and bodies cross the network unencrypted.
pub(crate) fn plain_http(
    addr: std::net::SocketAddr,
    tls: bool,
    insecure_http: bool,
) -> Result<Option<String>, crate::SidecarError> {
    if tls || addr.ip().is_loopback() {
        return Ok(None);
    }
    if !insecure_http {
        return Err(crate::SidecarError::PlainHttp(addr));
    }
    Ok(Some(format!(
        "serving plain HTTP on {addr}, off loopback (--insecure-http): API tokens and request bodies cross the network unencrypted unless a TLS-terminating proxy on this machine is the only way in"
    )))
}

/// Serves `router` on `listener`, over TLS when `tls` is given, until
/// `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: IngressLimits,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    let mut accept_errors = 0u64;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most often: wait for some to
                    // close rather than spin.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(errors = accept_errors, "accepting an HTTP connection failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let Some(tls) = &tls else {
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                let _ = connection.await;
                drop(permit);
            });
            continue;
        };
        let (acceptor, watcher, http) = (tls.acceptor(), graceful.watcher(), http.clone());
        let handshake_timeout = limits.header_timeout;
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await;
                }
                Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Tells a connection past the cap to come back later, if its socket takes
/// the answer at once, and closes it.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_host_own_files() {
        for (wanted, open_files, cap) in [
            (1024, 1_048_576, 1024),
            (1024, 1024, 768),
            (1024, 4096, 1024),
            (10, 100, 1),
            (0, 1_000_000, 0),
        ] {
            assert_eq!(
                connection_cap(wanted, open_files),
                cap,
                "{wanted} {open_files}"
            );
        }
    }

    #[test]
    fn plain_http_off_loopback_takes_insecure_http_and_is_warned_about() {
        // (address, tls, --insecure-http) -> refused, warned
        for (addr, tls, insecure, refused, warned) in [
            ("127.0.0.1:7070", false, false, false, false),
            ("[::1]:7070", false, false, false, false),
            ("0.0.0.0:7070", false, false, true, false),
            ("[::]:7070", false, false, true, false),
            ("10.0.0.5:7070", false, false, true, false),
            ("0.0.0.0:7070", false, true, false, true),
            ("10.0.0.5:7070", false, true, false, true),
            ("0.0.0.0:7070", true, false, false, false),
            ("127.0.0.1:7070", true, true, false, false),
        ] {
            let sa = addr.parse().unwrap();
            match plain_http(sa, tls, insecure) {
                Err(crate::SidecarError::PlainHttp(a)) => {
                    assert!(refused, "{addr} {tls} {insecure}");
                    assert_eq!(a, sa);
                }
                Err(other) => panic!("{other}"),
                Ok(warning) => {
                    assert!(!refused, "{addr} {tls} {insecure}");
                    assert_eq!(warning.is_some(), warned, "{addr} {tls} {insecure}");
                }
            }
        }
    }

    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
