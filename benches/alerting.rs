//! Alerting figures on the release daemon, real clock, real gRPC and HTTP:
//!
//! 1. **Notification latency**: 20 conditions start at staggered times; each alert has
//!    `for: 3s` at a 1 s evaluation interval and its own notification group (`group_wait: 0s`).
//!    For each: the time from the condition having held for `for` to the webhook receiving it
//!    (target: at most one interval + 100 ms), and the part of it after the evaluation that
//!    fired it (evaluation, queue, HTTP).
//! 2. **Evaluation cost**: the shipped rules (`deploy/rules/model-serving.yml`) plus 1,000
//!    generated alerting rules over 10,000 series (each series read by one rule, 30 minutes of
//!    15 s samples), evaluated every 5 s; the daemon's CPU per evaluation round, from
//!    `/proc/PID/stat`, and as a share of one core at a 15 s interval (target under 5 %).
//!
//! `cargo bench --bench alerting`
#[path = "../tests/common/hook.rs"]
#[allow(dead_code)]
mod hook;
mod support;

use modelwatch::pb;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn label(k: &str, v: &str) -> pb::Label {
    pb::Label { name: k.into(), value: v.into() }
}

async fn push(url: &str, series: Vec<pb::Series>) {
    let mut c = pb::ingest_client::IngestClient::connect(url.to_string()).await.unwrap();
    let mb = pb::MetricBatch { service: "bench".into(), series, ..Default::default() };
    let r = c.push(pb::PushRequest { metrics: Some(mb), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(r.metrics.unwrap().rejected_count, 0);
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn latency(dir: &Path) {
    let rx = hook::Receiver::start();
    std::fs::write(
        dir.join("rules.yml"),
        "groups:\n- name: latency\n  interval: 1s\n  rules:\n  - alert: Flag\n    expr: bench_flag > 0\n    for: 3s\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("notify.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [trial]\n  group_wait: 0s\n  group_interval: 1m\nreceivers:\n- name: hook\n  webhook_configs: [{{url: '{}'}}]\n",
            rx.url
        ),
    )
    .unwrap();
    let rules = format!("[{:?}]", dir.join("rules.yml").display().to_string());
    let notify = dir.join("notify.yml").display().to_string();
    let (mut child, url) = support::start_daemon(
        &dir.join("data"),
        &[("MODELWATCH__ALERTING__RULE_FILES", &rules), ("MODELWATCH__ALERTING__NOTIFY_CONFIG", &notify)],
    );
    const TRIALS: usize = 20;
    const FOR_MS: i64 = 3000;
    let mut started = Vec::new();
    for i in 0..TRIALS {
        // Staggered against the 1 s grid: 0.37 s apart.
        tokio::time::sleep(Duration::from_millis(370)).await;
        let t = now_ms();
        push(
            &url,
            vec![pb::Series {
                name: "bench_flag".into(),
                labels: vec![label("trial", &i.to_string())],
                kind: pb::MetricKind::Gauge as i32,
                timestamps_ms: vec![t],
                values: vec![1.0],
            }],
        )
        .await;
        started.push(t);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while rx.bodies().len() < TRIALS {
        assert!(Instant::now() < deadline, "{} of {TRIALS} notifications arrived", rx.bodies().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut after_for, mut after_eval) = (Vec::new(), Vec::new());
    for (body, arrived) in rx.timed("/hook") {
        let a = &body["alerts"][0];
        let i: usize = a["labels"]["trial"].as_str().unwrap().parse().unwrap();
        // startsAt is the evaluation that first saw the condition; it fired `for` later.
        let pending_at = humantime::parse_rfc3339(a["startsAt"].as_str().unwrap()).unwrap();
        let pending_ms = pending_at.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        after_for.push((arrived - (started[i] + FOR_MS)) as f64);
        after_eval.push((arrived - (pending_ms + FOR_MS)) as f64);
    }
    let _ = child.kill();
    let _ = child.wait();
    println!("notification latency, {TRIALS} alerts, evaluation interval 1 s, for 3 s, group_wait 0 s:");
    println!(
        "  condition held for `for` -> webhook received: median {:.0} ms, p90 {:.0} ms, max {:.0} ms (target <= 1100 ms)",
        pct(&mut after_for, 0.5),
        pct(&mut after_for, 0.9),
        pct(&mut after_for, 1.0)
    );
    println!(
        "  of which after the firing evaluation's scheduled time: median {:.0} ms, max {:.0} ms",
        pct(&mut after_eval, 0.5),
        pct(&mut after_eval, 1.0)
    );
}

async fn eval_cost(dir: &Path) {
    // 10 metrics x 100 models x 10 pods; rule j reads metric j / 100, model j % 100 (10 series).
    let mut g = String::from("groups:\n- name: generated\n  rules:\n");
    for j in 0..1000 {
        let (k, m) = (j / 100, j % 100);
        // One rule in a hundred fires (its threshold is 0), half wait 5 minutes.
        let threshold = if j % 100 == 7 { 0.0 } else { 1e9 };
        g.push_str(&format!(
            "  - alert: Generated{j}\n    expr: sum by (model, pod) (rate(bench_requests_total_{k}{{model=\"m{m}\"}}[5m])) > {threshold}\n{}    labels: {{severity: warning}}\n    annotations: {{summary: 'rate {{{{ $value | humanize }}}} on {{{{ $labels.pod }}}}'}}\n",
            if j % 2 == 0 { "    for: 5m\n" } else { "" }
        ));
    }
    std::fs::write(dir.join("generated.yml"), g).unwrap();
    let shipped = std::fs::canonicalize("deploy/rules/model-serving.yml").unwrap();
    let rules = format!("[{:?}, {:?}]", shipped.display().to_string(), dir.join("generated.yml").display().to_string());
    let (mut child, url) = support::start_daemon(
        &dir.join("data"),
        &[("MODELWATCH__ALERTING__RULE_FILES", &rules), ("MODELWATCH__ALERTING__EVALUATION_INTERVAL", "5s")],
    );
    let pid = child.id();
    // 30 minutes of 15 s samples up to now.
    let end = now_ms() / 15_000 * 15_000;
    let ts: Vec<i64> = (0..120).map(|i| end - (119 - i) * 15_000).collect();
    let mut batch = Vec::new();
    let mut n = 0usize;
    for k in 0..10 {
        for m in 0..100 {
            for p in 0..10 {
                let step = 1.0 + ((k * 7 + m * 3 + p) % 13) as f64;
                batch.push(pb::Series {
                    name: format!("bench_requests_total_{k}"),
                    labels: vec![label("model", &format!("m{m}")), label("pod", &format!("p{p}"))],
                    kind: pb::MetricKind::Counter as i32,
                    timestamps_ms: ts.clone(),
                    values: (0..120).map(|i| i as f64 * step * 15.0).collect(),
                });
                n += 1;
                if batch.len() == 500 {
                    push(&url, std::mem::take(&mut batch)).await;
                }
            }
        }
    }
    push(&url, batch).await;
    let mut c = pb::alerts_client::AlertsClient::connect(url.clone()).await.unwrap();
    let evaluated = |r: &pb::ListRulesResponse| {
        r.rules.iter().map(|x| x.last_evaluation.as_ref().map_or(0, |t| t.seconds)).min().unwrap_or(0)
    };
    // Wait for two full rounds after the data (the first may have run before it).
    let first = evaluated(&c.list_rules(pb::ListRulesRequest {}).await.unwrap().into_inner());
    loop {
        let r = c.list_rules(pb::ListRulesRequest {}).await.unwrap().into_inner();
        if evaluated(&r) >= first + 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    const ROUNDS: i64 = 6;
    // From just after one round to just after the sixth next: few ListRules calls (each
    // costs the daemon too), none in between.
    let mut from = evaluated(&c.list_rules(pb::ListRulesRequest {}).await.unwrap().into_inner());
    loop {
        let e = evaluated(&c.list_rules(pb::ListRulesRequest {}).await.unwrap().into_inner());
        if e > from {
            from = e;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu0 = support::cpu_seconds(pid);
    tokio::time::sleep(Duration::from_millis(5000 * ROUNDS as u64 - 1000)).await;
    let r = loop {
        let r = c.list_rules(pb::ListRulesRequest {}).await.unwrap().into_inner();
        if evaluated(&r) >= from + 5 * ROUNDS {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cpu = support::cpu_seconds(pid) - cpu0;
    let wall: f64 = r
        .rules
        .iter()
        .map(|x| x.evaluation_duration.as_ref().map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9))
        .sum();
    let firing: u32 = r.rules.iter().map(|x| x.firing + x.pending).sum();
    let errors = r.rules.iter().filter(|x| x.health == "err").count();
    let _ = child.kill();
    let _ = child.wait();
    let per_round = cpu / ROUNDS as f64;
    println!(
        "evaluation cost, {} rules ({} shipped + 1000 generated) over {n} series, {ROUNDS} rounds:",
        r.rules.len(),
        r.rules.len() - 1000
    );
    println!(
        "  daemon CPU per round {:.0} ms = {:.2} % of one core at a 15 s interval (target < 5 %); rules' own evaluation time per round {:.0} ms; {firing} alerts pending or firing; {errors} rules in error",
        per_round * 1000.0,
        per_round / 15.0 * 100.0,
        wall * 1000.0
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lat")).unwrap();
    std::fs::create_dir_all(dir.path().join("cost")).unwrap();
    latency(&dir.path().join("lat")).await;
    eval_cost(&dir.path().join("cost")).await;
}
