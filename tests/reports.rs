//! Reports against known pushed data, checked by their numbers: ServiceReport, ErrorReport,
//! GpuReport's services, CapacityReport, Compare; `modelwatch report ...` as text, JSON and
//! HTML; `modelwatch logs`; and the exact `increase` of derived counters they stand on.
mod common;
use common::*;
use modelwatch::pb;
use std::collections::BTreeMap;
use std::process::Command;

const N: i64 = 1200;
const CARDS: [&str; 3] = ["A10", "T4", "L4"];

struct Ev {
    ts: i64,
    latency_ms: u64,
    status: pb::Status,
    error_type: &'static str,
}

/// Event k of service ocr: every 7 s back from `t_end`, latencies 1..=1000 ms in a scrambled
/// order, every 10th a CudaOOM error, other 25ths a timeout.
fn ev(t_end: i64, k: i64) -> Ev {
    let (status, error_type) = if k % 10 == 0 {
        (pb::Status::Error, "CudaOOM")
    } else if k % 25 == 0 {
        (pb::Status::Timeout, "Timeout")
    } else {
        (pb::Status::Ok, "")
    };
    Ev { ts: t_end - k * 7000, latency_ms: (k as u64 * 37) % 1000 + 1, status, error_type }
}

async fn load(d: &Daemon, t_end: i64) {
    let mut ing = d.ingest().await;
    let events: Vec<pb::InferenceEvent> = (0..N)
        .map(|k| {
            let e = ev(t_end, k);
            pb::InferenceEvent {
                timestamp_ms: e.ts,
                model: if k % 2 == 0 { "m1".into() } else { "m2".into() },
                model_version: "1".into(),
                request_id: format!("req-{k}"),
                status: e.status as i32,
                error_type: e.error_type.into(),
                latency_us: e.latency_ms * 1000,
                stages: Some(pb::Stages { inference_us: e.latency_ms * 800, ..Default::default() }),
                input_bytes: 100,
                output_bytes: 40,
                prompt_tokens: 5,
                completion_tokens: 3,
                labels: [("card_type".to_string(), CARDS[k as usize % 3].to_string())].into(),
                ..Default::default()
            }
        })
        .collect();
    let other: Vec<pb::InferenceEvent> = (0..10)
        .map(|k| pb::InferenceEvent {
            timestamp_ms: t_end - k * 1000,
            model: "whisper".into(),
            service: "asr".into(),
            latency_us: 5_000_000,
            ..Default::default()
        })
        .collect();
    let acks = stream_events(
        &mut ing,
        vec![
            pb::EventBatch { service: "ocr".into(), events, backfill: true, seq: 1, ..Default::default() },
            pb::EventBatch { service: "ocr".into(), events: other, backfill: true, seq: 2, ..Default::default() },
        ],
    )
    .await;
    assert!(acks.iter().all(|a| a.rejections.is_empty()), "{acks:?}");
    let logs: Vec<pb::LogRecord> = (0..N)
        .filter(|k| k % 10 == 0)
        .map(|k| pb::LogRecord {
            timestamp_ms: t_end - k * 7000,
            level: pb::Level::Error as i32,
            message: format!("CUDA out of memory on req-{k}"),
            request_id: format!("req-{k}"),
            error_type: "CudaOOM".into(),
            ..Default::default()
        })
        .collect();
    let acks = stream_logs(
        &mut ing,
        vec![pb::LogBatch { service: "ocr".into(), records: logs, backfill: true, ..Default::default() }],
    )
    .await;
    assert!(acks[0].rejections.is_empty(), "{:?}", acks[0]);

    // A GPU at 90% held by ocr; two ocr processes at 75% CPU and 2 GiB each; a 4-core host.
    let ts: Vec<i64> = (0..150).map(|i| t_end - i * 60_000).rev().collect();
    let flat = |name: &str, labels: &[(&str, &str)], v: f64| series(name, labels, ts.clone(), vec![v; ts.len()]);
    let mut all = vec![
        flat("gpu_utilization_percent", &[("gpu", "0")], 90.0),
        flat("gpu_memory_used_bytes", &[("gpu", "0")], 40e9),
        flat("gpu_memory_total_bytes", &[("gpu", "0")], 80e9),
        flat("gpu_process_memory_bytes", &[("gpu", "0"), ("pid", "11"), ("model", "m1")], 30e9),
    ];
    for (inst, pid) in [("i1", "11"), ("i2", "12")] {
        all.push(flat("process_cpu_percent", &[("instance", inst), ("pid", pid)], 75.0));
        all.push(flat("process_resident_memory_bytes", &[("instance", inst), ("pid", pid)], 2.0 * (1u64 << 30) as f64));
    }
    for cpu in 0..4 {
        all.push(flat("host_cpu_utilization_percent", &[("cpu", &cpu.to_string()), ("service", "modelwatch")], 50.0));
    }
    let r = ing
        .push(pb::PushRequest {
            metrics: Some(pb::MetricBatch { service: "ocr".into(), series: all, backfill: true, ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.metrics.unwrap().rejections.is_empty());
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).max(1) - 1] as f64
}

fn near(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1e-9)
}

