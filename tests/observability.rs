//! What operators look at, against one daemon holding pushed data (in process, for scripted
//! GPUs at the hardware edge): `/metrics` with the pushed numbers, every panel of the Grafana
//! dashboards in `deploy/grafana/` returning series, Debian's Prometheus scraping the daemon
//! with `deploy/prometheus/prometheus.yml`, `modelwatch top` in a tmux pseudo-terminal, and the
//! HTML report and the status page drawn by headless Chromium.
mod common;
use common::*;
use modelwatch::pb;
use modelwatch::sample::gpu::{DeviceInfo, FakeGpu, FakeTick, GpuProcess, XidEvent};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVICE: &str = "vision";
/// One event a second, the newest 30 s old.
const N: i64 = 240;

fn gpus(me: u32) -> FakeGpu {
    let devices = (0..2).map(|i| DeviceInfo { index: i, uuid: format!("GPU-fake-{i}"), name: "Fake H100".into() });
    let mut t1 = FakeTick::default();
    t1.readings.insert(0, Ok(fake_reading(30, 30)));
    t1.readings.insert(1, Ok(fake_reading(60, 30)));
    let mut t2 = t1.clone();
    t2.processes.insert(0, vec![GpuProcess { pid: me, memory_bytes: Some(1 << 30), sm_utilization_percent: Some(25) }]);
    t2.xids.push(XidEvent { gpu: 1, xid: 79, pid: None });
    FakeGpu::new(Ok(devices.collect()), vec![t1, t2])
}

/// Status and error type of event k: every 10th fails with cuda_oom.
fn failed(k: i64) -> bool {
    k % 10 == 0
}

