//! Streamed answers (issue 18), through real host processes: the guest's
//! chunks reach the client as it emits them (timestamps taken on the
//! client), on the host asked and across a burst hop; the outcome comes in
//! trailers or a last server-sent event (read by an SSE parser), a failure
//! after the first chunk included; a client that stops reading holds the
//! guest back without the host's memory growing; one that leaves stops the
//! guest on the peer running it.

use crate::common;

use common::hosts::{self, Api, Host, member};
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What a streamed answer brought: its status and first headers, each data
/// frame with the time it arrived, and its trailers.
struct Streamed {
    status: u16,
    headers: reqwest::header::HeaderMap,
    chunks: Vec<(Instant, Vec<u8>)>,
    trailers: Option<reqwest::header::HeaderMap>,
}

impl Streamed {
    fn body(&self) -> String {
        let bytes: Vec<u8> = self.chunks.iter().flat_map(|(_, c)| c.clone()).collect();
        String::from_utf8(bytes).unwrap()
    }

    fn trailer(&self, name: &str) -> &str {
        self.trailers
            .as_ref()
            .expect("the stream ended with trailers")[name]
            .to_str()
            .unwrap()
    }

    /// The time from the first chunk to the last one before `run`'s
    /// returned bytes.
    fn spread(&self, emitted: usize) -> Duration {
        self.chunks[emitted - 1].0 - self.chunks[0].0
    }
}

fn request(api: &Api, host: &Host, function: &str, input: Vec<u8>) -> reqwest::RequestBuilder {
    api.http
        .post(format!("{}/v1/functions/{function}/invoke", host.endpoint))
        .bearer_auth(&api.token)
        .body(input)
        .timeout(Duration::from_secs(60))
}

/// Sends `r` with `TE: trailers` and reads the answer frame by frame.
async fn streamed(r: reqwest::RequestBuilder) -> Streamed {
    let r = r.header("te", "trailers").send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let mut body = http::Response::<reqwest::Body>::from(r).into_body();
    let (mut chunks, mut trailers) = (Vec::new(), None);
    while let Some(frame) = body.frame().await {
        match frame.unwrap().into_data() {
            Ok(data) => chunks.push((Instant::now(), data.to_vec())),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Streamed {
        status,
        headers,
        chunks,
        trailers,
    }
}

/// Invokes with `Accept: text/event-stream`: the events as an SSE client
/// parses them, `(event, data as JSON)`.
async fn events(api: &Api, host: &Host, function: &str, input: Vec<u8>) -> Vec<(String, Value)> {
    use eventsource_stream::Eventsource as _;
    let r = request(api, host, function, input)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream().eventsource();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        events.push((event.event, serde_json::from_str(&event.data).unwrap()));
    }
    events
}

/// Holds `h1`'s one slot with a spinning job (until the handle is
/// aborted), and waits until host 1 sees itself busy and host 2 free.
async fn hold(api: &Api, h1: &Host) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let forever = 4_000_000_000u32.to_le_bytes().to_vec();
    let busy = tokio::spawn(
        request(api, h1, "spin", forever)
            .header("spillway-placement", "local")
            .send(),
    );
    api.wait(h1, "host 1 busy, host 2 free", |v| {
        member(v, "n1")["running"] == 1 && member(v, "n2")["running"] == 0
    })
    .await;
    busy
}

