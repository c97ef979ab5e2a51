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
