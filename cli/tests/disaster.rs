//! The procedures of docs/disaster-recovery.md, each tried: backup and
//! restore (a backup taken from a follower, the cluster losing its quorum
//! so that no member can answer one, an offline backup from the survivor's
//! directory, new clusters founded from backups on fresh directories where
//! the old admin token, tenant token and functions work), and a host whose
//! disk is lost, removed and replaced. (A lost leader is
//! `cluster::three_hosts_share_functions_survive_the_leader_and_add_learners`.)

use crate::common::hosts::{self, Host};
use crate::common::{self, BIN, Started, spillway_cli as spillway, start};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

async fn invoke(http: &reqwest::Client, endpoint: &str, token: &str, f: &str) -> (u16, String) {
    let r = http
        .post(format!("{endpoint}/v1/functions/{f}/invoke"))
        .bearer_auth(token)
        .body("restored")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `spillway restore FILE --dir DIR …` as a running host.
fn restore(file: &Path, dir: &Path, extra: &[&str]) -> Started {
    let mut args = vec![
        "restore",
        file.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
        "--slots",
        "2",
    ];
    args.extend_from_slice(extra);
    start(&args, &dir.with_extension("log"))
}

async fn get(http: &reqwest::Client, endpoint: &str, token: &str, path: &str) -> Value {
    http.get(format!("{endpoint}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_on_fresh_directories_with_the_old_tokens_and_functions() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(root.path(), &[&[], &[]]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let acme = api
        .tenant_token(h1, "acme", &["publish", "invoke", "read"])
        .await;
    api.publish(
        h1,
        &acme,
        "uppercase",
        json!({"name": "upper", "artifact": "uppercase"}),
    )
    .await;
    api.publish(
        h1,
        &acme,
        "echo",
        json!({"name": "echo", "artifact": "echo"}),
    )
    .await;
    let http = reqwest::Client::new();
    // Through the follower, so both hosts hold the artifacts they ran.
    for f in ["upper", "echo"] {
        for h in [h1, h2] {
            let (status, body) = invoke(&http, &h.endpoint, &acme, f).await;
            assert_eq!(status, 200, "{f} at {}: {body}", h.endpoint);
        }
    }
    let old_cluster = api.cluster(h1).await["cluster_id"].clone();

    // A backup from the follower.
    let online = root.path().join("online.backup");
    let (ok, out, err) = spillway(
        &h2.endpoint,
        &api.token,
        &["backup", "--out", online.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("2 functions") && out.contains("1 tenants"),
        "{out}"
    );
    // A function made after it: in the offline backup below, not in this.
    api.create_function(
        h1,
        &acme,
        &json!({"name": "later", "artifact": "uppercase"}),
    )
    .await;
    let applied = async || {
        (get(&http, &h2.endpoint, &acme, "/v1/functions").await)
            .to_string()
            .contains("\"later\"")
    };
    common::wait_until(
        "host 2 applying `later`",
        std::time::Duration::from_secs(30),
        applied,
    )
    .await;

    // Host 1 lost: host 2 alone has no quorum, and no member can answer
    // a backup.
    let hosts: Vec<Host> = hosts;
    let mut hosts = hosts.into_iter();
    let h1 = hosts.next().unwrap();
    let h2 = hosts.next().unwrap();
    let h1_dir = h1.kill9();
    let (ok, _, err) = spillway(&h2.endpoint, &api.token, &["backup", "--out", "/dev/null"]);
    assert!(!ok && err.contains("no quorum"), "{err}");
    // Offline from the survivor's directory, once it is stopped.
    let h2_dir = h2.dir.clone();
    h2.process.stop(std::time::Duration::from_secs(30));
    let offline = root.path().join("offline.backup");
    let (ok, out, err) = spillway(
        "http://unused",
        "unused",
        &[
            "backup",
            "--from-dir",
            h2_dir.to_str().unwrap(),
            "--out",
            offline.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("3 functions"), "{out}");

    // A new cluster from the offline backup, artifacts copied from the old
    // hosts' directories.
    let new = root.path().join("new1");
    let host = restore(
        &offline,
        &new,
        &[
            "--artifacts-from",
            h1_dir.to_str().unwrap(),
            "--artifacts-from",
            h2_dir.to_str().unwrap(),
        ],
    );
    assert!(
        host.printed
            .iter()
            .any(|l| l.contains("2 of 2 artifacts copied")),
        "{:?}",
        host.printed
    );
    assert!(!host.printed.iter().any(|l| l.contains("admin token")));
    let cluster = get(&http, &host.endpoint, &api.token, "/v1/cluster").await;
    assert_ne!(cluster["cluster_id"], old_cluster, "a new cluster id");
    assert_eq!(hosts::members(&cluster).len(), 1, "{cluster}");
    let tenants = get(&http, &host.endpoint, &api.token, "/v1/tenants").await;
    assert!(tenants.to_string().contains("\"acme\""), "{tenants}");
    for f in ["upper", "later", "echo"] {
        let (status, body) = invoke(&http, &host.endpoint, &acme, f).await;
        assert_eq!(status, 200, "{f}: {body}");
    }
    drop(host);

    // The online backup, restored with no artifacts: the records are there,
    // the bytes are not until they are uploaded again.
    let bare = root.path().join("new2");
    let host = restore(&online, &bare, &[]);
    let (status, body) = invoke(&http, &host.endpoint, &acme, "upper").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("artifact_unavailable"), "{body}");
    let (status, _) = invoke(&http, &host.endpoint, &acme, "later").await;
    assert_eq!(status, 404, "`later` came after the online backup");
    let r = http
        .put(format!("{}/v1/artifacts/uppercase", host.endpoint))
        .bearer_auth(&acme)
        .body(crate::common::guest("uppercase"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (status, body) = invoke(&http, &host.endpoint, &acme, "upper").await;
    assert_eq!((status, body.as_str()), (200, "RESTORED"));
    drop(host);

    // Never over a member's directory.
    let refused = Command::new(BIN)
        .args(["restore", online.to_str().unwrap(), "--dir"])
        .arg(&new)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("belongs to a cluster already"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_disk_is_lost_is_removed_and_replaced() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(root.path(), &[&[], &[], &[]]).await;
    let mut hosts: Vec<Option<Host>> = hosts.into_iter().map(Some).collect();
    let acme = api
        .tenant_token(hosts::h(&hosts, 1), "acme", &["publish", "invoke", "read"])
        .await;
    api.publish(
        hosts::h(&hosts, 1),
        &acme,
        "uppercase",
        json!({"name": "upper", "artifact": "uppercase"}),
    )
    .await;
    let view = api.cluster(hosts::h(&hosts, 1)).await;
    let lost_addr = hosts::h(&hosts, 3)
        .endpoint
        .trim_start_matches("http://")
        .to_owned();
    let lost = hosts::members(&view)
        .into_iter()
        .find(|m| m["http_addr"] == lost_addr.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Host 3's machine and disk are gone.
    let dir = hosts[2].take().unwrap().kill9();
    std::fs::remove_dir_all(&dir).unwrap();
    let h1 = hosts::h(&hosts, 1);
    let out = api.cli(h1, &["member", "remove", &lost]);
    assert!(out.contains("removed"), "{out}");
    // A new machine joins with a ticket, on an empty directory.
    let ticket = api.ticket(h1, 600).await;
    let replacement = Host::start(&root.path().join("h4"), &[], Some(&ticket)).unwrap();
    api.wait(
        h1,
        "three active, healthy members and the lost one removed",
        |v| {
            let members = hosts::members(v);
            members
                .iter()
                .filter(|m| m["state"] == "active" && m["healthy"] == true)
                .count()
                == 3
                && members
                    .iter()
                    .any(|m| m["id"] == lost.as_str() && m["state"] == "removed")
        },
    )
    .await;
    let http = reqwest::Client::new();
    let (status, body) = invoke(&http, &replacement.endpoint, &acme, "upper").await;
    assert_eq!((status, body.as_str()), (200, "RESTORED"));
}
