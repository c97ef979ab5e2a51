//! Guests from real toolchains through the whole path: Python and
//! JavaScript components built from source (`examples/guests/build.sh`,
//! run by the test command first) are uploaded, invoked over HTTP and
//! through the CLI, burst to a peer that has never seen them, and log
//! into the host log with their job id; hostile guests meet the sandbox.

use crate::common;

use common::built;
use common::hosts::{self, Api, Host};
use serde_json::{Value, json};
use std::time::Duration;

/// Status, receipt headers and body of one invocation.
#[derive(Debug)]
struct Answer {
    status: u16,
    node: String,
    burst: String,
    job: String,
    body: Value,
}

async fn invoke(api: &Api, host: &Host, name: &str, input: &str, local: bool) -> Answer {
    let mut request = api
        .http
        .post(format!("{}/v1/functions/{name}/invoke", host.endpoint))
        .bearer_auth(&api.token)
        .body(input.to_owned())
        .timeout(Duration::from_secs(300));
    if local {
        request = request.header("spillway-placement", "local");
    }
    let r = request.send().await.unwrap();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (status, node, burst, job) = (
        r.status().as_u16(),
        header("spillway-node"),
        header("spillway-burst"),
        header("spillway-job-id"),
    );
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        node,
        burst,
        job,
        body,
    }
}

fn host_log(host: &Host) -> String {
    std::fs::read_to_string(host.dir.join("host.log")).unwrap()
}

/// Lines of `host`'s log that the guest of job `job` wrote.
fn guest_lines(host: &Host, job: &str) -> Vec<String> {
    host_log(host)
        .lines()
        .filter(|l| l.contains(" guest: ") && l.contains(&format!("job={job}")))
        .map(str::to_owned)
        .collect()
}

