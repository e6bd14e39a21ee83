//! `modelwatch loadgen`: an end-to-end load generator. N simulated services push metrics,
//! inference events and logs over real gRPC streams to a running daemon, for a fixed count
//! or a duration, and it reports what a service would see (acked items per second, the
//! latency from sending a batch to its ack: p50, p99, p99.9) and what it cost the daemon (CPU,
//! peak RSS, bytes added to its data folder per item), read from the daemon's `/metrics`.
//!
//! Batches are built before the clock starts; while sending, only their timestamps, sequence
//! numbers and (with `--request-ids`) request ids are set, and each is encoded once and sent
//! as bytes. Each stream keeps at most `window` batches in flight, as the client libraries do.
//!
//! For long runs: `--live` stamps metrics with the clock (not a day in the past, as backfill)
//! so that retention sees them age; `--report-every` prints the rate, RSS and data folder size
//! as the run goes and sums up how the folder moved; `--lookups N` asks `GetRequest` for N
//! request ids afterwards (half of them sent, half never sent) and reports the latencies.
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
    /// Metrics stamped with the clock and no batch marked backfill.
    pub live: bool,
    /// Print progress (rate, RSS, data folder) this often.
    pub report_every: Option<Duration>,
    /// A random 128-bit request id (32 hex digits) on every event.
    pub request_ids: bool,
    /// `GetRequest` look-ups after the load (needs `request_ids`).
    pub lookups: usize,
}

