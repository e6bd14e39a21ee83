//! Test harness: the real `modelwatch` binary on a loopback port 0, and gRPC clients for it.
#![allow(dead_code)]
pub mod hook;

use modelwatch::pb;
use modelwatch::pb::ingest_client::IngestClient;
use modelwatch::pb::query_client::QueryClient;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

pub struct Daemon {
    pub child: Child,
    pub addr: String,
    /// The HTTP listener (Prometheus API), `host:port`.
    pub http_addr: String,
    pub dir: PathBuf,
    stderr: Option<std::thread::JoinHandle<String>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

impl Daemon {
    /// Starts the daemon on `dir` with `MODELWATCH__*` overrides from `env`.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Self::try_start(dir, env).unwrap_or_else(|(status, err)| panic!("daemon did not start ({status:?}): {err}"))
    }

    /// Starts the daemon, or returns its exit status and stderr when it exits instead.
    pub fn try_start(dir: &Path, env: &[(&str, &str)]) -> Result<Daemon, (Option<ExitStatus>, String)> {
        Self::try_start_at(dir, "127.0.0.1:0", env)
    }

    /// Starts the daemon on a given address (to restart it where its clients expect it).
    pub fn start_at(dir: &Path, listen: &str, env: &[(&str, &str)]) -> Daemon {
        Self::try_start_at(dir, listen, env)
            .unwrap_or_else(|(status, err)| panic!("daemon did not start ({status:?}): {err}"))
    }

