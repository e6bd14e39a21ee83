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

// ---- a scripted receiver: credentials, headers, retries, refusals, TLS ------------------

mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// What the scripted receiver saw and keeps.
#[derive(Default)]
struct Seen {
    /// Answers still to give before accepting (503, 429, ...).
    script: Vec<u16>,
    headers: Vec<axum::http::HeaderMap>,
    samples: Samples,
    refused_requests: usize,
}

type Shared = std::sync::Arc<std::sync::Mutex<Seen>>;

/// Answers from the script first; then refuses with 400 any request holding the value 666
/// (as a receiver refuses a bad sample), and keeps the rest.
async fn receive(
    axum::extract::State(seen): axum::extract::State<Shared>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, [(&'static str, &'static str); 1], String) {
    use prost::Message;
    let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy");
    let req = wire::WriteRequest::decode(raw.as_slice()).expect("a WriteRequest");
    let mut s = seen.lock().unwrap();
    s.headers.push(headers);
    if !s.script.is_empty() {
        let code = s.script.remove(0);
        return (axum::http::StatusCode::from_u16(code).unwrap(), [("retry-after", "1")], "scripted".into());
    }
    if req.timeseries.iter().any(|t| t.samples.iter().any(|x| x.value == 666.0)) {
        s.refused_requests += 1;
        return (axum::http::StatusCode::BAD_REQUEST, [("retry-after", "0")], "value 666 is not accepted".into());
    }
    for t in req.timeseries {
        let key: Key = t.labels.into_iter().map(|l| (l.name, l.value)).collect();
        s.samples.entry(key).or_default().extend(t.samples.iter().map(|x| (x.timestamp, x.value)));
    }
    (axum::http::StatusCode::NO_CONTENT, [("retry-after", "0")], String::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_sends_credentials_retries_and_skips_only_what_is_refused() {
    let seen: Shared = Default::default();
    seen.lock().unwrap().script = vec![503, 429, 500];
    let app = axum::Router::new().route("/api/v1/write", axum::routing::post(receive)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rx = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("rw.token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let mut endpoints = vec![format!(
        "{{name=\"scripted\", url=\"http://{rx}/api/v1/write\", bearer_token_file=\"{}\", headers={{\"X-Scope-OrgID\"=\"team-a\"}}, \
         external_labels={{dc=\"x\"}}, batch_samples=100, interval=\"100ms\", min_backoff=\"50ms\", max_backoff=\"200ms\", derived=false, \
         relabel=[{{action=\"replace\", source_labels=[\"service\"], target_label=\"job\"}}]}}",
        token_file.display()
    )];
    // The same data over TLS into VictoriaMetrics, verified with the test's CA.
    let vm_tls = if tools_for("remote-write over TLS", &["victoria-metrics"]) {
        let ca = {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            (p.self_signed(&key).unwrap(), key)
        };
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca.0, &ca.1).unwrap();
        let (ca_pem, cert_f, key_f) = (tmp.path().join("ca.pem"), tmp.path().join("vm.pem"), tmp.path().join("vm.key"));
        std::fs::write(&ca_pem, ca.0.pem()).unwrap();
        std::fs::write(&cert_f, cert.pem()).unwrap();
        std::fs::write(&key_f, key.serialize_pem()).unwrap();
        let port = free_port();
        let child = Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", tmp.path().join("vm").display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .args(["-tls", &format!("-tlsCertFile={}", cert_f.display()), &format!("-tlsKeyFile={}", key_f.display())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        endpoints.push(format!(
            "{{name=\"vm-tls\", url=\"https://127.0.0.1:{port}/api/v1/write\", tls_ca_file=\"{}\", interval=\"100ms\", derived=false}}",
            ca_pem.display()
        ));
        Some((Proc(child), port, ca.0.pem()))
    } else {
        None
    };
    let rw = format!("[{}]", endpoints.join(", "));
    let d = Daemon::start(&tmp.path().join("mw"), &[("MODELWATCH__FLEET__REMOTE_WRITE", &rw)]);
    let mut c = d.ingest().await;
    let t0 = now_ms() / 1000 * 1000 - 600_000;
    let mut batch = metric_batch("svc", "scripted", 10, t0, 1000, 50, 1);
    batch.series[3].values[25] = 666.0;
    stream_metrics(&mut c, vec![batch.clone()]).await;

    // Everything but the refused sample arrives; the refused one is counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: usize = seen.lock().unwrap().samples.values().map(Vec::len).sum();
        if n >= 499
            && figure(&d, "modelwatch_remote_write_samples_total{endpoint=\"scripted\",outcome=\"dropped\"}").await
                >= 1.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "the scripted receiver has {n} samples");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.samples.len(), 10);
        for (k, pts) in &s.samples {
            assert_eq!(
                (k.get("job").map(String::as_str), k.get("dc").map(String::as_str)),
                (Some("svc"), Some("x")),
                "{k:?}"
            );
            let i: usize = k["i"].parse().unwrap();
            let want: Vec<(i64, f64)> = batch.series[i]
                .timestamps_ms
                .iter()
                .zip(&batch.series[i].values)
                .map(|(&t, &v)| (t, v))
                .filter(|p| p.1 != 666.0)
                .collect();
            assert_eq!(pts, &want, "series {i}: every sample once, in order, only the refused one missing");
        }
        assert!(s.refused_requests >= 2, "the refused request was split until the bad sample stood alone");
        assert!(s.script.is_empty(), "503, 429 and 500 were answered and retried");
        for h in &s.headers {
            assert_eq!(h["authorization"], "Bearer s3cret");
            assert_eq!(h["x-scope-orgid"], "team-a");
            assert_eq!(h["content-encoding"], "snappy");
            assert_eq!(h["content-type"], "application/x-protobuf");
            assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
        }
    }
    assert_eq!(
        figure(&d, "modelwatch_remote_write_samples_total{endpoint=\"scripted\",outcome=\"dropped\"}").await,
        1.0
    );
    assert_eq!(
        figure(&d, "modelwatch_remote_write_samples_total{endpoint=\"scripted\",outcome=\"sent\"}").await,
        499.0
    );
    let retried = figure(&d, "modelwatch_remote_write_requests_total{endpoint=\"scripted\",outcome=\"retried\"}").await;
    let failed = figure(&d, "modelwatch_remote_write_requests_total{endpoint=\"scripted\",outcome=\"failed\"}").await;
    let refused = seen.lock().unwrap().refused_requests as f64;
    assert_eq!(retried, 3.0, "503, 429 and 500");
    assert_eq!(failed, retried + refused, "every answer that was not 2xx");

    if let Some((_vm, port, ca)) = vm_tls {
        caught_up(&d, &["vm-tls"], "over TLS").await;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = client.get(format!("https://127.0.0.1:{port}/internal/force_flush")).send().await;
            let body = client
                .get(format!("https://127.0.0.1:{port}/api/v1/export?match[]={}", enc("{__name__=\"scripted\"}")))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let n: usize = body
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str::<Value>(l).unwrap()["values"].as_array().unwrap().len())
                .sum();
            if n == 500 {
                break;
            }
            assert!(Instant::now() < deadline, "VictoriaMetrics over TLS holds {n} of 500 samples");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    d.stop_ok();
}
