//! Upgrades: a state directory written by the previous format (before
//! formats were versioned; `fixtures/state-v0`, made by
//! `scripts/make-state-fixture.sh`) is migrated in place by this build,
//! and the cluster keeps its tenant, its tokens and its function; a
//! directory of a later format is refused.

use crate::common::hosts::{Api, Host};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn fixture() -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    serde_json::from_slice(&std::fs::read(dir.join("state-v0.json")).unwrap()).unwrap()
}

/// The fixture's host directory, unpacked under `root`.
fn unpack(root: &Path) -> std::path::PathBuf {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v0.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
    root.join("host")
}

/// Invokes `function`; a 503 (the node still starting: a host serves HTTP
/// before its node is up) is asked again, for up to 30 s.
async fn invoke(api: &Api, host: &Host, token: &str, function: &str, input: &str) -> String {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = api
            .http
            .post(format!("{}/v1/functions/{function}/invoke", host.endpoint))
            .bearer_auth(token)
            .body(input.to_owned())
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body = answer.text().await.unwrap();
        if status == 503 && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        return body;
    }
}

/// What a started host logged about migrating, at its latest start.
fn migrations_logged(dir: &Path, starts_before: usize) -> Vec<String> {
    let log = std::fs::read_to_string(dir.join("host.log")).unwrap();
    log.split("sidecar serving")
        .nth(starts_before)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("migrated to this build's format"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_of_the_previous_format_is_upgraded_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = unpack(tmp.path());
    let f = fixture();
    let text = |k: &str| f[k].as_str().unwrap().to_owned();
    let api = Api {
        http: reqwest::Client::new(),
        token: text("admin_token"),
    };

    let host = Host::start(&dir, &[], None).unwrap();
    let migrated = migrations_logged(&dir, 0);
    for store in ["log.redb", "snapshot.bin", "node"] {
        assert!(
            migrated
                .iter()
                .any(|l| l.contains(store) && l.contains("from=0")),
            "{store} was not migrated: {migrated:#?}"
        );
    }
    // The tenant, its token and its function came through.
    let tenants = api.get(&host, "/v1/tenants").await.unwrap();
    assert!(
        tenants
            .to_string()
            .contains(&format!("\"{}\"", text("tenant"))),
        "{tenants}"
    );
    let tokens = api.get(&host, "/v1/tokens").await.unwrap();
    assert!(tokens.to_string().contains("\"fixture\""), "{tokens}");
    let output = invoke(
        &api,
        &host,
        &text("tenant_token"),
        &text("function"),
        &text("input"),
    )
    .await;
    assert_eq!(output, text("output"));
    // The stores now carry this build's versions.
    let snapshot = std::fs::read(dir.join("sidecar/raft/state/snapshot.bin")).unwrap();
    assert!(snapshot.starts_with(b"SPWSNAP\0"));
    assert_eq!(
        std::fs::read_to_string(dir.join("node/format"))
            .unwrap()
            .trim(),
        spillway_node::NODE_FORMAT.to_string()
    );

    // Once upgraded, a restart migrates nothing and serves the same.
    host.process.stop(Duration::from_secs(30));
    let host = Host::start(&dir, &[], None).unwrap();
    assert_eq!(migrations_logged(&dir, 1), Vec::<String>::new());
    let output = invoke(
        &api,
        &host,
        &text("tenant_token"),
        &text("function"),
        &text("input"),
    )
    .await;
    assert_eq!(output, text("output"));
    host.process.stop(Duration::from_secs(30));

    // A directory a later build wrote is refused, naming what to do.
    std::fs::write(dir.join("node/format"), "99\n").unwrap();
    let refused = Host::start(&dir, &[], None).unwrap_err();
    assert!(
        refused.contains("written by a newer Spillway (format 99; this build reads up to 1)"),
        "{refused}"
    );
}
