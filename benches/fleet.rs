//! Fleet benchmark: remote-write into a real VictoriaMetrics (Debian's `victoria-metrics`),
//! and OTLP ingest against native ingest, all on one machine in one run.
//!
//!     cargo bench --bench fleet -- [--series N] [--samples M] [--seconds S] [--streams K]
//!                                  [--shards H] [--outage-minutes O]
//!
//! 1. Steady state: the daemon ingests at its maximum rate for S seconds (K streams, rounds of
//!    M samples for each of N series, acked after the fsync) while remote-write sends to
//!    VictoriaMetrics. Reported: the ingest rate, the remote-write rate over the whole run, the
//!    highest `modelwatch_remote_write_lag_seconds` seen (read every 250 ms), and how long
//!    after the last ack the endpoint had everything.
//! 2. Catch-up: VictoriaMetrics is stopped, the daemon takes O minutes of the N series at one
//!    sample per second, VictoriaMetrics starts again; reported: the backlog and how fast it
//!    drains.
//! 3. OTLP against native: the same N × M samples pushed to a fresh daemon as OTLP gauge
//!    exports and as native `Push` calls (K concurrent callers, a request per series group and
//!    window); reported: acked samples per second for each.
mod support;

use modelwatch::pb;
use modelwatch::pb::opentelemetry::proto::collector::metrics::v1 as otm;
use modelwatch::pb::opentelemetry::proto::common::v1::{any_value, AnyValue, KeyValue, Resource};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    series: usize,
    samples: usize,
    seconds: f64,
    streams: usize,
    shards: usize,
    outage_minutes: i64,
}