fn product(body: &Value) -> Vec<f64> {
    body["c"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_guests_run_here_through_the_cli_and_on_a_peer_that_never_saw_them() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(root.path(), &[&["--slots", "1"], &["--slots", "1"]]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    for (artifact, guest) in [
        ("matmul-py", "matmul-py"),
        ("matmul-js", "matmul-js"),
        ("probe-py", "probe-py"),
    ] {
        let r = api.upload(h1, artifact, built(guest)).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        api.create_function(
            h1,
            &api.token,
            &json!({"name": artifact, "artifact": artifact, "deadline_ms": 60_000}),
        )
        .await;
    }

    // Here, over HTTP: the answer, and the guest's log lines (job.log and
    // print) in this host's log with the job id.
    for name in ["matmul-py", "matmul-js"] {
        let a = invoke(&api, h1, name, "", true).await;
        assert_eq!(a.status, 200, "{name}: {a:?}");
        assert_eq!(product(&a.body), [58.0, 64.0, 139.0, 154.0], "{name}");
        assert_eq!((a.node.as_str(), a.burst.as_str()), ("n1", "false"));
        let lines = guest_lines(h1, &a.job);
        assert!(
            lines.iter().any(|l| l.contains("matmul 2x3 by 3x2")),
            "{name}: job.log line missing: {lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("multiplying") && l.contains("stdout")),
            "{name}: stdout line missing: {lines:#?}"
        );
    }

    // Through the CLI.
    let out = std::process::Command::new(common::BIN)
        .args(["invoke", "matmul-py"])
        .env("SPILLWAY_ENDPOINT", &h1.endpoint)
        .env("SPILLWAY_TOKEN", &api.token)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(product(&body), [58.0, 64.0, 139.0, 154.0]);

    // The sandbox seen from Python over the whole path.
    let a = invoke(&api, h1, "probe-py", "env", true).await;
    assert_eq!(a.body[0]["result"], json!({}), "{a:?}");
    let a = invoke(&api, h1, "probe-py", "exit 3", true).await;
    assert_eq!(a.status, 500, "{a:?}");
    assert_eq!(a.body["error"]["code"], "guest_exit", "{a:?}");
    // componentize-py's libc passes only "failed" to wasi:cli/exit: code 1.
    assert_eq!(a.body["error"]["exit_code"], 1, "{a:?}");

    // Burst: n1's one slot is busy with a long job, and n1 has learnt that
    // its jobs take seconds; a JavaScript job goes to n2, which never saw
    // the component: it fetches it from n1, checks it and compiles it.
    let a = invoke(&api, h1, "probe-py", "sleep 2", true).await;
    assert_eq!(a.status, 200, "{a:?}");
    let busy = {
        let (api_http, token, endpoint) =
            (api.http.clone(), api.token.clone(), h1.endpoint.clone());
        tokio::spawn(async move {
            api_http
                .post(format!("{endpoint}/v1/functions/probe-py/invoke"))
                .bearer_auth(token)
                .header("spillway-placement", "local")
                .body("sleep 20")
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    api.wait(h1, "n1's slot busy", |v| {
        hosts::member(v, "n1")["running"] == 1
    })
    .await;
    let a = invoke(
        &api,
        h1,
        "matmul-js",
        r#"{"m":1,"n":1,"k":2,"a":[2,3],"b":[4,5]}"#,
        false,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!((a.node.as_str(), a.burst.as_str()), ("n2", "true"), "{a:?}");
    assert_eq!(product(&a.body), [23.0]);
    let lines = guest_lines(h2, &a.job);
    assert!(
        lines.iter().any(|l| l.contains("matmul 1x2 by 2x1")),
        "the peer's log has the burst job's lines: {lines:#?}"
    );
    assert!(
        host_log(h2).contains("component compiled"),
        "n2 compiled the component it fetched"
    );
    assert_eq!(busy.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_imports_are_refused_by_name_and_a_flooding_guest_is_held_to_its_log_budget() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(
        root.path(),
        &[&["--guest-log-lines", "50", "--guest-log-bytes", "100000"]],
    )
    .await;
    let h1 = &hosts[0];

    let r = api
        .upload(h1, "foreign", common::guest("foreign_import"))
        .await;
    let e = common::expect_error(r, 422, "unsupported_import").await;
    assert_eq!(e["import"], "wasi:keyvalue/store@0.2.0-draft", "{e}");
    let r = api
        .http
        .get(format!("{}/v1/artifacts", h1.endpoint))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed, json!([]), "nothing was stored");

    // The token is checked from the headers before any body byte is read:
    // an upload that announces 30 MiB and sends none is answered 401 at
    // once, as is one with a token and a Content-Length over every kind's
    // limit (413); one over the components' limit, as soon as its first
    // bytes say it is a component.
    let stalled = |auth: String, length: u64| async move {
        common::head_only(&h1.endpoint, "PUT", "/v1/artifacts/big", &auth, length).await
    };
    for auth in ["", "authorization: Bearer nope\r\n"] {
        let (status, body) = stalled(auth.to_owned(), 30 << 20).await;
        assert_eq!(status, 401, "{body}");
    }
    let auth = format!("authorization: Bearer {}\r\n", api.token);
    let (status, body) = stalled(auth.clone(), 9 << 30).await;
    assert_eq!(status, 413, "{body}");
    let put = ("PUT", "/v1/artifacts/big", auth.as_str(), 300 << 20);
    let (status, body) = common::head_then(&h1.endpoint, put, b"\0asm\x0d\0\x01\0\x01").await;
    assert_eq!(status, 413, "{body}");

    let r = api.upload(h1, "flood", common::guest("log_flood")).await;
    assert_eq!(r.status(), 200);
    api.create_function(
        h1,
        &api.token,
        &json!({"name": "flood", "artifact": "flood", "deadline_ms": 500}),
    )
    .await;
    let a = invoke(&api, h1, "flood", "", true).await;
    assert_eq!(a.status, 504, "{a:?}");
    let lines = guest_lines(h1, &a.job);
    assert_eq!(
        lines.len(),
        51,
        "50 lines and the marker: {:#?}",
        &lines[..5.min(lines.len())]
    );
    assert!(lines[50].contains("guest log truncated"), "{}", lines[50]);
    assert!(
        lines[0].contains("flood\\n2026-12-06T00:00:00.000000Z"),
        "{}",
        lines[0]
    );
    assert!(
        !host_log(h1)
            .lines()
            .any(|l| l.starts_with("2026-12-06T00:00:00.000000Z")),
        "a guest's newline never starts a host log line"
    );
}

/// The echo guest with a custom section of `pad` bytes appended: a valid
/// component of any size (custom sections are not compiled).
fn padded_echo(pad: usize) -> Vec<u8> {
    let mut bytes = wat::parse_bytes(&common::guest("echo"))
        .unwrap()
        .into_owned();
    let name = b"padding";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.resize(pad, 0x5a);
    bytes.push(0); // custom section
    let mut size = payload.len() as u64;
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        bytes.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&payload);
    bytes
}

/// The most resident memory `host`'s sidecar process has used, in bytes.
fn peak_rss(host: &Host) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.process.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib << 10
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_larger_than_any_frame_is_spooled_and_fetched_never_held_whole() {
    const PAD: usize = 160 << 20;
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(root.path(), &[&[], &[]]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let big = padded_echo(PAD);
    assert!(big.len() > 64 << 20, "over the old one-frame limit");
    let r = api.upload(h1, "big", big.clone()).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let record: Value = r.json().await.unwrap();
    assert_eq!(record["size"], big.len() as u64, "{record}");
    api.create_function(
        h1,
        &api.token,
        &json!({"name": "big", "artifact": "big", "deadline_ms": 120_000}),
    )
    .await;
    let a = invoke(&api, h1, "big", "here", true).await;
    assert_eq!((a.status, a.node.as_str()), (200, "n1"), "{a:?}");
    assert_eq!(a.body, json!("here"));

    // n2 never had it: it fetches it from n1 over QUIC, into its spool,
    // and hands it to its node in chunks.
    let a = invoke(&api, h2, "big", "there", true).await;
    assert_eq!((a.status, a.node.as_str()), (200, "n2"), "{a:?}");
    assert_eq!(a.body, json!("there"));
    assert!(
        host_log(h2).contains("fetched artifact"),
        "n2 fetched it from n1"
    );

    // Neither sidecar ever held it whole, and nothing is left in the
    // spools or the nodes' incoming folders.
    for host in [h1, h2] {
        let peak = peak_rss(host);
        assert!(
            peak < PAD as u64,
            "{}: the sidecar peaked at {} MiB for a {} MiB artifact",
            host.endpoint,
            peak >> 20,
            PAD >> 20
        );
        assert_eq!(files_in(&host.dir.join("sidecar/spool")), 0);
        assert_eq!(files_in(&host.dir.join("node/incoming")), 0);
    }
}
