//! `/metrics` as Prometheus's own tools read it: `promtool check metrics`
//! finds nothing to complain of on every host's page, taken while jobs run
//! and burst between two hosts, tenant series included; a scraper asking
//! for OpenMetrics gets it.

use crate::common::hosts::{self, Api, Host};
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

/// `promtool check metrics` on `page`: what it printed (empty: clean).
fn promtool(page: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (.ci/run installs Debian's prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said
    } else {
        format!("exit {:?}: {said}", out.status.code())
    }
}

/// Every host's page passes promtool; `series` must be on the first's.
async fn check_all(api: &Api, hosts: &[Host], series: &[&str]) {
    for (i, host) in hosts.iter().enumerate() {
        let page = api.metrics(host).await;
        for name in series.iter().filter(|_| i == 0) {
            assert!(page.contains(name), "no {name}: {page}");
        }
        assert_eq!(promtool(&page), "", "{}: {page}", host.endpoint);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hosts_metrics_pass_promtool_under_load() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(root.path(), &[&["--slots", "1"], &["--slots", "1"]]).await;
    let acme = api
        .tenant_token(&hosts[0], "acme", &["publish", "invoke"])
        .await;
    api.publish(
        &hosts[0],
        &acme,
        "countdown",
        json!({"name": "countdown", "artifact": "countdown", "deadline_ms": 10000}),
    )
    .await;
    // Sixteen 200 ms jobs at a one-slot host: some wait, some burst.
    let load: Vec<_> = (0..16)
        .map(|_| {
            let (http, endpoint, token) =
                (api.http.clone(), hosts[0].endpoint.clone(), acme.clone());
            tokio::spawn(async move {
                http.post(format!("{endpoint}/v1/functions/countdown/invoke"))
                    .bearer_auth(token)
                    .body(vec![2u8, 10])
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    check_all(&api, &hosts, &[]).await;
    for job in load {
        assert_eq!(job.await.unwrap(), 200);
    }
    // A path no route has is counted as such.
    let nope = api
        .http
        .get(format!("{}/nope/42", hosts[0].endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(nope.status(), 404);
    let after = [
        "spillway_jobs_total{outcome=\"ok\"}",
        "spillway_job_latency_seconds_count",
        "# TYPE spillway_jobs_total counter",
        "spillway_http_requests_total{route=\"/v1/functions/{name}/invoke\",method=\"POST\",status=\"200\"} 16",
        "spillway_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "spillway_http_request_seconds_count{route=\"/v1/functions/{name}/invoke\",method=\"POST\"} 16",
        "spillway_queue_wait_seconds_count 16",
        "spillway_raft_term ",
        "spillway_raft_applied_index ",
        "spillway_raft_committed_index ",
    ];
    check_all(&api, &hosts, &after).await;
    // One host leads; the founder proposed the tenant, token and function
    // and timed each; it saw one leader come to be.
    let pages = [api.metrics(&hosts[0]).await, api.metrics(&hosts[1]).await];
    let value = |page: &str, series: &str| -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series}: {page}"))
    };
    let leaders: f64 = pages.iter().map(|p| value(p, "spillway_raft_leader")).sum();
    assert_eq!(leaders, 1.0);
    assert!(value(&pages[0], "spillway_raft_proposal_seconds_count") >= 3.0);
    assert!(value(&pages[0], "spillway_raft_leader_changes_total") >= 1.0);
    // What host 1 sent out, host 2 ran, and says so.
    let out = value(&pages[0], "spillway_jobs_ran_on_peer_total");
    assert!(out >= 1.0, "no job burst: {}", pages[0]);
    assert_eq!(
        value(&pages[0], "spillway_burst_out_jobs_total{outcome=\"ok\"}"),
        out
    );
    assert_eq!(
        value(&pages[1], "spillway_peer_jobs_total{outcome=\"ok\"}"),
        out
    );
    // Every one of the 16 was placed once at host 1 (the queued ones that
    // left for host 2 once more), and each host times its peer.
    let decisions: f64 = pages[0]
        .lines()
        .filter(|l| l.starts_with("spillway_placement_decisions_total{"))
        .filter(|l| !l.contains("reason=\"left_queue\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(decisions, 16.0, "{}", pages[0]);
    for page in &pages {
        assert!(page.contains("spillway_peer_rtt_seconds{peer="), "{page}");
        let age = page
            .lines()
            .find_map(|l| {
                l.strip_prefix("spillway_peer_gossip_age_seconds{")?
                    .rsplit(' ')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no gossip age: {page}"));
        assert!(age < 30.0, "{page}");
    }
    // Host 2 fetched the function's artifact to run what it was sent, and
    // timed it.
    assert!(value(&pages[1], "spillway_artifact_fetch_seconds_count") >= 1.0);
    assert_eq!(
        value(&pages[0], "spillway_jobs_total{outcome=\"ok\"}"),
        16.0,
        "every invocation counted once, at the host that accepted it"
    );

    // Every series the Grafana dashboard and the alert rules query is one
    // the hosts serve (but those that only appear with GPU jobs or with
    // refusals, which this load has none of).
    let served: std::collections::BTreeSet<String> = pages
        .iter()
        .flat_map(|p| p.lines())
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability");
    for file in ["dashboard.json", "alerts.yml"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let mut names: Vec<&str> = text
            .match_indices("spillway_")
            .map(|(i, _)| {
                let rest = &text[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .filter(|n| n.len() > "spillway_".len())
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            // Served on hosts with GPUs (the GPU machine's tests), or
            // once a peer refuses.
            let needs_other_load = [
                "spillway_tenant_gpu_memory_bytes",
                "spillway_peer_jobs_refused_total",
                "spillway_gpu_memory_used_bytes",
                "spillway_gpu_memory_total_bytes",
                "spillway_gpu_weights_resident_bytes",
            ];
            assert!(
                served.contains(family) || needs_other_load.contains(&family),
                "{file} queries {name}, which no host serves"
            );
        }
    }

    // Prometheus asks for OpenMetrics, and gets it.
    let page = api
        .http
        .get(format!("{}/metrics", hosts[0].endpoint))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let kind = page.headers()["content-type"].to_str().unwrap().to_owned();
    let text = page.text().await.unwrap();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(
        text.ends_with("# EOF\n") && text.contains("# TYPE spillway_jobs counter"),
        "{text}"
    );
}
