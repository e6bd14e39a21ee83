//! The Rust client (`clients/rust`) against the real daemon: its helpers push, queries read
//! the values back; the daemon dies mid-stream and comes back without losing an acked item or
//! troubling the caller; a full queue drops and counts; the tracing layer ships logs.
mod common;
use common::*;
use modelwatch::pb as dpb;
use modelwatch_client::layer::ModelwatchLayer;
use modelwatch_client::{pb, Client, Config, Stage};
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;

fn config(d: &Daemon, service: &str) -> Config {
    let mut c = Config::new(&d.url(), service);
    c.linger = Duration::from_millis(20);
    c.models = vec![("mgeo".into(), "3".into())];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpers_push_and_values_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let client = Client::start(config(&d, "ocr"));
    for i in 0..200u32 {
        let mut t = client.timer("mgeo", &format!("r{i}"));
        t.version("3").endpoint("/geo").label("card_type", "id_card").tokens(12, 3);
        t.stage(Stage::Queue);
        t.stage(Stage::Inference);
        if i % 10 == 0 {
            t.finish_err(pb::Status::Timeout, "DeadlineExceeded");
        } else {
            t.finish_ok();
        }
    }
    client.event(pb::InferenceEvent {
        model: "mgeo".into(),
        latency_us: 2_000_000,
        request_id: "slow".into(),
        ..Default::default()
    });
    for i in 0..50 {
        client.gauge("queue_depth", &[("model", "mgeo")], f64::from(i));
        std::thread::sleep(Duration::from_millis(1));
    }
    client.counter("requests_total", &[], 42.0);
    client.log(pb::Level::Warn, "disk almost full", "r7");
    assert!(client.flush_async(Duration::from_secs(30)).await, "flushed: {:?}", client.stats());
    let s = client.stats();
    assert_eq!((s.enqueued, s.acked, s.dropped, s.rejected), (253, 253, 0, 0), "{s:?}");

    let mut q = d.query().await;
    let stats = q
        .inference_stats(dpb::InferenceStatsRequest {
            service: "ocr".into(),
            range: range_last("1h"),
            group_by: vec!["endpoint".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let geo = stats.groups.iter().find(|g| g.key["endpoint"] == "/geo").unwrap().total.clone().unwrap();
    assert_eq!(geo.count, 200);
    assert_eq!(geo.by_status["timeout"], 20);
    assert_eq!(geo.by_error_type["DeadlineExceeded"], 20);
    assert_eq!(geo.prompt_tokens, 2400);
    assert!(geo.stages.contains_key("queue") && geo.stages.contains_key("inference"));
    let r = q
        .query_range(dpb::QueryRangeRequest {
            selector: r#"queue_depth{model="mgeo"}"#.into(),
            range: range_last("1h"),
            step: "2h".into(),
            aggregation: dpb::Aggregation::Max as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.series[0].points[0].value, 49.0);
    assert_eq!(r.series[0].labels["service"], "ocr");
    let got = q.get_request(dpb::GetRequestRequest { request_id: "r7".into() }).await.unwrap().into_inner();
    assert_eq!((got.events.len(), got.logs.len()), (1, 1));
    let st = q.status(dpb::StatusRequest {}).await.unwrap().into_inner();
    let me = st.services.iter().find(|s| s.service == "ocr").expect("registered");
    assert_eq!(me.pid, std::process::id());
    assert_eq!(me.models[0].name, "mgeo");
    assert!(client.close(Duration::from_secs(5)));
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_mid_stream_loses_nothing_acked_and_never_blocks_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let addr = d.addr.clone();
    let mut cfg = config(&d, "resilient");
    cfg.window = 4;
    cfg.max_backoff = Duration::from_millis(200);
    let client = Client::start(cfg);
    // The "service": records events from a plain thread while the daemon dies and returns.
    let c = client.clone();
    let service = std::thread::spawn(move || {
        for i in 0..6000u32 {
            let mut t = c.timer("resilient-model", &format!("e{i}"));
            t.stage(Stage::Inference);
            t.finish_ok();
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    d.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = Daemon::start_at(dir.path(), &addr, &[]);
    service.join().expect("the service thread never failed");
    assert!(client.flush_async(Duration::from_secs(60)).await, "flushed: {:?}", client.stats());
    let s = client.stats();
    assert_eq!(s.enqueued, 6000);
    assert_eq!(s.dropped, 0);
    assert_eq!(s.acked, 6000, "{s:?}");
    // every event once: resent batches the daemon already had were not stored twice
    assert_eq!(count_events(&d, "resilient-model", "1h").await, 6000);
    let mut q = d.query().await;
    for i in (0..6000).step_by(397) {
        let got = q.get_request(dpb::GetRequestRequest { request_id: format!("e{i}") }).await.unwrap().into_inner();
        assert_eq!(got.events.len(), 1, "e{i}");
    }
    client.close(Duration::from_secs(5));
    d.stop_ok();
}

#[test]
fn full_queue_drops_newest_counts_and_never_blocks() {
    // Nothing listens on this port: the client keeps retrying in the background.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let mut cfg = Config::new(&format!("http://127.0.0.1:{port}"), "offline");
    cfg.queue_capacity = 100;
    let client = Client::start(cfg);
    let started = Instant::now();
    for i in 0..1000 {
        client.event(pb::InferenceEvent { model: "m".into(), latency_us: i, ..Default::default() });
        client.gauge("g", &[], i as f64);
    }
    let s = client.stats();
    assert_eq!((s.enqueued, s.dropped, s.acked), (200, 1800, 0), "{s:?}");
    assert!(!client.flush(Duration::from_millis(100)), "nothing can be acked");
    assert!(!client.close(Duration::from_millis(100)));
    // not a speed assertion: a blocked caller would hang here for the connect timeouts
    println!("2000 calls and close in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_layer_ships_logs_with_the_span_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let client = Client::start(config(&d, "traced"));
    let subscriber = tracing_subscriber::registry().with(ModelwatchLayer::new(client.clone(), tracing::Level::INFO));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("handle", request_id = "trace-1");
        let _e = span.enter();
        tracing::info!(card_type = "passport", "decoded card");
        tracing::debug!("below the level: not shipped");
        tracing::error!(error_type = "CudaOOM", "inference failed");
        tracing::warn!(request_id = "explicit-2", "own request id");
    });
    assert!(client.flush_async(Duration::from_secs(30)).await);
    let mut q = d.query().await;
    let got = q.get_request(dpb::GetRequestRequest { request_id: "trace-1".into() }).await.unwrap().into_inner();
    let mut msgs: Vec<(String, i32, String)> =
        got.logs.iter().map(|l| (l.message.clone(), l.level, l.error_type.clone())).collect();
    msgs.sort();
    assert_eq!(
        msgs,
        vec![
            ("decoded card".to_string(), dpb::Level::Info as i32, String::new()),
            ("inference failed".to_string(), dpb::Level::Error as i32, "CudaOOM".to_string())
        ]
    );
    let card = got.logs.iter().find(|l| l.message == "decoded card").unwrap();
    assert_eq!(card.fields["card_type"], "passport");
    assert_eq!(card.service, "traced");
    assert_eq!(card.logger, "rust_client");
    let other = q.get_request(dpb::GetRequestRequest { request_id: "explicit-2".into() }).await.unwrap().into_inner();
    assert_eq!(other.logs.len(), 1);
    client.close(Duration::from_secs(5));
    d.stop_ok();
}
