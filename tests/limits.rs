//! Bad input gets a clear error naming the field, the limit and the value, and loses nothing
//! else: every limit, configured through the environment, against the real daemon.
mod common;
use common::*;
use modelwatch::pb;
use prost::Message;

const ENV: &[(&str, &str)] = &[
    ("MODELWATCH__LIMITS__MAX_LABELS", "3"),
    ("MODELWATCH__LIMITS__MAX_LABEL_NAME_LEN", "8"),
    ("MODELWATCH__LIMITS__MAX_LABEL_VALUE_LEN", "10"),
    ("MODELWATCH__LIMITS__MAX_SERIES_PER_SERVICE", "2"),
    ("MODELWATCH__LIMITS__MAX_AGE", "10m"),
    ("MODELWATCH__LIMITS__MAX_FUTURE", "1m"),
    ("MODELWATCH__LIMITS__MAX_MESSAGE_BYTES", "65536"),
    ("MODELWATCH__LIMITS__MAX_LOG_MESSAGE_LEN", "100"),
];

/// Pushes metrics expecting a rejection; returns (status, acks from the status details).
async fn push_rejected(
    c: &mut pb::ingest_client::IngestClient<tonic::transport::Channel>,
    req: pb::PushRequest,
) -> (tonic::Status, pb::PushResponse) {
    let err = c.push(req).await.expect_err("the push has a bad item");
    // The standard error model: google.rpc.Status with a BadRequest (one violation per
    // rejected item) and the acks.
    let st = pb::rpc::Status::decode(err.details()).expect("google.rpc.Status in the details");
    assert_eq!(st.code, err.code() as i32, "{err:?}");
    let bad =
        st.details.iter().find(|a| a.type_url == "type.googleapis.com/google.rpc.BadRequest").expect("BadRequest");
    let bad = pb::rpc::BadRequest::decode(bad.value.as_slice()).unwrap();
    assert!(!bad.field_violations.is_empty());
    assert!(
        err.message().starts_with(&bad.field_violations[0].field),
        "{} / {:?}",
        err.message(),
        bad.field_violations[0]
    );
    let acks =
        st.details.iter().find(|a| a.type_url == "type.googleapis.com/modelwatch.v1.PushResponse").expect("acks");
    (err, pb::PushResponse::decode(acks.value.as_slice()).unwrap())
}

fn metrics(service: &str, series: Vec<pb::Series>) -> pb::PushRequest {
    pb::PushRequest {
        metrics: Some(pb::MetricBatch { service: service.into(), series, ..Default::default() }),
        ..Default::default()
    }
}

