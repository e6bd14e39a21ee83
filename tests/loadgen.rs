//! `modelwatch loadgen` against the real daemon: every item it reports acked is stored, and it
//! reports latency and the daemon's costs.
mod common;

use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_reports_what_the_daemon_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["loadgen", "--addr", &d.addr, "--http", &d.http_addr])
        .args(["--services", "2", "--count", "3000", "--batch", "500", "--series", "10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for kind in ["metrics", "events", "logs"] {
        assert!(text.contains(&format!("acked {kind:<8} 6000 (")), "{text}");
    }
    assert!(!text.contains("rejected"), "{text}");
    assert!(text.contains("ack latency per batch: p50 ") && text.contains("(36 batches)"), "{text}");
    assert!(text.contains("daemon: CPU ") && text.contains("bytes per item"), "{text}");
    // What it reports acked is there.
    assert_eq!(count_samples_in(&d, "loadgen_value", "3d").await, 6000, "{text}");
    let mut total = 0;
    for m in 0..4 {
        total += count_events(&d, &format!("model-{m}"), "1h").await;
    }
    assert_eq!(total, 6000, "{text}");
    // A bad --kind is refused with the choices.
    let bad = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["loadgen", "--kind", "traces", "--count", "1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("metrics, events, logs or all"));
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_finds_its_request_ids_and_live_metrics_carry_the_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["loadgen", "--addr", &d.addr, "--http", &d.http_addr, "--kind", "events,metrics"])
        .args(["--services", "2", "--duration", "2500ms", "--rate", "4000", "--batch", "100", "--series", "10"])
        .args(["--live", "--request-ids", "--lookups", "40", "--report-every", "1s"])
        .output()
        .unwrap();
    let (text, err) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}{err}");
    // Every id it names as sent comes back exactly once, none of the others.
    assert!(text.contains("GetRequest, ids sent (each found once): 20 look-ups, p50 "), "{text}");
    assert!(text.contains("GetRequest, ids never sent (none found): 20 look-ups, p50 "), "{text}");
    // Progress on stderr, and how the folder moved.
    assert!(err.contains("items/s acked") && err.contains("data folder"), "{err}");
    assert!(text.contains("data folder over the run ("), "{text}");
    // --live: the samples are stamped now (without it they lie a day back, as backfill).
    let acked: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("acked metrics"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("acked metrics line");
    assert!(acked > 0, "{text}");
    assert_eq!(count_samples_in(&d, "loadgen_value", "5m").await, acked, "{text}");
    // --lookups without request ids is refused up front.
    let bad = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["loadgen", "--kind", "events", "--count", "1", "--lookups", "5"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--lookups needs --request-ids"));
    d.stop_ok();
}
