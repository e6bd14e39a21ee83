//! PromQL speed through the HTTP API, side by side with VictoriaMetrics and Prometheus on the
//! same data in one run (a benchmark, not a test):
//!
//!     cargo bench --bench promql -- [--runs N] [--rounds R]
//!
//! Data: `../shared/bench`'s 1,000-series set (4.32 M samples, 12 h) in all three, plus a day
//! of inference events at 100/s in modelwatch, whose derived latency buckets
//! (`modelwatch_inference_latency_seconds_bucket`, 10 s resolution) are exported through the
//! daemon's own API and imported into the peers, so all three answer query (d) from the same
//! buckets (modelwatch from its HDR histograms). VictoriaMetrics is loaded and left serving by
//! `../shared/bench/vm_storage_bench.sh` (cache off, `nocache=1` on every query); Prometheus
//! serves `promtool tsdb create-blocks-from openmetrics` blocks.
//!
//! Each query runs once to warm up, then N times on one keep-alive connection; the median of
//! each server is reported, R rounds interleaved (modelwatch, VictoriaMetrics, Prometheus).
//! Prints a table and writes `target/bench-promql.json`.
mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use modelwatch::pb;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DAY_END_MS: i64 = 1_700_043_190_000;
const EVENTS_PER_S: i64 = 100;

struct Q {
    tag: &'static str,
    endpoint: &'static str,
    params: &'static [(&'static str, &'static str)],
}

const QUERIES: &[Q] = &[
    Q {
        tag: "a",
        endpoint: "query",
        params: &[("query", "max_over_time(gpu_utilization_percent[12h])"), ("time", "1700043190")],
    },
    Q {
        tag: "b",
        endpoint: "query",
        params: &[("query", "quantile_over_time(0.95, model_latency_ms[12h])"), ("time", "1700043190")],
    },
    Q {
        tag: "c",
        endpoint: "query_range",
        params: &[
            ("query", "sum by (model) (rate(model_requests_total[5m]))"),
            ("start", "1700000000"),
            ("end", "1700043190"),
            ("step", "60"),
        ],
    },
    Q {
        tag: "d",
        endpoint: "query_range",
        params: &[
            (
                "query",
                "histogram_quantile(0.95, sum by (model, le) (rate(modelwatch_inference_latency_seconds_bucket[5m])))",
            ),
            ("start", "1699957105"),
            ("end", "1700043190"),
            ("step", "60"),
        ],
    },
];

fn arg(name: &str, default: usize) -> usize {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http()
}

