//! Notifications end to end on the real daemon, to real receivers on loopback: grouping,
//! silences (over the CLI), inhibition, webhook, Slack, DingTalk and Feishu payloads checked
//! field by field; email to a real SMTP server (aiosmtpd) over STARTTLS with auth; alerts
//! forwarded to a real Alertmanager (Debian's `prometheus-alertmanager`) and read back from
//! its API. Rule evaluation follows the daemon's clock file, not sleeps.
mod common;
use common::hook::{Clock, Receiver};
use common::*;
use modelwatch::pb;
use serde_json::Value;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cli(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_modelwatch")).args(args).args(["--addr", &d.addr]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "modelwatch {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// A helper process, killed when the test ends (passed or not).
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tool the test needs: its path, or `None` (skipped, said so) outside CI; CI must have it.
fn tool(path: &str, what: &str) -> Option<String> {
    if Path::new(path).exists() {
        return Some(path.to_string());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{path} is missing: {what} is required in CI (.ci/run installs it)");
    }
    eprintln!("SKIPPED: {path} is missing ({what}); `make test` installs it");
    None
}

fn env(dir: &Path, rules: &str, notify: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
    std::fs::write(dir.join("rules.yml"), rules).unwrap();
    std::fs::write(dir.join("notify.yml"), notify).unwrap();
    let mut e = vec![
        ("MODELWATCH_CLOCK_FILE".to_string(), dir.join("clock").display().to_string()),
        ("MODELWATCH__ALERTING__RULE_FILES".into(), format!("[{:?}]", dir.join("rules.yml").display().to_string())),
        ("MODELWATCH__ALERTING__NOTIFY_CONFIG".into(), dir.join("notify.yml").display().to_string()),
    ];
    e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    e
}

fn start(data: &Path, env: &[(String, String)]) -> Daemon {
    let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Daemon::start(data, &e)
}

async fn push(d: &Daemon, t: i64, series_: &[(&str, &str, f64)]) {
    let mut ing = pb::ingest_client::IngestClient::connect(d.url()).await.unwrap();
    let series = series_.iter().map(|(name, model, v)| series(name, &[("model", model)], vec![t], vec![*v])).collect();
    let mb = pb::MetricBatch { service: "svc".into(), series, ..Default::default() };
    let r = ing.push(pb::PushRequest { metrics: Some(mb), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(r.metrics.unwrap().rejected_count, 0);
}

async fn active(d: &Daemon) -> Vec<pb::AlertInfo> {
    let mut c = pb::alerts_client::AlertsClient::connect(d.url()).await.unwrap();
    let mut a = c.active_alerts(pb::ActiveAlertsRequest::default()).await.unwrap().into_inner().alerts;
    a.sort_by(|x, y| (&x.rule, &x.labels["model"]).cmp(&(&y.rule, &y.labels["model"])));
    a
}

fn models(body: &Value) -> Vec<String> {
    body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}:{}", a["labels"]["model"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect()
}

const RULES: &str = r#"
groups:
- name: serving
  interval: 15s
  rules:
  - alert: ModelDown
    expr: model_up == 0
    labels: {severity: critical}
    annotations: {summary: "{{ $labels.model }} is down"}
  - alert: SlowModel
    expr: model_slow == 1
    labels: {severity: warning}
    annotations: {summary: "{{ $labels.model }} is slow"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_silences_inhibitions_and_chat_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start();
    let b = &rx.base;
    let notify = format!(
        r#"
global:
  slack_api_url: {b}/slack
route:
  receiver: team
  group_by: [alertname]
  group_wait: 0s
  group_interval: 15s
  routes:
  - matchers: ['severity="critical"']
    receiver: oncall
receivers:
- name: team
  webhook_configs: [{{url: {b}/hook}}]
  slack_configs:
  - channel: '#models'
    send_resolved: true
    title: '{{{{ .CommonLabels.alertname }}}}: {{{{ len .Alerts.Firing }}}} firing'
- name: oncall
  dingtalk_configs: [{{url: '{b}/ding?access_token=abc', secret: SECtest}}]
  feishu_configs: [{{url: '{b}/feishu', secret: fs}}]
inhibit_rules:
- source_matchers: [alertname="ModelDown"]
  target_matchers: [alertname="SlowModel"]
  equal: [model]
"#
    );
    let env = env(dir.path(), RULES, &notify, &[]);
    let clock = Clock(dir.path().join("clock"));
    let t0 = now_ms() / 15_000 * 15_000;
    clock.set(t0 - 15_000);
    let d = start(&dir.path().join("data"), &env);

    // A silence for model c, made with the CLI before anything fires.
    let out =
        cli(&d, &["silence", "add", "model=\"c\"", "--duration", "1h", "--author", "ops", "--comment", "redeploy"]);
    let id = out.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert!(out.contains("active") && out.contains("model=\"c\"") && out.contains("redeploy"), "{out}");
    assert!(cli(&d, &["silence", "list"]).contains(&id));

    let slow = |b_: f64| {
        vec![("model_up", "a", 0.0), ("model_slow", "a", 1.0), ("model_slow", "b", b_), ("model_slow", "c", 1.0)]
    };
    push(&d, t0, &slow(1.0)).await;
    clock.set(t0);
    evaluated_at(&d, t0).await;

    // SlowModel a is inhibited by ModelDown a, c is silenced: the team hears of b alone.
    let hook = rx.wait("/hook", 1).await;
    assert_eq!(models(&hook[0]), ["b:firing"]);
    assert_eq!(hook[0]["groupLabels"], serde_json::json!({"alertname": "SlowModel"}));
    assert_eq!(hook[0]["groupKey"], "{}:{alertname=\"SlowModel\"}");
    assert_eq!(hook[0]["commonAnnotations"]["summary"], "b is slow");
    let slack = rx.wait("/slack", 1).await;
    assert_eq!(slack[0]["channel"], "#models");
    assert_eq!(slack[0]["attachments"][0]["title"], "SlowModel: 1 firing");
    assert_eq!(slack[0]["attachments"][0]["color"], "danger");
    assert!(slack[0]["attachments"][0]["text"].as_str().unwrap().contains("b is slow"), "{slack:?}");
    // The on-call robots: DingTalk markdown with its signature in the URL, Feishu text with
    // its signature in the body.
    let ding = rx.wait("/ding", 1).await;
    assert_eq!(ding[0]["msgtype"], "markdown");
    assert_eq!(ding[0]["markdown"]["title"], "[FIRING:1] ModelDown (a svc critical)");
    assert!(ding[0]["markdown"]["text"].as_str().unwrap().contains("a is down"), "{ding:?}");
    let (path, _) = rx.requests().into_iter().find(|(p, _)| p.starts_with("/ding")).unwrap();
    let q: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str(path.split_once('?').unwrap().1).unwrap();
    assert_eq!(q["access_token"], "abc");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"SECtest");
    let mac = ring::hmac::sign(&key, format!("{}\nSECtest", q["timestamp"]).as_bytes());
    use base64::Engine as _;
    assert_eq!(q["sign"], base64::engine::general_purpose::STANDARD.encode(mac.as_ref()));
    let fs = rx.wait("/feishu", 1).await;
    assert_eq!(fs[0]["msg_type"], "text");
    assert!(fs[0]["content"]["text"].as_str().unwrap().starts_with("[FIRING:1] ModelDown"), "{fs:?}");
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        format!("{}\nfs", fs[0]["timestamp"].as_str().unwrap()).as_bytes(),
    );
    assert_eq!(fs[0]["sign"], base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, b"").as_ref()));

    // Muted alerts stay visible, firing, with why.
    let a = active(&d).await;
    let slow_a = a.iter().find(|x| x.rule == "SlowModel" && x.labels["model"] == "a").unwrap();
    let slow_c = a.iter().find(|x| x.rule == "SlowModel" && x.labels["model"] == "c").unwrap();
    assert_eq!((slow_a.state.as_str(), slow_a.inhibited), ("firing", true));
    assert_eq!((slow_c.state.as_str(), slow_c.silenced_by.clone()), ("firing", vec![id.clone()]));
    let table = cli(&d, &["alerts", "active"]);
    assert!(table.contains("inhibited") && table.contains(&format!("silenced by {id}")), "{table}");
    let groups = cli(&d, &["alerts", "groups"]);
    assert!(groups.contains("{}:{alertname=\"SlowModel\"}") && groups.contains("oncall"), "{groups}");

    // The silence ends: c joins b at the group's next flush.
    assert!(cli(&d, &["silence", "expire", &id]).contains("expired"));
    push(&d, t0 + 15_000, &slow(1.0)).await;
    clock.set(t0 + 15_000);
    evaluated_at(&d, t0 + 15_000).await;
    let hook = rx.wait("/hook", 2).await;
    assert_eq!(models(&hook[1]), ["b:firing", "c:firing"]);
    // b recovers: its resolution goes out with c still firing.
    push(&d, t0 + 30_000, &slow(0.0)).await;
    clock.set(t0 + 30_000);
    evaluated_at(&d, t0 + 30_000).await;
    let hook = rx.wait("/hook", 3).await;
    assert_eq!(models(&hook[2]), ["c:firing", "b:resolved"]);
    assert_eq!(hook[2]["status"], "firing");
    let slack = rx.wait("/slack", 3).await;
    assert_eq!(slack[2]["attachments"][0]["title"], "SlowModel: 1 firing");
    // The on-call robots heard nothing new (ModelDown unchanged, repeat_interval 4h).
    assert_eq!((rx.at("/ding").len(), rx.at("/feishu").len()), (1, 1));

    // History, from the stored ALERTS series: b fired from t0 to t0 + 30 s.
    let h = cli(&d, &["alerts", "history", "--since", "1h", "alertname=\"SlowModel\"", "model=\"b\""]);
    let rows: Vec<&str> = h.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{h}");
    assert!(rows[0].starts_with("firing") && rows[0].contains("30s"), "{h}");
    let mut c = pb::alerts_client::AlertsClient::connect(d.url()).await.unwrap();
    let r = c
        .alert_history(pb::AlertHistoryRequest {
            range: range_last("1h"),
            matchers: vec!["alertname=\"SlowModel\"".into()],
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(String, i64, Option<i64>)> = r
        .periods
        .iter()
        .map(|p| {
            (
                p.labels["model"].clone(),
                p.start.as_ref().unwrap().seconds * 1000,
                p.end.as_ref().map(|e| e.seconds * 1000),
            )
        })
        .collect();
    assert!(got.contains(&("b".into(), t0, Some(t0 + 30_000))), "{got:?}");
    assert!(got.contains(&("c".into(), t0, None)), "{got:?}");
    // A bad matcher is named.
    let e = c
        .alert_history(pb::AlertHistoryRequest { matchers: vec!["model=~(".into()], ..Default::default() })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("matchers[0]: bad matcher"), "{e:?}");
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_with_auth_reaches_a_real_smtp_server() {
    let Some(_) = tool(".venv/bin/python", "the test venv with aiosmtpd") else { return };
    // Not canonicalized: the venv's python is a link, and only through it is aiosmtpd seen.
    let py = std::env::current_dir().unwrap().join(".venv/bin/python");
    let Some(openssl) = tool("/usr/bin/openssl", "openssl, to make the SMTP server's certificate") else { return };
    let ok = Command::new(&py).args(["-c", "import aiosmtpd"]).status().unwrap().success();
    if !ok {
        assert!(std::env::var("CI").is_err(), "aiosmtpd is missing from .venv (make test installs it)");
        eprintln!("SKIPPED: aiosmtpd is missing from .venv; `make test` installs it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut smtp = Kill(
        Command::new(&py)
            .arg(std::fs::canonicalize("tests/support/smtp_sink.py").unwrap())
            .arg(port.to_string())
            .args([&cert, &key])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, mails) = std::sync::mpsc::channel::<Value>();
    let stdout = smtp.0.stdout.take().unwrap();
    let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line == "READY" {
                let _ = ready_tx.send(());
            } else if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    ready.recv_timeout(Duration::from_secs(30)).expect("the SMTP server did not start");

    let notify = format!(
        r#"
global:
  smtp_smarthost: '127.0.0.1:{port}'
  smtp_from: 'modelwatch <alerts@example.org>'
route:
  receiver: ops
  group_by: [alertname]
  group_wait: 0s
  group_interval: 15s
receivers:
- name: ops
  email_configs:
  - to: 'ops@example.org, ml@example.org'
    auth_username: alerts
    auth_password: secret
    send_resolved: true
    tls_config: {{ca_file: '{}', server_name: localhost}}
    headers: {{Subject: '[{{{{ .Status | toUpper }}}}] {{{{ .CommonLabels.alertname }}}} on {{{{ .CommonLabels.model }}}}'}}
"#,
        cert.display()
    );
    let env = env(dir.path(), RULES, &notify, &[]);
    let clock = Clock(dir.path().join("clock"));
    let t0 = now_ms() / 15_000 * 15_000;
    clock.set(t0 - 15_000);
    let d = start(&dir.path().join("data"), &env);
    push(&d, t0, &[("model_up", "llm", 1.0), ("model_slow", "llm", 1.0)]).await;
    clock.set(t0);
    evaluated_at(&d, t0).await;
    let m = mails.recv_timeout(Duration::from_secs(60)).expect("no mail arrived");
    assert_eq!((m["tls"].as_bool(), m["user"].as_str()), (Some(true), Some("alerts")), "{m}");
    assert_eq!(m["from"], "alerts@example.org");
    assert_eq!(m["to"], serde_json::json!(["ops@example.org", "ml@example.org"]));
    let data = m["data"].as_str().unwrap();
    assert!(data.contains("Subject: [FIRING] SlowModel on llm"), "{data}");
    assert!(data.contains("To: ops@example.org, ml@example.org"), "{data}");
    assert!(data.contains("llm is slow") && data.contains("alertname=SlowModel"), "{data}");
    // Resolved: a second mail.
    push(&d, t0 + 15_000, &[("model_up", "llm", 1.0), ("model_slow", "llm", 0.0)]).await;
    clock.set(t0 + 15_000);
    evaluated_at(&d, t0 + 15_000).await;
    let m = mails.recv_timeout(Duration::from_secs(60)).expect("no resolved mail arrived");
    assert!(m["data"].as_str().unwrap().contains("Subject: [RESOLVED] SlowModel on llm"), "{m}");
    // The attempts are logged (once the SMTP session has ended, just after the server took
    // the mail).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(dir.path().join("data/notify/attempts.log")).unwrap_or_default();
        let n = log.lines().filter(|l| l.contains("\"email[0]\"") && l.contains("delivered (250)")).count();
        if n == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_forwarded_to_a_real_alertmanager_fire_and_resolve_there() {
    let Some(am_bin) = tool("/usr/bin/prometheus-alertmanager", "Debian's prometheus-alertmanager") else { return };
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start();
    std::fs::write(
        dir.path().join("am.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n- name: hook\n  webhook_configs: [{{url: '{}/am'}}]\n",
            rx.base
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _am = Kill(
        Command::new(am_bin)
            .arg(format!("--config.file={}", dir.path().join("am.yml").display()))
            .arg(format!("--storage.path={}", dir.path().join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let am_addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&am_addr).is_err() {
        assert!(Instant::now() < deadline, "Alertmanager did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let env = env(dir.path(), RULES, "", &[("MODELWATCH__ALERTING__ALERTMANAGERS", format!("[\"http://{am_addr}\"]"))]);
    let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| !k.ends_with("NOTIFY_CONFIG")).collect();
    // The daemon's clock a little behind the real one: Alertmanager judges `endsAt` by its own.
    let clock = Clock(dir.path().join("clock"));
    let t0 = now_ms() / 15_000 * 15_000 - 30_000;
    clock.set(t0 - 15_000);
    let d = start(&dir.path().join("data"), &env);
    push(&d, t0, &[("model_up", "a", 1.0), ("model_slow", "a", 1.0)]).await;
    clock.set(t0);
    evaluated_at(&d, t0).await;
    // Alertmanager holds the alert, as sent, and notified its own receiver.
    let am_alerts = |active: bool| {
        let url = format!("http://{am_addr}/api/v2/alerts?active={active}&silenced=false&inhibited=false");
        async move {
            let r = reqwest::get(&url).await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            serde_json::from_slice::<Vec<Value>>(&r.bytes().await.unwrap()).unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let a = am_alerts(true).await;
        if !a.is_empty() {
            break a;
        }
        assert!(Instant::now() < deadline, "Alertmanager never got the alert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got[0]["labels"]["alertname"], "SlowModel");
    assert_eq!(got[0]["labels"]["model"], "a");
    assert_eq!(got[0]["annotations"]["summary"], "a is slow");
    assert_eq!(got[0]["startsAt"].as_str().unwrap(), modelwatch::notify::payload::rfc3339(t0));
    let sent = rx.wait("/am", 1).await;
    assert_eq!((sent[0]["status"].as_str(), models(&sent[0])), (Some("firing"), vec!["a:firing".to_string()]));
    // Resolved in the daemon: sent with its end; Alertmanager resolves it and says so.
    push(&d, t0 + 15_000, &[("model_up", "a", 1.0), ("model_slow", "a", 0.0)]).await;
    clock.set(t0 + 15_000);
    evaluated_at(&d, t0 + 15_000).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = am_alerts(true).await;
        if a.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "Alertmanager still has the alert active: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = rx.wait("/am", 2).await;
    assert_eq!(models(sent.last().unwrap()), ["a:resolved"]);
    d.stop_ok();
}
