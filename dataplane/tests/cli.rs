//! The command line: `restreamer --check`, and the bundled example as the
//! README's quick start runs it.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn check(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_restreamer"))
        .arg("--check")
        .arg(path)
        .output()
        .unwrap()
}

fn check_text(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restreamer.json");
    std::fs::write(&path, text).unwrap();
    let output = check(&path);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn the_originals_documented_and_minimal_examples_load_unchanged() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in ["documented.json", "minimal.json"] {
        let output = check(&fixtures.join(name));
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let bundled = check(&workspace_root().join("examples/restreamer.json"));
    assert!(bundled.status.success());
}

#[test]
fn check_rejects_each_kind_of_bad_config_naming_the_key() {
    let cases = [
        (
            r#"{"listen": ":80", "maxconections": 10}"#,
            "maxconections: unknown field",
        ),
        (
            r#"{"outputbuffer": "many"}"#,
            "outputbuffer: invalid type: string",
        ),
        (
            r#"{"outputbuffer": 0}"#,
            "outputbuffer: must be at least 1 packet",
        ),
        (
            r#"{"maxconnections": 5, "fullconnections": 6}"#,
            "fullconnections: soft limit 6 is above the hard limit maxconnections 5",
        ),
        (
            r#"{"resources": [{"type": "api", "api": "check", "serve": "/c", "remote": "/none"}]}"#,
            "resources[0].remote: \"/none\" is not the serve path of any stream",
        ),
        (
            r#"{"resources": [{"type": "stream", "serve": "/s", "remote": "rtmp://x/live"}]}"#,
            "resources[0].remote: unsupported scheme \"rtmp\"",
        ),
        (
            r#"{"resources": [{"type": "stream", "serve": "/s", "remotes": ["tcp://nohost"]}]}"#,
            "resources[0].remotes[0]: \"tcp://nohost\" needs a port",
        ),
        (
            r#"{"resources": [{"type": "strem", "serve": "/s"}]}"#,
            "resources[0].type: unknown variant `strem`",
        ),
        (
            "{\n  \"listen\": \":80\"\n  \"timeout\": 1\n}",
            "invalid JSON: expected `,` or `}` at line 3",
        ),
    ];
    for (config, expected) in cases {
        let (ok, stderr) = check_text(config);
        assert!(!ok, "accepted: {config}");
        assert!(
            stderr.contains(expected),
            "for {config}\nexpected: {expected}\ngot: {stderr}"
        );
    }
}

#[test]
fn check_warns_about_users_that_nobody_is_asked_for() {
    let (ok, stderr) = check_text(
        r#"{"userlist": {"op": {"password": "x"}},
            "resources": [{"type": "api", "serve": "/statistics", "api": "statistics",
                           "authentication": {"users": ["op"]}}]}"#,
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(
            "warning: resources[0].authentication.type: users are named but the type is empty"
        ),
        "{stderr}"
    );
}

#[test]
fn check_reports_a_missing_file() {
    let output = check(Path::new("/nonexistent/restreamer.json"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/restreamer.json"),
        "{stderr}"
    );
}

/// The README's quick start: the bundled example plays the bundled sample
/// as a live channel that a decoder recognises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_example_plays_a_decodable_live_channel() {
    let root = workspace_root();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/restreamer.json")).unwrap(),
    )
    .unwrap();
    let proxy = Proxy::start_in(config, &root);
    proxy.wait_for_event("upstream-connect", 1).await;

    let mut client = Client::get(&proxy.url("/live/sample.ts")).await;
    assert_eq!(client.status, 200);
    let started = std::time::Instant::now();
    // Read for 3 s, noting the longest silence: a paced channel trickles,
    // it does not arrive in bursts.
    let mut body = Vec::new();
    let mut last = started;
    let mut longest_gap = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(3) {
        let piece = tokio::time::timeout(Duration::from_secs(2), client.next_body())
            .await
            .expect("the live channel went silent")
            .expect("the live channel ended");
        longest_gap = longest_gap.max(last.elapsed());
        last = std::time::Instant::now();
        body.extend_from_slice(&piece);
    }
    assert!(
        longest_gap < Duration::from_millis(300),
        "bursty pacing: a {longest_gap:?} silence"
    );
    body.truncate(body.len() / PACKET * PACKET);
    // Paced in real time: about 3 s of a 1.2 Mbit/s stream, not the whole file at once.
    let seconds = started.elapsed().as_secs_f64();
    let bitrate = body.len() as f64 * 8.0 / seconds;
    assert!(
        (0.8e6..1.6e6).contains(&bitrate),
        "received {:.2} Mbit/s, the sample is 1.2 Mbit/s",
        bitrate / 1e6
    );
    assert!(body.chunks(PACKET).all(|packet| packet[0] == 0x47));

    let dir = tempfile::tempdir().unwrap();
    let received = dir.path().join("received.ts");
    std::fs::write(&received, &body).unwrap();
    if let Some(types) = ffprobe_codec_types(&received) {
        assert!(
            types.contains(&"video".to_string()),
            "ffprobe found {types:?}"
        );
        assert!(
            types.contains(&"audio".to_string()),
            "ffprobe found {types:?}"
        );
    }
}
