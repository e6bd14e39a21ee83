//! PromQL end to end on the real daemon: `Query/Eval` and `Query/EvalRange` over gRPC, the
//! Prometheus HTTP API as Grafana's data source calls it, `modelwatch query`, the derived
//! inference and log series (with the exact HDR quantile path), and the query limits.
mod common;
use common::*;
use modelwatch::pb;

/// Pushes: two counters (10 s apart, +2 and +3 per sample), a gauge, 600 inference events over
/// the last 5 minutes with known latencies, and 30 error logs.
async fn load(d: &Daemon, t0: i64) {
    let mut ing = d.ingest().await;
    let ts: Vec<i64> = (0..60).map(|i| t0 + i * 10_000).collect();
    let mut a = series("req_total", &[("model", "a")], ts.clone(), (0..60).map(|i| (i * 2) as f64).collect());
    a.kind = pb::MetricKind::Counter as i32;
    let mut b = series("req_total", &[("model", "b")], ts.clone(), (0..60).map(|i| (i * 3) as f64).collect());
    b.kind = pb::MetricKind::Counter as i32;
    let g = series("gpu_util", &[("gpu", "0")], ts.clone(), (0..60).map(|i| (i % 7) as f64 * 10.0).collect());
    let ack = push_metrics(&mut ing, "svc", vec![a, b, g]).await;
    assert!(ack.rejections.is_empty(), "{ack:?}");
    // Events: latency 1..=600 ms, one per 500 ms over the 5 minutes before t0 + 590 s.
    let end = t0 + 590_000;
    let events: Vec<pb::InferenceEvent> = (0..600u64)
        .map(|n| pb::InferenceEvent {
            timestamp_ms: end - 300_000 + n as i64 * 500,
            model: if n % 2 == 0 { "mgeo".into() } else { "ocr".into() },
            request_id: format!("r{n}"),
            status: if n % 10 == 0 { pb::Status::Error as i32 } else { pb::Status::Ok as i32 },
            error_type: if n % 10 == 0 { "CudaOOM".into() } else { String::new() },
            latency_us: (n + 1) * 1000,
            prompt_tokens: 7,
            ..Default::default()
        })
        .collect();
    let acks =
        stream_events(&mut ing, vec![pb::EventBatch { service: "svc".into(), events, ..Default::default() }]).await;
    assert!(acks[0].rejections.is_empty(), "{:?}", acks[0]);
    let logs: Vec<pb::LogRecord> = (0..30)
        .map(|n| pb::LogRecord {
            timestamp_ms: end - 200_000 + n * 1000,
            level: pb::Level::Error as i32,
            message: "boom".into(),
            error_type: "CudaOOM".into(),
            ..Default::default()
        })
        .collect();
    stream_logs(&mut ing, vec![pb::LogBatch { service: "svc".into(), records: logs, ..Default::default() }]).await;
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test]
async fn promql_over_grpc_http_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    // Whole 10 s, ten minutes ago, so every window below lies in the past.
    let t0 = (now_ms() - 620_000) / 10_000 * 10_000;
    load(&d, t0).await;
    let at = t0 + 590_000; // the last sample
    let at_s = format!("{}", at as f64 / 1000.0);
    let mut q = d.query().await;

    // gRPC instant: rate over 5 m of counters growing 2 and 3 per 10 s.
    let r = q
        .eval(pb::EvalRequest { query: "sum by (model) (rate(req_total[5m]))".into(), time: at_s.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.result_type, "vector");
    let mut got: Vec<(String, f64)> = r.series.iter().map(|s| (s.labels["model"].clone(), s.points[0].value)).collect();
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(got.len(), 2, "{r:?}");
    assert!(close(got[0].1, 0.2) && close(got[1].1, 0.3), "{got:?}");

    // gRPC range: 11 steps of 30 s; a scalar answer; a parse error names the query.
    let rr = q
        .eval_range(pb::EvalRangeRequest {
            query: "max(gpu_util)".into(),
            range: Some(pb::TimeRange {
                start: format!("{}", (at - 300_000) as f64 / 1000.0),
                end: at_s.clone(),
                ..Default::default()
            }),
            step: "30s".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rr.result_type, "matrix");
    assert_eq!(rr.series.len(), 1);
    assert_eq!(rr.series[0].points.len(), 11);
    let sc = q.eval(pb::EvalRequest { query: "2 * 21".into(), time: at_s.clone() }).await.unwrap().into_inner();
    assert_eq!((sc.result_type.as_str(), sc.scalar.unwrap().value), ("scalar", 42.0));
    let err = q.eval(pb::EvalRequest { query: "sum(".into(), time: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("query: parse error"), "{}", err.message());

    // Derived series: requests and errors over the 5 minutes of events (bucket resolution).
    let q0 = q.clone();
    let ev = |query: &str| {
        let mut q = q0.clone();
        let query = query.to_string();
        let at_s = at_s.clone();
        async move { q.eval(pb::EvalRequest { query, time: at_s }).await.unwrap().into_inner() }
    };
    let total = ev("sum(increase(modelwatch_inference_requests_total[10m]))").await;
    let v = total.series[0].points[0].value;
    assert!((v - 600.0).abs() < 1e-6, "increase over all events: {v}");
    let errs = ev(r#"sum(increase(modelwatch_inference_requests_total{status="error"}[10m]))"#).await;
    assert!((errs.series[0].points[0].value - 60.0).abs() < 1e-6, "{errs:?}");
    let by_type = ev(r#"sum by (error_type) (increase(modelwatch_inference_errors_total[10m]))"#).await;
    assert_eq!(by_type.series[0].labels["error_type"], "CudaOOM");
    let logs = ev(r#"sum(increase(modelwatch_log_records_total{level="error"}[10m]))"#).await;
    assert!((logs.series[0].points[0].value - 30.0).abs() < 1e-6, "{logs:?}");

    // The exact path: p95 from the merged HDR histograms equals InferenceStats' p95.
    let stats = q
        .inference_stats(pb::InferenceStatsRequest {
            model: "mgeo".into(),
            range: Some(pb::TimeRange {
                start: format!("{}", (at - 600_000) as f64 / 1000.0),
                end: at_s.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let p95_ms = stats.groups[0].total.as_ref().unwrap().latency.as_ref().unwrap().p95_ms;
    let hq =
        ev("histogram_quantile(0.95, sum by (model, le) (rate(modelwatch_inference_latency_seconds_bucket[10m])))")
            .await;
    let mgeo = hq.series.iter().find(|s| s.labels.get("model").map(String::as_str) == Some("mgeo")).expect("mgeo p95");
    assert!(
        close(mgeo.points[0].value * 1000.0, p95_ms),
        "PromQL p95 {} s vs InferenceStats {p95_ms} ms",
        mgeo.points[0].value
    );
    // Without the exact path (a `le` matcher), the documented buckets answer within a bucket.
    let coarse = ev(r#"histogram_quantile(0.95, sum by (le) (rate(modelwatch_inference_latency_seconds_bucket{model="mgeo", le=~".+"}[10m])))"#).await;
    let c = coarse.series[0].points[0].value;
    assert!(c > 0.5 && c <= 1.0, "coarse p95 {c} lies in the (0.5, 1] bucket");

    // HTTP, as Grafana's Prometheus data source calls it.
    let h = &d.http_addr;
    let (st, v) = http(h, "GET", "/api/v1/status/buildinfo", None);
    assert_eq!((st, v["status"].as_str()), (200, Some("success")));
    let (st, v) = http(h, "GET", &format!("/api/v1/query?query={}&time={at_s}", enc("1+1")), None);
    assert_eq!(st, 200);
    assert_eq!(v["data"]["resultType"], "scalar");
    assert_eq!(v["data"]["result"][1], "2");
    let form = format!(
        "query={}&start={}&end={at_s}&step=60",
        enc("sum by (model) (rate(req_total[5m]))"),
        (at - 240_000) / 1000
    );
    let (st, v) = http(h, "POST", "/api/v1/query_range", Some(&form));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    assert_eq!(result[0]["values"].as_array().unwrap().len(), 5);
    let (st, v) = http(h, "POST", "/api/v1/query", Some(&format!("query={}&time={at_s}", enc("gpu_util"))));
    assert_eq!(st, 200);
    assert_eq!(v["data"]["result"][0]["metric"]["__name__"], "gpu_util");
    assert_eq!(v["data"]["result"][0]["metric"]["service"], "svc");
    let (_, v) = http(h, "GET", "/api/v1/labels", None);
    let names: Vec<&str> = v["data"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert!(names.contains(&"__name__") && names.contains(&"model") && names.contains(&"gpu"), "{names:?}");
    let (_, v) = http(h, "GET", "/api/v1/label/__name__/values", None);
    let names: Vec<&str> = v["data"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert!(names.contains(&"req_total") && names.contains(&"modelwatch_inference_requests_total"), "{names:?}");
    let (_, v) = http(h, "GET", &format!("/api/v1/series?match[]={}", enc(r#"req_total{model="a"}"#)), None);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let (_, v) = http(h, "GET", "/api/v1/metadata", None);
    assert_eq!(v["data"]["req_total"][0]["type"], "counter");
    assert_eq!(v["data"]["modelwatch_inference_latency_seconds"][0]["type"], "histogram");
    let (_, v) = http(h, "POST", "/api/v1/query_exemplars", Some("query=req_total"));
    assert_eq!(v["status"], "success");
    // Errors in Prometheus' format.
    let (st, v) = http(h, "GET", &format!("/api/v1/query?query={}", enc("sum(")), None);
    assert_eq!((st, v["status"].as_str(), v["errorType"].as_str()), (400, Some("error"), Some("bad_data")));
    let (st, v) = http(h, "GET", "/api/v1/query_range?query=up&start=10&end=5&step=1", None);
    assert_eq!(st, 400, "{v}");
    let (st, v) = http(h, "GET", &format!("/api/v1/query?query={}", enc("req_total[5m] + 1")), None);
    assert_eq!((st, v["errorType"].as_str()), (400, Some("bad_data")), "{v}");

    // The CLI, a client of Query/Eval.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["query", "sum by (model) (rate(req_total[5m]))", "--at", &at_s, "--addr", &d.addr])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(r#"{model="a"}"#) && text.contains("0.2"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args([
            "query",
            "max(gpu_util)",
            "--start",
            &format!("{}", (at - 60_000) / 1000),
            "--end",
            &at_s,
            "--step",
            "30s",
            "--json",
            "--addr",
            &d.addr,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["resultType"], "matrix");
    assert_eq!(v["result"][0]["values"].as_array().unwrap().len(), 3);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["query", "sum(", "--addr", &d.addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("parse error"));
    d.stop_ok();
}

#[tokio::test]
async fn promql_queries_are_bounded_and_say_which_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &[("MODELWATCH__QUERY__MAX_SAMPLES", "100"), ("MODELWATCH__QUERY__MAX_POINTS", "50")],
    );
    let t0 = (now_ms() - 620_000) / 10_000 * 10_000;
    load(&d, t0).await;
    let at_s = format!("{}", (t0 + 590_000) as f64 / 1000.0);
    let mut q = d.query().await;
    let e = q
        .eval(pb::EvalRequest { query: "sum_over_time(req_total[10m])".into(), time: at_s.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("query.max_samples = 100"), "{}", e.message());
    let e = q
        .eval_range(pb::EvalRangeRequest { query: "1".into(), range: range_last("1h"), step: "1s".into() })
        .await
        .unwrap_err();
    assert!(e.message().contains("query.max_points = 50"), "{}", e.message());
    // Each series' 31 points fit, the answer's 62 do not; one series alone answers.
    let two = r#"vector(1) or label_replace(vector(2), "b", "x", "", "")"#;
    let range2m =
        |query: &str| pb::EvalRangeRequest { query: query.into(), range: range_last("1h"), step: "2m".into() };
    let e = q.eval_range(range2m(two)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(
        e.message().contains("answer would hold") && e.message().contains("query.max_points = 50"),
        "{}",
        e.message()
    );
    let one = q.eval_range(range2m("vector(1)")).await.unwrap().into_inner();
    assert_eq!(one.series.len(), 1);
    let (st, v) = http(
        &d.http_addr,
        "GET",
        &format!("/api/v1/query?query={}&time={at_s}", enc("sum_over_time(req_total[10m])")),
        None,
    );
    assert_eq!((st, v["errorType"].as_str()), (422, Some("execution")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("query.max_samples"));
    // Valid queries beside them still answer.
    let ok = q.eval(pb::EvalRequest { query: "count(gpu_util)".into(), time: at_s }).await.unwrap().into_inner();
    assert_eq!(ok.series[0].points[0].value, 1.0);
    d.stop_ok();
}
