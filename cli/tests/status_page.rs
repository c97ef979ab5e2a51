//! The status page in a real browser: headless Chromium opens
//! `/status#token=…` on host 1 of three while jobs burst from it, and
//! both the page it built (its DOM after the script ran) and its
//! screenshot are checked for what they must show: every host with its
//! role and health, the leader and term, slots in use, and the burst
//! flows out of host 1 drawn as bars.

use crate::common::hosts::{self, Api, Host};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Chromium headless on `url` with `what` (`--dump-dom` or
/// `--screenshot=FILE`); its standard output.
fn chromium(profile: &Path, url: &str, what: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1400,900",
            // Four seconds of the page's own (virtual) time: it refreshes
            // several times, whatever the machine's load.
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(url)
        .output()
        .expect("chromium (.ci/run installs Debian's chromium)");
    assert!(
        out.status.success(),
        "chromium {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pixels of `rgb` in a decoded RGB(A) screenshot.
fn pixels_of(image: &[u8], channels: usize, rgb: [u8; 3]) -> usize {
    image.chunks(channels).filter(|p| p[..3] == rgb).count()
}

async fn load(api: &Api, host: &Host, jobs: usize) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..jobs)
        .map(|_| {
            let (http, endpoint, token) =
                (api.http.clone(), host.endpoint.clone(), api.token.clone());
            tokio::spawn(async move {
                http.post(format!("{endpoint}/v1/functions/countdown/invoke"))
                    .bearer_auth(token)
                    .body(vec![5u8, 20])
                    .timeout(Duration::from_secs(120))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_three_hosts_under_burst_load_in_chromium() {
    let root = tempfile::tempdir().unwrap();
    let flags = ["--slots", "1", "--gossip-ms", "100"];
    let (api, hosts) = hosts::form(root.path(), &[&flags, &flags, &flags]).await;
    api.publish(
        &hosts[0],
        &api.token,
        "countdown",
        json!({"name": "countdown", "artifact": "countdown", "deadline_ms": 60000}),
    )
    .await;
    // The page is served to anyone (it holds no data) and loads nothing
    // from elsewhere.
    let r = api
        .http
        .get(format!("{}/status", hosts[0].endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "an external asset"
    );

    // About 1 s jobs, 24 of them at one-slot host 1: most burst.
    let jobs = load(&api, &hosts[0], 24).await;
    let view = api
        .wait(&hosts[0], "a burst flow out of host 1", |v| {
            hosts::members(v)
                .iter()
                .any(|m| m["burst_to"].as_object().is_some_and(|f| !f.is_empty()))
        })
        .await;
    let url = format!("{}/status#token={}", hosts[0].endpoint, api.token);
    let profile = root.path().join("chromium");
    let dom = chromium(&profile, &url, "--dump-dom");
    let shot = root.path().join("status.png");
    chromium(&profile, &url, &format!("--screenshot={}", shot.display()));
    for job in jobs {
        assert_eq!(job.await.unwrap(), 200);
    }

    // What the script built: every host, the leader, the term, a flow out
    // of host 1.
    for m in hosts::members(&view) {
        let id = m["id"].as_str().unwrap();
        assert!(
            dom.contains(&format!("data-host=\"{id}\"")),
            "host {id} missing: {dom}"
        );
    }
    let leader = view["leader"].as_str().unwrap();
    assert!(
        dom.contains(&format!("<b id=\"leader\">{leader}</b>")),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("<b id=\"term\">{}</b>", view["term"])),
        "{dom}"
    );
    assert_eq!(dom.matches("class=\"tag leader\"").count(), 1, "{dom}");
    assert_eq!(
        dom.matches("class=\"dot ok\"").count(),
        3,
        "three healthy hosts: {dom}"
    );
    let h1 = view["host"].as_str().unwrap();
    assert!(
        dom.contains(&format!("data-flow=\"{h1}|")),
        "no flow out of host 1: {dom}"
    );
    assert!(
        dom.contains("<div id=\"error\"></div>"),
        "the page said an error: {dom}"
    );
    // It refreshed: a second reading gave the flows their window.
    assert!(
        dom.contains("id=\"flow-window\">(last "),
        "no second refresh: {dom}"
    );

    // What the browser drew: the page at the asked size, the healthy
    // dots, the leader's tag and the flows' bars of jobs sent in all (the
    // bars of the last second's jobs may be empty when the screenshot
    // falls between bursts).
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut image = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut image).unwrap();
    assert_eq!((frame.width, frame.height), (1400, 900));
    let channels = frame.color_type.samples();
    let image = &image[..frame.buffer_size()];
    let healthy = pixels_of(image, channels, [0x2e, 0x9d, 0x5b]);
    let leader_tag = pixels_of(image, channels, [0xfd, 0xeb, 0xd0]);
    let flow = pixels_of(image, channels, [0xe6, 0x7e, 0x22]);
    let slots = pixels_of(image, channels, [0x3d, 0x7e, 0xbf]);
    assert!(healthy > 30, "healthy dots: {healthy} pixels");
    assert!(leader_tag > 50, "the leader's tag: {leader_tag} pixels");
    assert!(flow > 50, "flow bars (jobs in all): {flow} pixels");
    assert!(
        slots > 0 || dom.contains("0 / 1"),
        "slot bars: {slots} pixels"
    );
    // Kept for the record: SPILLWAY_STATUS_SHOT=FILE copies it out.
    if let Ok(to) = std::env::var("SPILLWAY_STATUS_SHOT") {
        std::fs::copy(&shot, to).unwrap();
    }
}