async fn load(d: &InProcess, t_end: i64) {
    let url = format!("http://{}", d.addr);
    let mut ing = pb::ingest_client::IngestClient::connect(url).await.unwrap();
    ing.register(pb::RegisterRequest {
        service: SERVICE.into(),
        instance: "v1".into(),
        pid: std::process::id(),
        models: vec![pb::ModelRef { name: "m1".into(), version: "1".into() }],
        ..Default::default()
    })
    .await
    .unwrap();
    let events: Vec<pb::InferenceEvent> = (0..N)
        .map(|k| pb::InferenceEvent {
            timestamp_ms: t_end - k * 1000,
            model: if k % 2 == 0 { "m1".into() } else { "m2".into() },
            model_version: "1".into(),
            request_id: format!("req-{k}"),
            status: if failed(k) { pb::Status::Error as i32 } else { pb::Status::Ok as i32 },
            error_type: if failed(k) { "cuda_oom".into() } else { String::new() },
            latency_us: (20 + (k as u64 % 50)) * 1000,
            stages: Some(pb::Stages { inference_us: (16 + (k as u64 % 40)) * 1000, ..Default::default() }),
            prompt_tokens: 10,
            completion_tokens: 20,
            ..Default::default()
        })
        .collect();
    let logs: Vec<pb::LogRecord> = (0..N)
        .filter(|k| failed(*k))
        .map(|k| pb::LogRecord {
            timestamp_ms: t_end - k * 1000,
            level: pb::Level::Error as i32,
            message: "CUDA out of memory".into(),
            error_type: "cuda_oom".into(),
            request_id: format!("req-{k}"),
            ..Default::default()
        })
        .collect();
    let r = ing
        .push(pb::PushRequest {
            events: Some(pb::EventBatch { service: SERVICE.into(), events, ..Default::default() }),
            logs: Some(pb::LogBatch { service: SERVICE.into(), records: logs, ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.events.unwrap().accepted, N as u64);
    // One bad series beside a good one: the good one is kept, the bad one counted by field.
    let bad = pb::MetricBatch {
        service: SERVICE.into(),
        series: vec![
            series("vision_queue_depth", &[], vec![0], vec![3.0]),
            series("bad name", &[], vec![0], vec![1.0]),
        ],
        ..Default::default()
    };
    let err = ing.push(pb::PushRequest { metrics: Some(bad), ..Default::default() }).await.unwrap_err();
    assert!(err.message().contains("series[1].name"), "{}", err.message());
}

/// Value of the one exposition line with exactly this name and labels.
fn exposed(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (bounded, not a speed assertion) until `f` gives an answer.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn check_metrics(web: &str) {
    let text = get_body(web, "/metrics");
    let labels = |model: &str| format!("service=\"{SERVICE}\",model=\"{model}\",version=\"1\",endpoint=\"\"");
    let (mut ok, mut errors, mut sum_s, mut tokens) = (0.0, 0.0, 0.0, 0.0);
    for model in ["m1", "m2"] {
        let l = labels(model);
        ok += exposed(&text, &format!("modelwatch_inference_requests_total{{{l},status=\"ok\"}}")).unwrap();
        errors +=
            exposed(&text, &format!("modelwatch_inference_requests_total{{{l},status=\"error\"}}")).unwrap_or(0.0);
        // Every 10th event fails: all of them even, so all on m1.
        let typed = exposed(&text, &format!("modelwatch_inference_errors_total{{{l},error_type=\"cuda_oom\"}}"));
        assert_eq!(typed, if model == "m1" { Some(24.0) } else { None }, "{model}");
        let count = exposed(&text, &format!("modelwatch_inference_latency_seconds_count{{{l}}}")).unwrap();
        assert_eq!(count, 120.0, "{model}");
        let under_50ms = exposed(&text, &format!("modelwatch_inference_latency_seconds_bucket{{{l},le=\"0.05\"}}"));
        let want = (0..N).filter(|k| (k % 2 == 0) == (model == "m1") && 20 + k % 50 <= 50).count() as f64;
        assert_eq!(under_50ms, Some(want), "{model}: events at or under 50 ms");
        sum_s += exposed(&text, &format!("modelwatch_inference_latency_seconds_sum{{{l}}}")).unwrap();
        tokens += exposed(&text, &format!("modelwatch_inference_completion_tokens_total{{{l}}}")).unwrap();
    }
    assert_eq!((ok, errors), (216.0, 24.0));
    let want_sum: f64 = (0..N).map(|k| (20 + k % 50) as f64 / 1000.0).sum();
    assert!((sum_s - want_sum).abs() < 1e-6, "{sum_s} vs {want_sum}");
    assert_eq!(tokens, 20.0 * N as f64);
    let rejected =
        "modelwatch_ingest_rejected_total{kind=\"metrics\",code=\"INVALID_ARGUMENT\",field=\"series[].name\"}";
    assert_eq!(exposed(&text, rejected), Some(1.0), "rejections by field");
    assert!(exposed(&text, "modelwatch_ingest_items_total{kind=\"events\"}").unwrap() >= N as f64);
    let fsyncs = exposed(&text, "modelwatch_wal_fsync_seconds_count").unwrap();
    assert!(fsyncs >= 1.0);
    // Every stored batch was queued and acked once; every group synced once was applied once.
    let stage = |s: &str| exposed(&text, &format!("modelwatch_commit_stage_seconds_count{{stage=\"{s}\"}}")).unwrap();
    let stored: f64 = ["metrics", "logs", "events"]
        .iter()
        .map(|k| {
            exposed(&text, &format!("modelwatch_ingest_batches_total{{kind=\"{k}\",outcome=\"stored\"}}")).unwrap()
        })
        .sum();
    assert!(stored >= 1.0 && stage("queue") >= stored && stage("ack") >= stored, "{stored}");
    // (The daemon's own sampler may commit a group while the page renders.)
    assert!((stage("apply") - fsyncs).abs() <= 2.0, "{} groups applied, {fsyncs} synced", stage("apply"));
    assert!(exposed(&text, "modelwatch_wal_bytes").unwrap() > 0.0);
    // glibc's heap (the CI's libc): in use cannot be zero in a daemon that serves requests.
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert!(exposed(&text, "modelwatch_process_heap_bytes{state=\"in_use\"}").unwrap() > 1e6);
        assert!(exposed(&text, "modelwatch_process_heap_bytes{state=\"free\"}").is_some());
    }
    // The samplers' latest readings.
    let util = "gpu_utilization_percent{gpu=\"0\",uuid=\"GPU-fake-0\",model_name=\"Fake H100\"}";
    assert_eq!(exposed(&text, util), Some(30.0), "{}", text.lines().filter(|l| l.starts_with("gpu_")).count());
    assert!(text.contains("\nhost_memory_total_bytes "), "host samples");
    assert!(text
        .contains(&format!("gpu_process_memory_bytes{{gpu=\"0\",uuid=\"GPU-fake-0\",pid=\"{}\"", std::process::id())));
    // Every family once, well formed: promtool's linter reads it as Prometheus would.
    if tools_for("promtool check metrics", &["promtool"]) {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool check metrics: {}", String::from_utf8_lossy(&out.stdout));
    }
}

/// Grafana's `$variables` as a test fills them in.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "10m")
        .replace("$__interval", "15s")
        .replace("$service", SERVICE)
        .replace("$model", ".*")
        .replace("$gpu", ".*")
}

fn check_dashboards(web: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 3, "service overview, GPU, daemon");
    let end = now_ms() / 1000;
    let mut checked = 0;
    for f in files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        // Template variables: label_values(selector, label), as Grafana asks for them.
        for v in d["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
            let q = v["definition"].as_str().unwrap();
            let inner = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).unwrap();
            let (sel, label) = inner.rsplit_once(", ").unwrap();
            let path =
                format!("/api/v1/label/{label}/values?match[]={}&start={}&end={end}", enc(&substitute(sel)), end - 600);
            let (code, body) = http(web, "GET", &path, None);
            let vals = body["data"].as_array().cloned().unwrap_or_default();
            assert!(code == 200 && !vals.is_empty(), "{name}: variable {}: {body}", v["name"]);
        }
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = substitute(t["expr"].as_str().unwrap());
                let instant = t["instant"].as_bool().unwrap_or(false);
                let (path, form) = if instant {
                    ("/api/v1/query", format!("query={}&time={end}", enc(&expr)))
                } else {
                    ("/api/v1/query_range", format!("query={}&start={}&end={end}&step=15", enc(&expr), end - 600))
                };
                let (code, body) = http(web, "POST", path, Some(&form));
                let result = body["data"]["result"].as_array().cloned().unwrap_or_default();
                assert!(code == 200 && !result.is_empty(), "{name}: panel {:?}: {expr}: {code} {body}", p["title"]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "{checked} panel queries");
}

