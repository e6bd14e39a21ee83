//! The bodies notifications carry: Alertmanager's webhook payload (version 4), which webhook
//! receivers already parse, and the alert list of Alertmanager's `POST /api/v2/alerts`.
use super::route::Route;
use crate::alert::eval::{Alert, State};
use serde_json::{json, Map, Value};
use std::time::{Duration, UNIX_EPOCH};

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// Go's zero time, which Alertmanager writes for "no end yet".
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A stable 64-bit fingerprint of a label set (FNV-1a over sorted names and values).
pub fn fingerprint(labels: &[(String, String)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn obj(pairs: &[(String, String)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<Map<_, _>>())
}

fn generator(external_url: &str, expr: &str) -> String {
    if external_url.is_empty() {
        return String::new();
    }
    let q: String = serde_urlencoded::to_string([("g0.expr", expr), ("g0.tab", "1")]).unwrap_or_default();
    format!("{}/graph?{q}", external_url.trim_end_matches('/'))
}

/// One alert as both formats write it.
fn alert_json(labels: &[(String, String)], a: &Alert, external_url: &str, expr: &str, ends: Option<i64>) -> Value {
    let resolved = a.state == State::Inactive;
    json!({
        "status": if resolved { "resolved" } else { "firing" },
        "labels": obj(labels),
        "annotations": obj(&a.annotations),
        "startsAt": rfc3339(a.active_at),
        "endsAt": match (resolved, ends) {
            (true, _) => rfc3339(a.resolved_at.unwrap_or(a.active_at)),
            (false, Some(t)) => rfc3339(t),
            (false, None) => ZERO_TIME.to_string(),
        },
        "generatorURL": generator(external_url, expr),
        "fingerprint": format!("{:016x}", fingerprint(labels)),
    })
}

/// Alertmanager's webhook payload (version 4) for one alert routed by `route` to `receiver`.
pub fn webhook(
    route: &Route,
    receiver: &str,
    labels: &[(String, String)],
    a: &Alert,
    external_url: &str,
    expr: &str,
) -> Vec<u8> {
    let group: Vec<(String, String)> = if route.group_by.iter().any(|g| g == "...") {
        labels.to_vec()
    } else {
        labels.iter().filter(|(k, _)| route.group_by.contains(k)).cloned().collect()
    };
    let gk: Vec<String> = group.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    let resolved = a.state == State::Inactive;
    let body = json!({
        "version": "4",
        "groupKey": format!("{{}}:{{{}}}", gk.join(",")),
        "truncatedAlerts": 0,
        "status": if resolved { "resolved" } else { "firing" },
        "receiver": receiver,
        "groupLabels": obj(&group),
        "commonLabels": obj(labels),
        "commonAnnotations": obj(&a.annotations),
        "externalURL": external_url,
        "alerts": [alert_json(labels, a, external_url, expr, None)],
    });
    serde_json::to_vec(&body).expect("JSON of strings")
}

/// The body of Alertmanager's `POST /api/v2/alerts` for one alert; `valid_until` is the
/// `endsAt` of a firing alert (resent before then while it fires).
pub fn alertmanager(
    labels: &[(String, String)],
    a: &Alert,
    external_url: &str,
    expr: &str,
    valid_until: i64,
) -> Vec<u8> {
    let mut v = alert_json(labels, a, external_url, expr, Some(valid_until));
    if let Value::Object(m) = &mut v {
        // Alertmanager's API takes these five fields only.
        m.remove("status");
        m.remove("fingerprint");
    }
    serde_json::to_vec(&json!([v])).expect("JSON of strings")
}