/// Two hosts of one slot each, countdown and spin uploaded and registered.
async fn two_hosts(root: &std::path::Path, extra: &[&str]) -> (Api, Vec<Host>) {
    let flags = [&["--slots", "1", "--gossip-ms", "100"][..], extra].concat();
    let (api, hosts) = hosts::form(root, &[&flags, &flags]).await;
    for guest in ["countdown", "spin", "flood"] {
        api.put_artifact(&hosts[0], &api.token, guest).await;
    }
    for (name, artifact, deadline_ms) in [
        ("countdown", "countdown", 30_000),
        ("short", "countdown", 700),
        ("spin", "spin", 30_000),
        ("flood", "flood", 60_000),
    ] {
        let spec = json!({"name": name, "artifact": artifact, "deadline_ms": deadline_ms});
        api.create_function(&hosts[0], &api.token, &spec).await;
    }
    (api, hosts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_reach_the_client_as_the_guest_emits_them_here_and_across_a_burst() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = two_hosts(root.path(), &[]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    // Four chunks 300 ms apart, then "liftoff".
    let input = vec![4, 30];
    let countdown = "4\n3\n2\n1\nliftoff\n";

    // On the host asked (the peer is kept out by placement).
    let local = streamed(
        request(&api, h1, "countdown", input.clone()).header("spillway-placement", "local"),
    )
    .await;
    assert_eq!(local.body(), countdown);
    assert_eq!(local.headers["spillway-node"], "n1");
    assert_eq!(local.headers["spillway-burst"], "false");
    assert_eq!(local.trailer("spillway-outcome"), "ok");
    assert!(local.trailer("spillway-exec-ms").parse::<f64>().unwrap() >= 900.0);
    assert!(
        local.spread(4) >= Duration::from_millis(600),
        "the chunks came together: {:?} from the first to the fourth",
        local.spread(4)
    );

    // Across a burst: host 1's one slot is busy, the job runs on host 2,
    // and its chunks still come as they are made there.
    let busy = hold(&api, h1).await;
    let burst = streamed(request(&api, h1, "countdown", input.clone())).await;
    assert_eq!(burst.status, 200);
    assert_eq!(burst.body(), countdown);
    assert_eq!(
        burst.headers["spillway-node"], "n2",
        "named in the first headers"
    );
    assert_eq!(burst.headers["spillway-burst"], "true");
    assert_eq!(burst.trailer("spillway-outcome"), "ok");
    assert_eq!(burst.trailer("spillway-node"), "n2");
    assert!(
        burst.spread(4) >= Duration::from_millis(600),
        "across the burst the chunks came together: {:?}",
        burst.spread(4)
    );

    // As server-sent events (through the burst too): one event per chunk,
    // numbered, then the end with the receipt.
    let got = events(&api, h1, "countdown", input.clone()).await;
    let names: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["chunk", "chunk", "chunk", "chunk", "chunk", "end"]);
    let text: String = got[..5]
        .iter()
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, countdown);
    assert_eq!(got[5].1["receipt"]["node"], "n2", "{}", got[5].1);
    assert_eq!(got[5].1["receipt"]["burst"], true);
    busy.abort();

    // Host 1 counted three streams of four chunks each, none open now.
    let metrics = api.metrics(h1).await;
    for line in [
        "spillway_stream_chunks_total 12",
        "spillway_stream_bytes_total 24",
        "spillway_stream_first_chunk_seconds_count 3",
        "spillway_open_streams 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in {metrics}"
        );
    }

    // A failure after the first chunk: the trailers and the last event say
    // which, and that the job may have run.
    let slow = vec![6, 20];
    let failed = streamed(request(&api, h2, "short", slow.clone())).await;
    assert_eq!(failed.status, 200);
    assert!(failed.body().starts_with("6\n"), "{}", failed.body());
    assert_eq!(failed.trailer("spillway-outcome"), "deadline_exceeded");
    assert_eq!(failed.trailer("spillway-may-have-run"), "true");
    assert!(failed.trailer("spillway-error-message").contains("700 ms"));
    let got = events(&api, h2, "short", slow).await;
    let (last, data) = got.last().unwrap();
    assert_eq!(last, "error", "{got:?}");
    assert_eq!(data["error"]["code"], "deadline_exceeded", "{data}");
    assert_eq!(data["error"]["may_have_run"], true, "{data}");
    assert!(got.len() >= 2 && got[0].0 == "chunk", "{got:?}");

    // A job that fails before any output (spin stops when asked to yield,
    // near its deadline) is answered whole, as ever.
    let forever = 4_000_000_000u32.to_le_bytes().to_vec();
    let r = request(&api, h2, "spin", forever)
        .header("te", "trailers")
        .header("spillway-deadline-ms", "300")
        .send()
        .await
        .unwrap();
    let (status, streamed) = (r.status(), r.headers().contains_key("trailer"));
    let v: Value = r.json().await.unwrap();
    assert_eq!((status.as_u16(), streamed), (500, false), "{v}");
    assert_eq!(v["error"]["code"], "guest_error", "{v}");
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib << 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_the_guest_and_one_that_leaves_stops_it() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = two_hosts(root.path(), &["--max-output-mib", "256"]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);

    // 128 MiB of output, far more than socket buffers hold: the client
    // reads the first chunk, then nothing until the stream is held.
    let chunks = 2048u32;
    let r = request(&api, h1, "flood", chunks.to_le_bytes().to_vec())
        .header("te", "trailers")
        .header("spillway-placement", "local")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = rss(h1.process.pid());
    let mut body = http::Response::<reqwest::Body>::from(r).into_body();
    let mut received = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .len();
    // Held: what host 1 sends on stops growing (unchanged over a second),
    // while the guest still runs.
    let sent = |metrics: String| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("spillway_stream_bytes_total "))
            .map(str::to_owned)
    };
    let until = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (sent(api.metrics(h1).await), Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        assert!(Instant::now() < until, "the stream never stopped growing");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent(api.metrics(h1).await);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    let view = api.cluster(h1).await;
    assert_eq!(
        member(&view, "n1")["running"],
        1,
        "the guest is held while the client does not read: {view:#}"
    );
    let grown = rss(h1.process.pid()).saturating_sub(before);
    eprintln!(
        "host 1 grew {} KiB while its client did not read",
        grown >> 10
    );
    assert!(
        grown < 16 << 20,
        "host 1 grew {grown} bytes while its client did not read"
    );
    // Then everything arrives, nothing lost.
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame.unwrap().into_data() {
            Ok(data) => received += data.len(),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    assert_eq!(received, chunks as usize * 65536 + "done\n".len());
    assert_eq!(trailers.unwrap()["spillway-outcome"], "ok");

    // A client that leaves mid-stream stops the guest on the peer running
    // it: host 1 is busy, the countdown (9 chunks, 1 s apart) bursts to
    // host 2, and the client drops the answer after the first chunk.
    let busy = hold(&api, h1).await;
    let r = request(&api, h1, "countdown", vec![9, 100])
        .header("te", "trailers")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["spillway-node"], "n2");
    let mut body = http::Response::<reqwest::Body>::from(r).into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"9\n");
    let left = Instant::now();
    drop(body);
    api.wait(h2, "the guest stopped on host 2", |v| {
        member(v, "n2")["running"] == 0
    })
    .await;
    // Left alone it would have run 8 s more.
    assert!(
        left.elapsed() < Duration::from_secs(5),
        "host 2 ran the guest on after the client left ({:?})",
        left.elapsed()
    );
    busy.abort();
}
