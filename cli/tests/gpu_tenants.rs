//! Tenants sharing a GPU (issue 21): a tenant's GPU memory cap is a hard
//! one. On a GPU its buffers come from its own driver memory pool whose
//! maximum is the cap, so the driver refuses past it while another
//! tenant's jobs on the same GPU run on; on the CPU backend the node's
//! ledger holds the same cap. Two executors sharing a GPU split the cap.
//! The CPU part runs everywhere; the GPU parts skip, saying so, without a
//! GPU (CI) and run on the device.

use crate::common;

use common::hosts::*;
use serde_json::{Value, json};
use std::time::Duration;

const MIB: u64 = 1 << 20;
const CAP: u64 = 32 * MIB;
/// Elements of a 16 MiB f32 buffer.
const SIXTEEN_MIB: u32 = (16 * MIB / 4) as u32;

/// A tenant with `cap` of GPU memory (`None`: no cap) and a token of it.
async fn tenant(api: &Api, host: &Host, name: &str, cap: Option<u64>) -> String {
    let spec = json!({"name": name, "max_gpu_memory_bytes": cap});
    api.tenant_token_with(host, &spec, &["invoke", "publish"])
        .await
}

/// `gpu_hog` holding `count` buffers of 16 MiB: the status, and the count
/// made (ok) or the error's message.
async fn hog(api: &Api, host: &Host, token: &str, function: &str, count: u32) -> (u16, String) {
    hog_sized(api, host, token, function, [count, SIXTEEN_MIB], "any").await
}

/// `gpu_hog` at `host` (kept there) holding `count` buffers of 4 MiB.
async fn hog_here(api: &Api, host: &Host, token: &str, count: u32) -> (u16, String) {
    let four_mib = (4 * MIB / 4) as u32;
    hog_sized(api, host, token, "hog", [count, four_mib], "local").await
}