fn args() -> Args {
    let mut a = Args { series: 10_000, samples: 30, seconds: 20.0, streams: 4, shards: 2, outage_minutes: 10 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--series" => a.series = v().parse().unwrap(),
            "--samples" => a.samples = v().parse().unwrap(),
            "--seconds" => a.seconds = v().parse().unwrap(),
            "--streams" => a.streams = v().parse().unwrap(),
            "--shards" => a.shards = v().parse().unwrap(),
            "--outage-minutes" => a.outage_minutes = v().parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn stop(c: &mut Child) {
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let _ = c.wait();
}

fn start_vm(dir: &Path, port: u16) -> Child {
    let child = Command::new("victoria-metrics")
        .arg(format!("-storageDataPath={}", dir.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-retentionPeriod=100y")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("victoria-metrics (Debian's victoria-metrics package)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "victoria-metrics did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

async fn figure(http: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{http}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Streams ended by RESOURCE_EXHAUSTED (the memory mark) and resent.
static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

const PENDING: &str = "modelwatch_remote_write_pending_samples{endpoint=\"vm\"}";
const LAG: &str = "modelwatch_remote_write_lag_seconds{endpoint=\"vm\"}";
const SENT: &str = "modelwatch_remote_write_samples_total{endpoint=\"vm\",outcome=\"sent\"}";

/// One stream's batches for a round: its share of the series, `m` samples each from `t0`.
fn round(a: &Args, tag: &str, stream: usize, t0: i64, step: i64, m: usize, seq: u64) -> Vec<pb::MetricBatch> {
    let per_batch = 250;
    let mine: Vec<usize> = (0..a.series).filter(|i| i % a.streams == stream).collect();
    mine.chunks(per_batch)
        .enumerate()
        .map(|(k, ids)| pb::MetricBatch {
            client_id: format!("bench-{tag}/{stream}"),
            seq: seq * 1000 + k as u64 + 1,
            service: "bench".into(),
            series: ids
                .iter()
                .map(|&i| {
                    let ts: Vec<i64> = (0..m).map(|j| t0 + j as i64 * step).collect();
                    pb::Series {
                        name: "fleet_load".into(),
                        labels: vec![pb::Label { name: "i".into(), value: i.to_string() }],
                        kind: pb::MetricKind::Gauge as i32,
                        values: ts.iter().map(|t| ((t / step + i as i64) % 1000) as f64 * 0.5).collect(),
                        timestamps_ms: ts,
                    }
                })
                .collect(),
            backfill: true,
        })
        .collect()
}

/// Sends rounds of `m` samples per series on K streams, one second apart, from
/// `start`, until `seconds` pass or `max_rounds` are sent; returns samples acked and seconds.
async fn ingest(a: &Args, tag: &str, grpc: &str, start: i64, m: usize, seconds: f64, max_rounds: usize) -> (u64, f64) {
    let t = Instant::now();
    let mut acked = 0u64;
    for r in 0..max_rounds {
        if t.elapsed().as_secs_f64() >= seconds {
            break;
        }
        let t0 = start + (r * m) as i64 * 1000;
        let mut tasks = Vec::new();
        for s in 0..a.streams {
            let batches = round(a, tag, s, t0, 1000, m, r as u64);
            let url = grpc.to_string();
            tasks.push(tokio::spawn(async move {
                let mut c = pb::ingest_client::IngestClient::connect(url).await.unwrap();
                let (mut n, mut refused) = (0, 0);
                let mut left = batches;
                // As a client should: a RESOURCE_EXHAUSTED (the memory mark) ends the stream;
                // what was acked stays acked, the rest is sent again after the retry delay.
                while !left.is_empty() {
                    let mut resp = c.stream_metrics(tokio_stream::iter(left.clone())).await.unwrap().into_inner();
                    let mut done = 0;
                    loop {
                        match resp.message().await {
                            Ok(Some(ack)) => {
                                n += ack.accepted;
                                done += 1;
                            }
                            Ok(None) => break,
                            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                                refused += 1;
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                break;
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    left.drain(..done);
                }
                (n, refused)
            }));
        }
        for t in tasks {
            let (n, r) = t.await.unwrap();
            acked += n;
            REFUSED.fetch_add(r, std::sync::atomic::Ordering::Relaxed);
        }
    }
    (acked, t.elapsed().as_secs_f64())
}

/// Waits until the endpoint has sent `total` samples and has nothing pending.
async fn drained(http: &str, total: f64) {
    loop {
        let (pending, lag, sent) = (figure(http, PENDING).await, figure(http, LAG).await, figure(http, SENT).await);
        if pending == 0.0 && lag == 0.0 && sent >= total {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Samples VictoriaMetrics holds for `metric`.
async fn vm_count(port: u16, metric: &str) -> f64 {
    let _ = reqwest::get(format!("http://127.0.0.1:{port}/internal/force_flush")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let q = format!("sum(count_over_time({metric}[100d]))");
    let body =
        reqwest::get(format!("http://127.0.0.1:{port}/api/v1/query?query={q}&time={}&nocache=1", now_ms() / 1000 + 1))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(0.0)
}

fn otlp_request(ids: &[usize], t0: i64, m: usize) -> otm::ExportMetricsServiceRequest {
    let kv = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }),
    };
    let points = ids
        .iter()
        .flat_map(|&i| {
            (0..m).map(move |j| {
                let t = t0 + j as i64 * 1000;
                otm::NumberDataPoint {
                    attributes: vec![KeyValue {
                        key: "i".into(),
                        value: Some(AnyValue { value: Some(any_value::Value::StringValue(i.to_string())) }),
                    }],
                    time_unix_nano: t as u64 * 1_000_000,
                    value: Some(otm::number_data_point::Value::AsDouble(((t / 1000 + i as i64) % 1000) as f64 * 0.5)),
                    ..Default::default()
                }
            })
        })
        .collect();
    otm::ExportMetricsServiceRequest {
        resource_metrics: vec![otm::ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bench".into())],
                dropped_attributes_count: 0,
            }),
            scope_metrics: vec![otm::ScopeMetrics {
                scope: None,
                metrics: vec![otm::Metric {
                    name: "otlp_load".into(),
                    data: Some(otm::metric::Data::Gauge(otm::Gauge { data_points: points })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// OTLP or native, the same samples, K callers; acked samples per second.
async fn push_rate(a: &Args, grpc: &str, otlp: bool) -> f64 {
    let t0 = now_ms() - (a.samples as i64) * 1000;
    let ids: Vec<usize> = (0..a.series).collect();
    // Built before the clock starts: requests of 250 series × a window of 8 samples.
    let mut reqs: Vec<Vec<(Option<otm::ExportMetricsServiceRequest>, Option<pb::PushRequest>)>> =
        vec![Vec::new(); a.streams];
    let mut k = 0;
    for w in (0..a.samples).step_by(8) {
        let m = 8.min(a.samples - w);
        for chunk in ids.chunks(250) {
            let start = t0 + w as i64 * 1000;
            let r = if otlp {
                (Some(otlp_request(chunk, start, m)), None)
            } else {
                let b = round(&Args { series: a.series, streams: 1, ..*a }, "push", 0, start, 1000, m, 0);
                let series: Vec<pb::Series> = b
                    .into_iter()
                    .flat_map(|b| b.series)
                    .filter(|s| {
                        let i: usize = s.labels[0].value.parse().unwrap();
                        chunk.contains(&i)
                    })
                    .collect();
                let batch = pb::MetricBatch { service: "bench".into(), series, backfill: true, ..Default::default() };
                (None, Some(pb::PushRequest { metrics: Some(batch), ..Default::default() }))
            };
            reqs[k % a.streams].push(r);
            k += 1;
        }
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    for mine in reqs {
        let url = grpc.to_string();
        tasks.push(tokio::spawn(async move {
            let ch = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
            let mut o =
                otm::metrics_service_client::MetricsServiceClient::new(ch.clone()).max_encoding_message_size(64 << 20);
            let mut n = pb::ingest_client::IngestClient::new(ch);
            let mut samples = 0u64;
            for (ot, nat) in mine {
                if let Some(r) = ot {
                    let pts: usize =
                        r.resource_metrics[0].scope_metrics[0].metrics[0].data.as_ref().map_or(0, |d| match d {
                            otm::metric::Data::Gauge(g) => g.data_points.len(),
                            _ => 0,
                        });
                    let resp = o.export(r).await.unwrap().into_inner();
                    assert!(resp.partial_success.is_none(), "{resp:?}");
                    samples += pts as u64;
                }
                if let Some(r) = nat {
                    let resp = n.push(r).await.unwrap().into_inner();
                    samples += resp.metrics.map_or(0, |a| a.accepted);
                }
            }
            samples
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, (a.series * a.samples) as u64);
    total as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let a = args();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let vm_dir = tmp.path().join("vm");
    let mut vm = start_vm(&vm_dir, port);
    let rw = format!(
        "[{{name=\"vm\", url=\"http://127.0.0.1:{port}/api/v1/write\", shards={}, derived=false, interval=\"100ms\", max_backoff=\"1s\"}}]",
        a.shards
    );
    let env = [("MODELWATCH__FLEET__REMOTE_WRITE", rw.as_str())];
    let (mut daemon, grpc, http) = support::start_daemon_http(&tmp.path().join("mw"), &env);

    // 1. Steady state at the maximum ingest rate.
    let span = (a.samples as i64) * 1000 * 10_000;
    let start = now_ms() - span;
    let (acked, secs) = ingest(&a, "steady", &grpc, start, a.samples, a.seconds, 100_000).await;
    let ingest_end = Instant::now();
    drained(&http, acked as f64).await;
    let after = ingest_end.elapsed().as_secs_f64();
    let held = vm_count(port, "fleet_load").await;
    let rate = acked as f64 / secs;
    println!(
        "steady state: {acked} samples ingested in {secs:.1} s ({rate:.0} samples/s, acked after fsync, {} streams, \
         {} streams refused at the memory mark and resent, daemon peak RSS {:.0} MiB); \
         remote-write {:.0} samples/s over the run ({} shards); everything at VictoriaMetrics {after:.1} s after the last ack; \
         VictoriaMetrics holds {held} samples",
        a.streams,
        REFUSED.load(std::sync::atomic::Ordering::Relaxed),
        support::peak_rss_bytes(daemon.id()) as f64 / (1 << 20) as f64,
        acked as f64 / (secs + after),
        a.shards
    );

    // 2. Outage and catch-up (VictoriaMetrics stopped cleanly, so that it keeps what it took).
    stop(&mut vm);
    let sent_before = figure(&http, SENT).await;
    let minutes = a.outage_minutes;
    let backlog_samples_per_series = (minutes * 60) as usize;
    let t0 = now_ms() - minutes * 60_000;
    let (backlog, _) = ingest(&a, "outage", &grpc, t0, backlog_samples_per_series, f64::INFINITY, 1).await;
    let mut vm = start_vm(&vm_dir, port);
    let back = Instant::now();
    drained(&http, sent_before + backlog as f64).await;
    let took = back.elapsed().as_secs_f64();
    let held = vm_count(port, "fleet_load").await;
    println!(
        "catch-up: {minutes} minutes of {} series at 1 s ({backlog} samples) sent in {took:.1} s after VictoriaMetrics came back: {:.0} samples/s; VictoriaMetrics holds {held} samples in all",
        a.series,
        backlog as f64 / took
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = vm.kill();
    let _ = vm.wait();

    // 3. OTLP against native ingest on the same data, each on a fresh daemon.
    let mut rates = Vec::new();
    for otlp in [false, true] {
        let dir = tmp.path().join(if otlp { "otlp" } else { "native" });
        let (mut d, grpc, _) = support::start_daemon_http(&dir, &[]);
        rates.push(push_rate(&a, &grpc, otlp).await);
        let _ = d.kill();
        let _ = d.wait();
    }
    println!(
        "unary pushes, {} series × {} samples, {} callers: native {:.0} samples/s, OTLP {:.0} samples/s (OTLP / native {:.2})",
        a.series,
        a.samples,
        a.streams,
        rates[0],
        rates[1],
        rates[1] / rates[0]
    );
}
