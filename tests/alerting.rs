//! Alerting end to end on the real daemon: rule files loaded, states driven by the daemon's
//! clock (a file the test writes, `MODELWATCH_CLOCK_FILE`, so nothing waits on real time),
//! results in the store, notifications to a real HTTP receiver on loopback, and the states
//! kept across `kill -9`.
mod common;
use common::hook::{Clock, Receiver};
use common::*;
use modelwatch::pb;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn setup(dir: &Path, rules: &str, hook: &str) -> Vec<(String, String)> {
    std::fs::write(dir.join("rules.yml"), rules).unwrap();
    std::fs::write(
        dir.join("notify.yml"),
        format!("route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 15s\nreceivers:\n- name: hook\n  webhook_configs:\n  - url: {hook}\n"),
    )
    .unwrap();
    vec![
        ("MODELWATCH_CLOCK_FILE".into(), dir.join("clock").display().to_string()),
        ("MODELWATCH__ALERTING__RULE_FILES".into(), format!("[{:?}]", dir.join("rules.yml").display().to_string())),
        ("MODELWATCH__ALERTING__NOTIFY_CONFIG".into(), dir.join("notify.yml").display().to_string()),
        ("MODELWATCH__ALERTING__EXTERNAL_URL".into(), "http://modelwatch.example:7071".into()),
    ]
}

fn start(data: &Path, env: &[(String, String)]) -> Daemon {
    let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Daemon::start(data, &e)
}

async fn alerts(d: &Daemon) -> Vec<pb::AlertInfo> {
    let mut c = pb::alerts_client::AlertsClient::connect(d.url()).await.unwrap();
    let mut a = c.active_alerts(pb::ActiveAlertsRequest::default()).await.unwrap().into_inner().alerts;
    a.sort_by(|x, y| x.rule.cmp(&y.rule));
    a
}

