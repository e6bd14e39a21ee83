//! OTLP in: the OpenTelemetry Python SDK (from PyPI, in the test venv) exports metrics, logs
//! and GenAI spans to the daemon unchanged, and queries return them; OTLP's partial success
//! for what the receiver refuses; the same tokens as native ingest.
mod common;

use common::*;
use modelwatch::pb::opentelemetry::proto::collector::metrics::v1 as otm;
use modelwatch::pb::opentelemetry::proto::common::v1::{any_value, AnyValue, KeyValue, Resource};
use std::path::PathBuf;
use std::process::Command;

fn venv_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// The one value of an instant query at `t` (ms).
fn value_at(d: &Daemon, expr: &str, t: i64) -> Option<f64> {
    let (status, v) =
        http(&d.http_addr, "GET", &format!("/api/v1/query?query={}&time={}", enc(expr), t as f64 / 1000.0), None);
    assert_eq!(status, 200, "{expr}: {v}");
    let r = v["data"]["result"].as_array()?;
    assert!(r.len() <= 1, "{expr}: {v}");
    r.first().map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_sdk_exports_metrics_logs_and_genai_spans() {
    let py = venv_python();
    let have_sdk = py.exists()
        && Command::new(&py)
            .args(["-c", "import opentelemetry.exporter.otlp.proto.grpc"])
            .status()
            .is_ok_and(|s| s.success());
    if !have_sdk {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the OpenTelemetry SDK is not in .venv (make test installs it)"
        );
        eprintln!("SKIPPED OTLP with the OpenTelemetry SDK: not in .venv (make test installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let otlp_port = free_port();
    let d = Daemon::start(tmp.path(), &[("MODELWATCH__SERVER__OTLP_LISTEN", &format!("127.0.0.1:{otlp_port}"))]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/otel_export.py");
    let out = Command::new(&py).arg(&script).arg(format!("127.0.0.1:{otlp_port}")).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");

    let at = now_ms();
    // Metrics, named as Prometheus names OTLP metrics.
    assert_eq!(
        value_at(&d, r#"requests_total{service="otel-svc",route="/v1",instance="pod-1"}"#, at),
        Some(7.0),
        "{said}"
    );
    assert_eq!(value_at(&d, r#"latency_bucket{service="otel-svc",le="0.5"}"#, at), Some(2.0));
    assert_eq!(value_at(&d, r#"latency_bucket{service="otel-svc",le="+Inf"}"#, at), Some(4.0));
    assert_eq!(value_at(&d, r#"latency_count{service="otel-svc"}"#, at), Some(4.0));
    assert!((value_at(&d, r#"latency_sum{service="otel-svc"}"#, at).unwrap() - 2.95).abs() < 1e-9);
    assert_eq!(value_at(&d, r#"queue_depth{service="otel-svc"}"#, at), Some(7.0));

    // Logs and GenAI spans: the derived series count them (buckets end within 10 s). Those
    // counters restart at the top of each UTC hour, so they are read as their increase over
    // the last hour: read as they are, they are 0 at a `later` 10 s or more into the next
    // hour (a CI run of 2026-12-06 failed so, with `at` in the last seconds of an hour).
    let later = at + 20_000;
    let count = |sel: &str| value_at(&d, &format!("sum(increase({sel}[1h]))"), later);
    assert_eq!(count(r#"modelwatch_log_records_total{service="otel-svc"}"#), Some(2.0));
    assert_eq!(count(r#"modelwatch_log_records_total{service="otel-svc",level="error",error_type="oom"}"#), Some(1.0));
    assert_eq!(
        count(r#"modelwatch_inference_requests_total{service="otel-svc",model="llama-3",endpoint="chat"}"#),
        Some(4.0)
    );
    assert_eq!(count(r#"modelwatch_inference_errors_total{model="llama-3",error_type="timeout"}"#), Some(1.0));
    assert_eq!(count(r#"modelwatch_inference_prompt_tokens_total{model="llama-3"}"#), Some(300.0));
    assert_eq!(count(r#"modelwatch_inference_completion_tokens_total{model="llama-3"}"#), Some(63.0));
    // The log record's fields came through: found by its request id.
    let mut q = d.query().await;
    let logs = q
        .search_logs(modelwatch::pb::SearchLogsRequest {
            service: "otel-svc".into(),
            range: range_last("1h"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let crashed = logs.records.iter().find(|r| r.message == "model crashed").expect("the error record");
    assert_eq!(crashed.request_id, "req-42");
    assert_eq!(crashed.logger, "otel.test");
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_receiver_refuses_comes_back_as_partial_success() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let mut c = otm::metrics_service_client::MetricsServiceClient::connect(d.url()).await.unwrap();
    let now_ns = now_ms() as u64 * 1_000_000;
    let point = |v: f64| otm::NumberDataPoint {
        time_unix_nano: now_ns,
        value: Some(otm::number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let metric =
        |name: &str, data: otm::metric::Data| otm::Metric { name: name.into(), data: Some(data), ..Default::default() };
    let req = otm::ExportMetricsServiceRequest {
        resource_metrics: vec![otm::ResourceMetrics {
            resource: Some(Resource { attributes: vec![kv("service.name", "p")], dropped_attributes_count: 0 }),
            scope_metrics: vec![otm::ScopeMetrics {
                scope: None,
                metrics: vec![
                    metric("kept", otm::metric::Data::Gauge(otm::Gauge { data_points: vec![point(1.0)] })),
                    metric(
                        "delta_things",
                        otm::metric::Data::Sum(otm::Sum {
                            data_points: vec![point(2.0)],
                            aggregation_temporality: 1,
                            is_monotonic: true,
                        }),
                    ),
                    // A value the validator refuses (a NaN is not allowed by default).
                    metric("bad", otm::metric::Data::Gauge(otm::Gauge { data_points: vec![point(f64::NAN)] })),
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let r = c.export(req).await.unwrap().into_inner();
    let p = r.partial_success.expect("a partial success");
    assert_eq!(p.rejected_data_points, 2, "{p:?}");
    assert!(p.error_message.contains("delta temporality"), "{}", p.error_message);
    assert!(p.error_message.contains("series[") || p.error_message.contains("values"), "{}", p.error_message);
    assert_eq!(value_at(&d, r#"kept{service="p"}"#, now_ms()), Some(1.0));
    let text = get_body(&d.http_addr, "/metrics");
    assert!(text.contains("modelwatch_otlp_requests_total{signal=\"metrics\",outcome=\"partial\"} 1"), "{text}");
    d.stop_ok();
}