async fn count(d: &Daemon, selector: &str) -> usize {
    let mut q = d.query().await;
    let r = q
        .query_range(pb::QueryRangeRequest {
            selector: selector.into(),
            range: range_last("1h"),
            step: "2h".into(),
            aggregation: pb::Aggregation::Count as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.series.iter().flat_map(|s| &s.points).map(|p| p.value as usize).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_names_field_limit_and_value_and_keeps_valid_items() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), ENV);
    let mut c = d.ingest().await;
    let now = now_ms();

    // non-finite value: the sample is rejected, its neighbours kept
    let (err, acks) = push_rejected(
        &mut c,
        metrics("a", vec![series("m_nan", &[], vec![now - 2, now - 1, now], vec![1.0, f64::NAN, 2.0])]),
    )
    .await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("metrics.series[0].values[1]")
            && err.message().contains("NaN")
            && err.message().contains("limits.allow_non_finite"),
        "{}",
        err.message()
    );
    assert_eq!(acks.metrics.as_ref().unwrap().accepted, 2);
    assert_eq!(count(&d, "m_nan").await, 2);

    // too many labels (service is added as a label: 3 given + service = 4 > 3)
    let (err, _) = push_rejected(
        &mut c,
        metrics(
            "b",
            vec![
                series("m_labels", &[("x", "1"), ("y", "2"), ("z", "3")], vec![now], vec![1.0]),
                series("m_labels", &[("x", "1")], vec![now], vec![1.0]),
            ],
        ),
    )
    .await;
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("series[0].labels") && err.message().contains("4 labels exceed limits.max_labels = 3"),
        "{}",
        err.message()
    );
    assert_eq!(count(&d, "m_labels").await, 1, "the valid series beside it is stored");

    // label name and value length
    let (err, _) =
        push_rejected(&mut c, metrics("c", vec![series("m_len", &[("verylongname", "1")], vec![now], vec![1.0])]))
            .await;
    assert!(
        err.message().contains("series[0].labels[0].name")
            && err.message().contains("12 bytes exceeds limits.max_label_name_len = 8"),
        "{}",
        err.message()
    );
    let (err, _) =
        push_rejected(&mut c, metrics("c", vec![series("m_len", &[("k", "0123456789abc")], vec![now], vec![1.0])]))
            .await;
    assert!(
        err.message().contains("series[0].labels[0].value")
            && err.message().contains("13 bytes exceeds limits.max_label_value_len = 10"),
        "{}",
        err.message()
    );

    // series per service
    let three: Vec<pb::Series> =
        (0..3).map(|i| series("m_card", &[("i", &i.to_string())], vec![now], vec![1.0])).collect();
    let (err, acks) = push_rejected(&mut c, metrics("card", three.clone())).await;
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("series[2]")
            && err.message().contains("limits.max_series_per_service = 2")
            && err.message().contains("\"card\" (it has 2)"),
        "{}",
        err.message()
    );
    assert_eq!(acks.metrics.unwrap().accepted, 2);
    let ack = push_metrics(&mut c, "other", three[..2].to_vec()).await;
    assert_eq!(ack.accepted, 2, "the limit is per service");

    // timestamps: too old, too far ahead; backfill widens the window
    let old = now - 20 * 60_000;
    let (err, _) =
        push_rejected(&mut c, metrics("d", vec![series("m_ts", &[], vec![old, now - 1000], vec![1.0, 2.0])])).await;
    assert!(
        err.message().contains("series[0].timestamps_ms[0]")
            && err.message().contains("older than limits.max_age = 10m")
            && err.message().contains(&old.to_string()),
        "{}",
        err.message()
    );
    let (err, _) =
        push_rejected(&mut c, metrics("d", vec![series("m_ts", &[], vec![now + 3_600_000], vec![1.0])])).await;
    assert!(err.message().contains("limits.max_future = 1m"), "{}", err.message());
    let backfill = pb::PushRequest {
        metrics: Some(pb::MetricBatch {
            service: "d".into(),
            backfill: true,
            series: vec![series("m_bf", &[], vec![old], vec![1.0])],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(c.push(backfill).await.unwrap().into_inner().metrics.unwrap().accepted, 1);

    // out of order within a series
    let (err, _) = push_rejected(&mut c, metrics("d", vec![series("m_ts", &[], vec![now - 5000], vec![1.0])])).await;
    assert!(err.message().contains("not after the series' last sample"), "{}", err.message());

    // malformed names
    let (err, _) = push_rejected(&mut c, metrics("e", vec![series("bad-name", &[], vec![now], vec![1.0])])).await;
    assert!(err.message().contains("series[0].name") && err.message().contains("bad-name"), "{}", err.message());

    // logs and events
    let logs = pb::LogBatch {
        service: "l".into(),
        records: vec![
            pb::LogRecord { message: "x".repeat(101), ..Default::default() },
            pb::LogRecord { message: "fine".into(), request_id: "lr".into(), ..Default::default() },
        ],
        ..Default::default()
    };
    let events = pb::EventBatch {
        service: "l".into(),
        events: vec![
            pb::InferenceEvent { latency_us: 5, ..Default::default() },
            pb::InferenceEvent { model: "m".into(), latency_us: 5, request_id: "lr".into(), ..Default::default() },
        ],
        ..Default::default()
    };
    let (err, acks) =
        push_rejected(&mut c, pb::PushRequest { logs: Some(logs), events: Some(events), ..Default::default() }).await;
    assert!(
        err.message().contains("logs.records[0].message")
            && err.message().contains("101 bytes exceeds limits.max_log_message_len = 100"),
        "{}",
        err.message()
    );
    let ev_ack = acks.events.unwrap();
    assert_eq!(ev_ack.rejections[0].field, "events[0].model");
    assert!(ev_ack.rejections[0].reason.contains("required"));
    let mut q = d.query().await;
    let got = q.get_request(pb::GetRequestRequest { request_id: "lr".into() }).await.unwrap().into_inner();
    assert_eq!((got.logs.len(), got.events.len()), (1, 1), "valid log and event stored");

    // streams carry the same rejections in their acks and stay open
    let acks = stream_metrics(
        &mut c,
        vec![
            pb::MetricBatch {
                seq: 1,
                client_id: "s".into(),
                service: "f".into(),
                series: vec![series("m_s", &[], vec![now, now - 1], vec![1.0, 1.0])],
                ..Default::default()
            },
            pb::MetricBatch {
                seq: 2,
                client_id: "s".into(),
                service: "f".into(),
                series: vec![series("m_s", &[], vec![now + 1], vec![f64::INFINITY])],
                ..Default::default()
            },
        ],
    )
    .await;
    assert_eq!((acks[0].accepted, acks[0].rejected_count), (1, 1));
    assert_eq!(acks[0].rejections[0].field, "series[0].timestamps_ms[1]");
    assert_eq!(acks[0].rejections[0].sample, 1);
    assert_eq!(acks[1].rejections[0].code, "INVALID_ARGUMENT");
    assert!(acks[1].rejections[0].reason.contains("inf"), "{:?}", acks[1].rejections);

    // message size: a stream gets RESOURCE_EXHAUSTED naming the limit; the daemon carries on
    let ts: Vec<i64> = (0..10_000).map(|i| now - 100_000 + i).collect();
    let big = pb::MetricBatch {
        service: "g".into(),
        series: vec![series("m_big", &[], ts.clone(), vec![1.5; ts.len()])],
        ..Default::default()
    };
    let mut resp = c.stream_metrics(tokio_stream::iter(vec![big])).await.unwrap().into_inner();
    let err = resp.message().await.expect_err("oversized message");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("limits.max_message_bytes = 65536"), "{}", err.message());
    assert_eq!(push_metrics(&mut c, "g", vec![series("m_small", &[], vec![now], vec![1.0])]).await.accepted, 1);
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonsense_numbers_and_enums_are_named_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MODELWATCH__LIMITS__MAX_LATENCY", "10m"),
        ("MODELWATCH__LIMITS__MAX_SERIES", "3"),
        ("MODELWATCH__LIMITS__MAX_BATCH_BYTES", "1048576"),
    ];
    let d = Daemon::start(dir.path(), &env);
    let mut c = d.ingest().await;
    let now = now_ms();
    let ev = |model: &str, rid: &str| pb::InferenceEvent {
        model: model.into(),
        latency_us: 1000,
        request_id: rid.into(),
        ..Default::default()
    };

    // A timestamp in microseconds (year 58 864): it once panicked the handler while its
    // rejection was formatted, losing the valid items beside it.
    let micros = 1_795_442_320_000_000i64;
    let events = vec![pb::InferenceEvent { timestamp_ms: micros, ..ev("m", "") }, ev("m", "ok-1")];
    let (err, acks) = push_rejected(
        &mut c,
        pb::PushRequest {
            events: Some(pb::EventBatch { service: "p".into(), events, ..Default::default() }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("events.events[0].timestamp_ms") && err.message().contains("after the year 9999"),
        "{}",
        err.message()
    );
    assert_eq!(acks.events.unwrap().accepted, 1);
    // The same on a stream: the ack names it and the stream goes on.
    let batch = |seq: u64, ts: i64| pb::EventBatch {
        client_id: "pan".into(),
        seq,
        service: "p".into(),
        events: vec![pb::InferenceEvent { timestamp_ms: ts, ..ev("m", &format!("s{seq}")) }],
        ..Default::default()
    };
    let acks = stream_events(&mut c, vec![batch(1, micros), batch(2, now)]).await;
    assert_eq!((acks[0].accepted, acks[0].rejected_count, acks[1].accepted), (0, 1, 1));

    // Unknown enum values and impossible latencies, each named.
    let events = vec![
        pb::InferenceEvent { status: 99, ..ev("m", "") },
        pb::InferenceEvent { latency_us: u64::MAX, ..ev("m", "") },
        pb::InferenceEvent {
            stages: Some(pb::Stages { inference_us: 3_600_000_000, ..Default::default() }),
            ..ev("m", "")
        },
        ev("m", "ok-2"),
    ];
    let logs = vec![pb::LogRecord { level: 42, message: "x".into(), ..Default::default() }];
    let mixed = vec![
        pb::Series { kind: 7, ..series("m_kind", &[], vec![now], vec![1.0]) },
        series("m_ok", &[], vec![now], vec![1.0]),
    ];
    let (_, acks) = push_rejected(
        &mut c,
        pb::PushRequest {
            events: Some(pb::EventBatch { service: "p".into(), events, ..Default::default() }),
            logs: Some(pb::LogBatch { service: "p".into(), records: logs, ..Default::default() }),
            metrics: Some(pb::MetricBatch { service: "p".into(), series: mixed, ..Default::default() }),
        },
    )
    .await;
    let e = acks.events.unwrap();
    let fields: Vec<(&str, &str)> = e.rejections.iter().map(|r| (r.field.as_str(), r.reason.as_str())).collect();
    assert_eq!(e.accepted, 1);
    assert_eq!(fields[0].0, "events[0].status");
    assert!(fields[0].1.contains("99 is not a known value"), "{fields:?}");
    assert_eq!(fields[1].0, "events[1].latency_us");
    assert!(fields[1].1.contains("exceeds limits.max_latency = 10m"), "{fields:?}");
    assert_eq!(fields[2].0, "events[2].stages.inference_us");
    let l = acks.logs.unwrap();
    assert_eq!((l.accepted, l.rejections[0].field.as_str()), (0, "records[0].level"));
    let m = acks.metrics.unwrap();
    assert_eq!((m.accepted, m.rejections[0].field.as_str()), (1, "series[0].kind"));

    // Query-side enums.
    let mut q = d.query().await;
    let err =
        q.search_logs(pb::SearchLogsRequest { min_level: 77, ..Default::default() }).await.expect_err("unknown level");
    assert!(err.message().contains("min_level") && err.message().contains("77"), "{}", err.message());
    let err = q
        .list_series(pb::ListSeriesRequest {
            matchers: vec![pb::Matcher { name: "__name__".into(), op: 9, value: "m_ok".into() }],
            ..Default::default()
        })
        .await
        .expect_err("unknown match op");
    assert!(err.message().contains("matchers[0].op 9"), "{}", err.message());

    // The daemon-wide series limit (a client names its own service, so per service is not enough).
    let three: Vec<pb::Series> = (0..3).map(|i| series(&format!("m_g{i}"), &[], vec![now], vec![1.0])).collect();
    let (err, acks) = push_rejected(&mut c, metrics("q", three)).await;
    assert!(err.message().contains("limits.max_series = 3"), "{}", err.message());
    assert_eq!(acks.metrics.unwrap().accepted, 2, "m_ok exists: two more fit");

    // A batch whose stored form grows past limits.max_batch_bytes (validation copies the
    // service into every record): refused whole, with the key named.
    let records: Vec<pb::LogRecord> =
        (0..20_000).map(|_| pb::LogRecord { message: String::new(), ..Default::default() }).collect();
    let (err, acks) = push_rejected(
        &mut c,
        pb::PushRequest {
            logs: Some(pb::LogBatch { service: "s".repeat(100), records, ..Default::default() }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("limits.max_batch_bytes = 1048576"), "{}", err.message());
    assert_eq!(acks.logs.unwrap().rejected_count, 20_000);
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_arrive_in_order_before_the_error_that_ends_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[("MODELWATCH__LIMITS__MAX_MESSAGE_BYTES", "65536")]);
    let mut c = d.ingest().await;
    let now = now_ms();
    let small = |seq: u64| pb::MetricBatch {
        client_id: "order".into(),
        seq,
        service: "o".into(),
        series: vec![series("m_order", &[], vec![now - 1000 + seq as i64], vec![1.0])],
        ..Default::default()
    };
    // 50 small batches, then one too large: the 50 acks first, in order, then the error.
    let mut batches: Vec<pb::MetricBatch> = (1..=50).map(small).collect();
    let ts: Vec<i64> = (0..10_000).map(|i| now - 100_000 + i).collect();
    batches.push(pb::MetricBatch { series: vec![series("m_big", &[], ts.clone(), vec![1.5; ts.len()])], ..small(51) });
    let mut resp = c.stream_metrics(tokio_stream::iter(batches)).await.unwrap().into_inner();
    for seq in 1..=50u64 {
        let ack = resp.message().await.unwrap_or_else(|e| panic!("ack {seq} overtaken by {e:?}")).expect("ack");
        assert_eq!(ack.seq, seq);
    }
    let err = resp.message().await.expect_err("then the error");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);

    // The log and event streams too, with messages that span several HTTP/2 data frames
    // (16 KiB each): read whole, acked, then the one over the limit refused.
    let logs = |seq: u64, n: usize| pb::LogBatch {
        client_id: "frames".into(),
        seq,
        service: "f".into(),
        records: (0..n)
            .map(|k| pb::LogRecord {
                timestamp_ms: now - 1000,
                message: format!("record {k} of batch {seq}: {}", "y".repeat(60)),
                request_id: format!("L{seq}-{k}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let events = |seq: u64, n: usize| pb::EventBatch {
        client_id: "frames".into(),
        seq,
        service: "f".into(),
        events: (0..n)
            .map(|k| pb::InferenceEvent {
                timestamp_ms: now - 1000,
                model: "m".repeat(40),
                latency_us: 1000 + k as u64,
                request_id: format!("E{seq}-{k}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let (l, e) =
        ([logs(1, 400), logs(2, 450), logs(3, 10), logs(4, 900)], [events(1, 500), events(2, 10), events(3, 1200)]);
    assert!(l[1].encoded_len() > 2 * 16384 && l[1].encoded_len() < 65536, "{}", l[1].encoded_len());
    assert!(e[0].encoded_len() > 16384 && e[0].encoded_len() < 65536 && e[2].encoded_len() > 65536);
    let limit_error = |err: tonic::Status, len: usize| {
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(err.message(), format!("message of {len} bytes exceeds limits.max_message_bytes = 65536"));
    };
    let big_log = l[3].encoded_len();
    let mut resp = c.stream_logs(tokio_stream::iter(l)).await.unwrap().into_inner();
    for (seq, n) in [(1, 400), (2, 450), (3, 10)] {
        let ack = resp.message().await.unwrap().expect("ack");
        assert_eq!((ack.seq, ack.accepted), (seq, n));
    }
    limit_error(resp.message().await.expect_err("then the error"), big_log);
    let big_event = e[2].encoded_len();
    let mut resp = c.stream_events(tokio_stream::iter(e)).await.unwrap().into_inner();
    for (seq, n) in [(1, 500), (2, 10)] {
        let ack = resp.message().await.unwrap().expect("ack");
        assert_eq!((ack.seq, ack.accepted), (seq, n));
    }
    limit_error(resp.message().await.expect_err("then the error"), big_event);
    // What was acked reads back as sent.
    let mut q = d.query().await;
    let got = q.get_request(pb::GetRequestRequest { request_id: "L2-449".into() }).await.unwrap().into_inner();
    assert_eq!(got.logs.len(), 1);
    assert_eq!(got.logs[0].message, format!("record 449 of batch 2: {}", "y".repeat(60)));
    let got = q.get_request(pb::GetRequestRequest { request_id: "E1-499".into() }).await.unwrap().into_inner();
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].latency_us, 1499);
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_is_bounded_and_says_by_which_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MODELWATCH__QUERY__MAX_SERIES", "3"),
        ("MODELWATCH__QUERY__MAX_SAMPLES", "1000"),
        ("MODELWATCH__QUERY__MAX_POINTS", "500"),
    ];
    let d = Daemon::start(dir.path(), &env);
    let mut c = d.ingest().await;
    let now = now_ms();
    let four: Vec<pb::Series> = (0..4)
        .map(|i| series("m_q", &[("i", &i.to_string())], (0..400).map(|t| now - 400 + t).collect(), vec![1.0; 400]))
        .collect();
    push_metrics(&mut c, "q", four).await;
    let mut q = d.query().await;
    let range = |sel: &str, last: &str, step: &str| pb::QueryRangeRequest {
        selector: sel.into(),
        range: range_last(last),
        step: step.into(),
        aggregation: pb::Aggregation::Count as i32,
        ..Default::default()
    };
    let code_msg = |e: tonic::Status| (e.code(), e.message().to_string());

    let (code, msg) = code_msg(q.query_range(range("m_q", "1h", "1h")).await.unwrap_err());
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert!(msg.contains("4 series") && msg.contains("query.max_series = 3"), "{msg}");
    let (code, msg) = code_msg(q.query_range(range(r#"m_q{i=~"0|1|2"}"#, "1h", "1h")).await.unwrap_err());
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert!(msg.contains("query.max_samples = 1000"), "{msg}");
    let (code, msg) = code_msg(q.query_range(range(r#"m_q{i="0"}"#, "1h", "1s")).await.unwrap_err());
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert!(msg.contains("query.max_points = 500"), "{msg}");
    let ok = q.query_range(range(r#"m_q{i=~"0|1"}"#, "1h", "1h")).await.unwrap().into_inner();
    assert_eq!(ok.series.len(), 2);
    // A range that would wrap milliseconds, and a time with an offset.
    let (code, msg) = code_msg(q.query_range(range("m_q", "300000000y", "1h")).await.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(msg.contains("range.last") && msg.contains("100 years"), "{msg}");
    let mut r = range(r#"m_q{i="0"}"#, "", "2h");
    r.range = Some(pb::TimeRange {
        start: "2020-01-01T01:00:00+01:00".into(),
        end: "2020-01-01T01:30:00+01:00".into(),
        ..Default::default()
    });
    q.query_range(r).await.expect("RFC 3339 with an offset");
    // ListSeries: its limit is capped too.
    let err = q.list_series(pb::ListSeriesRequest { selector: "m_q".into(), limit: 50, ..Default::default() }).await;
    assert!(err.unwrap_err().message().contains("query.max_series = 3"));
    let ls = q.list_series(pb::ListSeriesRequest { selector: "m_q".into(), ..Default::default() }).await.unwrap();
    let ls = ls.into_inner();
    assert!(ls.truncated && ls.series.len() == 3, "{ls:?}");
    d.stop_ok();
}

/// `limits.ingest_inflight_bytes`: a client that streams without waiting for acks is held back
/// (the daemon stops reading until acks free room) rather than buffered; a message larger than
/// the whole budget still goes through, alone; every batch is acked and stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_bytes_are_bounded_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[("MODELWATCH__LIMITS__INGEST_INFLIGHT_BYTES", "16384")]);
    let now = now_ms();
    const BATCHES: u64 = 60;
    const PER: usize = 2_000; // ~20 KB encoded: each batch alone is above the 16 KiB budget
    let batch = |seq: u64| pb::MetricBatch {
        client_id: "flood".into(),
        seq,
        service: "f".into(),
        series: vec![series(
            "m_inflight",
            &[("part", &format!("{}", seq % 3))],
            (0..PER).map(|i| now - 600_000 + (seq as i64) * 5_000 + i as i64).collect(),
            (0..PER).map(|i| i as f64 * 0.25).collect(),
        )],
        ..Default::default()
    };
    let small = |seq: u64| pb::MetricBatch {
        series: vec![series("m_inflight_small", &[], vec![now - 1000 + seq as i64], vec![1.0])],
        ..batch(seq)
    };
    // Interleaved: big ones that each take the whole budget, small ones between them.
    let batches: Vec<pb::MetricBatch> = (1..=BATCHES).map(|s| if s % 2 == 0 { small(s) } else { batch(s) }).collect();
    let mut c = d.ingest().await;
    let mut resp = c.stream_metrics(tokio_stream::iter(batches)).await.unwrap().into_inner();
    let mut accepted = 0;
    for seq in 1..=BATCHES {
        let ack = resp.message().await.unwrap().expect("an ack for every batch");
        assert_eq!((ack.seq, ack.rejected_count), (seq, 0));
        accepted += ack.accepted;
    }
    assert_eq!(accepted, BATCHES / 2 * PER as u64 + BATCHES / 2);
    assert_eq!(count(&d, "m_inflight").await, BATCHES as usize / 2 * PER);
    let mut q = d.query().await;
    let r = q
        .eval(pb::EvalRequest {
            query: "sum(count_over_time(m_inflight[1h])) + sum(count_over_time(m_inflight_small[1h]))".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.series[0].points[0].value as u64, accepted);
    let metrics = reqwest::get(format!("http://{}/metrics", d.http_addr)).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("modelwatch_ingest_inflight_waits_total") >= 1.0, "the stream was never held back");
    assert_eq!(value("modelwatch_ingest_inflight_bytes"), 0.0, "room is given back with each ack");
    d.stop_ok();
}
