//! The HTTP contract, against real processes: `spillway up` starts a host
//! (sidecar + node) and the tests speak HTTP to it.

use crate::common;

use common::{Cluster, expect_error, signal};
use std::time::{Duration, Instant};

#[tokio::test]
async fn upload_register_invoke_returns_output_and_receipt() {
    let c = Cluster::start(2, 8);
    c.deploy("echo", "echo", 10_000).await;
    let r = c.invoke("echo", b"hello".to_vec()).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["spillway-job-id"].len(), 32);
    assert_eq!(h["spillway-node"], "n1");
    assert_eq!(h["spillway-backend"], "cpu");
    assert_eq!(h["spillway-burst"], "false");
    assert!(!h.contains_key("spillway-gpu"), "echo never used a GPU");
    for name in ["spillway-queue-ms", "spillway-exec-ms"] {
        let v: f64 = h[name].to_str().unwrap().parse().unwrap();
        assert!(v >= 0.0, "{name}");
    }
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");

    let health = c.http.get(c.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("spillway_jobs_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spillway_node_restarts_total{cause=\"exited\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_requests_get_typed_json_errors() {
    let c = Cluster::start(1, 4);
    // Invalid Wasm: 422.
    let r = c
        .put_artifact("junk", b"definitely not wasm".to_vec())
        .await;
    expect_error(r, 422, "invalid_artifact").await;
    // Unknown function: 404.
    expect_error(c.invoke("nope", vec![]).await, 404, "unknown_function").await;
    // No token, wrong token: 401.
    let r = c
        .http
        .post(c.url("/v1/functions/nope/invoke"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "missing_token").await;
    let r = c
        .http
        .get(c.url("/v1/cluster"))
        .bearer_auth("swt_wrong")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_token").await;
    // Oversized body: 413 (the default input limit is 8 MiB), decided from
    // the announced Content-Length before a byte of the body is read.
    c.deploy("echo", "echo", 10_000).await;
    let (status, body) = common::head_only(
        &c.endpoint,
        "POST",
        "/v1/functions/echo/invoke",
        &format!("authorization: Bearer {}\r\n", c.token),
        9 << 20,
    )
    .await;
    assert_eq!(status, 413, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    // Bad function spec: 400 / 404.
    let r = c
        .http
        .post(c.url("/v1/functions"))
        .bearer_auth(&c.token)
        .json(&serde_json::json!({"name": "x", "artifact": "missing"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "unknown_artifact").await;
    let r = c
        .http
        .post(c.url("/v1/functions"))
        .bearer_auth(&c.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "bad_json").await;
    // Nothing accepted before was lost.
    assert_eq!(
        c.invoke("echo", b"still".to_vec())
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"still"
    );
}

#[tokio::test]
async fn infinite_loop_hits_its_deadline_while_others_keep_succeeding() {
    let c = Cluster::start(2, 8);
    c.deploy("loop", "infinite_loop", 1_000).await;
    c.deploy("echo", "echo", 10_000).await;
    let started = Instant::now();
    let looping = c.invoke("loop", vec![]);
    let others = async {
        for i in 0..20u8 {
            let r = c.invoke("echo", vec![i]).await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.bytes().await.unwrap().as_ref(), [i]);
        }
    };
    let (r, ()) = tokio::join!(looping, others);
    let elapsed = started.elapsed();
    let e = expect_error(r, 504, "deadline_exceeded").await;
    // The node stops the guest at the first epoch tick (10 ms) after the
    // deadline and reports how long the guest ran. The margin beyond one
    // tick is for thread scheduling on a loaded 2-core CI machine.
    let exec_ms = e["exec_ms"].as_f64().expect("the node reports exec_ms");
    eprintln!("infinite loop: deadline 1000 ms, ran {exec_ms:.1} ms, answered after {elapsed:?}");
    assert!(
        (950.0..=1_000.0 + 10.0 + 40.0).contains(&exec_ms),
        "ran {exec_ms} ms"
    );
    assert!(elapsed >= Duration::from_millis(1_000), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2_000), "{elapsed:?}");
}

#[tokio::test]
async fn memory_hog_and_deep_recursion_fail_typed_and_the_host_is_unaffected() {
    let c = Cluster::start(1, 4);
    c.deploy("hog", "memory_hog", 10_000).await;
    c.deploy("deep", "deep_recursion", 10_000).await;
    c.deploy("echo", "echo", 10_000).await;
    expect_error(c.invoke("hog", vec![]).await, 500, "memory_limit_exceeded").await;
    let e = expect_error(c.invoke("deep", vec![]).await, 500, "guest_trap").await;
    assert!(e["message"].as_str().unwrap().contains("stack"), "{e}");
    assert_eq!(c.invoke("echo", b"ok".to_vec()).await.status(), 200);
    let m = c.cluster().await;
    assert_eq!(m["members"][0]["node"]["restarts"], 0, "{m}");
}

#[tokio::test]
async fn a_full_queue_refuses_with_retry_after() {
    let c = Cluster::start(1, 1);
    c.deploy("loop", "infinite_loop", 3_000).await;
    let first = c.spawn_invoke("loop");
    c.wait_member("one running job", |m| m["running"] == 1)
        .await;
    let second = c.spawn_invoke("loop");
    c.wait_member("one queued job", |m| m["queued"] == 1).await;
    let r = c.invoke("loop", vec![]).await;
    assert!(r.headers().contains_key("retry-after"));
    let e = expect_error(r, 503, "queue_full").await;
    assert!(e["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{e}");
    assert_eq!(e["may_have_run"], false);
    assert_eq!(first.await.unwrap().status(), 504);
    assert_eq!(second.await.unwrap().status(), 504);
}

#[tokio::test]
async fn killing_the_node_loses_running_jobs_typed_and_the_node_comes_back() {
    let c = Cluster::start(2, 8);
    c.deploy("loop", "infinite_loop", 30_000).await;
    c.deploy("echo", "echo", 10_000).await;
    let member = c.wait_member("node up", |m| m["node"]["up"] == true).await;
    let pid = member["node"]["pid"].as_u64().unwrap();
    let jobs: Vec<_> = (0..2).map(|_| c.spawn_invoke("loop")).collect();
    c.wait_member("two running jobs", |m| m["running"] == 2)
        .await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for job in jobs {
        let e = expect_error(job.await.unwrap(), 502, "executor_lost").await;
        assert_eq!(e["may_have_run"], true, "{e}");
    }
    c.wait_for_restarted_node(pid).await;
    let r = c.invoke("echo", b"back".to_vec()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"back");
    // Counted by why: killed, so exited; no other cause.
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("spillway_node_restarts_total{cause=\"exited\"} 1")
            && metrics.contains("spillway_node_restarts_total{cause=\"device_fault\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn client_disconnect_cancels_the_job() {
    let c = Cluster::start(1, 4);
    c.deploy("loop", "infinite_loop", 60_000).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(c.url("/v1/functions/loop/invoke"))
        .bearer_auth(&c.token)
        .send()
        .await;
    assert!(r.is_err(), "the client gave up");
    // The guest is interrupted long before its 60 s deadline.
    c.wait_member("the slot freed", |m| m["running"] == 0).await;
}

#[tokio::test]
async fn emitted_chunks_come_before_the_result_in_the_body() {
    let c = Cluster::start(1, 4);
    c.deploy("countdown", "countdown", 10_000).await;
    let r = c.invoke("countdown", vec![4]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"4\n3\n2\n1\nliftoff\n");
}

#[tokio::test]
async fn gemm_through_http_equals_the_cpu_reference() {
    let c = Cluster::start(1, 4);
    c.deploy("gemm", "gemm", 10_000).await;
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    };
    for (m, n, k) in [(4, 4, 4), (17, 5, 23), (32, 32, 32)] {
        let (a, b) = (random(m * k), random(k * n));
        let mut input: Vec<u8> = [m, n, k]
            .iter()
            .flat_map(|v| (*v as u32).to_le_bytes())
            .collect();
        input.extend(a.iter().chain(&b).flat_map(|v| v.to_le_bytes()));
        let r = c.invoke("gemm", input).await;
        assert_eq!(r.status(), 200);
        let backend = r.headers()["spillway-backend"].to_str().unwrap().to_owned();
        let got: Vec<f32> = r
            .bytes()
            .await
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mut want = vec![0.0; m * n];
        spillway_kernels::gemm(
            m,
            n,
            k,
            1.0,
            &a,
            &b,
            0.0,
            &mut want,
            &mut spillway_kernels::Meter::unbounded(),
        )
        .unwrap();
        if backend == "cpu" {
            // The CPU backend is the reference itself.
            assert_eq!(got, want, "{m}x{n}x{k}");
        } else {
            assert_eq!(backend, "cuda");
            assert!(got.iter().all(|v| v.is_finite()));
            let err: f64 = got
                .iter()
                .zip(&want)
                .map(|(g, w)| f64::from(g - w).powi(2))
                .sum();
            let norm: f64 = want.iter().map(|w| f64::from(*w).powi(2)).sum();
            assert!((err / norm).sqrt() <= 1e-5, "{m}x{n}x{k} on cuda");
        }
    }
}

#[tokio::test]
async fn required_accelerator_runs_on_a_gpu_or_is_refused() {
    let c = Cluster::start(1, 4);
    c.deploy("gemm", "gemm", 10_000).await;
    let r = c
        .http
        .post(c.url("/v1/functions"))
        .bearer_auth(&c.token)
        .json(
            &serde_json::json!({"name": "gemm-gpu", "artifact": "gemm", "accelerator": "required"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The node's own report says which backends it has; the membership's
    // GPU inventory is committed a moment later, so it can still be empty
    // here on a GPU host (seen once on an H100).
    let member = c
        .wait_member("node up", |m| {
            m["node"]["up"] == true && m["backends"].as_array().is_some_and(|b| !b.is_empty())
        })
        .await;
    let input = common::gemm_1x1(2.0, 3.0);
    let r = c.invoke("gemm-gpu", input).await;
    let cuda = member["backends"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b == "cuda");
    if !cuda {
        eprintln!("no GPU on this host: expecting no_accelerator");
        let e = expect_error(r, 503, "no_accelerator").await;
        assert_eq!(e["may_have_run"], false);
    } else {
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["spillway-backend"], "cuda");
        assert!(
            r.headers().contains_key("spillway-gpu"),
            "a GPU job names its GPU"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), 6f32.to_le_bytes());
    }
}

/// Invokes `function` with an idempotency key.
async fn invoke_keyed(c: &Cluster, function: &str, key: &str, input: Vec<u8>) -> reqwest::Response {
    c.http
        .post(c.url(&format!("/v1/functions/{function}/invoke")))
        .bearer_auth(&c.token)
        .header("spillway-idempotency-key", key)
        .body(input)
        .send()
        .await
        .unwrap()
}

/// Waits until the host's node reports `n` completed jobs (its load report
/// may trail the answers by a moment), and returns the count.
async fn node_completed(c: &Cluster, n: u64) -> u64 {
    let m = c
        .wait_member("the node's completed count", |m| {
            m["completed"].as_u64() >= Some(n)
        })
        .await;
    m["completed"].as_u64().expect("completed")
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_outcome() {
    let c = Cluster::start(2, 8);
    c.deploy("echo", "echo", 10_000).await;
    c.deploy("spin", "spin", 30_000).await;

    // Sequential repeat: same job id, same output, marked as a replay.
    let first = invoke_keyed(&c, "echo", "order-1", b"hello".to_vec()).await;
    assert_eq!(first.status(), 200);
    assert!(!first.headers().contains_key("spillway-idempotent-replay"));
    let job = first.headers()["spillway-job-id"].clone();
    assert_eq!(first.bytes().await.unwrap().as_ref(), b"hello");
    let again = invoke_keyed(&c, "echo", "order-1", b"hello".to_vec()).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["spillway-job-id"], job);
    assert_eq!(again.headers()["spillway-idempotent-replay"], "true");
    assert_eq!(again.bytes().await.unwrap().as_ref(), b"hello");
    assert_eq!(node_completed(&c, 1).await, 1, "the repeat did not run");

    // The same key for another input is a conflict, not a replay.
    let other = invoke_keyed(&c, "echo", "order-1", b"other".to_vec()).await;
    expect_error(other, 422, "idempotency_key_reused").await;
    let bad = invoke_keyed(&c, "echo", "has space", vec![]).await;
    expect_error(bad, 400, "bad_idempotency_key").await;

    // Concurrent repeats of a slow job: one runs, all get its outcome.
    let rounds = 20_000_000u32.to_le_bytes().to_vec();
    let repeats: Vec<_> = (0..4)
        .map(|_| {
            let request = c
                .http
                .post(c.url("/v1/functions/spin/invoke"))
                .bearer_auth(&c.token)
                .header("spillway-idempotency-key", "spin-1")
                .body(rounds.clone());
            tokio::spawn(async move { request.send().await.unwrap() })
        })
        .collect();
    let mut jobs = Vec::new();
    let mut bodies = Vec::new();
    for r in repeats {
        let r = r.await.unwrap();
        assert_eq!(r.status(), 200);
        jobs.push(r.headers()["spillway-job-id"].clone());
        bodies.push(r.bytes().await.unwrap());
    }
    assert!(jobs.iter().all(|j| *j == jobs[0]), "{jobs:?}");
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    assert_eq!(node_completed(&c, 2).await, 2, "the spin job ran once");

    let metrics = c.metrics().await;
    assert!(
        metrics.contains("spillway_idempotent_replays_total 4"),
        "{metrics}"
    );
}

/// Security review finding 13: a malformed path or query on an admin route
/// is answered after the token is checked, and every error is typed JSON
/// (unknown routes and wrong methods too), never axum's plain text.
#[tokio::test]
async fn malformed_paths_and_queries_are_json_errors_after_the_token() {
    let c = Cluster::start(1, 4);
    let raw = |method: &'static str, path: &'static str, token: Option<String>| {
        let endpoint = c.endpoint.clone();
        async move {
            let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
            common::head_only(&endpoint, method, path, &auth, 0).await
        }
    };
    let code = |body: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        v["error"]["code"].as_str().unwrap().to_owned()
    };
    // Without a token: 401 whatever else is wrong.
    for (method, path) in [
        ("GET", "/v1/audit?limit=lots"),
        ("POST", "/v1/members/%FF%FE/drain"),
        ("DELETE", "/v1/members/%C0"),
        ("PATCH", "/v1/tenants/%FF"),
        ("POST", "/v1/functions/%FF/invoke"),
    ] {
        let (status, body) = raw(method, path, None).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (401, "missing_token"),
            "{method} {path}"
        );
    }
    // With one: the typed 400.
    let token = Some(c.token.clone());
    let (status, body) = raw("GET", "/v1/audit?limit=lots", token.clone()).await;
    assert_eq!((status, code(&body).as_str()), (400, "bad_query"), "{body}");
    let (status, body) = raw("DELETE", "/v1/members/%C0", token.clone()).await;
    assert_eq!((status, code(&body).as_str()), (400, "bad_path"), "{body}");
    // Unknown routes and methods.
    let (status, body) = raw("GET", "/v1/nothing-here", token.clone()).await;
    assert_eq!((status, code(&body).as_str()), (404, "not_found"), "{body}");
    let (status, body) = raw("DELETE", "/v1/audit", token).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (405, "method_not_allowed"),
        "{body}"
    );
}

/// Security review finding 4 (the sidecar's part): a job whose node does
/// not answer (the node's own deadline checks are in `node/tests/executor`
/// and `gpu_watchdog`) is answered 504 at its deadline plus a short grace.
#[tokio::test]
async fn a_job_on_a_node_that_does_not_answer_is_answered_at_its_deadline() {
    let c = Cluster::start(1, 4);
    c.deploy("echo", "echo", 300).await;
    c.wait_node_backends().await;
    // A node that answers nothing (stopped, as a wedged one would be): the
    // sidecar ends the job at its deadline plus its grace whatever the
    // node does.
    let pid = stop_the_linked_node(&c).await;
    let started = Instant::now();
    let r = c.invoke("echo", b"hello".to_vec()).await;
    let took = started.elapsed();
    signal(&pid, "-CONT");
    let after = c.cluster().await["members"][0]["node"].clone();
    assert_eq!(
        r.status(),
        504,
        "after {took:?}; stopped {pid}, node now {after}"
    );
    expect_error(r, 504, "deadline_exceeded").await;
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // The node, going on, serves the next job.
    let r = c.invoke("echo", b"again".to_vec()).await;
    assert_eq!(r.status(), 200);
}

/// SIGSTOPs the node the sidecar is linked to and returns its pid, checked
/// rather than assumed: the process is stopped (state `T`) and the sidecar
/// still names it afterwards. A node that was replaced in between (it died
/// and was restarted, as a loaded machine's OOM killer may do) is let go
/// and the new one stopped instead, a bounded number of times.
async fn stop_the_linked_node(c: &Cluster) -> String {
    for _ in 0..3 {
        let (member, _) = c.wait_node_backends().await;
        let pid = member["node"]["pid"].as_u64().unwrap().to_string();
        signal(&pid, "-STOP");
        let stopped = wait_until_stopped(&pid);
        let now = c.cluster().await["members"][0]["node"].clone();
        if stopped && now["up"] == true && now["pid"].as_u64() == pid.parse().ok() {
            return pid;
        }
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status();
    }
    panic!("the node kept being replaced while it was being stopped");
}

/// Waits (bounded) until process `pid` is stopped by a signal: true, or
/// false if it is gone or a zombie (it died before the signal).
fn wait_until_stopped(pid: &str) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command's closing parenthesis.
        match stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
        {
            Some('T') => return true,
            None | Some('Z' | 'X') => return false,
            Some(_) => {}
        }
        assert!(Instant::now() < until, "{pid} not stopped: {stat}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
