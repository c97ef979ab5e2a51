//! Async jobs (issue 18), through real host processes: submitted at one
//! host (202 at once), followed and read at another, cancelled from
//! another while it runs (and it stops), expired after the host's
//! time-to-live (410), unknown or another tenant's (404); the CLI's
//! `invoke --async` and `job wait`.

use crate::common;

use common::hosts::{self, Api, Host, member};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn submit(api: &Api, host: &Host, function: &str, input: Vec<u8>) -> (u16, Value, String) {
    let r = api
        .http
        .post(format!("{}/v1/functions/{function}/invoke", host.endpoint))
        .bearer_auth(&api.token)
        .header("prefer", "respond-async")
        .body(input)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, r.json().await.unwrap(), location)
}

async fn job(api: &Api, host: &Host, token: &str, id: &str, cancel: bool) -> (u16, Value) {
    let url = format!("{}/v1/jobs/{id}", host.endpoint);
    let r = match cancel {
        true => api.http.delete(url),
        false => api.http.get(url),
    };
    let r = r.bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Polls `id` at `host` until it is no longer running.
async fn ended(api: &Api, host: &Host, id: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = job(api, host, &api.token, id, false).await;
        assert_eq!(status, 200, "{v}");
        if v["status"] != "running" {
            return v;
        }
        assert!(Instant::now() < until, "still running: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_jobs_are_followed_cancelled_and_expire_at_any_host() {
    let root = tempfile::tempdir().unwrap();
    let flags: &[&str] = &["--slots", "1", "--async-ttl-s", "3"];
    let (api, hosts) = hosts::form(root.path(), &[flags, flags]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    for guest in ["countdown", "spin"] {
        api.put_artifact(h1, &api.token, guest).await;
        let spec = json!({"name": guest, "artifact": guest, "deadline_ms": 30_000});
        api.create_function(h1, &api.token, &spec).await;
    }

    // Submitted at host 1: 202 at once, while the job runs (3 chunks
    // 200 ms apart); followed at host 2, which asks host 1.
    let (status, v, location) = submit(&api, h1, "countdown", vec![3, 20]).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["status"], "running", "{v}");
    let id = v["job_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    let (status, v) = job(&api, h2, &api.token, &id, false).await;
    assert_eq!((status, &v["status"]), (200, &json!("running")), "{v}");
    let done = ended(&api, h2, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "3\n2\n1\nliftoff\n", "{done}");
    assert_eq!(done["receipt"]["job_id"], id.as_str());
    assert!(done["finished_unix_ms"].as_u64() >= done["accepted_unix_ms"].as_u64());

    // Cancelled from host 2 while it runs on host 1: it stops there.
    let forever = 4_000_000_000u32.to_le_bytes().to_vec();
    let (_, v, _) = submit(&api, h1, "spin", forever).await;
    let spin = v["job_id"].as_str().unwrap().to_owned();
    api.wait(h1, "the spin running on host 1", |v| {
        member(v, "n1")["running"] == 1
    })
    .await;
    let (status, v) = job(&api, h2, &api.token, &spin, true).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "cancelled", "{v}");
    assert_eq!(v["error"]["code"], "cancelled", "{v}");
    api.wait(h1, "the spin stopped on host 1", |v| {
        member(v, "n1")["running"] == 0
    })
    .await;
    let (_, v) = job(&api, h1, &api.token, &spin, false).await;
    assert_eq!(
        v["status"], "cancelled",
        "a cancelled job stays cancelled: {v}"
    );

    // Unknown ids, bad ids and another tenant's jobs.
    let unknown = format!("000001{}", "0".repeat(26));
    let (status, v) = job(&api, h2, &api.token, &unknown, false).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("unknown_job")),
        "{v}"
    );
    let (status, _) = job(&api, h2, &api.token, "nope", false).await;
    assert_eq!(status, 400);
    let globex = api.tenant_token(h1, "globex", &["invoke"]).await;
    let (status, v) = job(&api, h2, &globex, &id, false).await;
    assert_eq!(
        status, 404,
        "another tenant's job does not exist for it: {v}"
    );

    // Three seconds after it ended, the result has expired.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = job(&api, h2, &api.token, &id, false).await;
        if status == 410 {
            assert_eq!(v["error"]["code"], "result_expired", "{v}");
            break;
        }
        assert_eq!(status, 200, "{v}");
        assert!(Instant::now() < until, "the result did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The CLI: submit, then wait at the other host.
    let cli =
        |host: &Host, args: &[&str]| serde_json::from_str::<Value>(&api.cli(host, args)).unwrap();
    let input = root.path().join("in");
    std::fs::write(&input, [2u8, 10]).unwrap();
    let v = cli(
        h1,
        &[
            "invoke",
            "countdown",
            "--async",
            "--input",
            input.to_str().unwrap(),
        ],
    );
    let id = v["job_id"].as_str().unwrap();
    let v = cli(h2, &["job", "wait", id]);
    assert_eq!(v["output"], "2\n1\nliftoff\n", "{v}");
}
