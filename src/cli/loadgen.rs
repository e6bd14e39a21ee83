//! `modelwatch loadgen`: an end-to-end load generator. N simulated services push metrics,
//! inference events and logs over real gRPC streams to a running daemon, for a fixed count
//! or a duration, and it reports what a service would see (acked items per second, the
//! latency from sending a batch to its ack: p50, p99, p99.9) and what it cost the daemon (CPU,
//! peak RSS, bytes added to its data folder per item), read from the daemon's `/metrics`.
//!
//! Batches are built before the clock starts; while sending, only their timestamps and
//! sequence numbers are set. Each stream keeps at most `window` batches in flight, as the
//! client libraries do.
use crate::cli::conn;
use crate::pb;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Metrics,
    Events,
    Logs,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Metrics => "metrics",
            Kind::Events => "events",
            Kind::Logs => "logs",
        }
    }
}

/// Parses `metrics`, `events`, `logs` or `all` (comma-separated).
pub fn kinds(s: &str) -> Result<Vec<Kind>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        match part {
            "metrics" => out.push(Kind::Metrics),
            "events" => out.push(Kind::Events),
            "logs" => out.push(Kind::Logs),
            "all" => out.extend([Kind::Metrics, Kind::Events, Kind::Logs]),
            other => return Err(format!("--kind: {other:?} is not metrics, events, logs or all")),
        }
    }
    out.dedup();
    Ok(out)
}

pub struct Args {
    pub addr: String,
    /// The daemon's HTTP listener, for `/metrics` (CPU, RSS, data folder size).
    pub http: String,
    pub services: usize,
    pub kinds: Vec<Kind>,
    /// Items per service and kind (samples, events, records); with `duration`, the most.
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// Items per batch.
    pub batch: usize,
    /// Series per service (metrics).
    pub series: usize,
    /// Batches in flight per stream.
    pub window: usize,
    /// Items per second across all streams (`None`: as fast as the acks allow).
    pub rate: Option<f64>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One stream's template batch, built before the clock starts.
fn template(kind: Kind, service: &str, client: &str, run: i64, a: &Args) -> Template {
    match kind {
        Kind::Metrics => {
            let per = (a.batch / a.series.max(1)).max(1);
            let series = (0..a.series)
                .map(|i| pb::Series {
                    name: "loadgen_value".into(),
                    // Series of their own per run, so that a second run's timestamps never
                    // fall behind the first's.
                    labels: vec![
                        pb::Label { name: "i".into(), value: i.to_string() },
                        pb::Label { name: "run".into(), value: run.to_string() },
                    ],
                    kind: pb::MetricKind::Gauge as i32,
                    timestamps_ms: vec![0; per],
                    values: (0..per).map(|k| ((i * 7 + k) % 100) as f64).collect(),
                })
                .collect();
            Template::Metrics(pb::MetricBatch {
                client_id: client.into(),
                seq: 0,
                service: service.into(),
                series,
                backfill: true,
            })
        }
        Kind::Events => Template::Events(pb::EventBatch {
            client_id: client.into(),
            seq: 0,
            service: service.into(),
            events: (0..a.batch)
                .map(|k| pb::InferenceEvent {
                    model: format!("model-{}", k % 4),
                    endpoint: "/v1/chat".into(),
                    status: if k % 50 == 0 { pb::Status::Error } else { pb::Status::Ok } as i32,
                    error_type: if k % 50 == 0 { "timeout".into() } else { String::new() },
                    latency_us: 5_000 + (k as u64 * 7919) % 200_000,
                    prompt_tokens: 100 + (k % 300) as u32,
                    completion_tokens: 20 + (k % 200) as u32,
                    ..Default::default()
                })
                .collect(),
            backfill: true,
        }),
        Kind::Logs => Template::Logs(pb::LogBatch {
            client_id: client.into(),
            seq: 0,
            service: service.into(),
            records: (0..a.batch)
                .map(|k| pb::LogRecord {
                    level: if k % 20 == 0 { pb::Level::Error } else { pb::Level::Info } as i32,
                    message: format!("request {k} served by worker {}", k % 8),
                    logger: "loadgen".into(),
                    ..Default::default()
                })
                .collect(),
            backfill: true,
        }),
    }
}

#[derive(Clone)]
enum Template {
    Metrics(pb::MetricBatch),
    Events(pb::EventBatch),
    Logs(pb::LogBatch),
}

impl Template {
    fn items(&self) -> u64 {
        match self {
            Template::Metrics(b) => b.series.iter().map(|s| s.timestamps_ms.len() as u64).sum(),
            Template::Events(b) => b.events.len() as u64,
            Template::Logs(b) => b.records.len() as u64,
        }
    }