async fn fetch(c: &Client, url: &str) -> (u16, Bytes) {
    let req = hyper::Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let resp = c.request(req).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

async fn ready(c: &Client, url: &str) -> bool {
    let req = hyper::Request::get(url).body(Full::new(Bytes::new())).unwrap();
    matches!(c.request(req).await, Ok(r) if r.status() == 200)
}

async fn post(c: &Client, url: &str, body: Vec<u8>) -> u16 {
    let req = hyper::Request::post(url).body(Full::new(Bytes::from(body))).unwrap();
    let resp = c.request(req).await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// Deterministic latencies: a log-normal around 60 ms per model (xorshift, Box-Muller-free:
/// the sum of four uniforms approximates a normal).
fn events() -> Vec<pb::EventBatch> {
    let models = ["llm-a", "llm-b", "ocr", "asr"];
    let start = DAY_END_MS - 86_400_000;
    let n = 86_400 * EVENTS_PER_S;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut batches = Vec::new();
    let mut cur = Vec::with_capacity(20_000);
    for i in 0..n {
        let z = (next() + next() + next() + next() - 2.0) * 1.7;
        let m = (i % 4) as usize;
        let base = [60_000.0, 120_000.0, 25_000.0, 300_000.0][m];
        cur.push(pb::InferenceEvent {
            timestamp_ms: start + i * 1000 / EVENTS_PER_S,
            model: models[m].into(),
            latency_us: (base * (0.5 * z).exp()) as u64 + 1,
            ..Default::default()
        });
        if cur.len() == 20_000 {
            batches.push(pb::EventBatch {
                service: "svc".into(),
                events: std::mem::take(&mut cur),
                backfill: true,
                ..Default::default()
            });
        }
    }
    if !cur.is_empty() {
        batches.push(pb::EventBatch { service: "svc".into(), events: cur, backfill: true, ..Default::default() });
    }
    batches
}

async fn load_modelwatch(grpc: &str, csv: &Path) -> usize {
    let series = support::load(csv);
    let mut total = 0;
    let mut ing =
        pb::ingest_client::IngestClient::connect(grpc.to_string()).await.unwrap().max_decoding_message_size(64 << 20);
    for chunk in series.chunks(20) {
        let s: Vec<pb::Series> = chunk
            .iter()
            .map(|(name, labels, ts, vals)| {
                total += ts.len();
                pb::Series {
                    name: name.clone(),
                    labels: labels.clone(),
                    kind: if name.ends_with("_total") {
                        pb::MetricKind::Counter as i32
                    } else {
                        pb::MetricKind::Gauge as i32
                    },
                    timestamps_ms: ts.clone(),
                    values: vals.clone(),
                }
            })
            .collect();
        let r = ing
            .push(pb::PushRequest {
                metrics: Some(pb::MetricBatch { series: s, backfill: true, ..Default::default() }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.metrics.unwrap().rejections.is_empty());
    }
    let t0 = Instant::now();
    let batches = events();
    let n: usize = batches.iter().map(|b| b.events.len()).sum();
    for b in batches {
        let r = ing.push(pb::PushRequest { events: Some(b), ..Default::default() }).await.unwrap().into_inner();
        assert!(r.events.unwrap().rejections.is_empty());
    }
    eprintln!("modelwatch: {total} samples and {n} events loaded ({:.1} s for the events)", t0.elapsed().as_secs_f64());
    total
}

/// The derived bucket series as exported by modelwatch's own API, in Prometheus' text format
/// with millisecond timestamps (VictoriaMetrics' import) and as OpenMetrics (promtool).
async fn export_buckets(c: &Client, http: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let start = (DAY_END_MS - 86_400_000) / 1000 + 10;
    let url = format!(
        "http://{http}/api/v1/query_range?query={}&start={start}&end={}&step=10",
        enc("modelwatch_inference_latency_seconds_bucket"),
        DAY_END_MS / 1000
    );
    let (st, body) = fetch(c, &url).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body[..body.len().min(300)]));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (mut prom, mut om) =
        (String::new(), String::from("# TYPE modelwatch_inference_latency_seconds_bucket gauge\n"));
    let mut n = 0;
    for s in v["data"]["result"].as_array().unwrap() {
        let m = s["metric"].as_object().unwrap();
        let labels: Vec<String> =
            m.iter().filter(|(k, _)| *k != "__name__").map(|(k, v)| format!("{k}={}", v)).collect();
        let series = format!("modelwatch_inference_latency_seconds_bucket{{{}}}", labels.join(","));
        for p in s["values"].as_array().unwrap() {
            let t = p[0].as_f64().unwrap();
            let val = p[1].as_str().unwrap();
            prom.push_str(&format!("{series} {val} {}\n", (t * 1000.0) as i64));
            om.push_str(&format!("{series} {val} {t}\n"));
            n += 1;
        }
    }
    om.push_str("# EOF\n");
    eprintln!("exported {n} bucket samples from modelwatch");
    let (a, b) = (dir.join("buckets.prom"), dir.join("buckets.om"));
    std::fs::write(&a, prom).unwrap();
    std::fs::write(&b, om).unwrap();
    (a, b)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Killer(Vec<Child>, Vec<u32>);
impl Drop for Killer {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in &self.1 {
            unsafe { libc::kill(*pid as i32, libc::SIGINT) };
        }
    }
}

async fn time_query(c: &Client, base: &str, q: &Q, runs: usize, vm: bool) -> (f64, usize) {
    let mut qs: Vec<String> = q.params.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
    if vm {
        qs.push("nocache=1".into());
    }
    let url = format!("http://{base}/api/v1/{}?{}", q.endpoint, qs.join("&"));
    let mut times = Vec::new();
    let mut points = 0;
    for i in 0..=runs {
        let t0 = Instant::now();
        let (st, body) = fetch(c, &url).await;
        let dt = t0.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(st, 200, "{base} {}: {}", q.tag, String::from_utf8_lossy(&body[..body.len().min(300)]));
        if i > 0 {
            times.push(dt);
        } else {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            points = v["data"]["result"]
                .as_array()
                .map_or(0, |r| r.iter().map(|s| s["values"].as_array().map_or(1, |x| x.len())).sum());
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], points)
}

fn main() {
    let runs = arg("--runs", 7);
    let rounds = arg("--rounds", 2);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let csv = support::dataset(None);
    let om = csv.with_extension("om");
    if !om.exists() {
        let st = Command::new("python3")
            .arg(root.join("../shared/bench/gen_dataset.py"))
            .arg("--om")
            .arg(&om)
            .args(["--csv", "/dev/null"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let work = tempfile::tempdir().unwrap();
    let mut killer = Killer(Vec::new(), Vec::new());
    let c = client();
    // modelwatch
    // `--keep DIR`: modelwatch's data folder there, loaded once and reused by later runs;
    // `--only-modelwatch`: skip the peers (for quick iterations on the engine).
    let keep = std::env::args().skip_while(|a| a != "--keep").nth(1).map(PathBuf::from);
    let only_mw = std::env::args().any(|a| a == "--only-modelwatch");
    let mwdir = keep.clone().unwrap_or_else(|| work.path().join("mw"));
    let loaded = mwdir.exists();
    let (child, grpc, mw) = support::start_daemon_http(
        &mwdir,
        &[
            ("MODELWATCH__LIMITS__BACKFILL_MAX_AGE", "3650d"),
            ("MODELWATCH__LIMITS__MAX_AGE", "3650d"),
            ("MODELWATCH__RETENTION__METRICS", "3650d"),
            ("MODELWATCH__RETENTION__INFERENCE_EVENTS", "3650d"),
            ("MODELWATCH__RETENTION__INFERENCE_STATS", "3650d"),
            ("MODELWATCH__QUERY__MAX_POINTS", "100000000"),
        ],
    );
    killer.0.push(child);
    if !loaded {
        rt.block_on(load_modelwatch(&grpc, &csv));
    }
    if only_mw {
        for q in QUERIES {
            let (m, p) = rt.block_on(time_query(&c, &mw, q, runs, false));
            println!("modelwatch ({}) median {m:.1} ms, {p} points", q.tag);
        }
        return;
    }
    let (bprom, bom) = rt.block_on(export_buckets(&c, &mw, work.path()));
    // VictoriaMetrics, loaded and left running by the shared script.
    let vm_port = free_port();
    let out = Command::new("bash")
        .arg(root.join("../shared/bench/vm_storage_bench.sh"))
        .arg(&csv)
        .arg("promql")
        .env("KEEP_RUNNING", "1")
        .env("WORK", work.path())
        .env("PORT", vm_port.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("vm_storage_bench.sh");
    assert!(out.status.success(), "vm_storage_bench.sh failed: {}", String::from_utf8_lossy(&out.stdout));
    if let Ok(pid) = std::fs::read_to_string(work.path().join("vm-promql.pid")) {
        killer.1.push(pid.trim().parse().unwrap());
    }
    let vm = format!("127.0.0.1:{vm_port}");
    rt.block_on(async {
        let st = post(&c, &format!("http://{vm}/api/v1/import/prometheus"), std::fs::read(&bprom).unwrap()).await;
        assert!(st == 204 || st == 200, "VM import: {st}");
        fetch(&c, &format!("http://{vm}/internal/force_flush")).await;
    });
    // Prometheus over blocks of the same data.
    let pdir = work.path().join("prom");
    for f in [&om, &bom] {
        let o = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(f)
            .arg(&pdir)
            .output()
            .unwrap();
        assert!(o.status.success(), "promtool: {}", String::from_utf8_lossy(&o.stderr));
    }
    let cfgf = work.path().join("prometheus.yml");
    std::fs::write(&cfgf, "global:\n  scrape_interval: 1h\nscrape_configs: []\n").unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    killer.0.push(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfgf.display()))
            .arg(format!("--storage.tsdb.path={}", pdir.display()))
            .arg(format!("--web.listen-address={prom}"))
            .arg("--storage.tsdb.retention.time=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !ready(&c, &format!("http://{prom}/-/ready")).await {
            assert!(Instant::now() < deadline, "Prometheus not ready");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // Interleaved rounds.
    let servers =
        [("modelwatch", mw.clone(), false), ("VictoriaMetrics", vm.clone(), true), ("Prometheus", prom.clone(), false)];
    let mut med: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); servers.len()]; QUERIES.len()];
    let mut pts = vec![vec![0usize; servers.len()]; QUERIES.len()];
    for round in 0..rounds {
        for (si, (name, addr, vm)) in servers.iter().enumerate() {
            for (qi, q) in QUERIES.iter().enumerate() {
                let (m, p) = rt.block_on(time_query(&c, addr, q, runs, *vm));
                eprintln!("round {round} {name} ({}) median {m:.1} ms, {p} points", q.tag);
                med[qi][si].push(m);
                pts[qi][si] = p;
            }
        }
    }
    println!(
        "\n| query | modelwatch | VictoriaMetrics 1.79 | Prometheus 2.42 | modelwatch / VM | modelwatch / Prometheus |"
    );
    println!("|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for (qi, q) in QUERIES.iter().enumerate() {
        let m: Vec<f64> = (0..3)
            .map(|s| {
                let mut v = med[qi][s].clone();
                v.sort_by(|a, b| a.total_cmp(b));
                let h = v.len() / 2;
                // An even count: the mean of the middle two.
                if v.len() % 2 == 1 {
                    v[h]
                } else {
                    (v[h - 1] + v[h]) / 2.0
                }
            })
            .collect();
        let fmt = |s: usize| med[qi][s].iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" / ");
        println!(
            "| ({}) `{}` | {} ms | {} ms | {} ms | {:.2} | {:.2} |",
            q.tag,
            q.params[0].1,
            fmt(0),
            fmt(1),
            fmt(2),
            m[0] / m[1],
            m[0] / m[2]
        );
        json.push(serde_json::json!({"query": q.params[0].1, "modelwatch_ms": med[qi][0], "victoriametrics_ms": med[qi][1], "prometheus_ms": med[qi][2], "points": pts[qi]}));
    }
    println!(
        "(medians of {runs} runs per round, {rounds} rounds interleaved; the ratios use the median of the rounds)"
    );
    std::fs::write(root.join("target/bench-promql.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
    drop(killer);
}
