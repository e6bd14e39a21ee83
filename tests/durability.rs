//! Acked means durable: graceful restarts, SIGKILL at random moments while clients stream,
//! and damaged data folders.
mod common;
use common::*;
use modelwatch::pb;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn count_samples(d: &Daemon, selector: &str) -> u64 {
    count_samples_in(d, selector, "2h").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let mut ing = d.ingest().await;
    let now = now_ms();
    let ts: Vec<i64> = (0..5000).map(|i| now - 1_000_000 + i * 100).collect();
    let vals: Vec<f64> = (0..5000).map(|i| (i % 100) as f64 / 4.0).collect();
    let ack = push_metrics(&mut ing, "svc", vec![series("temp_celsius", &[("gpu", "0")], ts, vals)]).await;
    assert_eq!(ack.accepted, 5000);
    let events: Vec<pb::InferenceEvent> = (1..=1000u64)
        .map(|n| pb::InferenceEvent {
            model: "m".into(),
            latency_us: n * 1000,
            request_id: format!("q{n}"),
            timestamp_ms: now - 5000,
            ..Default::default()
        })
        .collect();
    let logs = vec![pb::LogRecord { message: "kept".into(), request_id: "q7".into(), ..Default::default() }];
    ing.push(pb::PushRequest {
        events: Some(pb::EventBatch { service: "svc".into(), events, ..Default::default() }),
        logs: Some(pb::LogBatch { service: "svc".into(), records: logs, ..Default::default() }),
        ..Default::default()
    })
    .await
    .unwrap();
    // A fixed window: "the last hour" asked twice moves with the clock, and its 10 s buckets
    // with it (the figures' start and end differed when a bucket boundary fell between).
    let window = Some(pb::TimeRange {
        start: ((now - 3_600_000) / 1000).to_string(),
        end: (now / 1000 + 60).to_string(),
        ..Default::default()
    });
    let before = {
        let mut q = d.query().await;
        q.inference_stats(pb::InferenceStatsRequest { range: window.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
    };
    d.stop_ok();
    // everything went to sled; the WAL holds nothing
    let wal_bytes: u64 =
        std::fs::read_dir(dir.path().join("wal")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert_eq!(wal_bytes, 0, "clean shutdown leaves an empty write-ahead log");

    let d = Daemon::start(dir.path(), &[]);
    assert_eq!(count_samples(&d, "temp_celsius").await, 5000);
    let mut q = d.query().await;
    let after = q
        .inference_stats(pb::InferenceStatsRequest { range: window, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.groups, after.groups, "aggregates identical after restart");
    assert_eq!(after.groups[0].total.as_ref().unwrap().count, 1000);
    let got = q.get_request(pb::GetRequestRequest { request_id: "q7".into() }).await.unwrap().into_inner();
    assert_eq!((got.events.len(), got.logs.len()), (1, 1));
    let r = q
        .query_range(pb::QueryRangeRequest {
            selector: "temp_celsius".into(),
            range: range_last("1h"),
            step: "2h".into(),
            aggregation: pb::Aggregation::Avg as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.series[0].points[0].value, 12.375, "values exact after the chunk round trip");
    let st = q.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.samples, st.events, st.logs), (5000, 1000, 1));
    d.stop_ok();
}

/// A client that keeps a window of unacked batches and resends them after a reconnect,
/// as the real clients do.
#[derive(Default)]
struct Client {
    next_seq: u64,
    unacked: BTreeMap<u64, pb::EventBatch>,
    acked_events: Vec<String>,
    sent_events: u64,
    next_ts: i64,
    metric_unacked: BTreeMap<u64, pb::MetricBatch>,
    metric_next_seq: u64,
    acked_samples: u64,
    sent_samples: u64,
}

const WINDOW: usize = 16;
const EVENTS_PER_BATCH: u64 = 20;
const SAMPLES_PER_BATCH: i64 = 50;

async fn stream_until_killed(url: String, c: Arc<Mutex<Client>>, stop: Arc<AtomicBool>, max_new: u64) {
    let Ok(mut ing) = pb::ingest_client::IngestClient::connect(url).await else { return };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::EventBatch>(WINDOW * 2);
    let Ok(resp) = ing.stream_events(tokio_stream::wrappers::ReceiverStream::new(rx)).await else { return };
    let mut acks = resp.into_inner();
    let resend: Vec<pb::EventBatch> = c.lock().unwrap().unacked.values().cloned().collect();
    let mut inflight = 0usize;
    for b in resend {
        if tx.send(b).await.is_err() {
            return;
        }
        inflight += 1;
    }
    let mut new = 0;
    loop {
        while inflight < WINDOW && new < max_new && !stop.load(Ordering::Relaxed) {
            let b = {
                let mut c = c.lock().unwrap();
                c.next_seq += 1;
                let seq = c.next_seq;
                let now = now_ms();
                let events = (0..EVENTS_PER_BATCH)
                    .map(|i| pb::InferenceEvent {
                        model: "crash".into(),
                        latency_us: 1000 + i,
                        request_id: format!("c{seq}-{i}"),
                        timestamp_ms: now,
                        ..Default::default()
                    })
                    .collect();
                let b = pb::EventBatch {
                    client_id: "crash-client".into(),
                    seq,
                    service: "crash".into(),
                    events,
                    ..Default::default()
                };
                c.unacked.insert(seq, b.clone());
                c.sent_events += EVENTS_PER_BATCH;
                b
            };
            if tx.send(b).await.is_err() {
                return;
            }
            inflight += 1;
            new += 1;
        }
        if inflight == 0 {
            return;
        }
        match acks.message().await {
            Ok(Some(a)) => {
                inflight -= 1;
                let mut c = c.lock().unwrap();
                if let Some(b) = c.unacked.remove(&a.seq) {
                    let ids: Vec<String> = b.events.iter().map(|e| e.request_id.clone()).collect();
                    c.acked_events.extend(ids);
                }
            }
            _ => return, // the daemon died
        }
    }
}

async fn stream_metrics_until_killed(url: String, c: Arc<Mutex<Client>>, stop: Arc<AtomicBool>, max_new: u64) {
    let Ok(mut ing) = pb::ingest_client::IngestClient::connect(url).await else { return };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::MetricBatch>(WINDOW * 2);
    let Ok(resp) = ing.stream_metrics(tokio_stream::wrappers::ReceiverStream::new(rx)).await else { return };
    let mut acks = resp.into_inner();
    let resend: Vec<pb::MetricBatch> = c.lock().unwrap().metric_unacked.values().cloned().collect();
    let mut inflight = 0usize;
    for b in resend {
        if tx.send(b).await.is_err() {
            return;
        }
        inflight += 1;
    }
    let mut new = 0;
    loop {
        while inflight < WINDOW && new < max_new && !stop.load(Ordering::Relaxed) {
            let b = {
                let mut c = c.lock().unwrap();
                c.metric_next_seq += 1;
                let seq = c.metric_next_seq;
                let ts: Vec<i64> = (0..SAMPLES_PER_BATCH).map(|i| c.next_ts + i).collect();
                c.next_ts += SAMPLES_PER_BATCH;
                let vals = ts.iter().map(|t| (t % 1000) as f64).collect();
                let b = pb::MetricBatch {
                    client_id: "crash-client".into(),
                    seq,
                    service: "crash".into(),
                    series: vec![series("crash_samples", &[], ts, vals)],
                    ..Default::default()
                };
                c.metric_unacked.insert(seq, b.clone());
                c.sent_samples += SAMPLES_PER_BATCH as u64;
                b
            };
            if tx.send(b).await.is_err() {
                return;
            }
            inflight += 1;
            new += 1;
        }
        if inflight == 0 {
            return;
        }
        match acks.message().await {
            Ok(Some(a)) => {
                inflight -= 1;
                let mut c = c.lock().unwrap();
                if c.metric_unacked.remove(&a.seq).is_some() {
                    c.acked_samples += SAMPLES_PER_BATCH as u64;
                }
            }
            _ => return,
        }
    }
}

fn seed() -> u64 {
    std::env::var("MODELWATCH_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| now_ms() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_streaming_loses_no_acked_item_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    // Frequent checkpoints and small chunks, so kills land in every phase: mid-batch, mid-fsync,
    // mid-checkpoint, mid-chunk-cut.
    // A generous shutdown deadline: the final clean stop must not fail on a loaded machine.
    let env = [
        ("MODELWATCH__STORAGE__CHECKPOINT_INTERVAL", "50ms"),
        ("MODELWATCH__STORAGE__CHUNK_SAMPLES", "200"),
        ("MODELWATCH__SERVER__SHUTDOWN_TIMEOUT", "60s"),
    ];
    let mut rng = seed();
    println!("seed {rng} (set MODELWATCH_TEST_SEED to replay)");
    let client = Arc::new(Mutex::new(Client { next_ts: now_ms() - 3_000_000, ..Default::default() }));
    for round in 0..5 {
        let d = Daemon::start(dir.path(), &env);
        // Every item acked before the previous kill is here.
        let (acked_samples, acked_events) = {
            let c = client.lock().unwrap();
            (c.acked_samples, c.acked_events.clone())
        };
        assert!(count_samples(&d, "crash_samples").await >= acked_samples, "round {round}: acked samples lost");
        assert!(count_events(&d, "crash", "2h").await >= acked_events.len() as u64, "round {round}: acked events lost");
        let mut q = d.query().await;
        for id in acked_events.iter().step_by(97) {
            let got = q.get_request(pb::GetRequestRequest { request_id: id.clone() }).await.unwrap().into_inner();
            assert_eq!(got.events.len(), 1, "round {round}: event {id} stored {} times", got.events.len());
        }
        let stop = Arc::new(AtomicBool::new(false));
        // Unbounded: the streams run until the kill, so it lands while batches are in flight.
        let t1 = tokio::spawn(stream_until_killed(d.url(), client.clone(), stop.clone(), u64::MAX));
        let t2 = tokio::spawn(stream_metrics_until_killed(d.url(), client.clone(), stop.clone(), u64::MAX));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = 50 + rng % 400;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        d.kill9();
        let _ = tokio::join!(t1, t2);
        let c = client.lock().unwrap();
        println!(
            "round {round}: killed after {delay} ms; {} events acked, {} + {} unacked batches",
            c.acked_events.len(),
            c.unacked.len(),
            c.metric_unacked.len()
        );
        assert!(
            c.unacked.len() + c.metric_unacked.len() > 0,
            "round {round}: the kill landed with nothing in flight, so it tested nothing"
        );
    }
    // Final round: reconnect, resend what was never acked, stop cleanly.
    let d = Daemon::start(dir.path(), &env);
    let stop = Arc::new(AtomicBool::new(true));
    tokio::join!(
        stream_until_killed(d.url(), client.clone(), stop.clone(), 0),
        stream_metrics_until_killed(d.url(), client.clone(), stop.clone(), 0)
    );
    d.stop_ok();
    let d = Daemon::start(dir.path(), &env);
    let (sent_events, sent_samples, acked_events) = {
        let c = client.lock().unwrap();
        assert!(c.unacked.is_empty() && c.metric_unacked.is_empty(), "every batch acked in the end");
        (c.sent_events, c.sent_samples, c.acked_events.clone())
    };
    assert!(sent_events > 0 && sent_samples > 0);
    // Exactly once: every batch ever sent is stored, none twice.
    assert_eq!(count_events(&d, "crash", "2h").await, sent_events);
    assert_eq!(count_samples(&d, "crash_samples").await, sent_samples);
    let mut q = d.query().await;
    for id in acked_events.iter().step_by(53) {
        let got = q.get_request(pb::GetRequestRequest { request_id: id.clone() }).await.unwrap().into_inner();
        assert_eq!(got.events.len(), 1, "event {id}");
    }
    d.stop_ok();
}

#[test]
fn damaged_data_folder_stops_with_a_message_not_a_panic() {
    // A damaged write-ahead-log segment that is not the last one.
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join(format!("{:020}.wal", 0)), vec![0x55u8; 100]).unwrap();
    std::fs::write(wal.join(format!("{:020}.wal", 5)), b"").unwrap();
    let Err((status, err)) = Daemon::try_start(dir.path(), &[]) else { panic!("started on a damaged WAL") };
    assert!(!status.unwrap().success());
    assert!(err.contains("damaged") && err.contains("00000000000000000000.wal"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A damaged sled database.
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    d.stop_ok();
    let db = dir.path().join("db");
    for entry in std::fs::read_dir(&db).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            let len = std::fs::metadata(&p).unwrap().len() as usize;
            std::fs::write(&p, vec![0xA5u8; len.max(64)]).unwrap();
        }
    }
    let Err((status, err)) = Daemon::try_start(dir.path(), &[]) else { panic!("started on a damaged database") };
    assert!(!status.unwrap().success());
    assert!(err.contains("cannot be opened") || err.contains("damaged"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_expired_data_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MODELWATCH__RETENTION__METRICS", "1h"),
        ("MODELWATCH__RETENTION__LOGS", "1h"),
        ("MODELWATCH__RETENTION__INFERENCE_EVENTS", "1h"),
        ("MODELWATCH__RETENTION__INFERENCE_STATS", "1h"),
        ("MODELWATCH__RETENTION__INTERVAL", "100ms"),
        ("MODELWATCH__STORAGE__CHUNK_SAMPLES", "10"),
        // aggregates reach sled, where retention acts, at checkpoints
        ("MODELWATCH__STORAGE__CHECKPOINT_INTERVAL", "100ms"),
    ];
    let d = Daemon::start(dir.path(), &env);
    let mut ing = d.ingest().await;
    let now = now_ms();
    let old = now - 3 * 3_600_000;
    let ts: Vec<i64> = (0..20).map(|i| old + i * 1000).collect();
    let fresh: Vec<i64> = (0..20).map(|i| now - 60_000 + i * 1000).collect();
    let req = pb::PushRequest {
        metrics: Some(pb::MetricBatch {
            service: "r".into(),
            backfill: true,
            series: vec![
                series("kept_metric", &[], fresh.clone(), vec![1.0; 20]),
                series("expired_metric", &[], ts.clone(), vec![1.0; 20]),
            ],
            ..Default::default()
        }),
        logs: Some(pb::LogBatch {
            service: "r".into(),
            backfill: true,
            records: vec![
                pb::LogRecord {
                    timestamp_ms: old,
                    message: "old".into(),
                    request_id: "gone".into(),
                    ..Default::default()
                },
                pb::LogRecord {
                    timestamp_ms: now - 1000,
                    message: "new".into(),
                    request_id: "here".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        events: Some(pb::EventBatch {
            service: "r".into(),
            backfill: true,
            events: vec![
                pb::InferenceEvent {
                    timestamp_ms: old,
                    model: "m".into(),
                    request_id: "gone".into(),
                    latency_us: 5,
                    ..Default::default()
                },
                pb::InferenceEvent {
                    timestamp_ms: now - 1000,
                    model: "m".into(),
                    request_id: "here".into(),
                    latency_us: 5,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
    };
    ing.push(req).await.unwrap();
    let mut q = d.query().await;
    let qc = q.clone();
    let count_metric = |name: &'static str| {
        let mut q = qc.clone();
        async move {
            let r = q
                .query_range(pb::QueryRangeRequest {
                    selector: name.into(),
                    range: range_last("4h"),
                    step: "5h".into(),
                    aggregation: pb::Aggregation::Count as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            r.series.iter().flat_map(|s| &s.points).map(|p| p.value as u64).sum::<u64>()
        }
    };
    // Poll (bounded) until retention has run: the expired data goes, the rest stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let gone = q.get_request(pb::GetRequestRequest { request_id: "gone".into() }).await.unwrap().into_inner();
        let stats = q
            .inference_stats(pb::InferenceStatsRequest { range: range_last("4h"), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let agg_count: u64 = stats.groups.iter().map(|g| g.total.as_ref().unwrap().count).sum();
        if count_metric("expired_metric").await == 0 && gone.events.is_empty() && gone.logs.is_empty() && agg_count == 1
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not remove expired data: {gone:?}, aggregates {agg_count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count_metric("kept_metric").await, 20);
    let here = q.get_request(pb::GetRequestRequest { request_id: "here".into() }).await.unwrap().into_inner();
    assert_eq!((here.events.len(), here.logs.len()), (1, 1));
    d.stop_ok();
}

/// The value of an unlabelled series in the daemon's `/metrics`.
fn metric(d: &Daemon, name: &str) -> f64 {
    let text = get_body(&d.http_addr, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Request-id runs (one per checkpoint) are merged on a thread of their own, beside ingest and
/// look-ups; what they merged answers look-ups exactly once, before and after a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_runs_merge_in_the_background_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("MODELWATCH__STORAGE__CHECKPOINT_INTERVAL", "100ms")];
    let d = Daemon::start(dir.path(), &env);
    let names = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir.path().join("rid/events"))
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default()
    };
    let runs = || names().len();
    // Every run file seen, merged-away inputs included.
    let mut seen = std::collections::BTreeSet::new();
    let mut ing = d.ingest().await;
    let now = now_ms();
    // Nine rounds, each in a run of its own: the eighth run of a size makes a merge.
    const ROUNDS: u64 = 9;
    for round in 0..ROUNDS {
        let events: Vec<pb::InferenceEvent> = (0..200u64)
            .map(|i| pb::InferenceEvent {
                model: "m".into(),
                latency_us: 10 + i,
                request_id: format!("r{round}-{i}"),
                timestamp_ms: now - 60_000 + (round * 200 + i) as i64,
                ..Default::default()
            })
            .collect();
        let batch = pb::EventBatch { service: "svc".into(), events, ..Default::default() };
        let before = runs();
        let acks = stream_events(&mut ing, vec![batch]).await;
        assert_eq!(acks[0].accepted, 200);
        // A run file appears when a checkpoint takes the entries from memory (only this
        // round's are there: the one before is in a file already).
        for _ in 0..600 {
            seen.extend(names());
            if runs() != before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut merged = 0.0;
    for _ in 0..600 {
        merged = metric(&d, "modelwatch_request_id_merge_seconds_count");
        if merged >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(merged >= 1.0, "no merge of request-id runs after {ROUNDS} checkpoints with runs");
    assert_eq!(metric(&d, "modelwatch_request_id_merge_failures_total"), 0.0);
    let kept = names();
    assert!(kept.len() < ROUNDS as usize, "{kept:?}: merged-away runs are deleted");
    let merged_away: Vec<&String> = seen.difference(&kept).collect();
    assert!(!merged_away.is_empty(), "no run was merged away: seen {seen:?}, kept {kept:?}");
    look_up_rounds(&d, ROUNDS).await;
    d.kill9();
    let d = Daemon::start(dir.path(), &env);
    look_up_rounds(&d, ROUNDS).await;
    // The catalog names the merged runs, not their inputs. (A run of the last round's entries
    // may be written after the count above, or from the WAL after the restart: a new name.)
    let after = names();
    assert!(kept.is_subset(&after), "merged runs lost: kept {kept:?}, after {after:?}");
    assert!(merged_away.iter().all(|n| !after.contains(*n)), "inputs came back: {merged_away:?} in {after:?}");
    d.stop_ok();
}

/// Each round's events are found by their request ids, once each.
async fn look_up_rounds(d: &Daemon, rounds: u64) {
    let mut q = d.query().await;
    for round in 0..rounds {
        for i in [0u64, 77, 199] {
            let id = format!("r{round}-{i}");
            let got = q.get_request(pb::GetRequestRequest { request_id: id.clone() }).await.unwrap().into_inner();
            assert_eq!(got.events.len(), 1, "{id}: {:?}", got.events);
            assert_eq!(got.events[0].latency_us, 10 + i);
        }
    }
}

/// A backfill spreads its events over many buckets, each an aggregate held in memory until a
/// checkpoint: past `storage.checkpoint_buckets` of them a checkpoint starts at once, long
/// before `checkpoint_interval`, and the aggregates it wrote count exactly once after a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_over_many_buckets_checkpoints_early_and_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("MODELWATCH__STORAGE__CHECKPOINT_INTERVAL", "1h"), ("MODELWATCH__STORAGE__CHECKPOINT_BUCKETS", "500")];
    let d = Daemon::start(dir.path(), &env);
    // The first checkpoint runs at start.
    let before = metric(&d, "modelwatch_checkpoint_seconds_count");
    let mut ing = d.ingest().await;
    let now = now_ms();
    // One event a 10-s bucket over the last 5.6 hours, as four pushes of 500.
    let batches: Vec<pb::EventBatch> = (0..4i64)
        .map(|p| pb::EventBatch {
            service: "backfill".into(),
            backfill: true,
            events: (0..500i64)
                .map(|i| pb::InferenceEvent {
                    timestamp_ms: now - 60_000 - (p * 500 + i) * 10_000,
                    model: "m".into(),
                    latency_us: 1_000 + (i as u64) * 37,
                    stages: Some(pb::Stages { queue_us: 100 + i as u64, ..Default::default() }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let acks = stream_events(&mut ing, batches).await;
    assert_eq!(acks.iter().map(|a| a.accepted).sum::<u64>(), 2000);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while metric(&d, "modelwatch_checkpoint_seconds_count") <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after 2,000 buckets with storage.checkpoint_buckets = 500"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count_events(&d, "m", "7h").await, 2000);
    d.kill9();
    let d = Daemon::start(dir.path(), &env);
    assert_eq!(count_events(&d, "m", "7h").await, 2000);
    let mut q = d.query().await;
    let r = q
        .inference_stats(pb::InferenceStatsRequest { model: "m".into(), range: range_last("7h"), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let total = r.groups[0].total.as_ref().unwrap();
    assert_eq!(total.stages["queue"].count, 2000);
    d.stop_ok();
}
