//! Push each kind to the real daemon and query it back, checking the numbers.
mod common;
use common::*;
use modelwatch::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_round_trip_with_matchers_and_aggregations() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let mut ing = d.ingest().await;
    let t0 = (now_ms() - 600_000) / 1000 * 1000;
    // 3 GPU series over 60 s at 1 s, values known; one latency series; one counter with a reset.
    let mut batches = Vec::new();
    for seq in 1..=6u64 {
        let mut s = Vec::new();
        for gpu in 0..3 {
            let ts: Vec<i64> = (0..10).map(|i| t0 + ((seq as i64 - 1) * 10 + i) * 1000).collect();
            let vals: Vec<f64> = ts.iter().map(|t| ((t - t0) / 1000) as f64 + gpu as f64 * 100.0).collect();
            s.push(series(
                "gpu_utilization",
                &[("gpu", &gpu.to_string()), ("host", if gpu == 2 { "b" } else { "a" })],
                ts,
                vals,
            ));
        }
        let ts: Vec<i64> = (0..10).map(|i| t0 + ((seq as i64 - 1) * 10 + i) * 1000).collect();
        let mut ctr = series(
            "requests_total",
            &[("model", "m1")],
            ts.clone(),
            ts.iter()
                .map(|t| {
                    let i = (t - t0) / 1000;
                    (if i < 30 { i * 2 } else { (i - 30) * 2 }) as f64
                })
                .collect(),
        );
        ctr.kind = pb::MetricKind::Counter as i32;
        s.push(ctr);
        batches.push(pb::MetricBatch {
            client_id: "svc-a/1".into(),
            seq,
            service: "svc-a".into(),
            series: s,
            ..Default::default()
        });
    }
    let acks = stream_metrics(&mut ing, batches).await;
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(a.seq, i as u64 + 1);
        assert_eq!(a.acked_seq, i as u64 + 1);
        assert_eq!(a.accepted, 40, "{a:?}");
        assert_eq!(a.rejected_count, 0);
    }

    let mut q = d.query().await;
    let list = |sel: &str| pb::ListSeriesRequest { selector: sel.into(), ..Default::default() };
    let names = |r: pb::ListSeriesResponse| -> Vec<String> {
        r.series.iter().map(|s| format!("{}{:?}", s.name, s.labels.get("gpu"))).collect()
    };
    let all = q.list_series(list("gpu_utilization")).await.unwrap().into_inner();
    assert_eq!(all.series.len(), 3);
    assert_eq!(all.series[0].labels.get("service").map(String::as_str), Some("svc-a"), "service label added");
    let r = q.list_series(list(r#"gpu_utilization{host="a"}"#)).await.unwrap().into_inner();
    assert_eq!(
        names(r),
        vec!["gpu_utilization Some(\"0\")".replace(' ', ""), "gpu_utilization Some(\"1\")".replace(' ', "")]
    );
    let r = q.list_series(list(r#"gpu_utilization{gpu=~"1|2"}"#)).await.unwrap().into_inner();
    assert_eq!(r.series.len(), 2);
    let r = q.list_series(list(r#"gpu_utilization{host!="a"}"#)).await.unwrap().into_inner();
    assert_eq!(r.series.len(), 1);
    let r = q.list_series(list(r#"gpu_utilization{gpu!~"0|1"}"#)).await.unwrap().into_inner();
    assert_eq!(r.series[0].labels["gpu"], "2");
    let r = q
        .list_series(pb::ListSeriesRequest {
            matchers: vec![pb::Matcher { name: "model".into(), op: pb::MatchOp::Eq as i32, value: "m1".into() }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.series[0].name, "requests_total");
    let err = q.list_series(list(r#"gpu{a="1"#)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("selector"), "{}", err.message());

    // One window over the whole minute: gpu 0 has values 0..59.
    let range = Some(pb::TimeRange {
        start: modelwatch::query::fmt_ms(t0),
        end: modelwatch::query::fmt_ms(t0 + 59_000),
        ..Default::default()
    });
    let qr = |sel: &str, agg: pb::Aggregation, step: &str| pb::QueryRangeRequest {
        selector: sel.into(),
        range: range.clone(),
        step: step.into(),
        aggregation: agg as i32,
        ..Default::default()
    };
    let one = |r: pb::QueryRangeResponse| -> Vec<f64> {
        r.series.iter().map(|s| s.points.iter().map(|p| p.value).sum::<f64>()).collect()
    };
    let r = q.query_range(qr(r#"gpu_utilization{gpu="0"}"#, pb::Aggregation::Avg, "10s")).await.unwrap().into_inner();
    // windows [t0, t0+10s), [t0+10s, t0+20s), ...: 0..9 | 10..19 | ... | 50..59
    let ms = |t: &Option<prost_types::Timestamp>| {
        t.as_ref().map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
    };
    let pts: Vec<(i64, f64)> = r.series[0].points.iter().map(|p| ((ms(&p.time) - t0) / 1000, p.value)).collect();
    assert_eq!(r.step.as_ref().map(|d| d.seconds), Some(10), "the step as a Duration");
    assert_eq!(pts, vec![(0, 4.5), (10, 14.5), (20, 24.5), (30, 34.5), (40, 44.5), (50, 54.5)]);
    let r = q.query_range(qr(r#"gpu_utilization{gpu="0"}"#, pb::Aggregation::Count, "1h")).await.unwrap().into_inner();
    assert_eq!(one(r), vec![60.0]);
    let r = q.query_range(qr(r#"gpu_utilization"#, pb::Aggregation::Max, "1h")).await.unwrap().into_inner();
    assert_eq!(one(r), vec![59.0, 159.0, 259.0]);
    let mut req = qr(r#"gpu_utilization"#, pb::Aggregation::Max, "1h");
    req.group_by = vec!["host".into()];
    let r = q.query_range(req).await.unwrap().into_inner();
    let mut got: Vec<(String, f64)> = r.series.iter().map(|s| (s.labels["host"].clone(), s.points[0].value)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, vec![("a".into(), 159.0), ("b".into(), 259.0)]);
    let mut req = qr(r#"gpu_utilization{host="a"}"#, pb::Aggregation::Quantile, "1h");
    req.quantile = 0.5;
    req.combine = true;
    let r = q.query_range(req).await.unwrap().into_inner();
    assert_eq!(one(r), vec![79.5], "median of 0..59 and 100..159");
    // counter: +2/s for 30 s, reset to 0, then +2/s: rate 2/s (the reset sample itself counts as
    // an increase of 0 from a restart)
    let r = q.query_range(qr("requests_total", pb::Aggregation::Rate, "1h")).await.unwrap().into_inner();
    let rate = one(r)[0];
    assert!((rate - 2.0 * 58.0 / 59.0).abs() < 1e-9, "rate {rate}");
    let r = q.query_range(qr("requests_total", pb::Aggregation::Last, "1h")).await.unwrap().into_inner();
    assert_eq!(one(r), vec![58.0]);
    let err = q.query_range(qr("gpu_utilization", pb::Aggregation::Avg, "0ms")).await.unwrap_err();
    assert!(err.message().contains("step"), "{}", err.message());
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_stats_from_hdr_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let mut ing = d.ingest().await;
    let now = now_ms();
    // 10,000 known latencies: 1 ms .. 10,000 ms (in µs), two models; 1 in 20 fails.
    let mut batches = Vec::new();
    for b in 0..10u64 {
        let events = (0..1000u64)
            .map(|i| {
                let n = b * 1000 + i + 1;
                let failed = n % 20 == 0;
                pb::InferenceEvent {
                    timestamp_ms: now - 60_000 + (n as i64 % 50) * 1000,
                    model: if n % 2 == 0 { "mgeo".into() } else { "card-detector".into() },
                    model_version: "v3".into(),
                    endpoint: "/predict".into(),
                    request_id: format!("req-{n}"),
                    status: if failed { pb::Status::Error as i32 } else { pb::Status::Ok as i32 },
                    error_type: if failed { "CudaOOM".into() } else { String::new() },
                    latency_us: n * 1000,
                    stages: Some(pb::Stages { queue_us: 500, inference_us: n * 900, ..Default::default() }),
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    labels: [("card_type".to_string(), "id_card".to_string())].into(),
                    ..Default::default()
                }
            })
            .collect();
        batches.push(pb::EventBatch {
            client_id: "svc/1".into(),
            seq: b + 1,
            service: "ocr".into(),
            events,
            ..Default::default()
        });
    }
    let acks = stream_events(&mut ing, batches).await;
    assert!(acks.iter().all(|a| a.accepted == 1000 && a.rejected_count == 0), "{acks:?}");

    let mut q = d.query().await;
    let stats = q
        .inference_stats(pb::InferenceStatsRequest {
            service: "ocr".into(),
            range: range_last("1h"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.groups.len(), 1);
    let t = stats.groups[0].total.clone().unwrap();
    assert_eq!(t.count, 10_000);
    assert_eq!(t.by_status["ok"], 9_500);
    assert_eq!(t.by_status["error"], 500);
    assert_eq!(t.by_error_type["CudaOOM"], 500);
    assert!((t.error_rate - 0.05).abs() < 1e-12);
    assert_eq!(t.prompt_tokens, 100_000);
    let lat = t.latency.unwrap();
    let within = |got: f64, want: f64| (got - want).abs() / want <= 0.01;
    assert!(within(lat.p95_ms, 9_500.0), "p95 {}", lat.p95_ms);
    assert!(within(lat.p50_ms, 5_000.0), "p50 {}", lat.p50_ms);
    assert!(within(lat.p99_ms, 9_900.0), "p99 {}", lat.p99_ms);
    assert!(within(lat.max_ms, 10_000.0), "max {}", lat.max_ms);
    assert!((lat.mean_ms - 5_000.5).abs() < 1e-9, "mean is exact: {}", lat.mean_ms);
    let inf = &t.stages["inference"];
    assert!(within(inf.p95_ms, 8_550.0), "inference p95 {}", inf.p95_ms);
    assert!(within(t.stages["queue"].p50_ms, 0.5));
    assert!(!t.stages.contains_key("preprocess"), "unmeasured stages are absent");

    let by_model = q
        .inference_stats(pb::InferenceStatsRequest {
            range: range_last("1h"),
            group_by: vec!["model".into()],
            step: "1m".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_model.groups.len(), 2);
    for g in &by_model.groups {
        let total = g.total.as_ref().unwrap();
        assert_eq!(total.count, 5_000, "{:?}", g.key);
        assert_eq!(g.steps.iter().map(|s| s.count).sum::<u64>(), 5_000);
        if g.key["model"] == "mgeo" {
            assert_eq!(total.by_status["error"], 500, "every 20th is even");
        }
    }
    let none = q
        .inference_stats(pb::InferenceStatsRequest {
            model: "nope".into(),
            range: range_last("1h"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.groups.is_empty());
    let err = q
        .inference_stats(pb::InferenceStatsRequest { group_by: vec!["colour".into()], ..Default::default() })
        .await
        .unwrap_err();
    assert!(err.message().contains("colour"), "{}", err.message());

    // GetRequest finds the raw event
    let got = q.get_request(pb::GetRequestRequest { request_id: "req-40".into() }).await.unwrap().into_inner();
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].error_type, "CudaOOM");
    assert_eq!(got.events[0].labels["card_type"], "id_card");
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_search_paging_and_request_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let mut ing = d.ingest().await;
    let now = now_ms();
    let records: Vec<pb::LogRecord> = (0..250)
        .map(|i| pb::LogRecord {
            timestamp_ms: now - 100_000 + i * 100,
            level: [pb::Level::Debug, pb::Level::Info, pb::Level::Warn, pb::Level::Error, pb::Level::Info]
                [i as usize % 5] as i32,
            message: format!("request {i} {}", if i % 10 == 0 { "slow path" } else { "done" }),
            request_id: format!("r{}", i % 50),
            fields: [("shard".to_string(), (i % 3).to_string())].into(),
            ..Default::default()
        })
        .collect();
    let acks = stream_logs(&mut ing, vec![pb::LogBatch { service: "api".into(), records, ..Default::default() }]).await;
    assert_eq!(acks[0].accepted, 250);
    // an inference event sharing a request id
    let ev = pb::EventBatch {
        service: "api".into(),
        events: vec![pb::InferenceEvent {
            model: "m".into(),
            request_id: "r7".into(),
            latency_us: 10,
            ..Default::default()
        }],
        ..Default::default()
    };
    ing.push(pb::PushRequest { events: Some(ev), ..Default::default() }).await.unwrap();

    let mut q = d.query().await;
    let search = |f: &dyn Fn(&mut pb::SearchLogsRequest)| {
        let mut r = pb::SearchLogsRequest { range: range_last("1h"), ..Default::default() };
        f(&mut r);
        r
    };
    let r = q.search_logs(search(&|r| r.request_id = "r7".into())).await.unwrap().into_inner();
    assert_eq!(r.records.len(), 5);
    assert!(r.records.windows(2).all(|w| w[0].timestamp_ms > w[1].timestamp_ms), "newest first");
    assert!(r.records.iter().all(|x| x.service == "api" && x.request_id == "r7"));
    let r = q.search_logs(search(&|r| r.min_level = pb::Level::Error as i32)).await.unwrap().into_inner();
    assert_eq!(r.records.len(), 50);
    let r = q.search_logs(search(&|r| r.contains = "slow path".into())).await.unwrap().into_inner();
    assert_eq!(r.records.len(), 25);
    assert_eq!(r.records[0].message, "request 240 slow path");
    // paging: 250 records in pages of 100
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let t = token.clone();
        let r = q
            .search_logs(search(&move |r| {
                r.limit = 100;
                r.page_token = t.clone();
            }))
            .await
            .unwrap()
            .into_inner();
        seen.extend(r.records.iter().map(|x| x.message.clone()));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(seen.len(), 250);
    seen.dedup();
    assert_eq!(seen.len(), 250, "no record twice across pages");
    let err = q.search_logs(search(&|r| r.page_token = "zz".into())).await.unwrap_err();
    assert!(err.message().contains("page_token"));

    let got = q.get_request(pb::GetRequestRequest { request_id: "r7".into() }).await.unwrap().into_inner();
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.logs.len(), 5);
    assert_eq!(got.logs[0].fields["shard"], "1");

    let st = q.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.logs, 250);
    assert_eq!(st.events, 1);
    assert!(st.disk_bytes > 0);
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_dedup_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let mut ing = d.ingest().await;
    let reg = ing
        .register(pb::RegisterRequest {
            service: "ocr".into(),
            instance: "i-1".into(),
            host: "h".into(),
            pid: 4242,
            models: vec![pb::ModelRef { name: "mgeo".into(), version: "3".into() }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reg.client_id, "ocr/i-1/h/4242");
    assert_eq!(reg.last_metrics_seq, 0);
    let now = now_ms();
    let batch = |seq: u64, t: i64| pb::MetricBatch {
        client_id: reg.client_id.clone(),
        seq,
        service: "ocr".into(),
        series: vec![series("queue_depth", &[], vec![t], vec![seq as f64])],
        ..Default::default()
    };
    let acks = stream_metrics(
        &mut ing,
        vec![
            batch(1, now - 3000),
            batch(2, now - 2000),
            batch(2, now - 2000),
            batch(1, now - 3000),
            batch(3, now - 1000),
        ],
    )
    .await;
    let dup: Vec<bool> = acks.iter().map(|a| a.duplicate).collect();
    assert_eq!(dup, vec![false, false, true, true, false]);
    assert_eq!(acks[3].acked_seq, 2);
    assert_eq!(acks[2].accepted, 0);
    let mut q = d.query().await;
    let r = q
        .query_range(pb::QueryRangeRequest {
            selector: "queue_depth".into(),
            range: range_last("1m"),
            step: "1h".into(),
            aggregation: pb::Aggregation::Count as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.series[0].points[0].value, 3.0, "resent batches stored once");
    let again = ing
        .register(pb::RegisterRequest {
            service: "ocr".into(),
            instance: "i-1".into(),
            host: "h".into(),
            pid: 4242,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.last_metrics_seq, 3, "a reconnecting client learns what the daemon holds");
    let st = q.status(pb::StatusRequest {}).await.unwrap().into_inner();
    let svc = st.services.iter().find(|s| s.client_id == reg.client_id).expect("registered service listed");
    assert_eq!(svc.pid, 4242);
    let seen = svc.last_seen_at.as_ref().expect("last seen as a Timestamp").seconds;
    assert!((seen - now_ms() / 1000).abs() < 600, "{seen}");
    assert_eq!(st.series, 1);
    assert_eq!(st.samples, 3);
    d.stop_ok();
}