/// splitmix64's finalizer: request ids are a pure function of (run, stream, seq, index), so
/// the look-up phase can name ids that were sent without keeping them.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes the request id of event `k` of batch `seq` of stream `stream` into `out` (32 hex
/// digits). `tag` 0 names ids that are sent; any other tag, ids that never are.
fn request_id(out: &mut String, run: i64, stream: u64, seq: u64, k: u64, tag: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hi = mix(mix(mix(run as u64 ^ tag) ^ stream) ^ seq) ^ k;
    let hi = mix(hi);
    let lo = mix(hi ^ 0x5851_f42d_4c95_7f2d);
    out.clear();
    for w in [hi, lo] {
        for i in (0..16).rev() {
            out.push(HEX[((w >> (i * 4)) & 15) as usize] as char);
        }
    }
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
                backfill: !a.live,
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
                    request_id: if a.request_ids { String::with_capacity(32) } else { String::new() },
                    ..Default::default()
                })
                .collect(),
            backfill: !a.live,
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
            backfill: !a.live,
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
    /// The batch, protobuf-encoded (sent as it is: no clone of the template per batch).
    fn encode(&self) -> prost::bytes::Bytes {
        use prost::Message;
        match self {
            Template::Metrics(b) => b.encode_to_vec(),
            Template::Events(b) => b.encode_to_vec(),
            Template::Logs(b) => b.encode_to_vec(),
        }
        .into()
    }

    fn items(&self) -> u64 {
        match self {
            Template::Metrics(b) => b.series.iter().map(|s| s.timestamps_ms.len() as u64).sum(),
            Template::Events(b) => b.events.len() as u64,
            Template::Logs(b) => b.records.len() as u64,
        }
    }

    /// Metric samples per series in one batch.
    fn per_series(&self) -> i64 {
        match self {
            Template::Metrics(b) => b.series.first().map_or(1, |s| s.timestamps_ms.len() as i64),
            _ => 1,
        }
    }

    /// Sets the sequence number and timestamps (metrics: from `t`, one ms apart; the caller
    /// puts each batch after the last, so that every series stays in time order; others: `t`),
    /// and with `ids` = (run, stream), the events' request ids.
    fn stamp(&mut self, seq: u64, t: i64, ids: Option<(i64, u64)>) {
        match self {
            Template::Metrics(b) => {
                b.seq = seq;
                for s in &mut b.series {
                    for (k, ts) in s.timestamps_ms.iter_mut().enumerate() {
                        *ts = t + k as i64;
                    }
                }
            }
            Template::Events(b) => {
                b.seq = seq;
                for (k, e) in b.events.iter_mut().enumerate() {
                    e.timestamp_ms = t;
                    if let Some((run, stream)) = ids {
                        request_id(&mut e.request_id, run, stream, seq, k as u64, 0);
                    }
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
    /// The highest sequence number acked (batches 1..=it were all sent).
    last_seq: u64,
    /// Which stream (request ids are a function of it).
    stream_no: u64,
}

/// What every stream task shares: its identity, the pace and the progress counter.
struct StreamCtx {
    addr: String,
    kind: Kind,
    count: u64,
    deadline: Option<Instant>,
    window: usize,
    /// Batches per second for this stream.
    pace: Option<f64>,
    live: bool,
    /// (run, stream number) when events carry request ids.
    ids: Option<(i64, u64)>,
    stream_no: u64,
    /// Items acked so far over all streams (for `--report-every`).
    acked: Arc<std::sync::atomic::AtomicU64>,
}

/// One service's stream of one kind, until `count` items or `deadline`.
async fn stream(mut t: Template, c: StreamCtx) -> Result<StreamResult, String> {
    let StreamCtx { addr, kind, count, deadline, window, pace, live, ids, stream_no, acked } = c;
    let conn = conn::connect(&addr).await?;
    let per = t.items();
    let batches = count.div_ceil(per.max(1));
    let (tx, rx) = tokio::sync::mpsc::channel::<prost::bytes::Bytes>(window.max(1));
    let sent: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Default::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(window.max(1)));
    let (s2, p2) = (sent.clone(), permits.clone());
    // Metric timestamps: a base in the past that moves forward one step per batch, or with
    // `live`, the clock (each batch still after the last).
    let base = now_ms() - 86_400_000;
    let per_series = t.per_series();
    let feeder = tokio::spawn(async move {
        let start = Instant::now();
        let mut next = 0i64;
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
            let ts = match kind {
                Kind::Metrics if live => now_ms().max(next),
                Kind::Metrics => base + seq as i64 * per_series,
                _ => now_ms(),
            };
            next = ts + per_series;
            t.stamp(seq, ts, ids);
            s2.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, Instant::now());
            if tx.send(t.encode()).await.is_err() {
                break;
            }
        }
    });
    let rx = tokio_stream::wrappers::ReceiverStream::new(rx);
    let status = |e: tonic::Status| format!("{} stream: {:?}: {}", kind.name(), e.code(), e.message());
    let path = match kind {
        Kind::Metrics => "/modelwatch.v1.Ingest/StreamMetrics",
        Kind::Events => "/modelwatch.v1.Ingest/StreamEvents",
        Kind::Logs => "/modelwatch.v1.Ingest/StreamLogs",
    };
    let mut acks = conn::raw_stream(conn, path, rx).await.map_err(status)?;
    let mut out = StreamResult {
        kind,
        acked: 0,
        rejected: 0,
        first_rejection: None,
        latencies: Vec::new(),
        last_seq: 0,
        stream_no,
    };
    while let Some(ack) = acks.message().await.map_err(status)? {
        out.last_seq = out.last_seq.max(ack.seq);
        acked.fetch_add(ack.accepted, std::sync::atomic::Ordering::Relaxed);
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
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for s in 0..a.services {
        for &kind in &a.kinds {
            let service = format!("loadgen-{s}");
            let client = format!("loadgen-{run_id}-{s}-{}", kind.name());
            let t = template(kind, &service, &client, run_id, &a);
            let streams = (a.services * a.kinds.len()) as f64;
            let stream_no = tasks.len() as u64;
            let ctx = StreamCtx {
                addr: a.addr.clone(),
                kind,
                count,
                deadline,
                window: a.window,
                pace: a.rate.map(|r| r / streams / t.items().max(1) as f64),
                live: a.live,
                ids: (a.request_ids && kind == Kind::Events).then_some((run_id, stream_no)),
                stream_no,
                acked: acked.clone(),
            };
            tasks.push(tokio::spawn(stream(t, ctx)));
        }
    }
    let folder: Arc<std::sync::Mutex<Vec<(f64, f64)>>> = Default::default();
    let reporter = a
        .report_every
        .map(|every| tokio::spawn(progress(a.http.clone(), every, acked.clone(), started, folder.clone())));
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(|e| format!("a stream task failed: {e}"))??);
    }
    let secs = started.elapsed().as_secs_f64();
    sampler.abort();
    if let Some(r) = reporter {
        r.abort();
    }
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
    out += &folder_summary(&folder.lock().unwrap_or_else(|p| p.into_inner()));
    if a.lookups > 0 {
        out += &lookups(&a.addr, run_id, a.lookups, a.batch as u64, &results).await?;
    }
    Ok(out)
}

