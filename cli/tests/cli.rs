//! The `spillway` client commands against a running host, configured only
//! through SPILLWAY_ENDPOINT and SPILLWAY_TOKEN as a user would.

mod common;

use common::{BIN, Cluster};
use std::io::Write;
use std::process::{Command, Stdio};

fn spillway(c: &Cluster, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("SPILLWAY_ENDPOINT", &c.endpoint)
        .env("SPILLWAY_TOKEN", &c.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn push_create_invoke_and_status_from_the_cli() {
    let c = Cluster::start(1, 4);
    let wat = format!(
        "{}/../examples/guests/uppercase.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = spillway(&c, &["artifact", "push", "upper", &wat], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(stored["digest"].as_str().unwrap().starts_with("blake3:"));

    let out = spillway(&c, &["fn", "create", "upper", "--artifact", "upper"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = spillway(&c, &["invoke", "upper"], b"from stdin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"FROM STDIN");

    let out = spillway(&c, &["invoke", "upper", "--json"], b"receipt");
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["output"], "RECEIPT");
    assert_eq!(receipt["node"], "n1");
    assert_eq!(receipt["backend"], "cpu");
    assert_eq!(receipt["job_id"].as_str().unwrap().len(), 32);

    let out = spillway(&c, &["invoke", "missing"], b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_function"));

    let out = spillway(&c, &["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["members"][0]["state"], "active");
    assert_eq!(status["members"][0]["slots"], 1);
}

#[test]
fn up_refuses_a_host_count_out_of_range() {
    for hosts in ["0", "17"] {
        let out = Command::new(BIN)
            .args(["up", "--hosts", hosts])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--hosts"), "{stderr}");
    }
}

/// Security review finding 16: a host started with `--stop-on-stdin-close`
/// still stops on SIGTERM while its stdin stays open.
#[test]
fn a_host_watching_its_stdin_still_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Command::new(BIN)
        .args([
            "host",
            "--init",
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--stop-on-stdin-close")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _stdin = host.stdin.take().unwrap();
    let stdout = std::io::BufReader::new(host.stdout.take().unwrap());
    use std::io::BufRead;
    for line in stdout.lines() {
        if line.unwrap().starts_with("listening on ") {
            break;
        }
    }
    let killed = Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Some(status) = host.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = host.kill();
            panic!("the host ignored SIGTERM while its stdin stayed open");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