/// Debian's Prometheus scrapes the daemon with the shipped config; its answers carry the
/// pushed numbers.
fn check_prometheus_scrape(web: &str) {
    if !tools_for("the Prometheus scrape", &["prometheus"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/prometheus.yml"))
            .unwrap();
    assert!(shipped.contains("127.0.0.1:7071") && shipped.contains("scrape_interval: 15s"));
    let cfg = shipped.replace("127.0.0.1:7071", web).replace("scrape_interval: 15s", "scrape_interval: 1s");
    std::fs::write(tmp.path().join("prometheus.yml"), cfg).unwrap();
    let paddr = format!("127.0.0.1:{}", free_port());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", tmp.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", tmp.path().join("data").display()))
            .arg(format!("--web.listen-address={paddr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ask = |q: &str| -> Option<f64> {
        std::net::TcpStream::connect(&paddr).ok()?;
        let (code, body) = http(&paddr, "GET", &format!("/api/v1/query?query={}", enc(q)), None);
        if code != 200 {
            return None;
        }
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let total = eventually("Prometheus scraping the daemon", || {
        ask(&format!("sum(modelwatch_inference_requests_total{{service=\"{SERVICE}\"}})"))
    });
    assert_eq!(total, N as f64);
    let q = format!("sum(modelwatch_inference_requests_total{{service=\"{SERVICE}\",status=\"error\"}})");
    assert_eq!(ask(&q), Some(24.0));
    let q = format!("sum(modelwatch_inference_errors_total{{service=\"{SERVICE}\",error_type=\"cuda_oom\"}})");
    assert_eq!(ask(&q), Some(24.0));
    let q = format!("sum(modelwatch_inference_latency_seconds_bucket{{service=\"{SERVICE}\",le=\"+Inf\"}})");
    assert_eq!(ask(&q), Some(N as f64));
    assert_eq!(ask("gpu_utilization_percent{gpu=\"1\"}"), Some(60.0));
    assert_eq!(ask("up{job=\"modelwatch\"}"), Some(1.0));
}

/// `modelwatch top` in a tmux pseudo-terminal: its screen read back, then `q`.
fn check_top(grpc: &str) {
    if !tools_for("modelwatch top in tmux", &["tmux"]) {
        return;
    }
    let session = format!("mwtop{}", std::process::id());
    let bin = env!("CARGO_BIN_EXE_modelwatch");
    let cmd = format!("{bin} top --addr {grpc}; echo EXITED $?; sleep 60");
    let st = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session, "-x", "160", "-y", "50", "sh", "-c", &cmd])
        .status()
        .unwrap();
    assert!(st.success());
    struct KillSession(String);
    impl Drop for KillSession {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).status();
        }
    }
    let _guard = KillSession(session.clone());
    let screen = || {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &session]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let me = std::process::id();
    let first = eventually("top's screen with the service, the GPUs and the alert", || {
        let s = screen();
        (s.contains(&format!("pid {me} {SERVICE} m1")) && s.contains("HighErrorRate")).then_some(s)
    });
    eprintln!("top's screen:\n{first}");
    let row = |s: &str, start: &str| s.lines().find(|l| l.trim_start().starts_with(start)).unwrap_or("").to_string();
    let svc = row(&first, SERVICE);
    let cols: Vec<&str> = svc.split_whitespace().collect();
    assert_eq!(cols[1], "1", "one registered instance: {svc}");
    assert!(cols[2].ends_with("/s") && cols[3].ends_with('%') && cols[4..].join(" ").ends_with("ms"), "{svc}");
    let gpu0 = row(&first, "0 ");
    assert!(gpu0.contains("Fake H100") && gpu0.contains("30%"), "{gpu0}");
    assert!(gpu0.contains("30.0 GiB / 80.0 GiB") && gpu0.contains("70 C") && gpu0.contains("130 W"), "{gpu0}");
    let gpu1 = row(&first, "1 ");
    assert!(gpu1.contains("60%") && gpu1.contains("100 C") && gpu1.contains("160 W"), "{gpu1}");
    let proc_row = row(&first, &format!("pid {me}"));
    assert!(proc_row.contains("1.0 GiB") && proc_row.contains("25%"), "{proc_row}");
    assert!(first.contains("1 alert(s) firing"), "{first}");
    // It refreshes: the clock in the header moves on.
    let header = first.lines().next().unwrap().to_string();
    eventually("a refresh", || (screen().lines().next().unwrap_or("") != header).then_some(()));
    Command::new("tmux").args(["send-keys", "-t", &session, "q"]).status().unwrap();
    let last = eventually("top to quit on q", || Some(screen()).filter(|s| s.contains("EXITED")));
    assert!(last.contains("EXITED 0"), "{last}");
}