const LATENCY_RULES: &str = r#"
groups:
- name: serving
  interval: 15s
  rules:
  - alert: HighLatencyP95
    expr: histogram_quantile(0.95, sum by (model, le) (rate(modelwatch_inference_latency_seconds_bucket[1m]))) > 0.8
    for: 1m
    labels:
      severity: page
    annotations:
      summary: "p95 latency of {{ $labels.model }} is {{ $value | humanizeDuration }}"
  - record: model:latency_p95:1m
    expr: histogram_quantile(0.95, sum by (model, le) (rate(modelwatch_inference_latency_seconds_bucket[1m])))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_alert_pends_fires_notifies_once_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    let env = setup(dir.path(), LATENCY_RULES, &hook.url);
    let clock = Clock(dir.path().join("clock"));
    let t0 = now_ms() / 15_000 * 15_000;
    clock.set(t0 - 60_000);
    let d = start(&dir.path().join("data"), &env);
    let mut cfg = modelwatch_client::Config::new(&d.url(), "chat");
    cfg.linger = Duration::from_millis(5);
    let client = modelwatch_client::Client::start(cfg);
    // Events every 5 s of daemon time, up to `to`: slow (1.2 s) or fast (0.1 s).
    let mut next_event = t0 - 60_000;
    let push_until = |next_event: &mut i64, to: i64, latency_us: u64| {
        while *next_event <= to {
            for i in 0..4 {
                client.event(modelwatch_client::pb::InferenceEvent {
                    timestamp_ms: *next_event,
                    model: "llm-7b".into(),
                    request_id: format!("r{next_event}-{i}"),
                    latency_us,
                    ..Default::default()
                });
            }
            *next_event += 5_000;
        }
    };
    let mut states = Vec::new();
    // Slow from the start; the receiver is down when the alert starts firing.
    hook.down.store(true, Ordering::SeqCst);
    for step in 0..=6 {
        let t = t0 + step * 15_000;
        push_until(&mut next_event, t, 1_200_000);
        assert!(client.flush_async(Duration::from_secs(30)).await);
        clock.set(t);
        evaluated_at(&d, t).await;
        let a = alerts(&d).await;
        states.push(a.iter().map(|x| x.state.clone()).collect::<Vec<_>>().join(","));
    }
    // Pending from t0, firing once `for: 1m` has passed (t0 + 60 s), not before.
    assert_eq!(states, ["pending", "pending", "pending", "pending", "firing", "firing", "firing"]);
    let a = &alerts(&d).await[0];
    assert_eq!(a.labels["alertname"], "HighLatencyP95");
    assert_eq!(a.labels["severity"], "page");
    assert_eq!(a.labels["model"], "llm-7b");
    assert_eq!(a.active_at.as_ref().unwrap().seconds * 1000, t0);
    // The annotation's template saw the value (the exact p95 of 1.2 s events).
    assert!(a.annotations["summary"].starts_with("p95 latency of llm-7b is 1.2"), "{:?}", a.annotations);
    // The receiver refused; the queue retried by the daemon's clock, and nothing arrived.
    let refused = *hook.refused.lock().unwrap();
    assert!(refused >= 1, "no attempt reached the receiver while it was down");
    assert!(hook.bodies().is_empty());
    // Up again: the firing notification arrives once, at its next retry (backoff 1 s, 2 s,
    // 4 s... by the daemon's clock), before the next evaluation.
    hook.down.store(false, Ordering::SeqCst);
    clock.set(t0 + 6 * 15_000 + 10_000);
    let b = hook.wait("/hook", 1).await;
    assert_eq!(b[0]["version"], "4");
    assert_eq!(b[0]["status"], "firing");
    assert_eq!(b[0]["receiver"], "hook");
    assert_eq!(b[0]["groupLabels"]["alertname"], "HighLatencyP95");
    assert_eq!(b[0]["alerts"][0]["labels"]["model"], "llm-7b");
    assert_eq!(b[0]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert!(b[0]["alerts"][0]["generatorURL"]
        .as_str()
        .unwrap()
        .starts_with("http://modelwatch.example:7071/graph?g0.expr="));
    // The recording rule's series is in the store, queryable like any other.
    let (code, v) = http(
        &d.http_addr,
        "GET",
        &format!("/api/v1/query?query={}&time={}", enc("model:latency_p95:1m"), (t0 + 90_000) / 1000),
        None,
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["result"][0]["metric"]["model"], "llm-7b");
    // ALERTS too.
    let (_, v) = http(
        &d.http_addr,
        "GET",
        &format!("/api/v1/query?query={}&time={}", enc("ALERTS"), (t0 + 90_000) / 1000),
        None,
    );
    assert_eq!(v["data"]["result"][0]["metric"]["alertstate"], "firing", "{v}");
    // Latency falls: once the window holds only fast requests, the alert resolves and the
    // resolved notification follows.
    let mut t = t0 + 6 * 15_000;
    let mut resolved_at = None;
    for _ in 0..10 {
        t += 15_000;
        push_until(&mut next_event, t, 100_000);
        assert!(client.flush_async(Duration::from_secs(30)).await);
        clock.set(t);
        evaluated_at(&d, t).await;
        if alerts(&d).await.iter().all(|a| a.state == "inactive") {
            resolved_at = Some(t);
            break;
        }
    }
    assert!(resolved_at.is_some(), "the alert did not resolve: {:?}", alerts(&d).await);
    let b = hook.wait("/hook", 2).await;
    assert_eq!(b[1]["status"], "resolved");
    assert_eq!(b[1]["alerts"][0]["status"], "resolved");
    assert_ne!(b[1]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    // Nothing else was sent: one firing, one resolved.
    clock.set(t + 30 * 60_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.bodies().len(), 2, "{:#?}", hook.bodies());
    client.close(Duration::from_secs(5));
    d.stop_ok();
}

const RESTART_RULES: &str = r#"
groups:
- name: restart
  interval: 15s
  rules:
  - alert: FlagUp
    expr: flag == 1
  - alert: SlowBurn
    expr: vector(1)
    for: 1h
"#;

async fn push_flag(d: &Daemon, t: i64, v: f64) {
    let mut ing = pb::ingest_client::IngestClient::connect(d.url()).await.unwrap();
    let mb = pb::MetricBatch {
        service: "svc".into(),
        series: vec![series("flag", &[], vec![t], vec![v])],
        ..Default::default()
    };
    let r = ing.push(pb::PushRequest { metrics: Some(mb), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(r.metrics.unwrap().rejected_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_neither_repages_nor_forgets_the_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    let env = setup(dir.path(), RESTART_RULES, &hook.url);
    let clock = Clock(dir.path().join("clock"));
    let data = dir.path().join("data");
    let t0 = now_ms() / 15_000 * 15_000;
    clock.set(t0 - 15_000);
    let d = start(&data, &env);
    push_flag(&d, t0, 1.0).await;
    clock.set(t0);
    evaluated_at(&d, t0).await;
    let b = hook.wait("/hook", 1).await;
    assert_eq!(
        (b[0]["status"].as_str(), b[0]["alerts"][0]["labels"]["alertname"].as_str()),
        (Some("firing"), Some("FlagUp"))
    );
    let before = alerts(&d).await;
    assert_eq!(
        before.iter().map(|a| (a.rule.as_str(), a.state.as_str())).collect::<Vec<_>>(),
        [("FlagUp", "firing"), ("SlowBurn", "pending")]
    );
    // The round's states are saved right after its notifications are queued: kill once they are.
    let state = data.join("alerts/state.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&state).is_ok_and(|s| s.contains("SlowBurn") && s.contains("firing")) {
        assert!(Instant::now() < deadline, "alert states never saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.kill9();

    // Back up: the same alerts, same start times; no second "firing".
    let d = start(&data, &env);
    let after = alerts(&d).await;
    assert_eq!(after.len(), 2);
    for (x, y) in before.iter().zip(&after) {
        assert_eq!((&x.rule, &x.state, &x.active_at), (&y.rule, &y.state, &y.active_at));
    }
    push_flag(&d, t0 + 15_000, 1.0).await;
    clock.set(t0 + 15_000);
    evaluated_at(&d, t0 + 15_000).await;
    assert_eq!(alerts(&d).await[0].state, "firing");
    // The pending alert kept its progress: it fires one hour after it first held.
    clock.set(t0 + 3_600_000);
    push_flag(&d, t0 + 3_600_000, 0.0).await;
    evaluated_at(&d, t0 + 3_600_000).await;
    let now = alerts(&d).await;
    assert_eq!(
        now.iter().map(|a| (a.rule.as_str(), a.state.as_str())).collect::<Vec<_>>(),
        [("FlagUp", "inactive"), ("SlowBurn", "firing")]
    );
    // FlagUp's resolution reaches the receiver; nothing repeated its firing.
    let b = hook.wait("/hook", 3).await;
    let seen: Vec<(String, String)> = b
        .iter()
        .map(|x| {
            (
                x["alerts"][0]["labels"]["alertname"].as_str().unwrap().to_string(),
                x["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("FlagUp".into(), "firing".into()),
            ("FlagUp".into(), "resolved".into()),
            ("SlowBurn".into(), "firing".into())
        ],
        "{seen:?}"
    );
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rule_file_is_refused_and_the_rules_in_force_stay() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    let env = setup(dir.path(), RESTART_RULES, &hook.url);
    let d = start(&dir.path().join("data"), &env);
    let mut c = pb::alerts_client::AlertsClient::connect(d.url()).await.unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n- name: restart\n  rules:\n  - alert: X\n    expr: 'rate(x[5m]'\n",
    )
    .unwrap();
    let r = c.reload_rules(pb::ReloadRulesRequest {}).await.unwrap().into_inner();
    assert!(!r.ok);
    assert!(
        r.errors[0].contains("rules.yml")
            && r.errors[0].contains("group \"restart\", rule 1, \"X\": could not parse expression"),
        "{r:?}"
    );
    let l = c.list_rules(pb::ListRulesRequest {}).await.unwrap().into_inner();
    assert_eq!(l.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["FlagUp", "SlowBurn"]);
    assert!(!l.last_reload_ok);
    // Fixed: the next reload takes it.
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n- name: restart\n  rules:\n  - alert: X\n    expr: 'rate(x[5m]) > 1'\n",
    )
    .unwrap();
    let r = c.reload_rules(pb::ReloadRulesRequest {}).await.unwrap().into_inner();
    assert!(r.ok && r.rules == 1, "{r:?}");
    d.stop_ok();
}
