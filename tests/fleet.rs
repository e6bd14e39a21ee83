//! Fleet: remote-write into real receivers (Debian's `victoria-metrics`, and `prometheus` with
//! its remote-write receiver on), compared sample by sample with what the daemon holds; a
//! receiver outage and a `kill -9` during export; `/federate` scraped by a real Prometheus.
mod common;

use common::*;
use modelwatch::pb;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Key = BTreeMap<String, String>;
type Samples = BTreeMap<Key, Vec<(i64, f64)>>;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(url: &str) -> String {
    reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}")).text().await.unwrap()
}

async fn wait_ready(url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} did not become ready at {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn start_vm(dir: &Path, port: u16) -> Proc {
    let child = Command::new("victoria-metrics")
        .arg(format!("-storageDataPath={}", dir.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-retentionPeriod=100y")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start victoria-metrics");
    Proc(child)
}

fn start_prometheus(dir: &Path, port: u16, config: &str) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--storage.tsdb.retention.time=100y")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Proc(child)
}

fn key_of(metric: &Value, drop: &[&str]) -> Key {
    metric
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => match s.as_str() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            s => s.parse().unwrap(),
        },
        v => v.as_f64().unwrap(),
    }
}

/// A matrix answer of the Prometheus API (the daemon's or Prometheus'), by label set.
fn matrix(body: &str, drop: &[&str]) -> Samples {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["status"], "success", "{body}");
    let mut out = Samples::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let pts = s["values"].as_array().unwrap().iter().map(|p| ((num(&p[0]) * 1000.0).round() as i64, num(&p[1])));
        out.insert(key_of(&s["metric"], drop), pts.collect());
    }
    out
}

/// VictoriaMetrics' `/api/v1/export` (JSON lines with raw samples), once it shows at least
/// `want` samples (what it has just taken in becomes searchable after a moment, even after
/// `/internal/force_flush`), or after 30 s with what it shows then.
async fn vm_export_at_least(vm: &str, selector: &str, want: usize) -> Samples {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = vm_export(vm, selector).await;
        if got.values().map(Vec::len).sum::<usize>() >= want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// VictoriaMetrics' `/api/v1/export` (JSON lines with raw samples).
async fn vm_export(vm: &str, selector: &str) -> Samples {
    reqwest::get(format!("http://{vm}/internal/force_flush")).await.unwrap();
    let body = get(&format!("http://{vm}/api/v1/export?match[]={}", enc(selector))).await;
    let mut out = Samples::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let ts = v["timestamps"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap());
        let vals = v["values"].as_array().unwrap().iter().map(num);
        let mut pts: Vec<(i64, f64)> = ts.zip(vals).collect();
        pts.sort_by_key(|p| p.0);
        pts.dedup_by_key(|p| p.0);
        out.entry(key_of(&v["metric"], &[])).or_default().extend(pts);
    }
    out
}

async fn range_query(addr: &str, expr: &str, at_ms: i64, drop: &[&str]) -> Samples {
    let url = format!("http://{addr}/api/v1/query?query={}&time={}", enc(expr), at_ms as f64 / 1000.0);
    matrix(&get(&url).await, drop)
}

