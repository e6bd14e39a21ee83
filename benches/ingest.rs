//! Ingest benchmark: replays the CSV of `../shared/bench/gen_dataset.py` through the real
//! gRPC ingest of a real (release) daemon, then stops it cleanly and measures its data folder.
//!
//!     cargo bench --bench ingest -- [--csv FILE] [--streams K] [--batch N] [--window W]
//!                                    [--repeat R] [--seconds S] [--queries] [--kill]
//!
//! `--repeat R` sends the data set R times over (each copy shifted back by its span, so series
//! stay in time order): sustained ingest at full rate for as long as one likes; `--seconds S`
//! stops sending after S seconds (with R as the most copies). `--queries`
//! runs a loop of heavy queries (a regex selection over every series, a quantile over all of
//! them, inference stats, a log search) against the daemon during the ingest, to compare the
//! acked rate with and without. `--kill` ends with SIGKILL instead of SIGTERM and times the
//! restart (open, WAL replay, listening) on the folder left behind.
//!
//! Request layout mirrors `../shared/bench/prom_remote_write.py`, so the figures compare with
//! Prometheus and VictoriaMetrics on the same data: series split round-robin into 8 groups; a
//! request is one group × a window of consecutive samples per series (~`--batch` samples);
//! stream j sends the windows of groups g with g % K == j in time order. As the peers' client
//! does, every request is built and protobuf-encoded before the clock starts (while the encoded
//! copies fit in 2 GiB; past that, long `--repeat` runs build them as they go) and sent as
//! bytes; every request is acked only once it is fsynced (unlike the peers, whose acks precede
//! any fsync). Timestamps are shifted to end now and sent as backfill.
mod support;

use modelwatch::cli::conn::RawCodec;

use modelwatch::pb;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use support::SeriesData;

const GROUPS: usize = 8;

struct Args {
    csv: Option<PathBuf>,
    /// Keep the data folder here (for inspection) instead of a temporary one.
    keep: Option<PathBuf>,
    streams: usize,
    batch: usize,
    window: usize,
    repeat: usize,
    seconds: Option<f64>,
    queries: bool,
    kill: bool,
}

