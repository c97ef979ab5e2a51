//! Scoped API tokens on a 3-host cluster: a token may do only what its
//! scopes allow, on every host; a revoked token stops working on every host
//! within a second; an expired one stops by itself; secrets are never
//! listed or logged.

use crate::common;

use common::hosts::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `method path` on `host` with `token` (and a JSON or byte body).
async fn call(
    http: &reqwest::Client,
    host: &Host,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http
        .request(method, format!("{}{path}", host.endpoint))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// POSTs `spec` to `path` through `host` as the admin, expecting 201.
async fn admin_create(api: &Api, host: &Host, path: &str, spec: Value) -> Value {
    let (status, v) = call(
        &api.http,
        host,
        &api.token,
        reqwest::Method::POST,
        path,
        Some(spec),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    v
}

/// Creates a tenant through `host` as the admin; the answer.
async fn create_tenant(api: &Api, host: &Host, spec: Value) -> Value {
    admin_create(api, host, "/v1/tenants", spec).await
}

async fn create_token(api: &Api, host: &Host, spec: Value) -> (String, String) {
    let v = admin_create(api, host, "/v1/tokens", spec).await;
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_hold_on_every_host_and_revocation_is_quick() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = form(root.path(), &[&[], &[], &[]]).await;
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    let echo = json!({"name": "echo", "artifact": "echo", "deadline_ms": 5000});
    api.publish(h1, &api.token, "echo", echo).await;

    let (invoke_id, invoker) =
        create_token(&api, h1, json!({"scopes": ["invoke"], "label": "client"})).await;
    let (_, reader) = create_token(&api, h1, json!({"scopes": ["read"]})).await;
    use reqwest::Method as M;
    let invoke = |host: &Host, token: &str| invoke_echo(&api.http, host, token);

    // Each scope allows what it names, on any host, and nothing else.
    assert_eq!(invoke(h3, &invoker).await, (200, "hi".to_owned()));
    let (status, v) = call(&api.http, h3, &invoker, M::GET, "/v1/functions", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (status, _) = call(
        &api.http,
        h2,
        &invoker,
        M::POST,
        "/v1/tickets",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &api.http,
        h2,
        &invoker,
        M::POST,
        "/v1/tokens",
        Some(json!({"scopes": ["admin"]})),
    )
    .await;
    assert_eq!(status, 403, "a token cannot mint a stronger one");
    let (status, v) = call(&api.http, h2, &reader, M::GET, "/v1/functions", None).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = invoke(h2, &reader).await;
    assert_eq!(status, 403);
    let forged = format!(
        "{}{}",
        &invoker[..invoker.len() - 1],
        if invoker.ends_with('0') { '1' } else { '0' }
    );
    let (status, v) = call(&api.http, h3, &forged, M::GET, "/v1/cluster", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "{v}"
    );

    // A token with a rate gets 429 past it; another token is unaffected.
    let (_, limited) = create_token(&api, h1, json!({"scopes": ["read"], "rate_per_s": 5})).await;
    let mut refused = None;
    for _ in 0..20 {
        let (status, v) = call(&api.http, h2, &limited, M::GET, "/v1/functions", None).await;
        if status == 429 {
            refused = Some(v);
            break;
        }
        assert_eq!(status, 200, "{v}");
    }
    let refused = refused.expect("20 requests at once exceed 5 a second");
    assert_eq!(refused["error"]["code"], "rate_limited", "{refused}");
    assert!(
        refused["error"]["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| (1..=200).contains(&ms)),
        "{refused}"
    );
    let (status, _) = call(&api.http, h2, &reader, M::GET, "/v1/functions", None).await;
    assert_eq!(status, 200, "the unlimited token is unaffected");

    // Listed without secrets.
    let (status, list) = call(&api.http, h2, &api.token, M::GET, "/v1/tokens", None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    assert!(
        !list.to_string().contains(&invoker[21..]),
        "no secret in the list"
    );

    // Revoked through host 2, refused by host 3 within a second.
    let (status, v) = call(
        &api.http,
        h2,
        &api.token,
        M::DELETE,
        &format!("/v1/tokens/{invoke_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let revoked = Instant::now();
    loop {
        let (status, body) = invoke(h3, &invoker).await;
        if status == 401 {
            assert!(body.contains("token_revoked"), "{body}");
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "host 3 refused the revoked token {:?} after the revocation answered",
        revoked.elapsed()
    );

    // An expiring token stops by itself. Made at host 1, it works at host
    // 3 at once (host 3 catches up with the leader for a token it does not
    // know yet).
    let (_, brief) = create_token(&api, h1, json!({"scopes": ["read"], "ttl_s": 2})).await;
    let (status, v) = call(&api.http, h3, &brief, M::GET, "/v1/cluster", None).await;
    assert_eq!(status, 200, "{v}");
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, v) = call(&api.http, h3, &brief, M::GET, "/v1/cluster", None).await;
        if status == 401 {
            assert_eq!(v["error"]["code"], "token_expired", "{v}");
            break;
        }
        assert!(Instant::now() < until, "the token did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // No token secret reached any host's log.
    drop(hosts);
    for i in 1..=3 {
        let log = std::fs::read_to_string(root.path().join(format!("h{i}/host.log"))).unwrap();
        for secret in [&invoker, &reader, &brief, &limited] {
            assert!(
                !log.contains(&secret[21..]),
                "a token secret was logged by host {i}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_see_or_run_another_tenants_functions() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = form(root.path(), &[&[], &[]]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    use reqwest::Method as M;
    for name in ["acme", "globex"] {
        create_tenant(&api, h1, json!({"name": name})).await;
    }
    let (status, _) = call(
        &api.http,
        h1,
        &api.token,
        M::POST,
        "/v1/tenants",
        Some(json!({"name": "acme"})),
    )
    .await;
    assert_eq!(status, 409);
    let scopes = json!(["invoke", "publish", "read"]);
    let (_, acme) = create_token(&api, h1, json!({"scopes": scopes, "tenant": "acme"})).await;
    let (_, globex) = create_token(&api, h1, json!({"scopes": scopes, "tenant": "globex"})).await;
    // The cluster view (hosts, addresses, load) is the operator's.
    let (status, v) = call(&api.http, h2, &acme, M::GET, "/v1/cluster", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (status, v) = call(
        &api.http,
        h1,
        &api.token,
        M::POST,
        "/v1/tokens",
        Some(json!({"scopes": ["admin"], "tenant": "acme"})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_scope")),
        "{v}"
    );

    // Each tenant publishes its own `f` (acme: echo, globex: uppercase).
    let f = |guest: &str| json!({"name": "f", "artifact": guest});
    api.publish(h1, &acme, "echo", f("echo")).await;
    // Before globex has its own `f`, acme's is invisible to it.
    let invoke = |host: &Host, token: &str| {
        let r = api
            .http
            .post(format!("{}/v1/functions/f/invoke", host.endpoint))
            .bearer_auth(token)
            .body("hi")
            .send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = invoke(h2, &globex).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("unknown_function"), "{body}");
    let (_, listed) = call(&api.http, h2, &globex, M::GET, "/v1/functions", None).await;
    assert_eq!(listed, json!([]));
    let (_, listed) = call(&api.http, h2, &globex, M::GET, "/v1/artifacts", None).await;
    assert_eq!(listed, json!([]));
    // Not even by digest: acme's artifact cannot back a globex function.
    let (_, acme_artifacts) = call(&api.http, h2, &acme, M::GET, "/v1/artifacts", None).await;
    let digest = acme_artifacts[0]["digest"].as_str().unwrap().to_owned();
    let (status, v) = call(
        &api.http,
        h2,
        &globex,
        M::POST,
        "/v1/functions",
        Some(json!({"name": "g", "artifact": digest})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("unknown_artifact")),
        "{v}"
    );

    api.publish(h1, &globex, "uppercase", f("uppercase")).await;
    assert_eq!(invoke(h2, &acme).await, (200, "hi".to_owned()));
    assert_eq!(invoke(h2, &globex).await, (200, "HI".to_owned()));
    // The admin tenant sees neither.
    let (_, listed) = call(&api.http, h2, &api.token, M::GET, "/v1/functions", None).await;
    assert_eq!(listed, json!([]));
    let (_, tenants) = call(&api.http, h2, &api.token, M::GET, "/v1/tenants", None).await;
    assert_eq!(tenants.as_array().unwrap().len(), 3, "{tenants}");

    // The audit trail shows acme's changes: who, when, what.
    let (status, trail) = call(
        &api.http,
        h2,
        &api.token,
        M::GET,
        "/v1/audit?tenant=acme",
        None,
    )
    .await;
    assert_eq!(status, 200, "{trail}");
    let what: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["what"].as_str().unwrap())
        .collect();
    eprintln!("acme's audit trail: {what:?}");
    assert_eq!(what[0], "create tenant acme");
    assert!(
        what.iter().any(|w| w.starts_with("create token")),
        "{what:?}"
    );
    assert!(
        what.iter().any(|w| w.starts_with("put artifact acme/echo")),
        "{what:?}"
    );
    assert!(what.contains(&"put function f"), "{what:?}");
    let acme_id = &acme[4..20];
    let by_acme = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["by"] == acme_id)
        .count();
    assert_eq!(
        by_acme, 2,
        "acme's own token made the artifact and function: {trail}"
    );
    assert!(
        trail
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["unix_ms"].as_u64().is_some_and(|t| t > 1_700_000_000_000))
    );
    // A tenant's token may not read the trail.
    let (status, _) = call(&api.http, h2, &acme, M::GET, "/v1/audit", None).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_placement_rule_keeps_its_jobs_on_labelled_hosts() {
    let root = tempfile::tempdir().unwrap();
    let zone_a: &[&str] = &["--label", "zone=a", "--gossip-ms", "100"];
    let zone_b: &[&str] = &["--label", "zone=b", "--gossip-ms", "100"];
    let (api, hosts) = form(root.path(), &[zone_a, zone_b, zone_b]).await;
    let h1 = &hosts[0];
    for (name, zone) in [("edge", "b"), ("nowhere", "c")] {
        create_tenant(&api, h1, json!({"name": name, "placement": {"zone": zone}})).await;
    }
    let scopes = json!(["invoke", "publish", "read"]);
    let (_, edge) = create_token(&api, h1, json!({"scopes": scopes, "tenant": "edge"})).await;
    let (_, nowhere) = create_token(&api, h1, json!({"scopes": scopes, "tenant": "nowhere"})).await;
    for token in [&api.token, &edge, &nowhere] {
        let echo = json!({"name": "echo", "artifact": "echo"});
        api.publish(h1, token, "echo", echo).await;
    }
    // Invoke through host 1 (zone a); returns (status, node, error code).
    let invoke = |token: &str| {
        let r = api
            .http
            .post(format!("{}/v1/functions/echo/invoke", h1.endpoint))
            .bearer_auth(token)
            .body("hi")
            .send();
        async move {
            let r = r.await.unwrap();
            let node = r
                .headers()
                .get("spillway-node")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = r.status().as_u16();
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
            (
                status,
                node,
                body["error"]["code"].as_str().map(str::to_owned),
            )
        }
    };
    // edge's jobs run only in zone b, though they arrive at host 1.
    let mut ran_on = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(20);
    while ran_on.len() < 6 {
        match invoke(&edge).await {
            (200, Some(node), _) => {
                assert_ne!(node, "n1", "edge's job ran outside zone b");
                ran_on.insert(format!("{node}-{}", ran_on.len()));
            }
            // Until host 1 hears the zone-b hosts' load, none is known free.
            (503, _, Some(code)) if code == "no_host_free" => {}
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(Instant::now() < until, "edge's jobs did not run");
    }
    eprintln!("edge's jobs ran on {ran_on:?}");
    // The admin tenant has no rule: its job runs where it arrives.
    assert_eq!(invoke(&api.token).await.1.as_deref(), Some("n1"));
    // No host carries zone=c.
    let (status, _, code) = invoke(&nowhere).await;
    assert_eq!((status, code.as_deref()), (503, Some("no_matching_host")));
}

/// Runs the `spillway` CLI against `host` as `token`; (success, stdout, stderr).
fn cli(host: &Host, token: &str, args: &[&str]) -> (bool, String, String) {
    common::spillway_cli(&host.endpoint, token, args)
}

/// A publisher key made with `spillway keygen` in `dir`: its file and its
/// public key (hex).
fn keygen(
    dir: &std::path::Path,
    host: &Host,
    token: &str,
    name: &str,
) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let (ok, public, err) = cli(host, token, &["keygen", "--out", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(public.len(), 64, "{public}");
    (path, public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_requires_signatures_runs_only_what_a_trusted_key_signed() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = form(root.path(), &[&[], &[]]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);

    // Two publisher keys; the tenant trusts only the first.
    let (trusted, trusted_pub) = keygen(root.path(), h1, &api.token, "trusted.key");
    let (stranger, _) = keygen(root.path(), h1, &api.token, "stranger.key");
    let (ok, _, err) = cli(
        h1,
        &api.token,
        &[
            "tenant",
            "create",
            "signed",
            "--trust",
            &trusted_pub,
            "--require-signed",
        ],
    );
    assert!(ok, "{err}");
    let scopes = json!(["invoke", "publish", "read"]);
    let (_, token) = create_token(&api, h1, json!({"scopes": scopes, "tenant": "signed"})).await;

    let echo = format!("{}/../examples/guests/echo.wat", env!("CARGO_MANIFEST_DIR"));
    let push = |extra: &[&str]| {
        let mut args = vec!["artifact", "push", "echo", echo.as_str()];
        args.extend_from_slice(extra);
        cli(h1, &token, &args)
    };
    let (ok, _, err) = push(&[]);
    assert!(!ok && err.contains("unsigned_artifact"), "{err}");
    let (ok, _, err) = push(&["--sign", stranger.to_str().unwrap()]);
    assert!(!ok && err.contains("untrusted_key"), "{err}");
    // A trusted key's signature for another name does not verify.
    let bytes = std::fs::read(&echo).unwrap();
    let pkcs8 = hex::decode(std::fs::read_to_string(&trusted).unwrap().trim()).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    let message =
        spillway_proto::signing::artifact_message(&spillway_proto::Digest::of(&bytes), "other");
    let header = format!(
        "{trusted_pub}:{}",
        hex::encode(pair.sign(&message).as_ref())
    );
    let r = api
        .http
        .put(format!("{}/v1/artifacts/echo", h1.endpoint))
        .bearer_auth(&token)
        .header("spillway-signature", header)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("bad_signature"));
    let (ok, _, err) = push(&["--sign", trusted.to_str().unwrap()]);
    assert!(ok, "{err}");

    // Weights need a trusted signature alike (streamed from the file).
    let weights = root.path().join("w.safetensors");
    let file = common::safetensors(&[(
        "w",
        safetensors::Dtype::F32,
        &[2],
        common::f32_bytes(&[1.0, 2.0]),
    )]);
    std::fs::write(&weights, file).unwrap();
    let push_weights = |extra: &[&str]| {
        let mut args = vec!["artifact", "push", "w", weights.to_str().unwrap()];
        args.extend_from_slice(extra);
        cli(h1, &token, &args)
    };
    let (ok, _, err) = push_weights(&[]);
    assert!(!ok && err.contains("unsigned_artifact"), "{err}");
    let (ok, _, err) = push_weights(&["--sign", stranger.to_str().unwrap()]);
    assert!(!ok && err.contains("untrusted_key"), "{err}");
    let (ok, out, err) = push_weights(&["--sign", trusted.to_str().unwrap()]);
    assert!(ok && out.contains("\"weights\""), "{out}{err}");

    // Registered and run through host 2, which fetches it (and checks the
    // signature's record again before using it).
    let r = api
        .http
        .post(format!("{}/v1/functions", h1.endpoint))
        .bearer_auth(&token)
        .json(&json!({"name": "echo", "artifact": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = api
        .http
        .post(format!("{}/v1/functions/echo/invoke", h2.endpoint))
        .bearer_auth(&token)
        .body("signed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["spillway-node"], "n2");
    assert_eq!(r.text().await.unwrap(), "signed");
    let (_, listed) = call(
        &api.http,
        h2,
        &token,
        reqwest::Method::GET,
        "/v1/artifacts",
        None,
    )
    .await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "w"], "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_concurrency_quota_holds_across_hosts_under_a_burst() {
    let root = tempfile::tempdir().unwrap();
    let flags: &[&str] = &["--slots", "2", "--gossip-ms", "100"];
    let (api, hosts) = form(root.path(), &[flags, flags, flags]).await;
    let h1 = &hosts[0];
    create_tenant(&api, h1, json!({"name": "capped", "max_concurrent": 3})).await;
    let (_, capped) = create_token(
        &api,
        h1,
        json!({"scopes": ["invoke", "publish"], "tenant": "capped"}),
    )
    .await;
    for token in [&capped, &api.token] {
        let spin = json!({"name": "spin", "artifact": "spin", "deadline_ms": 30_000});
        api.publish(h1, token, "spin", spin).await;
    }
    let invoke = |token: &str, rounds: u32| {
        let r = api
            .http
            .post(format!("{}/v1/functions/spin/invoke", h1.endpoint))
            .bearer_auth(token)
            .body(rounds.to_le_bytes().to_vec())
            .send();
        async move {
            let r = r.await.unwrap();
            let status = r.status().as_u16();
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
            (status, body["error"]["code"].as_str().map(str::to_owned))
        }
    };

    // 12 of capped's jobs at once at host 1, while the running jobs of the
    // whole cluster (only capped's) are sampled: never more than 3.
    let burst = futures::future::join_all((0..12).map(|_| invoke(&capped, 300_000_000)));
    let done = std::sync::atomic::AtomicBool::new(false);
    let sample = most_running(&api, h1, &done);
    let answers = async {
        let a = burst.await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        a
    };
    let (answers, most) = tokio::join!(answers, sample);
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let over = answers
        .iter()
        .filter(|(s, c)| *s == 429 && c.as_deref() == Some("quota_exceeded"))
        .count();
    eprintln!("capped: {ok} ran, {over} refused at the quota; most running at once: {most}");
    assert_eq!(ok + over, 12, "{answers:?}");
    assert!(ok >= 3 && over >= 1, "{answers:?}");
    assert!(most <= 3, "the quota of 3 held across hosts: saw {most}");
    assert!(most >= 2, "the sampling saw the jobs run: {most}");

    // Another tenant is unaffected: its job runs while capped is full.
    let busy = futures::future::join_all((0..3).map(|_| invoke(&capped, 300_000_000)));
    let other = invoke(&api.token, 1_000_000);
    let (_, other) = tokio::join!(busy, other);
    assert_eq!(other.0, 200, "{other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_rate_and_memory_limits_hold_and_can_be_changed() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = form(root.path(), &[&[], &[], &[]]).await;
    let h1 = &hosts[0];
    use reqwest::Method as M;
    // 3 requests a second across the cluster (one a second on each of the
    // three hosts) and 8 MiB a job, set through the CLI.
    let (ok, out, err) = cli(
        h1,
        &api.token,
        &[
            "tenant",
            "create",
            "metered",
            "--rate",
            "3",
            "--max-job-memory-mib",
            "8",
        ],
    );
    assert!(ok, "{out}{err}");
    let (_, metered) = create_token(
        &api,
        h1,
        json!({"scopes": ["invoke", "publish"], "tenant": "metered"}),
    )
    .await;
    let echo = json!({"name": "echo", "artifact": "echo", "deadline_ms": 5000});
    api.publish(h1, &metered, "echo", echo.clone()).await;
    api.publish(h1, &api.token, "echo", echo).await;

    // Rate: twelve requests at once, four to each host. Each host lets its
    // share through (one, plus what refills while they arrive); the rest
    // get 429 rate_limited with a wait. The admin tenant is unaffected.
    let invoke = |host: &Host, token: &str| invoke_echo(&api.http, host, token);
    let burst = futures::future::join_all((0..12).map(|i| invoke(&hosts[i % 3], &metered)));
    let admin = futures::future::join_all((0..6).map(|i| invoke(&hosts[i % 3], &api.token)));
    let (answers, admin) = tokio::join!(burst, admin);
    let ran = answers.iter().filter(|(s, _)| *s == 200).count();
    let limited: Vec<Value> = answers
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, body)| serde_json::from_str(body).unwrap())
        .collect();
    eprintln!("metered: {ran} ran, {} rate-limited", limited.len());
    assert_eq!(ran + limited.len(), 12, "{answers:?}");
    assert!(
        (3..=6).contains(&ran),
        "about one a host got through: {answers:?}"
    );
    assert!(
        limited.iter().all(|v| v["error"]["code"] == "rate_limited"
            && v["error"]["retry_after_ms"].as_u64() > Some(0))
    );
    assert!(admin.iter().all(|(s, _)| *s == 200), "{admin:?}");

    // Lift the rate and raise the memory limit: the change reaches every
    // host, and twelve requests all run.
    let (ok, out, err) = cli(
        h1,
        &api.token,
        &[
            "tenant",
            "set",
            "metered",
            "--rate",
            "none",
            "--max-job-memory-mib",
            "16",
        ],
    );
    assert!(ok, "{out}{err}");
    let changed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(changed["rate_per_s"], Value::Null, "{changed}");
    assert_eq!(changed["max_job_memory_bytes"], 16u64 << 20, "{changed}");
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let answers =
            futures::future::join_all((0..12).map(|i| invoke(&hosts[i % 3], &metered))).await;
        if answers.iter().all(|(s, _)| *s == 200) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the lifted rate never reached every host: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A function asking more memory than the tenant's limit is refused; one
    // that asks nothing gets the limit, and a guest that grows past it ends
    // memory_limit_exceeded.
    api.put_artifact(h1, &metered, "memory_hog").await;
    let too_big =
        json!({"name": "hog", "artifact": "memory_hog", "memory_limit_bytes": 64u64 << 20});
    let (status, v) = call(
        &api.http,
        h1,
        &metered,
        M::POST,
        "/v1/functions",
        Some(too_big),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("over_tenant_limit")),
        "{v}"
    );
    let fits = json!({"name": "hog", "artifact": "memory_hog", "deadline_ms": 10_000});
    let (status, v) = call(
        &api.http,
        h1,
        &metered,
        M::POST,
        "/v1/functions",
        Some(fits),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["memory_limit_bytes"], 16u64 << 20, "{v}");
    let (status, v) = call(
        &api.http,
        h1,
        &metered,
        M::POST,
        "/v1/functions/hog/invoke",
        None,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (500, Some("memory_limit_exceeded")),
        "{v}"
    );
    let (ok, out, err) = cli(h1, &api.token, &["tenant", "set", "metered"]);
    assert!(!ok && err.contains("nothing to change"), "{out}{err}");
    let (status, v) = call(
        &api.http,
        h1,
        &api.token,
        M::PATCH,
        "/v1/tenants/nobody",
        Some(json!({"rate_per_s": 1})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (status, v) = call(
        &api.http,
        h1,
        &metered,
        M::PATCH,
        "/v1/tenants/metered",
        Some(json!({"rate_per_s": null})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (ok, audit, err) = cli(h1, &api.token, &["audit", "--tenant", "metered"]);
    assert!(ok, "{err}");
    assert!(audit.contains("change tenant metered"), "{audit}");

    // GPU memory: 1 MiB of `gpu` buffers for the tenant's jobs on a host.
    // A 512³ gemm needs 3 MiB of buffers and is refused by the node; a
    // small one runs.
    let (ok, out, err) = cli(
        h1,
        &api.token,
        &["tenant", "set", "metered", "--max-gpu-memory-mib", "1"],
    );
    assert!(ok, "{out}{err}");
    // On the CPU backend wherever the hosts run, so the large product below
    // lasts long enough to be seen holding its bytes (on a GPU it ends in
    // milliseconds); buffers count the same on either backend.
    let gemm =
        json!({"name": "gemm", "artifact": "gemm", "deadline_ms": 30_000, "accelerator": "none"});
    api.publish(h1, &metered, "gemm", gemm).await;
    let gemm_input = |n: u32| {
        let mut input: Vec<u8> = [n, n, n].iter().flat_map(|v| v.to_le_bytes()).collect();
        input.extend(std::iter::repeat_n(0u8, (2 * n * n * 4) as usize));
        input
    };
    let invoke_gemm = |n: u32| {
        api.http
            .post(format!("{}/v1/functions/gemm/invoke", h1.endpoint))
            .bearer_auth(&metered)
            .body(gemm_input(n))
            .send()
    };
    let big = invoke_gemm(512).await.unwrap();
    let status = big.status().as_u16();
    let v: Value = big.json().await.unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (500, Some("guest_error")),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tenant metered's GPU memory on this host"),
        "{message}"
    );
    // A small one runs once the refused job's buffers are given back: at
    // the end of its teardown, which follows its answer (bounded wait; in
    // between the same cap refuses it).
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let small = invoke_gemm(2).await.unwrap();
        if small.status() == 200 {
            break;
        }
        let v: Value = small.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("tenant metered's GPU memory on this host")),
            "{v}"
        );
        assert!(
            Instant::now() < until,
            "the small gemm was refused for 10 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Accounting: while a 768³ gemm (6.75 MiB of buffers, seconds on the
    // CPU backend of a debug build) runs, host 1's metrics show the
    // tenant's bytes; once it ends, 0.
    let (ok, out, err) = cli(
        h1,
        &api.token,
        &["tenant", "set", "metered", "--max-gpu-memory-mib", "none"],
    );
    assert!(ok, "{out}{err}");
    let gauge = |text: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix("spillway_tenant_gpu_memory_bytes{tenant=\"metered\"} "))
            .and_then(|v| v.trim().parse().ok())
    };
    // The per-tenant series need an admin-tenant token (security finding
    // 12): without one, /metrics names no tenant.
    let metrics = || async {
        let r = api
            .http
            .get(format!("{}/metrics", h1.endpoint))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    };
    let public = || async {
        let r = api
            .http
            .get(format!("{}/metrics", h1.endpoint))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let big = tokio::spawn(invoke_gemm(768));
    let held = 3 * 768 * 768 * 4;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if gauge(&metrics().await) == Some(held) {
            break;
        }
        assert!(
            !big.is_finished(),
            "the gemm ended before its bytes were seen"
        );
        assert!(
            Instant::now() < until,
            "never saw {held} bytes: {}",
            metrics().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open = public().await;
    assert!(
        open.contains("spillway_running_jobs") && !open.contains("metered"),
        "{open}"
    );
    assert_eq!(big.await.unwrap().unwrap().status(), 200);
    let until = Instant::now() + Duration::from_secs(5);
    while gauge(&metrics().await) != Some(0) {
        assert!(
            Instant::now() < until,
            "the bytes never came back: {}",
            metrics().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_quota_leases_follow_its_load_between_hosts() {
    let root = tempfile::tempdir().unwrap();
    let flags: &[&str] = &["--slots", "3"];
    let (api, hosts) = form(root.path(), &[flags, flags, flags]).await;
    let h1 = &hosts[0];
    let v = create_tenant(&api, h1, json!({"name": "shifting", "max_concurrent": 3})).await;
    assert_eq!(
        v["leases"],
        Value::Null,
        "an even split until the leader leases"
    );
    let (_, token) = create_token(
        &api,
        h1,
        json!({"scopes": ["invoke", "publish"], "tenant": "shifting"}),
    )
    .await;
    let spin = json!({"name": "spin", "artifact": "spin", "deadline_ms": 30_000});
    api.publish(h1, &token, "spin", spin).await;

    let done = std::sync::atomic::AtomicBool::new(false);
    let sample = most_running(&api, h1, &done);
    let shifts = async {
        let at_1 = until_full(&api, &hosts[0], &token).await;
        let tenants = api.get(h1, "/v1/tenants").await.unwrap();
        let first = tenants[1]["leases"].clone();
        let at_2 = until_full(&api, &hosts[1], &token).await;
        let tenants = api.get(h1, "/v1/tenants").await.unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (at_1, first, at_2, tenants[1]["leases"].clone())
    };
    let ((at_1, first, at_2, second), most) = tokio::join!(shifts, sample);
    eprintln!(
        "refused before the quota moved: {at_1} at n1, {at_2} at n2; leases {first} then {second}; most running {most}"
    );
    assert!(
        at_1 > 0 && at_2 > 0,
        "each host started with a share of one"
    );
    assert_eq!(first["shares"], json!({"n1": 3}), "{first}");
    assert_eq!(second["shares"], json!({"n2": 3}), "{second}");
    assert!(second["epoch"].as_u64() > first["epoch"].as_u64());
    assert!(
        most <= 3,
        "the quota of 3 held while the leases moved: saw {most}"
    );
    assert!(most >= 3, "the sampling saw a full wave run: {most}");
}

/// Three jobs of `token`'s at once, kept on `host` (never burst), about
/// 250 ms each: their statuses.
async fn wave(api: &Api, host: &Host, token: &str) -> Vec<u16> {
    let jobs = (0..3).map(|_| {
        api.http
            .post(format!("{}/v1/functions/spin/invoke", host.endpoint))
            .bearer_auth(token)
            .header("spillway-placement", "local")
            .body(100_000_000u32.to_le_bytes().to_vec())
            .send()
    });
    futures::future::join_all(jobs)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect()
}

/// Waves at `host` until one runs all three (at first the host's share of
/// the quota is one, and the rest get 429; the refusals make the leader
/// move the quota there); how many were refused meanwhile.
async fn until_full(api: &Api, host: &Host, token: &str) -> usize {
    let until = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        let statuses = wave(api, host, token).await;
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 429),
            "{statuses:?}"
        );
        refused += statuses.iter().filter(|s| **s == 429).count();
        if statuses.iter().all(|s| *s == 200) {
            return refused;
        }
        assert!(
            Instant::now() < until,
            "{} never got the whole quota",
            host.endpoint
        );
    }
}

/// The most jobs running at once across the cluster (as `host` sees it,
/// every 20 ms) until `done`.
async fn most_running(api: &Api, host: &Host, done: &std::sync::atomic::AtomicBool) -> u64 {
    let mut most = 0u64;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let v = api.cluster(host).await;
        let running: u64 = members(&v)
            .iter()
            .map(|m| m["running"].as_u64().unwrap_or(0))
            .sum();
        most = most.max(running);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    most
}

/// Invokes `echo` with "hi" on `host` as `token`: status and body.
fn invoke_echo(
    http: &reqwest::Client,
    host: &Host,
    token: &str,
) -> impl std::future::Future<Output = (u16, String)> + use<> {
    let sent = http
        .post(format!("{}/v1/functions/echo/invoke", host.endpoint))
        .bearer_auth(token)
        .body("hi")
        .send();
    async move {
        let r = sent.await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }
}

/// Kernel packs are native GPU code: unsigned or untrusted packs are
/// refused at upload even for a tenant that takes unsigned components; a
/// function names its packs and must require a GPU; each kind stays in its
/// place; the audit names the pack. On a GPU host, a job at host 2 fetches
/// the component and the pack (signature checked again) and runs the
/// pack's kernel; without one it is refused `no_accelerator`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_packs_are_signed_named_by_functions_and_need_a_gpu() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = form(root.path(), &[&[], &[]]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let (trusted, trusted_pub) = keygen(root.path(), h1, &api.token, "trusted.key");
    let (stranger, _) = keygen(root.path(), h1, &api.token, "stranger.key");
    let (trusted, stranger) = (trusted.to_str().unwrap(), stranger.to_str().unwrap());
    // Trusts a key but does not require signed components.
    let (ok, _, err) = cli(
        h1,
        &api.token,
        &["tenant", "create", "kernels", "--trust", &trusted_pub],
    );
    assert!(ok, "{err}");
    let scopes = json!(["invoke", "publish", "read"]);
    let (_, token) = create_token(&api, h1, json!({"scopes": scopes, "tenant": "kernels"})).await;
    let examples = format!("{}/../examples", env!("CARGO_MANIFEST_DIR"));
    let (pack, guest) = (
        format!("{examples}/kernels/ops.json"),
        format!("{examples}/guests/pack_scale.wat"),
    );
    let push = |token: &str, name: &str, path: &str, extra: &[&str]| {
        let mut args = vec!["artifact", "push", name, path];
        args.extend_from_slice(extra);
        cli(h1, token, &args)
    };
    let (ok, _, err) = push(&token, "ops", &pack, &[]);
    assert!(!ok && err.contains("unsigned_kernel_pack"), "{err}");
    let (ok, _, err) = push(&token, "ops", &pack, &["--sign", stranger]);
    assert!(!ok && err.contains("untrusted_key"), "{err}");
    // The admin tenant trusts no key, so it cannot publish packs.
    let (ok, _, err) = push(&api.token, "ops", &pack, &["--sign", trusted]);
    assert!(!ok && err.contains("untrusted_key"), "{err}");
    let (ok, out, err) = push(&token, "ops", &pack, &["--sign", trusted]);
    assert!(ok && out.contains("kernel_pack"), "{out} {err}");
    let (ok, _, err) = push(&token, "pack-scale", &guest, &[]);
    assert!(ok, "{err}");

    let create = |spec: Value| {
        call(
            &api.http,
            h1,
            &token,
            reqwest::Method::POST,
            "/v1/functions",
            Some(spec),
        )
    };
    let (status, v) =
        create(json!({"name": "f", "artifact": "pack-scale", "kernel_packs": ["ops"]})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("kernel_packs_need_a_gpu")),
        "{v}"
    );
    let (status, v) =
        create(json!({"name": "f", "artifact": "ops", "accelerator": "required"})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("wrong_artifact_kind")),
        "{v}"
    );
    let (status, v) = create(json!({"name": "f", "artifact": "pack-scale", "accelerator": "required", "kernel_packs": ["pack-scale"]})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("wrong_artifact_kind")),
        "{v}"
    );
    let (status, v) = create(json!({"name": "f", "artifact": "pack-scale", "accelerator": "required", "kernel_packs": ["nope"]})).await;
    assert_eq!(status, 404, "{v}");
    let (ok, out, err) = cli(
        h1,
        &token,
        &[
            "fn",
            "create",
            "scale",
            "--artifact",
            "pack-scale",
            "--accelerator",
            "required",
            "--kernel-pack",
            "ops",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("\"kernel_packs\": [\n    \"ops\"\n  ]")
            || out.contains("\"kernel_packs\":[\"ops\"]"),
        "{out}"
    );

    let input: Vec<u8> = [3.0f32, 1.0, -2.0, 0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let r = api
        .http
        .post(format!("{}/v1/functions/scale/invoke", h2.endpoint))
        .bearer_auth(&token)
        .body(input)
        .send()
        .await
        .unwrap();
    // Only a GPU host runs it (the function requires one): a success must
    // come from CUDA, anything else must be no_accelerator. (The members'
    // GPU inventory is committed a moment after their nodes are up, so it
    // is no guide this early.)
    let status = r.status().as_u16();
    let backend = r
        .headers()
        .get("spillway-backend")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.bytes().await.unwrap();
    if status == 200 {
        assert_eq!(backend.as_deref(), Some("cuda"));
        let out: Vec<f32> = body
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(out, [3.0, -6.0, 1.5]);
        eprintln!("ops/scale ran on host 2's GPU: {out:?}");
    } else {
        eprintln!("no GPU on these hosts: expecting no_accelerator");
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("no_accelerator"));
    }
    let (ok, audit, err) = cli(h1, &api.token, &["audit", "--tenant", "kernels"]);
    assert!(ok, "{err}");
    assert!(audit.contains("put kernel pack kernels/ops"), "{audit}");
    assert!(audit.contains("put function scale"), "{audit}");
}

/// Security review finding 15: a tenant's storage is bounded (artifact
/// names and bytes, set through `spillway tenant`), and its uploads are
/// rate-limited on each host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_storage_quota_and_upload_rate_hold() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = form(root.path(), &[&["--publish-rate", "2"]]).await;
    let h1 = &hosts[0];
    let upload = |token: String, name: &'static str, guest: &'static str| {
        let (http, endpoint) = (api.http.clone(), h1.endpoint.clone());
        async move {
            let r = http
                .put(format!("{endpoint}/v1/artifacts/{name}"))
                .bearer_auth(token)
                .body(common::guest(guest))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Rate: three uploads at once against a burst of two.
    let (a, b, c) = tokio::join!(
        upload(api.token.clone(), "r1", "echo"),
        upload(api.token.clone(), "r2", "noop"),
        upload(api.token.clone(), "r3", "uppercase"),
    );
    let mut statuses = [a.0, b.0, c.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429], "{a:?} {b:?} {c:?}");
    let limited = [a, b, c].into_iter().find(|r| r.0 == 429).unwrap().1;
    assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");
    assert!(
        limited["error"]["retry_after_ms"].as_u64().is_some(),
        "{limited}"
    );

    // Storage: two names at most (uploads spaced past the rate).
    let (ok, out, err) = cli(
        h1,
        &api.token,
        &["tenant", "create", "small", "--max-artifacts", "2"],
    );
    assert!(ok, "{out}{err}");
    let (_, token) = create_token(
        &api,
        h1,
        json!({"tenant": "small", "scopes": ["publish", "read"]}),
    )
    .await;
    // Each waits out the upload rate as the host asks (Retry-After), so
    // what it shows is the quota's answer.
    let spaced = |name, guest| {
        let token = token.clone();
        let upload = &upload;
        async move {
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                let (status, v) = upload(token.clone(), name, guest).await;
                if status != 429 || Instant::now() > until {
                    break (status, v);
                }
                let wait = v["error"]["retry_after_ms"].as_u64().unwrap_or(100);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    };
    assert_eq!(spaced("a", "echo").await.0, 200);
    assert_eq!(spaced("b", "noop").await.0, 200);
    let (status, v) = spaced("c", "uppercase").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("storage_quota_exceeded")),
        "{v}"
    );
    // A new version of a name it holds fits.
    assert_eq!(spaced("a", "uppercase").await.0, 200);
    // Raised, the third name fits; the byte quota is set the same way.
    let (ok, out, err) = cli(
        h1,
        &api.token,
        &[
            "tenant",
            "set",
            "small",
            "--max-artifacts",
            "none",
            "--max-artifact-mib",
            "1",
        ],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(spaced("c", "uppercase").await.0, 200);
    let listed = call(
        &api.http,
        h1,
        &api.token,
        reqwest::Method::GET,
        "/v1/tenants",
        None,
    )
    .await
    .1;
    let small = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "small")
        .unwrap()
        .clone();
    assert_eq!(
        (
            small["max_artifacts"].clone(),
            small["max_artifact_bytes"].clone()
        ),
        (Value::Null, json!(1 << 20)),
        "{small}"
    );
}
