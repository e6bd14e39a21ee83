//! Client benchmark: the cost of a recorded event on the caller's thread, and end-to-end acked
//! events per second from one process, against a real (release) daemon.
//!
//!     cargo bench --bench client -- [--events N] [--request-ids]
mod support;

use modelwatch_client::{pb, Client, Config, Stage};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut events: u64 = 2_000_000;
    let mut request_ids = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--events" {
            events = args.next().and_then(|v| v.parse().ok()).expect("--events N");
        }
        request_ids |= a == "--request-ids";
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = support::start_daemon(dir.path(), &[]);

    let mut cfg = Config::new(&url, "bench");
    cfg.queue_capacity = 4_000_000;
    cfg.batch_size = 5_000;
    cfg.window = 16;
    let client = Client::start(cfg);

    // 1. Caller cost: rounds of 1,000 calls; the median round, per call.
    let event =
        pb::InferenceEvent { model: "m".into(), model_version: "1".into(), latency_us: 1234, ..Default::default() };
    let mut raw = Vec::new();
    let mut timed = Vec::new();
    for _ in 0..200 {
        let batch: Vec<pb::InferenceEvent> = (0..1000).map(|_| event.clone()).collect();
        let t = Instant::now();
        for e in batch {
            client.event(e);
        }
        raw.push(t.elapsed().as_nanos() as f64 / 1000.0);
        let t = Instant::now();
        for i in 0..1000 {
            let mut tm = client.timer("m", "");
            tm.stage(Stage::Inference);
            if i % 2 == 0 {
                tm.finish_ok();
            } else {
                tm.finish_err(pb::Status::Error, "E");
            }
        }
        timed.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    assert!(client.flush(Duration::from_secs(60)));

    // 2. End to end: enqueue as fast as one thread can, until every event is acked.
    let before = client.stats();
    let t = Instant::now();
    for i in 0..events {
        let request_id = if request_ids { format!("req-{i}") } else { String::new() };
        client.event(pb::InferenceEvent {
            model: "m".into(),
            latency_us: i % 10_000,
            request_id,
            ..Default::default()
        });
    }
    let enqueue_s = t.elapsed().as_secs_f64();
    assert!(client.flush(Duration::from_secs(300)), "flush: {:?}", client.stats());
    let total_s = t.elapsed().as_secs_f64();
    let s = client.stats();
    assert_eq!(s.dropped, before.dropped, "{s:?}");
    client.close(Duration::from_secs(10));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();

    let (raw_ns, timed_ns) = (median(raw), median(timed));
    let rate = events as f64 / total_s;
    println!("modelwatch Rust client benchmark");
    println!("  caller cost, client.event(e)            median {raw_ns:.0} ns per call");
    println!("  caller cost, timer + stage + finish     median {timed_ns:.0} ns per call");
    let with = if request_ids { "with request ids" } else { "no request ids" };
    println!("  end to end ({with}): {events} events enqueued in {enqueue_s:.2} s, all acked after {total_s:.2} s = {rate:.0} events/s");
    println!(
        "RESULT {{\"event_ns\":{raw_ns:.0},\"timer_ns\":{timed_ns:.0},\"events\":{events},\"events_per_s\":{rate:.0}}}"
    );
}