/// `gpu_hog` holding `count` buffers of `elements` f32s, placed as
/// `placement` says.
async fn hog_sized(
    api: &Api,
    host: &Host,
    token: &str,
    function: &str,
    [count, elements]: [u32; 2],
    placement: &str,
) -> (u16, String) {
    let input: Vec<u8> = [count, elements]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let r = api
        .http
        .post(format!("{}/v1/functions/{function}/invoke", host.endpoint))
        .bearer_auth(token)
        .header("spillway-placement", placement)
        .body(input)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    if status == 200 {
        let made = u32::from_le_bytes(body[..4].try_into().unwrap());
        (status, made.to_string())
    } else {
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "guest_error", "{v}");
        (status, v["error"]["message"].as_str().unwrap().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_gpu_cap_is_refused_while_another_tenant_runs_on() {
    let root = tempfile::tempdir().unwrap();
    let h1 = Host::start(&root.path().join("h1"), &["--init", "--slots", "4"], None).unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        token: h1.token.clone().unwrap(),
    };
    let capped = tenant(&api, &h1, "capped", Some(CAP)).await;
    let roomy = tenant(&api, &h1, "roomy", None).await;
    for (token, who) in [(&capped, "capped"), (&roomy, "roomy")] {
        api.put_artifact(&h1, token, "gpu_hog").await;
        for (accelerator, on) in [("none", "cpu"), ("required", "gpu")] {
            let spec = json!({"name": format!("hog-{who}-{on}"), "artifact": "gpu_hog",
                              "accelerator": accelerator, "deadline_ms": 30_000,
                              "memory_limit_bytes": 128 * MIB});
            api.create_function(&h1, token, &spec).await;
        }
    }

    // On the CPU backend the node's ledger holds the cap: two buffers of
    // 16 MiB fit in 32 MiB, a third does not.
    let (status, message) = hog(&api, &h1, &capped, "hog-capped-cpu", 3).await;
    assert_eq!(status, 500, "{message}");
    assert!(
        message.contains("exceeds tenant capped's GPU memory on this host"),
        "{message}"
    );
    assert_eq!(
        hog(&api, &h1, &capped, "hog-capped-cpu", 2).await,
        (200, "2".into())
    );
    assert_eq!(
        hog(&api, &h1, &roomy, "hog-roomy-cpu", 3).await,
        (200, "3".into())
    );

    if !api.has_cuda(&h1, "n1").await {
        eprintln!("skipped the GPU part: no CUDA driver or GPU on this host");
        return;
    }
    // On the GPU too the node's ledger refuses past the cap (the tenant's
    // driver pool bounds it again, to the driver's chunk); the other
    // tenant's job, sent at the same time to the same GPU, holds four
    // times as much and completes.
    let (past, other) = tokio::join!(
        hog(&api, &h1, &capped, "hog-capped-gpu", 4),
        hog(&api, &h1, &roomy, "hog-roomy-gpu", 4),
    );
    assert_eq!(other, (200, "4".into()));
    let (status, message) = past;
    assert_eq!(status, 500, "{message}");
    assert!(
        message.contains("exceeds tenant capped's GPU memory on this host")
            && message.contains("of 33554432 bytes"),
        "{message}"
    );
    // Under its cap the tenant runs.
    assert_eq!(
        hog(&api, &h1, &capped, "hog-capped-gpu", 1).await,
        (200, "1".into())
    );

    // The node reports each tenant's pool on the GPU: the cluster view
    // and the per-tenant metrics.
    let v = api
        .wait(&h1, "both tenants' pools in the node's report", |v| {
            let pools = &member(v, "n1")["node"]["gpu_memory"][0]["tenants"];
            let pool = |t: &str| {
                pools
                    .as_array()
                    .and_then(|p| p.iter().find(|p| p["tenant"] == t).cloned())
            };
            pool("capped").is_some() && pool("roomy").is_some()
        })
        .await;
    let pools = member(&v, "n1")["node"]["gpu_memory"][0]["tenants"].clone();
    let pool = |t: &str| {
        pools
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["tenant"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(pool("capped")["cap_bytes"], CAP, "{pools}");
    assert!(
        pool("capped")["reserved_bytes"].as_u64().unwrap() <= CAP,
        "{pools}"
    );
    assert_eq!(pool("roomy")["cap_bytes"], Value::Null, "{pools}");
    let metrics = api.metrics(&h1).await;
    let gpu = member(&v, "n1")["node"]["gpu_memory"][0]["gpu"].clone();
    let line = format!(
        "spillway_tenant_gpu_pool_bytes{{tenant=\"capped\",gpu=\"{gpu}\",kind=\"cap\"}} {CAP}"
    );
    assert!(metrics.contains(&line), "no {line}: {metrics}");
}

/// Two executors on one GPU (`--executors 0,0`): each has its own pool for
/// the tenant there, so the host's share is split between them, evenly at
/// first, and together they stay within it. A 64 MiB cap leaves 32 MiB in
/// each: 48 MiB is refused where the whole cap would have held it.
/// Membership's inventory shows the GPU shared by two contexts. Asked
/// again and again, the split follows the refusals until 48 MiB fit in
/// one executor. GPU only (the CPU backend's split is `executors.rs`'s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_executors_on_one_gpu_split_a_tenants_cap() {
    let root = tempfile::tempdir().unwrap();
    let h1 = Host::start(
        &root.path().join("h1"),
        &["--init", "--slots", "2", "--executors", "0,0"],
        None,
    )
    .unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        token: h1.token.clone().unwrap(),
    };
    if !api.has_cuda(&h1, "n1").await {
        eprintln!("skipped: no CUDA driver or GPU on this host");
        return;
    }
    // The split counts the executors whose GPUs are known: both, once up.
    api.wait(&h1, "both executors up", |v| {
        let e = &member(v, "n1")["node"]["executors"];
        e.as_array()
            .is_some_and(|e| e.len() == 2 && e.iter().all(|x| x["up"] == true))
    })
    .await;
    let capped = tenant(&api, &h1, "capped", Some(2 * CAP)).await;
    api.put_artifact(&h1, &capped, "gpu_hog").await;
    let spec = json!({"name": "hog", "artifact": "gpu_hog", "accelerator": "required",
                      "deadline_ms": 30_000, "memory_limit_bytes": 128 * MIB});
    api.create_function(&h1, &capped, &spec).await;

    // Each executor holds half the cap: 48 MiB does not fit in it.
    for _ in 0..2 {
        let (status, message) = hog(&api, &h1, &capped, "hog", 3).await;
        assert_eq!(status, 500, "{message}");
        assert!(
            message.contains("exceeds tenant capped's GPU memory on this host")
                && message.contains("of 33554432 bytes"),
            "{message}"
        );
    }
    assert_eq!(hog(&api, &h1, &capped, "hog", 1).await, (200, "1".into()));
    // Membership shows the GPU with two contexts, and the tenant's pools
    // there add up to no more than its cap.
    let v = api
        .wait(&h1, "GPU 0's isolation and the tenant's pools", |v| {
            let gpu = &member(v, "n1")["gpus"][0];
            gpu["isolation"]["contexts"] == 2
                && gpu["tenants"].as_array().is_some_and(|t| !t.is_empty())
        })
        .await;
    let gpu = &member(&v, "n1")["gpus"][0];
    eprintln!("GPU 0 in membership: {gpu}");
    let pools = &gpu["tenants"][0];
    assert_eq!(pools["tenant"], "capped", "{gpu}");
    let pools_n = pools["pools"].as_u64().unwrap();
    assert_eq!(pools["cap_bytes"], pools_n * CAP, "{gpu}");
    assert!(pools["cap_bytes"].as_u64().unwrap() <= 2 * CAP, "{gpu}");
    // The refusals are demand: the split moves to the executor asked.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, message) = hog(&api, &h1, &capped, "hog", 3).await;
        if status == 200 {
            break;
        }
        assert!(
            message.contains("exceeds tenant capped's GPU memory on this host"),
            "{message}"
        );
        assert!(
            std::time::Instant::now() < until,
            "48 MiB never fit: {message}"
        );
    }
}