    /// Sets the sequence number and timestamps (metrics: from `t`, one ms apart, each batch
    /// after the last, so that every series stays in time order; others: `t`).
    fn stamp(&mut self, seq: u64, t: i64) {
        match self {
            Template::Metrics(b) => {
                b.seq = seq;
                for s in &mut b.series {
                    let n = s.timestamps_ms.len() as i64;
                    for (k, ts) in s.timestamps_ms.iter_mut().enumerate() {
                        *ts = t + seq as i64 * n + k as i64;
                    }
                }
            }
            Template::Events(b) => {
                b.seq = seq;
                for e in &mut b.events {
                    e.timestamp_ms = t;
                }
            }
            Template::Logs(b) => {
                b.seq = seq;
                for r in &mut b.records {
                    r.timestamp_ms = t;
                }
            }
        }
    }
}

struct StreamResult {
    kind: Kind,
    acked: u64,
    rejected: u64,
    /// The first rejection's field and reason.
    first_rejection: Option<String>,
    /// Send-to-ack latencies, µs.
    latencies: Vec<u64>,
}

/// One service's stream of one kind, until `count` items or `deadline`.
async fn stream(
    addr: String,
    mut t: Template,
    kind: Kind,
    count: u64,
    deadline: Option<Instant>,
    window: usize,
    // Batches per second for this stream.
    pace: Option<f64>,
) -> Result<StreamResult, String> {
    let conn = conn::connect(&addr).await?;
    let mut client = pb::ingest_client::IngestClient::new(conn).max_decoding_message_size(64 << 20);
    let per = t.items();
    let batches = count.div_ceil(per.max(1));
    let (tx, rx) = tokio::sync::mpsc::channel::<Template>(window.max(1));
    let sent: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Default::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(window.max(1)));
    let (s2, p2) = (sent.clone(), permits.clone());
    // Metric timestamps: a base in the past that moves forward one step per batch.
    let base = now_ms() - 86_400_000;
    let feeder = tokio::spawn(async move {
        let start = Instant::now();
        for seq in 1..=batches {
            if let Some(p) = pace {
                // Open loop: batch n leaves at n / pace seconds, whatever the acks do.
                let due = start + Duration::from_secs_f64((seq - 1) as f64 / p);
                tokio::time::sleep_until(due.into()).await;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let Ok(permit) = p2.clone().acquire_owned().await else { break };
            permit.forget();
            let ts = if kind == Kind::Metrics { base } else { now_ms() };
            t.stamp(seq, ts);
            s2.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, Instant::now());
            if tx.send(t.clone()).await.is_err() {
                break;
            }
        }
    });
    let rx = tokio_stream::wrappers::ReceiverStream::new(rx);
    use tokio_stream::StreamExt;
    let status = |e: tonic::Status| format!("{} stream: {:?}: {}", kind.name(), e.code(), e.message());
    let mut acks = match kind {
        Kind::Metrics => client
            .stream_metrics(rx.filter_map(|t| if let Template::Metrics(b) = t { Some(b) } else { None }))
            .await
            .map_err(status)?
            .into_inner(),
        Kind::Events => client
            .stream_events(rx.filter_map(|t| if let Template::Events(b) = t { Some(b) } else { None }))
            .await
            .map_err(status)?
            .into_inner(),
        Kind::Logs => client
            .stream_logs(rx.filter_map(|t| if let Template::Logs(b) = t { Some(b) } else { None }))
            .await
            .map_err(status)?
            .into_inner(),
    };
    let mut out = StreamResult { kind, acked: 0, rejected: 0, first_rejection: None, latencies: Vec::new() };
    while let Some(ack) = acks.message().await.map_err(status)? {
        if let Some(t0) = sent.lock().unwrap_or_else(|p| p.into_inner()).remove(&ack.seq) {
            out.latencies.push(t0.elapsed().as_micros() as u64);
        }
        out.acked += ack.accepted;
        out.rejected += ack.rejected_count;
        if out.first_rejection.is_none() {
            out.first_rejection = ack.rejections.first().map(|r| format!("{}: {}", r.field, r.reason));
        }
        permits.add_permits(1);
    }
    let _ = feeder.await;
    Ok(out)
}

