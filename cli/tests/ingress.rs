//! The HTTP ingress under slow, idle and stalling clients (security
//! review findings 2 and 3): idle and half-sent connections are closed at
//! the header timeout, connections past the cap are refused at once, a
//! body that stalls is 408, and bodies being read share one memory budget.
//! Each host here runs with short timeouts so the tests are quick.

use crate::common;

use common::hosts::{self, Api, Host};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(host: &Host) -> TcpStream {
    TcpStream::connect(host.endpoint.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or `within` passes):
/// what it sent, and whether it closed.
async fn until_closed(tcp: &mut TcpStream, within: Duration) -> (String, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn healthz(host: &Host) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/healthz", host.endpoint))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn one_host(flags: &[&str]) -> (tempfile::TempDir, Api, Host) {
    let root = tempfile::tempdir().unwrap();
    let (api, mut hosts) = hosts::form(root.path(), &[flags]).await;
    (root, api, hosts.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_and_past_the_cap_refused() {
    let (_root, _api, host) =
        one_host(&["--header-timeout-ms", "500", "--max-connections", "40"]).await;
    // 60 connections that send nothing, and 1 that sends half a request.
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(connect(&host).await);
    }
    let mut slow = connect(&host).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let opened = Instant::now();
    // Past the cap: 503 and closed at once.
    let mut refused = 0;
    for tcp in &mut idle[40..] {
        let (said, closed) = until_closed(tcp, Duration::from_millis(400)).await;
        assert!(closed, "a connection past the cap is closed at once");
        assert!(said.starts_with("HTTP/1.1 503"), "{said}");
        assert!(said.contains("too_many_connections"), "{said}");
        refused += 1;
    }
    assert_eq!(refused, 20);
    // The rest, and the half-sent request, are closed at the header timeout.
    for tcp in idle[..40].iter_mut().chain([&mut slow]) {
        let (_, closed) = until_closed(tcp, Duration::from_secs(5)).await;
        assert!(closed, "closed after {:?}", opened.elapsed());
    }
    assert!(
        opened.elapsed() < Duration::from_secs(4),
        "{:?}",
        opened.elapsed()
    );
    // The host serves again.
    assert_eq!(healthz(&host).await, 200);

    // A keep-alive connection left idle after a request is closed too.
    let mut kept = connect(&host).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let (_, closed) = until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection is closed");
}

/// Sends an invoke's head announcing `length` bytes and the first
/// `sent` of them; the connection stays open.
async fn stalled_invoke(host: &Host, token: &str, length: usize, sent: usize) -> TcpStream {
    let mut tcp = connect(host).await;
    let head = format!(
        "POST /v1/functions/echo/invoke HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: {length}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&vec![b'x'; sent]).await.unwrap();
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_time_out_and_share_one_budget() {
    let (_root, api, host) = one_host(&[
        "--body-timeout-ms",
        "1500",
        "--max-body-mib-in-flight",
        "16",
    ])
    .await;
    api.publish(
        &host,
        &api.token,
        "echo",
        serde_json::json!({"name": "echo", "artifact": "echo"}),
    )
    .await;
    // Two stalled 8 MiB inputs hold the whole 16 MiB budget.
    let mut first = stalled_invoke(&host, &api.token, 8 << 20, 10).await;
    let mut second = stalled_invoke(&host, &api.token, 8 << 20, 0).await;
    // Once the host reads those two, a third body is refused at once,
    // before a byte of it is read. (A third that came first is dropped,
    // which gives its share back, and tried again; one of the two that
    // lost the race to a third was refused 503 and is sent again.)
    let until = Instant::now() + Duration::from_secs(10);
    let said = loop {
        for (held, sent) in [(&mut first, 10), (&mut second, 0)] {
            let (early, closed) = until_closed(held, Duration::from_millis(50)).await;
            if closed {
                assert!(early.starts_with("HTTP/1.1 503"), "{early}");
                *held = stalled_invoke(&host, &api.token, 8 << 20, sent).await;
            }
        }
        let mut third = stalled_invoke(&host, &api.token, 1 << 20, 0).await;
        let (said, _) = until_closed(&mut third, Duration::from_millis(300)).await;
        if !said.is_empty() || Instant::now() > until {
            break said;
        }
    };
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    assert!(said.contains("\"overloaded\""), "{said}");
    assert!(said.to_ascii_lowercase().contains("retry-after"), "{said}");
    // The stalled ones end 408 at the body timeout, and give the budget back.
    for tcp in [&mut first, &mut second] {
        let (said, _) = until_closed(tcp, Duration::from_secs(5)).await;
        assert!(said.starts_with("HTTP/1.1 408"), "{said}");
        assert!(said.contains("\"body_timeout\""), "{said}");
    }
    let r = api
        .http
        .post(format!("{}/v1/functions/echo/invoke", host.endpoint))
        .bearer_auth(&api.token)
        .body("after")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "after");
}