/// A tenant's GPU memory quota is cluster-wide (DESIGN §3): each host
/// holds a lease of it, in MiB, starting from an even split. A job at host
/// 1 needing more than its half is refused there at first; the refusal is
/// demand, and the leader moves the quota there (shrinking host 2's lease
/// first, then growing host 1's), so the same job then fits, and the
/// leases never add up to more than the quota. On the CPU backend the
/// node's ledger holds the host's share, so CI runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_gpu_memory_quota_is_leased_to_the_host_that_needs_it() {
    quota_follows_demand("none").await;
}

/// The same on a GPU: the host's lease is the maximum of the tenant's
/// driver memory pool, and the driver's refusals are the demand the node
/// reports. Skips, saying so, without a GPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_gpu_memory_quota_is_leased_to_the_host_that_needs_it_on_a_gpu() {
    quota_follows_demand("required").await;
}

/// The lease test with the function's `accelerator`.
async fn quota_follows_demand(accelerator: &str) {
    let root = tempfile::tempdir().unwrap();
    let flags: &[&str] = &["--slots", "2"];
    let (api, hosts) = form(root.path(), &[flags, flags]).await;
    let h1 = &hosts[0];
    if accelerator != "none" && !api.has_cuda(h1, "n1").await {
        eprintln!("skipped: no CUDA driver or GPU on this host");
        return;
    }
    let capped = tenant(&api, h1, "capped", Some(CAP)).await;
    api.put_artifact(h1, &capped, "gpu_hog").await;
    let spec = json!({"name": "hog", "artifact": "gpu_hog", "accelerator": accelerator,
                      "deadline_ms": 30_000, "memory_limit_bytes": 128 * MIB});
    api.create_function(h1, &capped, &spec).await;
    // The tenant's GPU memory leases in `/v1/tenants` (`Null` before any).
    let leases = |v: &Value| {
        let capped = (v.as_array().into_iter().flatten()).find(|t| t["name"] == "capped");
        capped.map_or(Value::Null, |t| t["gpu_memory_leases_mib"].clone())
    };
    let total = |l: &Value| -> u64 {
        (l["shares"].as_object().into_iter().flatten())
            .map(|(_, v)| v.as_u64().unwrap())
            .sum()
    };
    // The leader records the even split first: 16 MiB each.
    let v = (api.wait_on(h1, "/v1/tenants", "the first leases", |v| {
        leases(v)["epoch"] == 1
    }))
    .await;
    assert_eq!(leases(&v)["shares"], json!({"n1": 16, "n2": 16}), "{v}");
    // 24 MiB at host 1: over its 16.
    let (status, message) = hog_here(&api, h1, &capped, 6).await;
    assert_eq!(status, 500, "{message}");
    // The ledger's words, on the CPU backend and on a GPU alike (where
    // the driver's pool would have let 24 MiB into its 32 MiB chunk).
    assert!(
        message.contains("exceeds tenant capped's GPU memory on this host")
            && message.contains("16777216 bytes"),
        "{message}"
    );
    // Each refusal is demand: asked again and again (each attempt paced by
    // its own round trip), the job fits once the leader has moved the quota
    // to host 1, and the leases never pass the quota on the way.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let l = leases(&api.get(h1, "/v1/tenants").await.unwrap());
        assert!(total(&l) <= 32, "leases over the quota: {l}");
        let (status, message) = hog_here(&api, h1, &capped, 6).await;
        if status == 200 {
            eprintln!("24 MiB ran at host 1 under leases {l}");
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "host 1's lease never grew: {l} {message}"
        );
    }
    let l = leases(&api.get(h1, "/v1/tenants").await.unwrap());
    let n1 = l["shares"]["n1"].as_u64().unwrap();
    let n2 = l["shares"]["n2"].as_u64().unwrap_or(0);
    assert!(n1 >= 24 && n1 + n2 <= 32, "{l}");
    // A job sent to host 2 runs there under its lease, or, with none (the
    // whole quota moved to host 1, as the refusals usually make it), goes
    // to host 1.
    let r = (api.http)
        .post(format!("{}/v1/functions/hog/invoke", hosts[1].endpoint))
        .bearer_auth(&capped)
        .body(
            [1u32, 1024]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ran_on = if n2 == 0 { "n1" } else { "n2" };
    eprintln!("host 2's lease {n2} MiB: its job ran on {ran_on}");
    assert_eq!(r.headers()["spillway-node"], ran_on, "{l}");
}
