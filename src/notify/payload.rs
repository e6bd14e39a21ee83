//! What a notification says, before any receiver's format: [`Notification`] (a group's alerts
//! at one flush, with Alertmanager's template data), and the bodies built from it that
//! receivers already parse: Alertmanager's webhook payload (version 4), the alert list of
//! Alertmanager's `POST /api/v2/alerts`, and the default subject and text of the chat and mail
//! receivers.
use crate::alert::template::Value as T;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// Go's zero time, which Alertmanager writes for "no end yet".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

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

/// Prometheus' link to the expression of an alert (`/graph?g0.expr=...`).
pub fn generator(external_url: &str, expr: &str) -> String {
    if external_url.is_empty() {
        return String::new();
    }
    let q: String = serde_urlencoded::to_string([("g0.expr", expr), ("g0.tab", "1")]).unwrap_or_default();
    format!("{}/graph?{q}", external_url.trim_end_matches('/'))
}

/// One alert as notifications carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct NAlert {
    /// Sorted, external labels included.
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub starts_at: i64,
    /// `Some` once resolved.
    pub ends_at: Option<i64>,
    pub generator_url: String,
    pub fingerprint: u64,
}

impl NAlert {
    pub fn firing(&self) -> bool {
        self.ends_at.is_none()
    }

    fn status(&self) -> &'static str {
        if self.firing() {
            "firing"
        } else {
            "resolved"
        }
    }

    fn json(&self, ends: Option<i64>) -> Value {
        json!({
            "status": self.status(),
            "labels": obj(&self.labels),
            "annotations": obj(&self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": match (self.ends_at, ends) {
                (Some(t), _) | (None, Some(t)) => rfc3339(t),
                (None, None) => ZERO_TIME.to_string(),
            },
            "generatorURL": self.generator_url,
            "fingerprint": format!("{:016x}", self.fingerprint),
        })
    }

    fn template(&self) -> T {
        T::Dict(BTreeMap::from([
            ("Status".into(), T::Str(self.status().into())),
            ("Labels".into(), T::Map(self.labels.iter().cloned().collect())),
            ("Annotations".into(), T::Map(self.annotations.iter().cloned().collect())),
            ("StartsAt".into(), T::Str(rfc3339(self.starts_at))),
            ("EndsAt".into(), T::Str(self.ends_at.map_or(ZERO_TIME.to_string(), rfc3339))),
            ("GeneratorURL".into(), T::Str(self.generator_url.clone())),
            ("Fingerprint".into(), T::Str(format!("{:016x}", self.fingerprint))),
        ]))
    }
}

fn obj(pairs: &[(String, String)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<Map<_, _>>())
}

/// The pairs every one of `sets` holds with the same value.
fn common(sets: &[&[(String, String)]]) -> Vec<(String, String)> {
    let Some((first, rest)) = sets.split_first() else { return Vec::new() };
    first.iter().filter(|p| rest.iter().all(|s| s.contains(p))).cloned().collect()
}

/// A group's alerts at one flush, for one receiver.
#[derive(Debug, Clone)]
pub struct Notification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: Vec<(String, String)>,
    /// Firing first, then resolved; each part sorted by labels.
    pub alerts: Vec<NAlert>,
    pub external_url: String,
}

impl Notification {
    pub fn firing(&self) -> usize {
        self.alerts.iter().filter(|a| a.firing()).count()
    }

