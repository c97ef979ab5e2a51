//! The `spillway` client commands against a running host, configured only
//! through SPILLWAY_ENDPOINT and SPILLWAY_TOKEN as a user would.

use crate::common;

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
/// Starts `spillway host --init` in a fresh folder, listening on
/// `listen`, watching its stdin; returns once it serves, with its stderr
/// captured.
fn lone_host(listen: &str) -> (tempfile::TempDir, spillway_launch::HostProcess) {
    let dir = tempfile::tempdir().unwrap();
    let host = spillway_launch::HostLaunch::new(BIN, dir.path())
        .listen(listen)
        .role(spillway_launch::Role::Found)
        .start(std::time::Duration::from_secs(60))
        .unwrap();
    (dir, host)
}

#[test]
fn a_host_watching_its_stdin_still_stops_on_sigterm() {
    let (_dir, mut host) = lone_host("127.0.0.1:0");
    let killed = Command::new("kill")
        .args(["-TERM", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = host
        .wait_exit(std::time::Duration::from_secs(15))
        .expect("the host ignored SIGTERM while its stdin stayed open");
    assert!(status.success(), "{status:?}");
}

/// Security review finding 8: every folder `spillway up` and its host make
/// is 0700, and the files holding secrets (the admin token, the `env` file
/// that exports it, each host's identity key and token hash) and the host
/// logs are 0600.
#[tokio::test]
async fn state_folders_are_owner_only_and_secrets_0600() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start(1, 4);
    // The env file is written once the cluster is up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !c.dir().join("env").exists() {
        assert!(std::time::Instant::now() < deadline, "no env file");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut folders = vec![c.dir().to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = folders.pop() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        seen += 1;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            }
        }
    }
    assert!(seen >= 4, "the cluster, host, sidecar and node folders");
    let host = std::fs::read_dir(c.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("a host folder");
    for secret in [
        c.dir().join("env"),
        c.dir().join("token"),
        host.join("host.log"),
        host.join("sidecar/identity.pem"),
        host.join("sidecar/admin-token.blake3"),
    ] {
        assert_eq!(mode(&secret), 0o600, "{}", secret.display());
    }
}

/// Security review finding 9: plain HTTP off loopback is refused unless
/// the operator says `--insecure-http` (then warned about, loudly: the
/// decision table is `listener::tests`), refused before anything listens;
/// on loopback it is served without a word.
#[test]
fn plain_http_off_loopback_is_refused_without_insecure_http() {
    let dir = tempfile::tempdir().unwrap();
    let refused = spillway_launch::HostLaunch::new(BIN, dir.path())
        .listen("0.0.0.0:0")
        .role(spillway_launch::Role::Found)
        .start(std::time::Duration::from_secs(60));
    let Err(spillway_launch::LaunchError::Exited { log }) = refused else {
        panic!("a plain-HTTP host off loopback started: {refused:?}");
    };
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("refusing to serve plain HTTP on 0.0.0.0:0")
            && log.contains("--insecure-http"),
        "{log}"
    );
    // Nothing was founded: the directory holds no cluster.
    assert!(!dir.path().join("sidecar/membership.json").exists());

    let (_dir, mut host) = lone_host("127.0.0.1:0");
    host.close_stdin();
    let status = host.wait_exit(std::time::Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}");
    let stderr = std::fs::read_to_string(host.log()).unwrap();
    assert!(!stderr.contains("plain HTTP"), "{stderr}");
}

/// `spillway compile-kernel`, the child a node compiles a pack's CUDA
/// source in: a source that would make NVRTC read a host file is refused
/// before any compile, with a short reason; a plain one compiles to PTX
/// where NVRTC is installed (on the GPU host) and says NVRTC is missing
/// elsewhere.
#[test]
fn the_kernel_compiler_child_refuses_file_reads_and_compiles_plain_source() {
    let compile = |source: &str| {
        let mut child = Command::new(BIN)
            .args(["compile-kernel", "--arch", "compute_90"])
            .args([
                "--cpu-seconds",
                "30",
                "--address-space",
                &(4u64 << 30).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(source.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = compile("#include \"/etc/hostname\"\nextern \"C\" __global__ void k() {}\n");
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("`#include` on line 1: a pack may not read files"),
        "{log}"
    );
    assert!(out.stdout.is_empty());

    let out = compile("extern \"C\" __global__ void k(float* x) { x[threadIdx.x] = 1.0f; }\n");
    if spillway_kernels::nvrtc::nvrtc_present() {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ptx = String::from_utf8(out.stdout).unwrap();
        assert!(ptx.contains(".entry k"), "{ptx}");
    } else {
        eprintln!("NVRTC is not installed here: the compile itself runs on the GPU host");
        assert_eq!(out.status.code(), Some(3));
    }
}

/// The README's first command, as a new user runs it: `spillway up --hosts
/// 1 --demo` uploads every example guest (more than the per-tenant upload
/// rate allows in one second: the client waits the rate limit out), runs
/// each, and exits 0 only when every guest answered as expected. With
/// three hosts it also runs the burst table.
#[test]
fn the_readme_demo_runs_to_the_end() {
    for hosts in ["1", "3"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["up", "--hosts", hosts, "--demo", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{hosts} host(s): {stdout}\n{stderr}");
        assert!(
            stdout.contains("demo: every guest behaved as expected"),
            "{hosts} host(s): {stdout}"
        );
    }
}

/// Shell completions and man pages come from the command definitions: the
/// bash script parses and names the commands; every visible command has a
/// page that groff renders without a warning, and hidden ones have none.
#[test]
fn completions_and_man_pages_cover_the_commands() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for word in ["host", "restore", "--tls-cert", "--config"] {
        assert!(script.contains(word), "the bash completions lack {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spillway.bash");
    std::fs::write(&file, &script).unwrap();
    let parsed = Command::new("bash").arg("-n").arg(&file).status().unwrap();
    assert!(parsed.success(), "the bash completions do not parse");

    let pages = dir.path().join("man1");
    let out = Command::new(BIN)
        .args(["man", "--out", pages.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for page in [
        "spillway.1",
        "spillway-host.1",
        "spillway-fn-create.1",
        "spillway-backup.1",
    ] {
        assert!(names.iter().any(|n| n == page), "no {page} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("compile-kernel")),
        "a hidden command has a page"
    );
    for name in &names {
        let rendered = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(pages.join(name))
            .output()
            .expect("groff (.ci/run installs groff-base)");
        assert!(
            rendered.status.success() && rendered.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
    }
}

/// `spillway status --watch` redraws until it is stopped; off a terminal
/// each frame is plain text after a blank line.
#[tokio::test]
async fn status_watch_redraws_until_stopped() {
    use std::io::{BufRead, BufReader};
    let c = Cluster::start(1, 4);
    let mut watch = Command::new(BIN)
        .args(["status", "--watch", "--every-ms", "100"])
        .env("SPILLWAY_ENDPOINT", &c.endpoint)
        .env("SPILLWAY_TOKEN", &c.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let mut frames = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        assert!(
            !line.contains('\x1b'),
            "no terminal codes off a terminal: {line:?}"
        );
        if line.starts_with("cluster ") {
            frames += 1;
        }
        if frames == 3 {
            break;
        }
    }
    assert_eq!(frames, 3);
    assert!(matches!(watch.try_wait(), Ok(None)), "it stopped by itself");
    let _ = watch.kill();
    let _ = watch.wait();
}
