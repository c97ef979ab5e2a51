//! TLS on the HTTP API: the CLI (with `SPILLWAY_CA`) and curl (with
//! `--cacert`) speak https to a host, plain HTTP is refused, a renewed
//! certificate is taken at SIGHUP, mutual TLS refuses a client without a
//! certificate (`cli.rs` has plain HTTP off loopback refused).

use crate::common::BIN;
use crate::common::hosts::Host;
use crate::common::pki::Ca;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `curl -s -o /dev/null -w %{http_code}` with `args`: the status, or
/// `Err` with curl's exit code and message when no HTTP answer came.
fn curl(args: &[&str]) -> Result<u16, String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .output()
        .expect("curl (.ci/run installs it)");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).parse().unwrap())
    } else {
        Err(format!(
            "curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `spillway status` against `endpoint` with `env`: its output, or `Err`
/// with its error.
fn cli_status(endpoint: &str, token: &str, env: &[(&str, &Path)]) -> Result<String, String> {
    let mut command = Command::new(BIN);
    command
        .args(["status"])
        .env("SPILLWAY_ENDPOINT", endpoint)
        .env("SPILLWAY_TOKEN", token)
        .env_remove("SPILLWAY_CA")
        .env_remove("SPILLWAY_CLIENT_CERT")
        .env_remove("SPILLWAY_CLIENT_KEY");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_api_over_tls_takes_the_cli_and_curl_refuses_plain_http_and_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path();
    let ca = Ca::new(pki, "ca");
    let (cert, key) = ca.server(pki, "host");
    let mut host = Host::start(
        &tmp.path().join("h1"),
        &["--init", "--tls-cert", s(&cert), "--tls-key", s(&key)],
        None,
    )
    .unwrap();
    let token = host.token.clone().unwrap();
    let endpoint = host.endpoint.clone();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    let port = endpoint.rsplit(':').next().unwrap();

    // The CLI with the cluster's CA; without it the certificate is unknown.
    let status = cli_status(&endpoint, &token, &[("SPILLWAY_CA", &ca.pem)]).unwrap();
    assert!(status.contains("active"), "{status}");
    let err = cli_status(&endpoint, &token, &[]).unwrap_err();
    assert!(err.contains("error"), "{err}");
    // And over `localhost`, the certificate's other name.
    let by_name = endpoint.replace("127.0.0.1", "localhost");
    cli_status(&by_name, &token, &[("SPILLWAY_CA", &ca.pem)]).unwrap();

    // curl with --cacert: health without a token, the cluster with one.
    assert_eq!(
        curl(&["--cacert", s(&ca.pem), &format!("{endpoint}/healthz")]),
        Ok(200)
    );
    let bearer = format!("authorization: Bearer {token}");
    let cluster = format!("{endpoint}/v1/cluster");
    assert_eq!(
        curl(&["--cacert", s(&ca.pem), "-H", &bearer, &cluster]),
        Ok(200)
    );
    assert_eq!(curl(&["--cacert", s(&ca.pem), &cluster]), Ok(401));
    // Plain HTTP to the same port gets no HTTP answer at all.
    let plain = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // A certificate from another CA, swapped in as a renewal would be,
    // and SIGHUP: new connections get it.
    let ca2 = Ca::new(pki, "ca2");
    let (cert2, key2) = ca2.server(pki, "host2");
    std::fs::rename(&key2, &key).unwrap();
    std::fs::rename(&cert2, &cert).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &host.process.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let until = Instant::now() + Duration::from_secs(10);
    while cli_status(&endpoint, &token, &[("SPILLWAY_CA", &ca2.pem)]).is_err() {
        assert!(
            Instant::now() < until,
            "the renewed certificate was not taken"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cli_status(&endpoint, &token, &[("SPILLWAY_CA", &ca.pem)]).is_err());
    assert!(host.process.running(), "SIGHUP ended the host");
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path();
    let ca = Ca::new(pki, "ca");
    let clients = Ca::new(pki, "clients");
    let strangers = Ca::new(pki, "strangers");
    let (cert, key) = ca.server(pki, "host");
    let (operator_cert, operator_key) = clients.client(pki, "operator");
    let (stranger_cert, stranger_key) = strangers.client(pki, "stranger");
    let host = Host::start(
        &tmp.path().join("h1"),
        &[
            "--init",
            "--tls-cert",
            s(&cert),
            "--tls-key",
            s(&key),
            "--tls-client-ca",
            s(&clients.pem),
        ],
        None,
    )
    .unwrap();
    let token = host.token.clone().unwrap();
    let health = format!("{}/healthz", host.endpoint);

    // curl: no certificate, or one the host's client CA did not sign, is
    // refused in the handshake; the operator's certificate is let in.
    let none = curl(&["--cacert", s(&ca.pem), &health]);
    assert!(none.is_err(), "a client without a certificate got {none:?}");
    let stranger = curl(&[
        "--cacert",
        s(&ca.pem),
        "--cert",
        s(&stranger_cert),
        "--key",
        s(&stranger_key),
        &health,
    ]);
    assert!(
        stranger.is_err(),
        "a stranger's certificate got {stranger:?}"
    );
    let operator = curl(&[
        "--cacert",
        s(&ca.pem),
        "--cert",
        s(&operator_cert),
        "--key",
        s(&operator_key),
        &health,
    ]);
    assert_eq!(operator, Ok(200));

    // The CLI likewise.
    let ca_only = [("SPILLWAY_CA", ca.pem.as_path())];
    assert!(cli_status(&host.endpoint, &token, &ca_only).is_err());
    let with_cert = [
        ("SPILLWAY_CA", ca.pem.as_path()),
        ("SPILLWAY_CLIENT_CERT", operator_cert.as_path()),
        ("SPILLWAY_CLIENT_KEY", operator_key.as_path()),
    ];
    let status = cli_status(&host.endpoint, &token, &with_cert).unwrap();
    assert!(status.contains("active"), "{status}");
}
