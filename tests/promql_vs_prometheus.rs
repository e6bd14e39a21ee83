//! Side by side with a real Prometheus (Debian's `prometheus` and `promtool`): the
//! `../shared/bench` data set (`gen_dataset.py`, 200 of its series over its full 12 hours) is
//! loaded into both, then the same queries (every function family, aggregations, binary
//! matching, `offset`, `@`, subqueries) go to both HTTP APIs at times between sample
//! timestamps; every answer must be equal within 1e-9 relative.
//!
//! Between samples, because Debian's Prometheus is 2.42, whose range windows and lookback are
//! closed on the left, while modelwatch follows Prometheus 3 (open on the left): the two agree
//! wherever no sample sits exactly on a window's start, which is what these times ensure.
mod common;
use common::*;
use modelwatch::pb;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Loads the CSV (`name,labels,ts_ms,value`, labels `k=v;k=v`) over gRPC.
async fn load_csv(d: &Daemon, csv: &Path) -> usize {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut by_series: BTreeMap<(String, String), (Vec<i64>, Vec<f64>)> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let mut f = line.split(',');
        let (name, labels, ts, v) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let e = by_series.entry((name.to_string(), labels.to_string())).or_default();
        e.0.push(ts.parse().unwrap());
        e.1.push(v.parse().unwrap());
    }
    let mut ing = d.ingest().await;
    let mut total = 0;
    let all: Vec<pb::Series> = by_series
        .into_iter()
        .map(|((name, labels), (ts, vals))| {
            total += ts.len();
            let mut s = series(&name, &[], ts, vals);
            s.labels = labels.split(';').map(|kv| kv.split_once('=').unwrap()).map(|(k, v)| label(k, v)).collect();
            if name.ends_with("_total") {
                s.kind = pb::MetricKind::Counter as i32;
            }
            s
        })
        .collect();
    for chunk in all.chunks(20) {
        let r = ing
            .push(pb::PushRequest {
                metrics: Some(pb::MetricBatch { series: chunk.to_vec(), backfill: true, ..Default::default() }),
                ..Default::default()
            })
            .await
            .expect("push");
        let ack = r.into_inner().metrics.unwrap();
        assert!(ack.rejections.is_empty(), "{:?}", ack.rejections);
    }
    total
}

/// The queries, each at one or more times between samples (samples are on a 10 s grid from
/// 1700000000; "T" is replaced by the time).
const QUERIES: &[&str] = &[
    "gpu_utilization_percent",
    "max_over_time(gpu_utilization_percent[1h])",
    "min_over_time(gpu_utilization_percent[30m])",
    "avg_over_time(model_latency_ms[10m])",
    "sum_over_time(model_latency_ms[5m])",
    "count_over_time(gpu_utilization_percent[7m])",
    "quantile_over_time(0.95, model_latency_ms[1h])",
    "stddev_over_time(model_latency_ms[15m])",
    "stdvar_over_time(gpu_utilization_percent[15m])",
    "last_over_time(model_requests_total[3m])",
    "present_over_time(gpu_memory_total_bytes[1m])",
    "rate(model_requests_total[5m])",
    "irate(model_requests_total[5m])",
    "increase(model_requests_total[1h])",
    "delta(gpu_utilization_percent[10m])",
    "idelta(gpu_utilization_percent[2m])",
    "deriv(gpu_utilization_percent[10m])",
    "predict_linear(gpu_utilization_percent[30m], 3600)",
    "resets(model_requests_total[1h])",
    "changes(gpu_utilization_percent[10m])",
    "sum by (model) (rate(model_requests_total[5m]))",
    "avg by (host) (gpu_utilization_percent)",
    "max without (gpu, sid) (gpu_utilization_percent)",
    "min by (model, ver) (model_latency_ms)",
    "count by (model) (model_latency_ms)",
    "quantile by (model) (0.9, model_latency_ms)",
    "topk(3, gpu_utilization_percent)",
    "bottomk(2, model_latency_ms)",
    "stddev by (host) (model_latency_ms)",
    "stdvar(gpu_utilization_percent)",
    "count_values(\"v\", gpu_memory_total_bytes)",
    "group by (host) (gpu_utilization_percent)",
    "sum(rate(model_requests_total[5m])) / count(model_requests_total)",
    "model_latency_ms * 2 + 1",
    "gpu_utilization_percent > 80",
    "gpu_utilization_percent > bool 80",
    "80 < gpu_utilization_percent",
    "model_latency_ms / on(host, model, sid, ver) rate(model_requests_total[5m])",
    "rate(model_requests_total[5m]) * on(host, model) group_left sum by (host, model) (model_latency_ms)",
    "sum by (host, model) (model_latency_ms) / on(host, model) group_right rate(model_requests_total[5m])",
    "gpu_utilization_percent and on(gpu) gpu_memory_total_bytes",
    "gpu_utilization_percent unless on(sid) gpu_utilization_percent > 50",
    "max by (host) (gpu_utilization_percent) or on(host) min by (host) (model_latency_ms)",
    "gpu_utilization_percent offset 1h",
    "max_over_time(gpu_utilization_percent[10m] offset 30m)",
    "gpu_utilization_percent @ 1700010005",
    "rate(model_requests_total[5m] @ 1700020005)",
    "max_over_time(max(gpu_utilization_percent)[30m:1m])",
    "avg_over_time(rate(model_requests_total[303s])[1h:5m])",
    "max_over_time(deriv(gpu_utilization_percent[303s])[20m:] offset 10m)",
    "abs(deriv(gpu_utilization_percent[10m]))",
    "clamp(gpu_utilization_percent, 20, 60)",
    "clamp_min(model_latency_ms, 40)",
    "round(model_latency_ms, 0.1)",
    "sqrt(model_latency_ms) + ln(model_latency_ms) - log2(gpu_memory_total_bytes)",
    "exp(-model_latency_ms / 100) * sgn(gpu_utilization_percent - 50)",
    "label_replace(gpu_utilization_percent, \"g\", \"gpu-$1\", \"gpu\", \"(.*)\")",
    "label_join(model_latency_ms, \"mv\", \"/\", \"model\", \"ver\")",
    "absent(nonexistent{job=\"x\"})",
    "absent_over_time(gpu_utilization_percent[5m])",
    "timestamp(gpu_utilization_percent)",
    "hour() + minute() + day_of_week() + month()",
    "day_of_year(timestamp(gpu_memory_total_bytes))",
    "time()",
    "scalar(sum(gpu_memory_total_bytes))",
    "vector(1) + scalar(count(gpu_utilization_percent))",
    "sort_desc(sum by (model) (rate(model_requests_total[5m])))",
    "-gpu_utilization_percent % 7 ^ 2",
    "gpu_utilization_percent atan2 10",
];