    fn try_start_at(dir: &Path, listen: &str, env: &[(&str, &str)]) -> Result<Daemon, (Option<ExitStatus>, String)> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelwatch"));
        cmd.args(["serve", "--listen", listen, "--http-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("MODELWATCH_LOG", "warn")
            // Samplers add their own series; tests that count exactly run without them, and
            // the sampling tests turn them on.
            .env("MODELWATCH__SAMPLING__HOST_INTERVAL", "0s")
            .env("MODELWATCH__SAMPLING__SELF_INTERVAL", "0s")
            .env("MODELWATCH__SAMPLING__GPU", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning modelwatch");
        let mut stderr = child.stderr.take().unwrap();
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        match line.trim().strip_prefix("listening on ") {
            Some(addr) => {
                let mut l2 = String::new();
                let _ = out.read_line(&mut l2);
                let http_addr = l2.trim().strip_prefix("http listening on ").unwrap_or_default().to_string();
                // keep draining stdout so the daemon never blocks on it
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut out, &mut std::io::sink());
                });
                Ok(Daemon { child, addr: addr.to_string(), http_addr, dir: dir.to_owned(), stderr: Some(err_thread) })
            }
            None => {
                let status = child.wait().ok();
                Err((status, err_thread.join().unwrap_or_default()))
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::connect(self.url()).await.expect("connect ingest").max_decoding_message_size(64 << 20)
    }

    pub async fn query(&self) -> QueryClient<Channel> {
        QueryClient::connect(self.url()).await.expect("connect query").max_decoding_message_size(64 << 20)
    }

    /// SIGTERM, then wait; returns the exit status and stderr.
    pub fn stop(mut self) -> (ExitStatus, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let err = self.stderr.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
                return (st, err);
            }
            assert!(Instant::now() < deadline, "daemon did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops gracefully and asserts a clean exit.
    pub fn stop_ok(self) {
        let (st, err) = self.stop();
        assert!(st.success(), "daemon exited with {st:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn label(k: &str, v: &str) -> pb::Label {
    pb::Label { name: k.into(), value: v.into() }
}

pub fn series(name: &str, labels: &[(&str, &str)], ts: Vec<i64>, values: Vec<f64>) -> pb::Series {
    pb::Series {
        name: name.into(),
        labels: labels.iter().map(|(k, v)| label(k, v)).collect(),
        kind: pb::MetricKind::Gauge as i32,
        timestamps_ms: ts,
        values,
    }
}

pub fn range_last(d: &str) -> Option<pb::TimeRange> {
    Some(pb::TimeRange { last: d.into(), ..Default::default() })
}

pub async fn push_metrics(c: &mut IngestClient<Channel>, service: &str, series: Vec<pb::Series>) -> pb::Ack {
    let r = c
        .push(pb::PushRequest {
            metrics: Some(pb::MetricBatch { service: service.into(), series, ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("push metrics")
        .into_inner();
    r.metrics.unwrap()
}

/// Sends `batches` on one stream and returns their acks in order.
pub async fn stream_metrics(c: &mut IngestClient<Channel>, batches: Vec<pb::MetricBatch>) -> Vec<pb::Ack> {
    let n = batches.len();
    let resp = c.stream_metrics(tokio_stream::iter(batches)).await.expect("open stream").into_inner();
    let acks: Vec<pb::Ack> = collect_acks(resp, n).await;
    acks
}

pub async fn stream_events(c: &mut IngestClient<Channel>, batches: Vec<pb::EventBatch>) -> Vec<pb::Ack> {
    let n = batches.len();
    let resp = c.stream_events(tokio_stream::iter(batches)).await.expect("open stream").into_inner();
    collect_acks(resp, n).await
}

pub async fn stream_logs(c: &mut IngestClient<Channel>, batches: Vec<pb::LogBatch>) -> Vec<pb::Ack> {
    let n = batches.len();
    let resp = c.stream_logs(tokio_stream::iter(batches)).await.expect("open stream").into_inner();
    collect_acks(resp, n).await
}

async fn collect_acks(mut resp: tonic::Streaming<pb::Ack>, n: usize) -> Vec<pb::Ack> {
    let mut acks = Vec::with_capacity(n);
    while let Some(a) = resp.message().await.expect("ack stream") {
        acks.push(a);
    }
    assert_eq!(acks.len(), n, "one ack per batch");
    acks
}

/// Inference events stored for `model` over the last `range` (from the aggregates).
pub async fn count_events(d: &Daemon, model: &str, range: &str) -> u64 {
    let mut q = d.query().await;
    let r = q
        .inference_stats(pb::InferenceStatsRequest {
            model: model.into(),
            range: range_last(range),
            ..Default::default()
        })
        .await
        .expect("inference stats")
        .into_inner();
    r.groups.iter().map(|g| g.total.as_ref().map_or(0, |t| t.count)).sum()
}

/// Samples stored for `selector` over the last `range` (a count over one window).
pub async fn count_samples_in(d: &Daemon, selector: &str, range: &str) -> u64 {
    let mut q = d.query().await;
    let r = q
        .query_range(pb::QueryRangeRequest {
            selector: selector.into(),
            range: range_last(range),
            step: "3h".into(),
            aggregation: pb::Aggregation::Count as i32,
            ..Default::default()
        })
        .await
        .expect("query range")
        .into_inner();
    r.series.iter().flat_map(|s| s.points.iter()).map(|p| p.value as u64).sum()
}

/// One HTTP/1.1 exchange (`Connection: close`, an optional form body): the status and the JSON
/// object in the body (`Null` when there is none).
pub fn http(addr: &str, method: &str, path: &str, form: Option<&str>) -> (u16, serde_json::Value) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    let body = form.unwrap_or("");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: Grafana/11.0.0\r\n");
    if form.is_some() {
        req.push_str(&format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    // Chunked or not: the JSON object inside.
    let a = rest.find('{').unwrap_or(0);
    let b = rest.rfind('}').map_or(rest.len(), |e| e + 1);
    (status, serde_json::from_str(&rest[a..b]).unwrap_or(serde_json::Value::Null))
}

/// Percent-encodes a query parameter (as the daemon's pages do).
#[allow(unused_imports)]
pub use modelwatch::report::status::enc;

/// Waits until every rule was evaluated at `t` (the daemon follows the clock file).
pub async fn evaluated_at(d: &Daemon, t: i64) -> modelwatch::pb::ListRulesResponse {
    let mut c = modelwatch::pb::alerts_client::AlertsClient::connect(d.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c.list_rules(modelwatch::pb::ListRulesRequest {}).await.unwrap().into_inner();
        let at = |ri: &modelwatch::pb::RuleInfo| {
            ri.last_evaluation.as_ref().map(|x| x.seconds * 1000 + i64::from(x.nanos) / 1_000_000)
        };
        if !r.rules.is_empty() && r.rules.iter().all(|ri| at(ri) == Some(t)) {
            return r;
        }
        assert!(Instant::now() < deadline, "rules not evaluated at {t}: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The daemon run in this process (`app::run_with`), for tests that script the hardware edge
/// with a [`FakeGpu`]; real gRPC and HTTP listeners on loopback port 0 as always.
pub struct InProcess {
    pub addr: String,
    pub http_addr: String,
    pub token: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), modelwatch::app::AppError>>,
}

impl InProcess {
    /// Starts it on `dir` with host and self sampling off unless `tune` turns them on.
    pub async fn start(
        dir: &Path,
        gpu: modelwatch::sample::gpu::FakeGpu,
        tune: impl FnOnce(&mut modelwatch::config::Config),
    ) -> InProcess {
        let mut cfg = modelwatch::config::Config::default();
        cfg.server.listen = "127.0.0.1:0".parse().unwrap();
        cfg.server.http_listen = "127.0.0.1:0".parse().unwrap();
        cfg.storage.data_dir = dir.to_owned();
        cfg.sampling.host_interval = Duration::ZERO;
        cfg.sampling.self_interval = Duration::ZERO;
        tune(&mut cfg);
        let token = tokio_util::sync::CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sources = modelwatch::app::Sources { gpu: Some(Box::new(gpu)), ..Default::default() };
        let t = token.clone();
        let task = tokio::spawn(async move {
            modelwatch::app::run_with(cfg, sources, t, move |a| {
                let _ = tx.send(a);
            })
            .await
        });
        let a = rx.await.expect("daemon listening");
        InProcess { addr: a.grpc.to_string(), http_addr: a.http.to_string(), token, task }
    }

    pub async fn stop(self) {
        self.token.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Whether a program is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the tools a check needs are here: in CI (`CI=true`) a missing one fails the test,
/// elsewhere the check says clearly that it is skipped.
pub fn tools_for(check: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{check}: {missing:?} missing (.ci/run installs them)");
    }
    eprintln!("SKIPPED {check}: {missing:?} not installed");
    false
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The body of a GET (HTTP/1.1, `Connection: close`).
pub fn get_body(addr: &str, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// A scripted GPU reading: `util`% busy, `mem_gib` GiB of 80 used, hotter and hungrier with load.
pub fn fake_reading(util: u32, mem_gib: u64) -> modelwatch::sample::gpu::GpuReading {
    use modelwatch::sample::gpu::GpuReading;
    GpuReading {
        utilization_percent: Some(util),
        memory_utilization_percent: Some(util / 2),
        memory_used_bytes: Some(mem_gib << 30),
        memory_total_bytes: Some(80 << 30),
        temperature_celsius: Some(40 + util),
        power_milliwatts: Some(100_000 + util * 1000),
        power_limit_milliwatts: Some(700_000),
        sm_clock_mhz: Some(1980),
        memory_clock_mhz: Some(2619),
        fan_percent: None,
        pcie_tx_kib_per_s: Some(1000),
        pcie_rx_kib_per_s: Some(2000),
        throttle_reasons: Some(0x1),
        ecc_corrected_total: Some(0),
        ecc_uncorrected_total: Some(0),
        retired_pages_single_bit: Some(0),
        retired_pages_double_bit: Some(0),
    }
}