    pub fn status(&self) -> &'static str {
        if self.firing() > 0 {
            "firing"
        } else {
            "resolved"
        }
    }

    pub fn common_labels(&self) -> Vec<(String, String)> {
        common(&self.alerts.iter().map(|a| a.labels.as_slice()).collect::<Vec<_>>())
    }

    pub fn common_annotations(&self) -> Vec<(String, String)> {
        common(&self.alerts.iter().map(|a| a.annotations.as_slice()).collect::<Vec<_>>())
    }

    /// Alertmanager's template data (`.Status`, `.Alerts`, `.GroupLabels`, ...).
    pub fn template_data(&self) -> T {
        let map = |p: Vec<(String, String)>| T::Map(p.into_iter().collect());
        T::Dict(BTreeMap::from([
            ("Receiver".into(), T::Str(self.receiver.clone())),
            ("Status".into(), T::Str(self.status().into())),
            ("Alerts".into(), T::List(self.alerts.iter().map(NAlert::template).collect())),
            ("GroupLabels".into(), map(self.group_labels.clone())),
            ("CommonLabels".into(), map(self.common_labels())),
            ("CommonAnnotations".into(), map(self.common_annotations())),
            ("ExternalURL".into(), T::Str(self.external_url.clone())),
            ("GroupKey".into(), T::Str(self.group_key.clone())),
        ]))
    }

    /// Alertmanager's webhook payload (version 4), with at most `max_alerts` alerts (0: all).
    pub fn webhook(&self, max_alerts: usize) -> Vec<u8> {
        let n = if max_alerts == 0 { self.alerts.len() } else { max_alerts.min(self.alerts.len()) };
        let body = json!({
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": self.alerts.len() - n,
            "status": self.status(),
            "receiver": self.receiver,
            "groupLabels": obj(&self.group_labels),
            "commonLabels": obj(&self.common_labels()),
            "commonAnnotations": obj(&self.common_annotations()),
            "externalURL": self.external_url,
            "alerts": self.alerts[..n].iter().map(|a| a.json(None)).collect::<Vec<_>>(),
        });
        serde_json::to_vec(&body).expect("JSON of strings")
    }

    /// The default one-line title: `[FIRING:2] HighLatency llm-7b (page)`: the status, the
    /// group's label values, and the other labels all its alerts share.
    pub fn title(&self) -> String {
        let mut s = self.status().to_uppercase();
        if self.firing() > 0 {
            s = format!("{s}:{}", self.firing());
        }
        let group: Vec<&str> = self.group_labels.iter().map(|(_, v)| v.as_str()).collect();
        let rest: Vec<String> = self
            .common_labels()
            .into_iter()
            .filter(|(k, _)| !self.group_labels.iter().any(|(g, _)| g == k))
            .map(|(_, v)| v)
            .collect();
        let mut t = format!("[{s}] {}", group.join(" "));
        if !rest.is_empty() {
            t = format!("{} ({})", t.trim_end(), rest.join(" "));
        }
        t.trim_end().to_string()
    }

    /// The default text: each alert with its summary (or description), labels and start.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (title, firing) in [("Firing", true), ("Resolved", false)] {
            let part: Vec<&NAlert> = self.alerts.iter().filter(|a| a.firing() == firing).collect();
            if part.is_empty() {
                continue;
            }
            out.push_str(&format!("{title} ({}):\n", part.len()));
            for a in part {
                let ann = |k: &str| a.annotations.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
                let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("- {}\n", ann("summary").or(ann("description")).unwrap_or("")));
                out.push_str(&format!("  labels: {}\n", labels.join(" ")));
                out.push_str(&format!("  since: {}", rfc3339(a.starts_at)));
                if let Some(e) = a.ends_at {
                    out.push_str(&format!(", until {}", rfc3339(e)));
                }
                out.push('\n');
                if !a.generator_url.is_empty() {
                    out.push_str(&format!("  source: {}\n", a.generator_url));
                }
            }
        }
        out
    }
}

/// The body of Alertmanager's `POST /api/v2/alerts`; `valid_until` is the `endsAt` of firing
/// alerts (resent before then while they fire).
pub fn alertmanager(alerts: &[NAlert], valid_until: i64) -> Vec<u8> {
    let list: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let mut v = a.json(Some(valid_until));
            if let Value::Object(m) = &mut v {
                // Alertmanager's API takes these five fields only.
                m.remove("status");
                m.remove("fingerprint");
            }
            v
        })
        .collect();
    serde_json::to_vec(&list).expect("JSON of strings")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(labels: &[(&str, &str)], ends: Option<i64>) -> NAlert {
        let labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        NAlert {
            fingerprint: fingerprint(&labels),
            labels,
            annotations: vec![("summary".into(), "slow".into())],
            starts_at: 0,
            ends_at: ends,
            generator_url: String::new(),
        }
    }

    #[test]
    fn a_group_reads_as_alertmanager_writes_it() {
        let n = Notification {
            receiver: "team".into(),
            group_key: "{}:{alertname=\"Slow\"}".into(),
            group_labels: vec![("alertname".into(), "Slow".into())],
            alerts: vec![
                a(&[("alertname", "Slow"), ("model", "a"), ("severity", "page")], None),
                a(&[("alertname", "Slow"), ("model", "b"), ("severity", "page")], Some(60_000)),
            ],
            external_url: String::new(),
        };
        assert_eq!(n.title(), "[FIRING:1] Slow (page)");
        let v: Value = serde_json::from_slice(&n.webhook(1)).unwrap();
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(v["commonLabels"], json!({"alertname": "Slow", "severity": "page"}));
        assert_eq!(v["alerts"].as_array().unwrap().len(), 1);
        let t = crate::alert::template::Template::parse_notification(
            "t",
            "{{ .Status | toUpper }} {{ len .Alerts.Firing }} {{ .GroupLabels.SortedPairs.Values | join \",\" }}{{ range .Alerts.Resolved }} {{ .Labels.model }}{{ end }}",
        )
        .unwrap();
        assert_eq!(t.expand_dot(&n.template_data()).unwrap(), "FIRING 1 Slow b");
    }
}