/// Every `every`: seconds since the start, items acked per second over the interval, the
/// daemon's RSS and data folder, on stderr; the folder sizes also go to `folder`.
async fn progress(
    http: String,
    every: Duration,
    acked: Arc<std::sync::atomic::AtomicU64>,
    started: Instant,
    folder: Arc<std::sync::Mutex<Vec<(f64, f64)>>>,
) {
    let mut last = (0.0f64, 0u64);
    loop {
        tokio::time::sleep(every).await;
        let t = started.elapsed().as_secs_f64();
        let n = acked.load(std::sync::atomic::Ordering::Relaxed);
        let rate = (n - last.1) as f64 / (t - last.0).max(1e-9);
        last = (t, n);
        match daemon_figures(&http).await {
            Some((_, rss, disk)) => {
                folder.lock().unwrap_or_else(|p| p.into_inner()).push((t, disk));
                eprintln!(
                    "loadgen: {t:>7.0} s  {rate:>10.0} items/s acked  RSS {:>6.0} MiB  data folder {:>9.1} MB",
                    rss / (1 << 20) as f64,
                    disk / 1e6
                );
            }
            None => eprintln!("loadgen: {t:>7.0} s  {rate:>10.0} items/s acked  (/metrics did not answer)"),
        }
    }
}

/// How the data folder moved over a run: its first, largest and last size, and the range
/// over the second half (where a folder under retention should stay flat).
fn folder_summary(samples: &[(f64, f64)]) -> String {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else { return String::new() };
    let max = samples.iter().map(|s| s.1).fold(f64::MIN, f64::max);
    let half = last.0 / 2.0;
    let second: Vec<f64> = samples.iter().filter(|s| s.0 >= half).map(|s| s.1).collect();
    let lo = second.iter().copied().fold(f64::MAX, f64::min);
    let hi = second.iter().copied().fold(f64::MIN, f64::max);
    format!(
        "data folder over the run ({} samples): {:.1} MB at {:.0} s, largest {:.1} MB, last {:.1} MB; second half {:.1}–{:.1} MB\n",
        samples.len(),
        first.1 / 1e6,
        first.0,
        max / 1e6,
        last.1 / 1e6,
        lo / 1e6,
        hi / 1e6
    )
}

/// `GetRequest` for `n` request ids, one at a time over one connection: alternately one that
/// an events stream sent (a random batch and event) and one that was never sent. Every sent
/// id must come back; reports the latencies of each half.
async fn lookups(addr: &str, run: i64, n: usize, batch: u64, results: &[StreamResult]) -> Result<String, String> {
    let streams: Vec<&StreamResult> = results.iter().filter(|r| r.kind == Kind::Events && r.last_seq > 0).collect();
    if streams.is_empty() {
        return Err("--lookups needs --kind events and --request-ids, and some acked events".into());
    }
    let conn = conn::connect(addr).await?;
    let mut q = pb::query_client::QueryClient::new(conn).max_decoding_message_size(64 << 20);
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    let mut id = String::with_capacity(32);
    let mut state = mix(run as u64 ^ 0x1f);
    let mut next = |m: u64| {
        state = mix(state);
        state % m.max(1)
    };
    for i in 0..n {
        let s = streams[next(streams.len() as u64) as usize];
        let (seq, k) = (1 + next(s.last_seq), next(batch));
        let sent = i % 2 == 0;
        request_id(&mut id, run, s.stream_no, seq, k, if sent { 0 } else { 1 });
        let t = Instant::now();
        let r = q
            .get_request(pb::GetRequestRequest { request_id: id.clone() })
            .await
            .map_err(|e| format!("GetRequest {id}: {:?}: {}", e.code(), e.message()))?
            .into_inner();
        let us = t.elapsed().as_micros() as u64;
        let hits = r.events.iter().filter(|e| e.request_id == id).count();
        match (sent, hits) {
            (true, 1) => found.push(us),
            (false, 0) => missing.push(us),
            _ => return Err(format!("GetRequest {id}: {hits} events with that id, expected {}", u8::from(sent))),
        }
    }
    found.sort_unstable();
    missing.sort_unstable();
    let line = |what: &str, v: &[u64]| {
        format!(
            "GetRequest, {what}: {} look-ups, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n",
            v.len(),
            quantile(v, 0.5),
            quantile(v, 0.99),
            v.last().copied().unwrap_or(0) as f64 / 1000.0
        )
    };
    Ok(line("ids sent (each found once)", &found) + &line("ids never sent (none found)", &missing))
}
