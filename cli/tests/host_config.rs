//! `spillway host --config FILE`: a host started from a file alone, flags
//! winning over it, bad files refused naming the key, and the example file
//! (`spillway config example`) taken as it is.

use crate::common::{BIN, start};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

async fn member(endpoint: &str, token: &str) -> Value {
    let v: Value = reqwest::Client::new()
        .get(format!("{endpoint}/v1/cluster"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["members"][0].clone()
}

/// Waits until the host reports its node's slots; the member record then.
async fn reported(endpoint: &str, token: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let m = member(endpoint, token).await;
        if m["slots"].is_number() {
            return m;
        }
        assert!(Instant::now() < until, "no report: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spillway(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_starts_from_its_config_file_alone_and_flags_win() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let token_file = root.join("admin-token");
    let file = root.join("host.toml");
    std::fs::write(
        &file,
        format!(
            "# a founding host\n\
             dir = {dir:?}\n\
             listen = \"127.0.0.1:0\"\n\
             peer-listen = \"127.0.0.1:0\"\n\
             init = true\n\
             slots = 3\n\
             max-memory-mib = 64\n\
             warm-instances = 0\n\
             label = [\"zone=a\", \"rack=7\"]\n\
             admin-token-file = {token:?}\n",
            dir = root.join("h1"),
            token = token_file,
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();

    let host = start(&["host", "--config", config], &root.join("h1.log"));
    // The token went to its file (0600), not to standard output.
    assert!(
        host.printed
            .iter()
            .any(|l| l.starts_with("admin token written to")),
        "{:?}",
        host.printed
    );
    assert!(!host.printed.iter().any(|l| l.contains("shown once")));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let m = reported(&host.endpoint, &token).await;
    assert_eq!(m["slots"], 3, "{m}");
    assert_eq!(m["labels"]["zone"], "a", "{m}");
    assert_eq!(m["labels"]["rack"], "7", "{m}");
    drop(host);

    // The same file with a flag: the flag wins, the rest comes from the
    // file (the directory, so the host rejoins its cluster).
    let host = start(
        &["host", "--config", config, "--slots", "2"],
        &root.join("h1-again.log"),
    );
    let m = reported(&host.endpoint, &token).await;
    assert_eq!(m["slots"], 2, "{m}");
}

#[test]
fn a_bad_file_is_refused_naming_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("slot = 3\n", "unknown key `slot` (did you mean `slots`?)"),
        (
            "slots = \"three\"\n",
            "`slots`: invalid digit found in string",
        ),
        ("gpus = \"one\"\n", "`gpus`: not a GPU ordinal: \"one\""),
        (
            "listen = \"nowhere\"\n",
            "`listen`: invalid socket address syntax",
        ),
        ("no-burst = \"yes\"\n", "`no-burst`: a switch"),
        ("slots = 3\nslots = 4\n", "not TOML"),
        // Hidden test-only flags have no key.
        ("test-kernels = true\n", "unknown key `test-kernels`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let file = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).unwrap();
        for args in [
            vec!["config", "check", file.to_str().unwrap()],
            vec!["host", "--config", file.to_str().unwrap()],
        ] {
            let out = spillway(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} {text:?}");
            assert!(
                stderr.contains(want) && stderr.contains(file.to_str().unwrap()),
                "{args:?} {text:?}: {stderr}"
            );
        }
    }
    // Keys that only go together are checked together.
    let file = tmp.path().join("half-tls.toml");
    std::fs::write(&file, "tls-cert = \"/x.crt\"\n").unwrap();
    let out = spillway(&["config", "check", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--tls-key"),
        "{stderr}"
    );
}

#[test]
fn the_example_is_every_host_flag_and_checks_as_it_is() {
    let out = spillway(&["config", "example"]);
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    // Every visible flag of `spillway host` has its key.
    let help = String::from_utf8(spillway(&["host", "--help"]).stdout).unwrap();
    for flag in help.split_whitespace().filter_map(|w| w.strip_prefix("--")) {
        let flag = flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        if ["help", "config"].contains(&flag) {
            continue;
        }
        assert!(
            example.contains(&format!("\n# {flag} = ")),
            "`{flag}` has no key in the example"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("example.toml");
    // As printed (all commented) and with every key that has a default
    // uncommented: both check.
    let uncommented: String = example
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(kv)
                if kv.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
                    && !kv.contains("(unset)") =>
            {
                kv
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    for text in [&example, &uncommented] {
        std::fs::write(&file, text).unwrap();
        let out = spillway(&["config", "check", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// docs/configuration.md's table is what the binary prints.
#[test]
fn the_docs_list_every_key_with_its_default() {
    let out = spillway(&["config", "example", "--markdown"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .unwrap();
    assert!(
        docs.contains(&table),
        "docs/configuration.md is out of date: paste `spillway config example --markdown` into it"
    );
}

/// A host's halves run apart (as under Kubernetes) take `--config` too,
/// with a required flag (`--socket`) from the file.
#[test]
fn the_node_starts_from_its_own_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("node.sock");
    let file = tmp.path().join("node.toml");
    std::fs::write(
        &file,
        format!(
            "socket = {socket:?}\ndir = {:?}\nslots = 2\ngpus = \"none\"\n",
            tmp.path().join("node")
        ),
    )
    .unwrap();
    let mut node = Command::new(BIN)
        .args(["node", "--config", file.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if let Ok(Some(status)) = node.try_wait() {
            panic!("the node exited: {status}");
        }
        assert!(Instant::now() < until, "no socket at {}", socket.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = node.kill();
    let _ = node.wait();
    // And a sidecar's file checks with the sidecar's keys, not the host's.
    let sidecar = tmp.path().join("sidecar.toml");
    std::fs::write(&sidecar, "node-socket = \"/run/s.sock\"\nslots = 2\n").unwrap();
    let ok = spillway(&[
        "config",
        "check",
        "--command",
        "sidecar",
        sidecar.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let as_host = spillway(&["config", "check", sidecar.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&as_host.stderr);
    assert!(stderr.contains("unknown key `node-socket`"), "{stderr}");
}