/// One figure of the daemon's `/metrics` (0 when absent).
async fn figure(d: &Daemon, name_and_labels: &str) -> f64 {
    let text = get(&format!("http://{}/metrics", d.http_addr)).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Waits until every endpoint in `endpoints` has nothing pending and no lag.
async fn caught_up(d: &Daemon, endpoints: &[&str], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut done = true;
        for e in endpoints {
            let pending = figure(d, &format!("modelwatch_remote_write_pending_samples{{endpoint=\"{e}\"}}")).await;
            let lag = figure(d, &format!("modelwatch_remote_write_lag_seconds{{endpoint=\"{e}\"}}")).await;
            let sent =
                figure(d, &format!("modelwatch_remote_write_samples_total{{endpoint=\"{e}\",outcome=\"sent\"}}")).await;
            done &= pending == 0.0 && lag == 0.0 && sent > 0.0;
        }
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: remote-write did not catch up:\n{}",
            get(&format!("http://{}/metrics", d.http_addr)).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn metric_batch(service: &str, name: &str, n_series: usize, t0: i64, step: i64, n: usize, seq: u64) -> pb::MetricBatch {
    let series = (0..n_series)
        .map(|i| {
            let ts: Vec<i64> = (0..n).map(|k| t0 + k as i64 * step).collect();
            let vals: Vec<f64> = ts.iter().map(|t| ((t / step) as f64 * 0.37 + i as f64).sin() * 100.0).collect();
            series(name, &[("i", &i.to_string())], ts, vals)
        })
        .collect();
    pb::MetricBatch { client_id: format!("{service}/1"), service: service.into(), series, seq, ..Default::default() }
}

fn rw_endpoint(name: &str, url: &str, extra: &str) -> String {
    format!(
        "{{name=\"{name}\", url=\"{url}\", interval=\"100ms\", derived_delay=\"0s\", \
         min_backoff=\"50ms\", max_backoff=\"500ms\", relabel=[{{action=\"drop\", match='{{__name__=\"secret_total\"}}'}}]{extra}}}"
    )
}

/// What the daemon holds and what a receiver holds, equal sample by sample (the receiver's
/// copy carries `host`, which is dropped before comparing).
fn assert_same(what: &str, daemon: &Samples, receiver: &Samples) {
    let strip = |s: &Samples| -> Samples {
        s.iter()
            .map(|(k, v)| {
                assert!(k.get("host").is_none_or(|h| h == "h1"), "{what}: host label {k:?}");
                let mut k = k.clone();
                k.remove("host");
                (k, v.clone())
            })
            .collect()
    };
    let (a, b) = (strip(daemon), strip(receiver));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: the same series");
    for (k, pts) in &a {
        let other = &b[k];
        assert_eq!(
            pts.len(),
            other.len(),
            "{what}: {k:?}: {} samples in the daemon, {} in the receiver",
            pts.len(),
            other.len()
        );
        for (p, q) in pts.iter().zip(other) {
            // VictoriaMetrics keeps a value as a decimal of 12 significant digits (its
            // documented precision), so its copy may differ from the float sent in the 13th.
            let close =
                p.1 == q.1 || (p.1.is_nan() && q.1.is_nan()) || (p.1 - q.1).abs() <= 1e-11 * p.1.abs().max(q.1.abs());
            let exact_wanted = !what.contains("VictoriaMetrics");
            assert!(
                p.0 == q.0 && (close && (!exact_wanted || p.1 == q.1 || (p.1.is_nan() && q.1.is_nan()))),
                "{what}: {k:?}: {p:?} != {q:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_delivers_every_sample_to_victoriametrics_and_prometheus() {
    if !tools_for("remote-write into VictoriaMetrics and Prometheus", &["victoria-metrics", "prometheus"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (vm_port, prom_port) = (free_port(), free_port());
    let _vm = start_vm(&tmp.path().join("vm"), vm_port);
    let _prom = start_prometheus(&tmp.path().join("prom"), prom_port, "global:\n  scrape_interval: 15s\n");
    let (vm, prom) = (format!("127.0.0.1:{vm_port}"), format!("127.0.0.1:{prom_port}"));
    wait_ready(&format!("http://{vm}/health"), "victoria-metrics").await;
    wait_ready(&format!("http://{prom}/-/ready"), "prometheus").await;
    let endpoints = format!(
        "[{}, {}]",
        rw_endpoint("vm", &format!("http://{vm}/api/v1/write"), ", batch_samples=700"),
        rw_endpoint("prom", &format!("http://{prom}/api/v1/write"), ", shards=3, batch_samples=700")
    );
    let d = Daemon::start(
        &tmp.path().join("mw"),
        &[("MODELWATCH__FLEET__EXTERNAL_LABELS", "{host=\"h1\"}"), ("MODELWATCH__FLEET__REMOTE_WRITE", &endpoints)],
    );
    let mut c = d.ingest().await;
    let now = now_ms() / 1000 * 1000;
    let t0 = now - 20 * 60_000;
    // 40 series × 400 samples in four batches, a series the relabeling drops, events and logs.
    let batches: Vec<pb::MetricBatch> =
        (0..4).map(|b| metric_batch("svc", "rw_load", 40, t0 + b * 100 * 3000, 3000, 100, b as u64 + 1)).collect();
    for a in stream_metrics(&mut c, batches).await {
        assert_eq!(a.rejected_count, 0, "{a:?}");
    }
    push_metrics(&mut c, "svc", vec![series("secret_total", &[], vec![now - 1000], vec![1.0])]).await;
    let events: Vec<pb::InferenceEvent> = (0..30)
        .map(|k| pb::InferenceEvent {
            model: "m1".into(),
            endpoint: "/v1/chat".into(),
            timestamp_ms: now - 240_000 + k * 7_000,
            latency_us: 20_000 + k as u64 * 1000,
            status: if k % 10 == 0 { pb::Status::Error as i32 } else { pb::Status::Ok as i32 },
            error_type: if k % 10 == 0 { "oom".into() } else { String::new() },
            prompt_tokens: 10,
            completion_tokens: 20,
            ..Default::default()
        })
        .collect();
    stream_events(
        &mut c,
        vec![pb::EventBatch {
            client_id: "svc-e/1".into(),
            service: "svc".into(),
            events,
            seq: 1,
            ..Default::default()
        }],
    )
    .await;
    // Wait for the derived series' bucket of the newest event to end, then for both endpoints.
    let newest_event_bucket_end = (now - 240_000 + 29 * 7_000) / 10_000 * 10_000 + 10_000;
    while now_ms() < newest_event_bucket_end + 1000 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    caught_up(&d, &["vm", "prom"], "after ingest").await;

    // Metric series: everything the daemon holds, in both receivers.
    let at = now_ms();
    let ours = range_query(&d.http_addr, "rw_load[30m]", at, &[]).await;
    assert_eq!(ours.values().map(Vec::len).sum::<usize>(), 16_000);
    let in_vm = vm_export_at_least(&vm, "{__name__=\"rw_load\"}", 16_000).await;
    assert_same("rw_load in VictoriaMetrics", &ours, &in_vm);
    let in_prom = range_query(&prom, "rw_load[30m]", at, &[]).await;
    assert_same("rw_load in Prometheus", &ours, &in_prom);
    assert!(vm_export(&vm, "{__name__=\"secret_total\"}").await.is_empty(), "the relabeling drops secret_total");
    assert!(range_query(&prom, "secret_total[30m]", at, &[]).await.is_empty());

    // Derived series: every sample the receivers hold equals the daemon's, up to the newest
    // event's bucket.
    for name in ["modelwatch_inference_requests_total", "modelwatch_inference_latency_seconds_bucket"] {
        let theirs = range_query(&prom, &format!("{name}[30m]"), at, &[]).await;
        assert!(!theirs.is_empty(), "{name} reached Prometheus");
        let last = theirs.values().filter_map(|v| v.last()).map(|p| p.0).max().unwrap();
        assert!(last >= newest_event_bucket_end, "{name}: the receiver has buckets up to {last}");
        let first = theirs.values().filter_map(|v| v.first()).map(|p| p.0).min().unwrap();
        let span = (last - first) / 1000 + 1;
        let ours = range_query(&d.http_addr, &format!("{name}[{span}s]"), last, &[]).await;
        assert_same(&format!("{name} in Prometheus"), &ours, &theirs);
        let n = theirs.values().map(Vec::len).sum();
        let theirs_vm: Samples = vm_export_at_least(&vm, &format!("{{__name__=\"{name}\"}}"), n)
            .await
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().filter(|p| p.0 <= last).collect()))
            .collect();
        assert_same(&format!("{name} in VictoriaMetrics"), &ours, &theirs_vm);
    }
    let total: f64 = range_query(&prom, "modelwatch_inference_requests_total{model=\"m1\"}[30m]", at, &[])
        .await
        .values()
        .map(|v| v.last().unwrap().1)
        .sum();
    // The counters restart at the top of each hour; without an hour boundary in the window
    // the last samples add up to every event.
    if (now - 240_000) / 3_600_000 == at / 3_600_000 {
        assert_eq!(total, 30.0);
    }
    assert_eq!(figure(&d, "modelwatch_remote_write_samples_total{endpoint=\"vm\",outcome=\"dropped\"}").await, 0.0);
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_survives_a_receiver_outage_and_kill_9() {
    if !tools_for("remote-write outage and crash", &["victoria-metrics"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let vm_port = free_port();
    let vm = format!("127.0.0.1:{vm_port}");
    let env_rw = format!("[{}]", rw_endpoint("vm", &format!("http://{vm}/api/v1/write"), ", batch_samples=500"));
    let env: Vec<(&str, &str)> = vec![("MODELWATCH__FLEET__REMOTE_WRITE", &env_rw)];
    let data = tmp.path().join("mw");
    let d = Daemon::start(&data, &env);
    let mut c = d.ingest().await;
    let now = now_ms() / 1000 * 1000;
    let t0 = now - 50 * 60_000;
    // The receiver is down: ingest goes on, the sender retries.
    let first: Vec<pb::MetricBatch> =
        (0..5).map(|b| metric_batch("svc", "outage", 200, t0 + b * 60 * 1000, 1000, 60, b as u64 + 1)).collect();
    stream_metrics(&mut c, first).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while figure(&d, "modelwatch_remote_write_requests_total{endpoint=\"vm\",outcome=\"retried\"}").await < 3.0 {
        assert!(Instant::now() < deadline, "no retries while the receiver is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(figure(&d, "modelwatch_remote_write_pending_samples{endpoint=\"vm\"}").await >= 60_000.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let more: Vec<pb::MetricBatch> =
        (5..40).map(|b| metric_batch("svc", "outage", 200, t0 + b * 60 * 1000, 1000, 60, b as u64 + 1)).collect();
    stream_metrics(&mut c, more).await;
    // Up again: it catches up from where it stood; then, while it is still sending, kill -9.
    let _vm = start_vm(&tmp.path().join("vm"), vm_port);
    wait_ready(&format!("http://{vm}/health"), "victoria-metrics").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sent = figure(&d, "modelwatch_remote_write_samples_total{endpoint=\"vm\",outcome=\"sent\"}").await;
        if sent >= 10_000.0 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing sent after the receiver came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pending_at_kill = figure(&d, "modelwatch_remote_write_pending_samples{endpoint=\"vm\"}").await;
    assert!(pending_at_kill > 0.0, "the kill comes while the sender still has samples to send");
    d.kill9();
    eprintln!("killed with {pending_at_kill} samples pending");
    let d = Daemon::start(&data, &env);
    // More ingest after the restart, then everything must be there.
    let mut c = d.ingest().await;
    stream_metrics(&mut c, vec![metric_batch("svc", "outage", 200, t0 + 40 * 60 * 1000, 1000, 60, 41)]).await;
    caught_up(&d, &["vm"], "after the restart").await;
    let at = now_ms();
    let ours = range_query(&d.http_addr, "outage[2h]", at, &[]).await;
    assert_eq!(ours.values().map(Vec::len).sum::<usize>(), 200 * 41 * 60);
    let theirs = vm_export_at_least(&vm, "{__name__=\"outage\"}", 200 * 41 * 60).await;
    assert_same("outage in VictoriaMetrics", &ours, &theirs);
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_prometheus_federates_from_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("mw"), &[("MODELWATCH__FLEET__EXTERNAL_LABELS", "{host=\"h1\"}")]);
    let mut c = d.ingest().await;
    let now = now_ms();
    push_metrics(
        &mut c,
        "svc",
        vec![
            series("fed_queue_depth", &[("q", "a\"b")], vec![now - 20_000, now - 10_000], vec![3.0, 4.5]),
            series("fed_other", &[], vec![now - 10_000], vec![1.0]),
            series("fed_old", &[], vec![now - 600_000], vec![1.0]),
        ],
    )
    .await;
    // The text format, straight from the daemon: the newest sample with its own timestamp,
    // the external label added, the value escaped, nothing older than the lookback.
    let text = get(&format!("http://{}/federate?match[]={}", d.http_addr, enc("{__name__=~\"fed_.*\"}"))).await;
    assert!(
        text.contains(&format!("fed_queue_depth{{host=\"h1\",q=\"a\\\"b\",service=\"svc\"}} 4.5 {}\n", now - 10_000)),
        "{text}"
    );
    assert!(text.contains("# TYPE fed_other untyped\n"), "{text}");
    assert!(!text.contains("fed_old"), "{text}");
    let (status, body) = http(&d.http_addr, "GET", "/federate", None);
    assert_eq!(status, 400, "{body}");

    if !tools_for("federation by a real Prometheus", &["prometheus"]) {
        return;
    }
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: modelwatch\n    honor_labels: true\n    metrics_path: /federate\n    params:\n      'match[]': ['{{__name__=~\"fed_.*\"}}']\n    static_configs:\n      - targets: ['{}']\n",
        d.http_addr
    );
    let _prom = start_prometheus(&tmp.path().join("prom"), port, &config);
    let prom = format!("127.0.0.1:{port}");
    wait_ready(&format!("http://{prom}/-/ready"), "prometheus").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = get(&format!("http://{prom}/api/v1/query?query={}", enc("fed_queue_depth"))).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        if let Some(r) = v["data"]["result"].as_array().and_then(|a| a.first()) {
            assert_eq!(r["metric"]["host"], "h1", "{body}");
            assert_eq!(r["metric"]["service"], "svc", "{body}");
            assert_eq!(r["metric"]["q"], "a\"b", "{body}");
            assert_eq!(r["value"][1], "4.5", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never got fed_queue_depth by federation: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.stop_ok();
}