fn secs(ms: i64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

/// The sum of the values the first line chart of a page draws.
fn drawn_sum(html: &str) -> f64 {
    html.split("data-values=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(|v| v.split(' ').map(|x| x.parse::<f64>().unwrap()).sum())
        .unwrap()
}

fn cli(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_modelwatch")).args(args).args(["--addr", &d.addr]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn reports_answer_with_the_pushed_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let t_end = (now_ms() - 30_000) / 10_000 * 10_000;
    load(&d, t_end).await;
    let evs: Vec<Ev> = (0..N).map(|k| ev(t_end, k)).collect();
    let mut q = d.query().await;

    // The exact increase: a 1 h window ending inside the data counts exactly the events of the
    // buckets in it (Prometheus' extrapolation would add a share of one bucket).
    let at = t_end - 1_800_000;
    let r = q
        .eval(pb::EvalRequest {
            query: r#"sum(increase(modelwatch_inference_requests_total{service="ocr"}[1h]))"#.into(),
            time: secs(at),
        })
        .await
        .unwrap()
        .into_inner();
    let want = evs.iter().filter(|e| e.ts >= at - 3_600_000 && e.ts < at).count() as f64;
    assert_eq!(r.series[0].points[0].value, want, "{r:?}");

    // ServiceReport.
    let rep = q
        .service_report(pb::ServiceReportRequest {
            service: "ocr".into(),
            range: range_last("3h"),
            slow_threshold: "900ms".into(),
            label: "card_type".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rep.requests, N as u64);
    let errors = evs.iter().filter(|e| e.status != pb::Status::Ok).count() as u64;
    assert_eq!(rep.errors, errors);
    assert!(near(rep.success_rate, 1.0 - errors as f64 / N as f64, 1e-9));
    let mut lat: Vec<u64> = evs.iter().map(|e| e.latency_ms).collect();
    lat.sort();
    let l = rep.latency.unwrap();
    assert_eq!(l.count, N as u64);
    assert!(near(l.mean_ms, lat.iter().sum::<u64>() as f64 / N as f64, 1e-9), "{l:?}");
    for (got, q) in [(l.p50_ms, 0.5), (l.p95_ms, 0.95), (l.p99_ms, 0.99), (l.max_ms, 1.0)] {
        assert!(near(got, quantile(&lat, q), 0.01), "p{q}: {got} vs {}", quantile(&lat, q));
    }
    let st = &rep.stages["inference"];
    assert_eq!(st.count, N as u64);
    assert!(near(st.p95_ms, quantile(&lat, 0.95) * 0.8, 0.01), "{st:?}");
    let slow = lat.iter().filter(|&&v| v > 900).count() as f64;
    let edge = lat.iter().filter(|&&v| (890..=910).contains(&v)).count() as f64;
    assert!((rep.slow_requests as f64 - slow).abs() <= edge, "slow {} vs {slow}", rep.slow_requests);
    assert_eq!(
        rep.label_distribution.iter().map(|s| (s.value.as_str(), s.count)).collect::<BTreeMap<_, _>>(),
        BTreeMap::from([("A10", 400), ("L4", 400), ("T4", 400)])
    );
    assert!(rep.scan_complete && rep.events_scanned >= N as u64);
    let oom = &rep.top_errors[0];
    assert_eq!((oom.error_type.as_str(), oom.count), ("CudaOOM", 120));
    assert_eq!(oom.examples.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>(), ["req-0", "req-10", "req-20"]);
    assert_eq!(oom.examples[0].message, "CUDA out of memory on req-0");
    assert_eq!((rep.top_errors[1].error_type.as_str(), rep.top_errors[1].count), ("Timeout", 24));
    assert_eq!((rep.prompt_tokens, rep.completion_tokens, rep.input_bytes), (6000, 3600, 120_000));
    assert_eq!(rep.series.iter().map(|i| i.requests).sum::<u64>(), N as u64);
    let mut hours: BTreeMap<i64, u64> = BTreeMap::new();
    for e in &evs {
        *hours.entry(e.ts.div_euclid(3_600_000)).or_default() += 1;
    }
    let busiest = hours.iter().max_by_key(|(h, n)| (**n, -**h)).unwrap();
    let top = &rep.busiest_hours[0];
    assert_eq!(top.requests, *busiest.1);
    assert_eq!(top.start.as_ref().unwrap().seconds, busiest.0 * 3600);
    assert!(rep.queries["latency_p95"].starts_with("histogram_quantile(0.95"), "{:?}", rep.queries);

    // ErrorReport: by service and type, with messages from the error logs.
    let er = q
        .error_report(pb::ErrorReportRequest { range: range_last("3h"), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((er.requests, er.failed_requests, er.error_logs), (N as u64 + 10, errors, 120));
    let g = &er.groups[0];
    assert_eq!((g.service.as_str(), g.error_type.as_str(), g.events, g.logs), ("ocr", "CudaOOM", 120, 120));
    assert_eq!(g.models.get("m1"), Some(&120));
    assert_eq!(g.examples[0].request_id, "req-0");
    assert_eq!(g.examples[0].message, "CUDA out of memory on req-0");
    assert_eq!(g.last_seen.as_ref().unwrap().seconds, t_end / 1000);
    let t = &er.groups[1];
    assert_eq!((t.error_type.as_str(), t.events, t.logs, t.models.get("m2")), ("Timeout", 24, 0, Some(&24)));

    // GpuReport names the services on each GPU.
    let gr =
        q.gpu_report(pb::GpuReportRequest { range: range_last("3h"), gpu: String::new() }).await.unwrap().into_inner();
    assert_eq!(gr.gpus[0].services, ["ocr"]);

    // CapacityReport: a GPU at 90% is over the 80% mark; cost of 1 GPU, 1.5 cores, 4 GiB.
    let cr = q
        .capacity_report(pb::CapacityReportRequest {
            range: range_last("2h"),
            service: "ocr".into(),
            slo_p95: "5s".into(),
            days: 2,
        })
        .await
        .unwrap()
        .into_inner();
    let c = &cr.services[0];
    assert_eq!((c.service.as_str(), c.recommendation.as_str(), c.replicas, c.gpus), ("ocr", "scale_up", 2, 1));
    assert!(c.recommended_replicas >= 3, "{c:?}");
    assert!(near(c.gpu_utilization_percent, 90.0, 1e-9) && near(c.cpu_percent, 150.0, 1e-9), "{c:?}");
    assert!(near(c.cost_per_hour, 2.0 + 1.5 * 0.04 + 4.0 * 0.005, 1e-9), "{c:?}");
    assert!(c.reason.contains("peak utilization"), "{}", c.reason);
    assert_eq!(c.previous_days_per_s, [0.0, 0.0]);

    // Compare: two ranges meeting at a bucket boundary split the requests between them.
    let split = t_end - 4_000_000;
    let range = |a: i64, b: i64| Some(pb::TimeRange { start: secs(a), end: secs(b), last: String::new() });
    let cmp = q
        .compare(pb::CompareRequest {
            report: "service".into(),
            a: range(t_end - 9_000_000, split),
            b: range(split, t_end + 10_000),
            service: Some(pb::ServiceReportRequest { service: "ocr".into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let req = cmp.deltas.iter().find(|x| x.figure == "requests").unwrap();
    let before = evs.iter().filter(|e| e.ts < split).count() as f64;
    assert_eq!((req.a, req.b), (before, N as f64 - before));
    assert!(cmp.deltas.iter().any(|x| x.figure == "latency.p95_ms"));

    // The command line: text, JSON (as grpcurl prints it), HTML with the values drawn.
    let text = cli(&d, &["report", "service", "--service", "ocr", "--since", "3h", "--label", "card_type"]);
    assert!(text.contains(&format!("requests {N}")) && text.contains("CudaOOM") && text.contains("A10"), "{text}");
    assert!(text.contains('█'), "a sparkline: {text}");
    if std::env::var("SHOW").is_ok() {
        println!(
            "{text}\n{}\n{}",
            cli(&d, &["report", "errors", "--since", "3h"]),
            cli(&d, &["report", "capacity", "--since", "2h"])
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&cli(&d, &["report", "service", "--service", "ocr", "--since", "3h", "--json"])).unwrap();
    assert_eq!(json["requests"], "1200");
    assert_eq!(json["topErrors"][0]["errorType"], "CudaOOM");
    let page = dir.path().join("ocr.html");
    cli(&d, &["report", "service", "--service", "ocr", "--since", "3h", "--html", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(drawn_sum(&html), N as f64, "the requests chart draws every request");
    for what in ["errors", "gpu", "capacity"] {
        let out = cli(&d, &["report", what, "--since", "3h"]);
        assert!(out.contains("report"), "{what}: {out}");
    }
    let errs = cli(&d, &["report", "errors", "--since", "3h"]);
    assert!(errs.contains("CudaOOM") && errs.contains("req-0"), "{errs}");
    let cmp = cli(&d, &["report", "compare", "service", "--a", "3h..1h", "--b", "1h..now", "--service", "ocr"]);
    assert!(cmp.contains("latency.p95_ms"), "{cmp}");

    // The same report as a page, and the status page linking to it.
    let body = get_body(&d.http_addr, "/report/service?service=ocr&since=3h&label=card_type");
    assert!(body.contains("Service report: service ocr") && body.contains("events by card_type"), "{body}");
    assert_eq!(drawn_sum(&body), N as f64);
    let status = get_body(&d.http_addr, "/");
    assert!(status.contains("href=\"/report/service?service=ocr&amp;since=24h\""), "{status}");
    assert!(status.contains("Firing alerts (0)") && status.contains("<path class=\"series\""), "{status}");
    let missing = get_body(&d.http_addr, "/report/nothing");
    assert!(missing.contains("no report"), "{missing}");

    // Logs by request id.
    let logs = cli(&d, &["logs", "--request-id", "req-10", "--since", "3h"]);
    assert!(logs.contains("ERROR ocr [req-10] CudaOOM: CUDA out of memory on req-10"), "{logs}");
    let logs = cli(&d, &["logs", "--service", "ocr", "--level", "error", "--since", "3h", "--limit", "5"]);
    assert_eq!(logs.lines().count(), 5, "{logs}");
    d.stop_ok();
}