/// The daemon's figures from `/metrics` that loadgen reports: (CPU seconds, RSS bytes, data
/// folder bytes).
async fn daemon_figures(http: &str) -> Option<(f64, f64, f64)> {
    let body = reqwest::get(format!("http://{http}/metrics")).await.ok()?.text().await.ok()?;
    let get = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((
        get("modelwatch_process_cpu_seconds_total")?,
        get("modelwatch_process_resident_memory_bytes")?,
        get("modelwatch_data_dir_bytes")?,
    ))
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

pub async fn run(a: Args) -> Result<String, String> {
    if a.count.is_none() && a.duration.is_none() {
        return Err("give --count N (items per service and kind) or --duration D".into());
    }
    let before = daemon_figures(&a.http).await;
    let count = a.count.unwrap_or(u64::MAX / 4);
    let started = Instant::now();
    let deadline = a.duration.map(|d| started + d);
    // RSS, sampled every 250 ms while the load runs.
    let peak_rss = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (peak, http) = (peak_rss.clone(), a.http.clone());
    let sampler = tokio::spawn(async move {
        loop {
            if let Some((_, rss, _)) = daemon_figures(&http).await {
                peak.fetch_max(rss as u64, std::sync::atomic::Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let run_id = now_ms();
    let mut tasks = Vec::new();
    for s in 0..a.services {
        for &kind in &a.kinds {
            let service = format!("loadgen-{s}");
            let client = format!("loadgen-{run_id}-{s}-{}", kind.name());
            let t = template(kind, &service, &client, run_id, &a);
            let streams = (a.services * a.kinds.len()) as f64;
            let pace = a.rate.map(|r| r / streams / t.items().max(1) as f64);
            tasks.push(tokio::spawn(stream(a.addr.clone(), t, kind, count, deadline, a.window, pace)));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(|e| format!("a stream task failed: {e}"))??);
    }
    let secs = started.elapsed().as_secs_f64();
    sampler.abort();
    let after = daemon_figures(&a.http).await;
    if let Some((_, rss, _)) = after {
        peak_rss.fetch_max(rss as u64, std::sync::atomic::Ordering::Relaxed);
    }
    let mut out = format!(
        "loadgen: {} service(s) × {}, {} items per batch, {:.1} s, {}\n",
        a.services,
        a.kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join("+"),
        a.batch,
        secs,
        a.rate.map_or("as fast as acked".to_string(), |r| format!("paced at {r:.0} items/s"))
    );
    let mut all: Vec<u64> = Vec::new();
    let mut items = 0;
    for kind in &a.kinds {
        let mine = || results.iter().filter(|r| r.kind == *kind);
        let acked: u64 = mine().map(|r| r.acked).sum();
        let rejected: u64 = mine().map(|r| r.rejected).sum();
        items += acked;
        out += &format!("acked {:<8} {acked} ({:.0}/s)\n", kind.name(), acked as f64 / secs);
        if rejected > 0 {
            let why = mine().find_map(|r| r.first_rejection.clone()).unwrap_or_default();
            out += &format!("  rejected {rejected} {} (first: {why})\n", kind.name());
        }
    }
    for r in &mut results {
        all.append(&mut r.latencies);
    }
    all.sort_unstable();
    out += &format!(
        "ack latency per batch: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms ({} batches)\n",
        quantile(&all, 0.5),
        quantile(&all, 0.99),
        quantile(&all, 0.999),
        all.len()
    );
    match (before, after) {
        (Some((cpu0, _, disk0)), Some((cpu1, _, disk1))) => {
            let cpu = cpu1 - cpu0;
            out += &format!(
                "daemon: CPU {cpu:.2} s ({:.2} cores, {:.0} ns per item), peak RSS {:.0} MiB (sampled every 250 ms), data folder {:+.1} MB ({:.2} bytes per item)\n",
                cpu / secs,
                cpu * 1e9 / items.max(1) as f64,
                peak_rss.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1 << 20) as f64,
                (disk1 - disk0) / 1e6,
                (disk1 - disk0) / items.max(1) as f64
            );
        }
        _ => out += &format!("daemon: /metrics at {} did not answer; no CPU, RSS or disk figures\n", a.http),
    }
    Ok(out)
}