fn args() -> Args {
    let mut a = Args {
        csv: None,
        keep: None,
        streams: 4,
        batch: 10_000,
        window: 8,
        repeat: 1,
        seconds: None,
        queries: false,
        kill: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--csv" => a.csv = it.next().map(PathBuf::from),
            "--keep" => a.keep = it.next().map(PathBuf::from),
            "--streams" => a.streams = it.next().and_then(|v| v.parse().ok()).expect("--streams N"),
            "--batch" => a.batch = it.next().and_then(|v| v.parse().ok()).expect("--batch N"),
            "--window" => a.window = it.next().and_then(|v| v.parse().ok()).expect("--window N"),
            "--repeat" => a.repeat = it.next().and_then(|v| v.parse().ok()).expect("--repeat R"),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()),
            "--queries" => a.queries = true,
            "--kill" => a.kill = true,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn main() {
    let a = args();
    let csv = support::dataset(a.csv.clone());
    let t = Instant::now();
    let mut series = support::load(&csv);
    let total: usize = series.iter().map(|s| s.2.len()).sum();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64 - 1000;
    let last = series.iter().filter_map(|s| s.2.last().copied()).max().unwrap();
    for s in series.iter_mut() {
        for t in s.2.iter_mut() {
            *t += now - last;
        }
    }
    eprintln!("loaded {} series, {total} samples in {:.1}s", series.len(), t.elapsed().as_secs_f64());

    // Request layout: group g holds series g, g+8, ...; window w holds samples [w*W, (w+1)*W)
    // of each of its series. Each stream builds its requests as it goes (copy r of the data is
    // shifted back by (R-1-r) spans), so memory stays that of one copy.
    let per_group = series.len().div_ceil(GROUPS);
    let win = (a.batch / per_group).max(1);
    let nsamp = series.iter().map(|s| s.2.len()).max().unwrap();
    let span = series.iter().filter_map(|s| Some(s.2.last()? - s.2.first()?)).max().unwrap() + 10_000;
    let series = std::sync::Arc::new(series);
    let build = move |series: &[SeriesData], g: usize, w: usize, shift: i64| -> Option<pb::MetricBatch> {
        let mut b = pb::MetricBatch { service: "bench".into(), backfill: true, ..Default::default() };
        for s in series.iter().skip(g).step_by(GROUPS) {
            let (lo, hi) = (w * win, ((w + 1) * win).min(s.2.len()));
            if lo < hi {
                b.series.push(pb::Series {
                    name: s.0.clone(),
                    labels: s.1.clone(),
                    kind: if s.0.ends_with("_total") { 2 } else { 1 },
                    timestamps_ms: s.2[lo..hi].iter().map(|t| t - shift).collect(),
                    values: s.3[lo..hi].to_vec(),
                });
            }
        }
        (!b.series.is_empty()).then_some(b)
    };
    let windows = nsamp.div_ceil(win);
    let requests: usize =
        (0..windows).map(|w| (0..GROUPS).filter(|&g| build(&series[..], g, w, 0).is_some()).count()).sum::<usize>()
            * a.repeat;
    let total = total * a.repeat;
    let backfill = format!("{}s", (span * a.repeat as i64) / 1000 + 86_400);

    let tmp = tempfile::tempdir().unwrap();
    let dir = match &a.keep {
        Some(k) => {
            let _ = std::fs::remove_dir_all(k);
            k.clone()
        }
        None => tmp.path().to_owned(),
    };
    // only the replayed data set in the folder that is measured
    let env = [("MODELWATCH__LIMITS__BACKFILL_MAX_AGE", backfill.as_str())];
    let (mut child, addr) = support::start_daemon(&dir, &env);
    let pid = child.id();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Each stream's requests, encoded, in sending order (None: built while sending).
    let encoded_total: usize = (0..windows)
        .flat_map(|w| (0..GROUPS).map(move |g| (g, w)))
        .filter_map(|(g, w)| build(&series[..], g, w, 0).map(|b| prost::Message::encoded_len(&b) + 16))
        .sum::<usize>()
        * a.repeat;
    let pre: Option<Vec<Vec<bytes::Bytes>>> = (encoded_total < 2 << 30).then(|| {
        (0..a.streams)
            .map(|k| {
                let mut out = Vec::new();
                let mut seq = 0;
                for r in 0..a.repeat {
                    for w in 0..windows {
                        for g in (0..GROUPS).filter(|g| g % a.streams == k) {
                            if let Some(mut b) = build(&series[..], g, w, (a.repeat - 1 - r) as i64 * span) {
                                seq += 1;
                                b.client_id = format!("bench-{k}");
                                b.seq = seq;
                                out.push(bytes::Bytes::from(prost::Message::encode_to_vec(&b)));
                            }
                        }
                    }
                }
                out
            })
            .collect()
    });
    let pre = std::sync::Arc::new(pre);
    let cpu0 = support::cpu_seconds(pid);
    let (elapsed, acked) = rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..a.streams {
            let addr = addr.clone();
            let window = a.window;
            let series = series.clone();
            let repeat = a.repeat;
            let seconds = a.seconds;
            let pre = pre.clone();
            tasks.push(tokio::spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(addr).unwrap().connect().await.unwrap();
                let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
                grpc.ready().await.unwrap();
                let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(window);
                let path = tonic::codegen::http::uri::PathAndQuery::from_static("/modelwatch.v1.Ingest/StreamMetrics");
                let mut acks = grpc
                    .streaming(tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)), path, RawCodec)
                    .await
                    .unwrap()
                    .into_inner();
                // Every copy has the same requests: count one.
                let per_copy = (0..windows)
                    .map(|w| {
                        (0..GROUPS).filter(|g| g % a.streams == k && build(&series[..], *g, w, 0).is_some()).count()
                    })
                    .sum::<usize>();
                let n = per_copy * repeat;
                // tx's channel capacity is the window of unacked batches in flight
                let deadline = seconds.map(|s| start + std::time::Duration::from_secs_f64(s));
                let sender = tokio::spawn(async move {
                    if let Some(pre) = pre.as_ref() {
                        for b in &pre[k] {
                            if deadline.is_some_and(|d| Instant::now() >= d) || tx.send(b.clone()).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    let mut seq = 0;
                    for r in 0..repeat {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return;
                        }
                        for w in 0..windows {
                            for g in (0..GROUPS).filter(|g| g % a.streams == k) {
                                let Some(mut b) = build(&series[..], g, w, (repeat - 1 - r) as i64 * span) else {
                                    continue;
                                };
                                seq += 1;
                                b.client_id = format!("bench-{k}");
                                b.seq = seq;
                                if tx.send(bytes::Bytes::from(prost::Message::encode_to_vec(&b))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
                let mut accepted = 0u64;
                let mut got = 0;
                // The ack stream ends once the daemon has acked everything sent.
                while let Some(ack) = acks.message().await.unwrap() {
                    assert_eq!(ack.rejected_count, 0, "{:?}", ack.rejections.first());
                    accepted += ack.accepted;
                    got += 1;
                }
                assert!(got == n || seconds.is_some(), "{got} acks for {n} requests");
                sender.await.unwrap();
                accepted
            }));
        }
        let stop_queries = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let query_loop = a.queries.then(|| tokio::spawn(heavy_queries(addr.clone(), stop_queries.clone())));
        let mut acked = 0;
        for t in tasks {
            acked += t.await.unwrap();
        }
        let elapsed = start.elapsed();
        stop_queries.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(q) = query_loop {
            let (n, secs) = q.await.unwrap();
            println!(
                "  heavy queries   {n} during the ingest ({:.1} ms each on average)",
                secs * 1000.0 / n.max(1) as f64
            );
        }
        (elapsed, acked)
    });
    let cpu = support::cpu_seconds(pid) - cpu0;
    let peak_rss = support::peak_rss_bytes(pid);
    if a.seconds.is_none() {
        assert_eq!(acked as usize, total, "every sample acked");
    }
    let total = acked as usize;
    let t = Instant::now();
    if a.kill {
        // SIGKILL at full rate, then time the restart on what is left.
        let wal = support::du(&dir.join("wal"));
        child.kill().unwrap();
        child.wait().unwrap();
        let t = Instant::now();
        let (again, _) = support::start_daemon(&dir, &env);
        let restart = t.elapsed();
        println!(
            "  restart         {:.2} s after SIGKILL (WAL on disk at the kill: {wal} bytes)",
            restart.as_secs_f64()
        );
        println!("RESTART {{\"samples\":{total},\"seconds\":{:.3},\"wal_bytes\":{wal}}}", restart.as_secs_f64());
        child = again;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    } else {
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let st = child.wait().unwrap();
    assert!(st.success(), "daemon exit {st:?}");
    let stop = t.elapsed();
    let bytes = support::du(&dir);
    let rate = total as f64 / elapsed.as_secs_f64();
    println!("modelwatch ingest benchmark ({})", csv.display());
    println!(
        "  requests        {requests} (~{} samples each), {} streams, window {}",
        total / requests.max(1),
        a.streams,
        a.window
    );
    println!("  acked samples/s {rate:.0}  ({total} samples in {:.2} s; ack = fsynced)", elapsed.as_secs_f64());
    println!("  daemon CPU      {cpu:.2} s ({:.0} ns per sample)", cpu * 1e9 / total as f64);
    println!("  clean stop      {:.2} s", stop.as_secs_f64());
    println!("  on disk         {bytes} bytes = {:.3} bytes/sample", bytes as f64 / total as f64);
    println!("  peak RSS        {:.0} MiB (VmHWM)", peak_rss as f64 / (1 << 20) as f64);
    println!(
        "RESULT {{\"samples\":{total},\"seconds\":{:.3},\"samples_per_s\":{rate:.0},\"bytes\":{bytes},\"bytes_per_sample\":{:.4},\"streams\":{},\"daemon_cpu_s\":{cpu:.2},\"peak_rss_bytes\":{peak_rss}}}",
        elapsed.as_secs_f64(),
        bytes as f64 / total as f64,
        a.streams
    );
}

/// Heavy queries in a loop until `stop`: returns how many ran and their total seconds.
async fn heavy_queries(addr: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> (u64, f64) {
    let mut q = pb::query_client::QueryClient::connect(addr).await.unwrap().max_decoding_message_size(256 << 20);
    let (mut n, mut secs) = (0u64, 0.0);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        let range = Some(pb::TimeRange { last: "400d".into(), ..Default::default() });
        let _ = q
            .list_series(pb::ListSeriesRequest { selector: r#"{__name__=~".+_.*"}"#.into(), ..Default::default() })
            .await;
        let _ = q
            .query_range(pb::QueryRangeRequest {
                selector: r#"{__name__=~"gpu.*|model.*"}"#.into(),
                range: range.clone(),
                step: "30d".into(),
                aggregation: pb::Aggregation::Quantile as i32,
                quantile: 0.95,
                combine: true,
                ..Default::default()
            })
            .await;
        let _ = q.inference_stats(pb::InferenceStatsRequest { range: range.clone(), ..Default::default() }).await;
        let _ = q.search_logs(pb::SearchLogsRequest { range, contains: "nothing".into(), ..Default::default() }).await;
        n += 1;
        secs += t.elapsed().as_secs_f64();
    }
    (n, secs)
}