/// What Chromium drew: each `path.series` with its length on screen (a lone point: its dot's
/// width) and its data-values, measured by a script in a page that frames `page`.
fn drawn(page: &Path, profile: &Path) -> Vec<(f64, Vec<f64>)> {
    let probe = page.with_extension("probe.html");
    let target = page.file_name().unwrap().to_string_lossy();
    std::fs::write(
        &probe,
        format!(
            r#"<!doctype html><html><body><iframe id="f" src="{target}" width="1200" height="3000"></iframe><pre id="out">pending</pre>
<script>
document.getElementById('f').addEventListener('load', function () {{
  var doc = this.contentDocument, rows = [];
  doc.querySelectorAll('path.series').forEach(function (p) {{
    // A one-point series is a dot beside its path.
    var dot = p.parentNode.querySelector('circle'), drawn = p.getTotalLength();
    if (dot) {{ drawn = Math.max(drawn, dot.getBoundingClientRect().width); }}
    rows.push(drawn.toFixed(1) + ';' + (p.getAttribute('data-values') || ''));
  }});
  document.getElementById('out').textContent = 'drawn\n' + rows.join('\n');
}});
</script></body></html>"#
        ),
    )
    .unwrap();
    let out = chromium(profile)
        .args(["--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("file://{}", probe.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let text = dom.split("<pre id=\"out\">").nth(1).and_then(|s| s.split("</pre>").next()).unwrap_or("");
    assert!(text.starts_with("drawn"), "the probe did not run: {dom} {}", String::from_utf8_lossy(&out.stderr));
    text.lines()
        .skip(1)
        .map(|l| {
            let (len, vals) = l.split_once(';').unwrap();
            (len.parse().unwrap(), vals.split(' ').filter(|v| !v.is_empty()).map(|v| v.parse().unwrap()).collect())
        })
        .collect()
}

fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stderr(Stdio::piped());
    c
}

/// Takes a screenshot of `url`; returns its PNG size.
fn screenshot(url: &str, png: &Path, profile: &Path) -> u64 {
    let out = chromium(profile)
        .args(["--window-size=1200,1600", "--virtual-time-budget=5000"])
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .output()
        .unwrap();
    let bytes = std::fs::read(png)
        .unwrap_or_else(|e| panic!("{url}: no screenshot ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(&bytes[1..4], b"PNG", "{url}");
    bytes.len() as u64
}

fn check_pages(grpc: &str, web: &str) {
    if !tools_for("pages in headless Chromium", &["chromium"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("profile");
    // The HTML report, written by the CLI.
    let report = tmp.path().join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["report", "service", "--service", SERVICE, "--since", "1h", "--addr", grpc, "--html"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let charts = drawn(&report, &profile);
    assert!(charts.len() >= 3, "requests, p95 and error-rate charts: {charts:?}");
    assert!(charts.iter().all(|(len, vals)| *len > 100.0 && !vals.is_empty()), "{charts:?}");
    assert_eq!(charts[0].1.iter().sum::<f64>(), N as f64, "the requests chart draws every pushed request");
    // The status page, as served.
    let status = tmp.path().join("status.html");
    std::fs::write(&status, get_body(web, "/")).unwrap();
    let charts = drawn(&status, &profile);
    assert_eq!(charts.len(), 3, "one service and two GPUs: {charts:?}");
    assert!(charts[0].0 > 100.0, "the requests line: {charts:?}");
    // The GPUs were sampled for seconds: a point (or a line) per GPU, drawn.
    assert!(charts.iter().all(|(len, vals)| *len > 0.0 && !vals.is_empty()), "{charts:?}");
    assert_eq!(charts[0].1.iter().sum::<f64>(), N as f64, "requests per minute add up to the pushed requests");
    assert!(charts[1].1.iter().all(|v| *v == 30.0) && charts[2].1.iter().all(|v| *v == 60.0), "{charts:?}");
    // Screenshots: the live page and the report draw far more than an empty page does.
    let blank = tmp.path().join("blank.html");
    std::fs::write(&blank, "<!doctype html><title>blank</title>").unwrap();
    let empty = screenshot(&format!("file://{}", blank.display()), &tmp.path().join("blank.png"), &profile);
    let live = screenshot(&format!("http://{web}/"), &tmp.path().join("status.png"), &profile);
    let page = screenshot(&format!("file://{}", report.display()), &tmp.path().join("report.png"), &profile);
    assert!(live > 4 * empty && page > 4 * empty, "screenshots: status {live} B, report {page} B, blank {empty} B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_dashboards_scrape_top_and_pages_show_the_pushed_data() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: svc\n  rules:\n  - alert: HighErrorRate\n    expr: sum by (service) (rate(modelwatch_inference_requests_total{status=\"error\"}[10m])) > 0\n    annotations:\n      summary: \"{{ $labels.service }} fails\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let d = InProcess::start(&data, gpus(std::process::id()), |cfg| {
        cfg.sampling.gpu_interval = Duration::from_millis(200);
        cfg.sampling.gpu_process_every = 1;
        cfg.sampling.host_interval = Duration::from_millis(500);
        cfg.sampling.self_interval = Duration::from_secs(1);
        cfg.storage.checkpoint_interval = Duration::from_secs(2);
        cfg.alerting.rule_files = vec![rules.display().to_string()];
        cfg.alerting.evaluation_interval = Duration::from_secs(1);
    })
    .await;
    let t_end = now_ms() - 30_000;
    load(&d, t_end).await;
    let (grpc, web) = (d.addr.clone(), d.http_addr.clone());
    tokio::task::spawn_blocking(move || {
        // Samplers, the daemon's own stored figures (for rates: a few points) and the rule.
        eventually("samples, self figures and the alert", || {
            let text = get_body(&web, "/metrics");
            let ready = text.contains("gpu_process_memory_bytes{")
                && text.contains("\nprocess_resident_memory_bytes{")
                && exposed(&text, "modelwatch_alerts{state=\"firing\"}") == Some(1.0);
            let q = format!("/api/v1/query?query={}", enc("count_over_time(modelwatch_wal_bytes[1m]) >= 4"));
            let stored = http(&web, "GET", &q, None).1["data"]["result"].as_array().is_some_and(|r| !r.is_empty());
            (ready && stored).then_some(())
        });
        check_metrics(&web);
        check_dashboards(&web);
        check_prometheus_scrape(&web);
        check_top(&grpc);
        check_pages(&grpc, &web);
    })
    .await
    .unwrap();
    d.stop().await;
}