/// Queries whose answers differ from Debian's Prometheus 2.42 for a known reason, and why
/// (the comparison then removes that difference and checks the rest).
const EXPLAINED: &[(&str, &str)] = &[(
    "gpu_utilization_percent atan2 10",
    "Prometheus 2.42 keeps the metric name through `atan2`; Prometheus 3 (operators.test: \
     `trigy atan2 trigx` gives `{}`) and modelwatch drop it like every arithmetic operator",
)];

/// Times between samples (the 10 s grid starts at 1700000000).
const TIMES: &[&str] = &["1700021234.567", "1700043000.5", "1700007777.7"];

/// Result type and, per label set, its points.
type Comparable = (String, BTreeMap<String, Vec<(i64, f64)>>);

fn comparable(v: &serde_json::Value) -> Result<Comparable, String> {
    if v["status"] != "success" {
        return Err(format!("{v}"));
    }
    let kind = v["data"]["resultType"].as_str().unwrap_or("").to_string();
    let mut out = BTreeMap::new();
    let num = |x: &serde_json::Value| -> (i64, f64) {
        let t = (x[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
        let s = x[1].as_str().unwrap_or("");
        let f = match s {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            _ => s.parse().unwrap_or(f64::NAN),
        };
        (t, f)
    };
    match kind.as_str() {
        "scalar" => {
            out.insert(String::new(), vec![num(&v["data"]["result"])]);
        }
        _ => {
            for s in v["data"]["result"].as_array().unwrap() {
                let m: BTreeMap<String, String> = serde_json::from_value(s["metric"].clone()).unwrap();
                let key = format!("{m:?}");
                let pts = match s.get("values") {
                    Some(vals) => vals.as_array().unwrap().iter().map(num).collect(),
                    None => vec![num(&s["value"])],
                };
                if out.insert(key.clone(), pts).is_some() {
                    return Err(format!("{key} twice"));
                }
            }
        }
    }
    Ok((kind, out))
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn diff(q: &str, mw: &serde_json::Value, prom: &serde_json::Value) -> Option<String> {
    let (a, b) = match (comparable(mw), comparable(prom)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => return Some(format!("{q}: modelwatch {:?} / prometheus {:?}", a.err(), b.err())),
    };
    if a.0 != b.0 {
        return Some(format!("{q}: result type {} vs {}", a.0, b.0));
    }
    if a.1.len() != b.1.len() {
        return Some(format!(
            "{q}: {} series vs {} (first {:?} / {:?})",
            a.1.len(),
            b.1.len(),
            a.1.keys().next(),
            b.1.keys().next()
        ));
    }
    for (k, pa) in &a.1 {
        let Some(pb) = b.1.get(k) else { return Some(format!("{q}: {k} only in modelwatch's answer")) };
        if pa.len() != pb.len() || pa.iter().zip(pb).any(|(x, y)| x.0 != y.0 || !same(x.1, y.1)) {
            return Some(format!("{q}: {k}: {:?} vs {:?}", &pa[..pa.len().min(4)], &pb[..pb.len().min(4)]));
        }
    }
    None
}

#[tokio::test]
async fn answers_equal_prometheus_on_the_bench_data_set() {
    let gen = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/gen_dataset.py");
    let missing: Vec<&str> = ["prometheus", "promtool", "python3"].into_iter().filter(|t| !have(t)).collect();
    if !missing.is_empty() || !gen.exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("missing for the Prometheus comparison: {missing:?} (gen_dataset.py present: {})", gen.exists());
        }
        eprintln!("SKIPPED: the Prometheus comparison needs {missing:?} and ../shared/bench/gen_dataset.py");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (om, csv) = (tmp.path().join("ds.om"), tmp.path().join("ds.csv"));
    let st = Command::new("python3")
        .arg(&gen)
        .args(["--series", "200", "--om"])
        .arg(&om)
        .arg("--csv")
        .arg(&csv)
        .status()
        .unwrap();
    assert!(st.success());
    // Prometheus: blocks from the same data, then a server over them.
    let pdata = tmp.path().join("prom");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&pdata)
        .output()
        .unwrap();
    assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stderr));
    let cfgf = tmp.path().join("prometheus.yml");
    std::fs::write(&cfgf, "global:\n  scrape_interval: 1h\nscrape_configs: []\n").unwrap();
    let port = free_port();
    let paddr = format!("127.0.0.1:{port}");
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfgf.display()))
        .arg(format!("--storage.tsdb.path={}", pdata.display()))
        .arg(format!("--web.listen-address={paddr}"))
        .arg("--storage.tsdb.retention.time=100y")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(std::mem::replace(&mut prom, Command::new("true").spawn().unwrap()));
    // modelwatch: the same CSV over gRPC (old data: backfill and retention widened).
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &[
            ("MODELWATCH__LIMITS__BACKFILL_MAX_AGE", "3650d"),
            ("MODELWATCH__LIMITS__MAX_AGE", "3650d"),
            ("MODELWATCH__RETENTION__METRICS", "3650d"),
            // 20-minute chunks, so that windows of an hour hold whole chunks and
            // `min/max/count_over_time` answer from chunk summaries here too.
            ("MODELWATCH__STORAGE__CHUNK_SAMPLES", "120"),
        ],
    );
    let n = load_csv(&d, &csv).await;
    assert_eq!(n, 200 * 4320);
    let deadline = Instant::now() + Duration::from_secs(120);
    while http(&paddr, "GET", "/-/ready", None).0 != 200 {
        assert!(Instant::now() < deadline, "Prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut failures = Vec::new();
    let mut compared = 0;
    for q in QUERIES {
        for t in TIMES {
            let path = format!("/api/v1/query?query={}&time={t}", enc(q));
            let (mw, mut pr) = (http(&d.http_addr, "GET", &path, None).1, http(&paddr, "GET", &path, None).1);
            if let Some((_, why)) = EXPLAINED.iter().find(|(eq, _)| eq == q) {
                // Explained: Prometheus 2.42 keeps the metric name here, Prometheus 3 drops it.
                eprintln!("explained difference for {q}: {why}");
                for r in pr["data"]["result"].as_array_mut().into_iter().flatten() {
                    r["metric"].as_object_mut().map(|m| m.remove("__name__"));
                }
            }
            compared += 1;
            if let Some(dif) = diff(q, &mw, &pr) {
                failures.push(format!("at {t}: {dif}"));
            }
        }
    }
    // Range queries, steps between samples.
    for q in [
        "sum by (model) (rate(model_requests_total[5m]))",
        "max(gpu_utilization_percent)",
        "quantile(0.5, model_latency_ms)",
        "max_over_time(gpu_utilization_percent[1h]) - min_over_time(gpu_utilization_percent[1h] offset 1h)",
    ] {
        let path = format!("/api/v1/query_range?query={}&start=1700003005&end=1700040005&step=60", enc(q));
        let (mw, pr) = (http(&d.http_addr, "GET", &path, None).1, http(&paddr, "GET", &path, None).1);
        compared += 1;
        if let Some(dif) = diff(q, &mw, &pr) {
            failures.push(format!("range: {dif}"));
        }
    }
    eprintln!("{compared} answers compared with Prometheus, {} differ", failures.len());
    assert!(compared >= 40 * 3);
    assert!(failures.is_empty(), "{} of {compared} answers differ:\n{}", failures.len(), failures.join("\n"));
    d.stop_ok();
}
