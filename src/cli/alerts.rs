//! `modelwatch alerts rules|active|history|groups` and `modelwatch silence add|list|expire`:
//! the `Alerts` service of a running daemon as aligned tables (what amtool is to
//! Alertmanager).
use super::conn::Conn;
use crate::pb::{self, alerts_client::AlertsClient};
use crate::report::render::span;
use std::collections::{BTreeMap, HashMap};

async fn connect(addr: &str) -> Result<AlertsClient<Conn>, String> {
    Ok(AlertsClient::new(super::conn::connect(addr).await?))
}

fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn ms(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// `2026-11-23 10:04:05` (UTC), or `-`.
fn when(t: &Option<prost_types::Timestamp>) -> String {
    match ms(t) {
        Some(m) if m > 0 => {
            let s = crate::notify::payload::rfc3339(m / 1000 * 1000);
            s.trim_end_matches(".000Z").replace('T', " ")
        }
        _ => "-".into(),
    }
}

/// The labels but `alertname`, sorted, as `k=v` pairs.
fn labels(l: &HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = l.iter().filter(|(k, _)| k.as_str() != "alertname").collect();
    sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub async fn rules(addr: &str) -> Result<String, String> {
    let r = connect(addr).await?.list_rules(pb::ListRulesRequest {}).await.map_err(status)?.into_inner();
    let rows: Vec<Vec<String>> = r
        .rules
        .iter()
        .map(|x| {
            let d = x.evaluation_duration.as_ref().map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
            vec![
                x.group.clone(),
                x.name.clone(),
                x.r#type.clone(),
                x.health.clone(),
                when(&x.last_evaluation),
                format!("{:.1}ms", d * 1000.0),
                if x.r#type == "alerting" { format!("{}/{}", x.pending, x.firing) } else { "-".into() },
                x.last_error.clone(),
            ]
        })
        .collect();
    let mut out =
        table(&["GROUP", "RULE", "TYPE", "HEALTH", "LAST EVALUATION", "TOOK", "PENDING/FIRING", "ERROR"], &rows);
    if !r.last_reload_ok {
        out.push_str(&format!("last reload refused: {}\n", r.last_reload_errors.join("; ")));
    }
    Ok(out)
}

pub async fn active(addr: &str, matchers: Vec<String>, now_ms: i64) -> Result<String, String> {
    let r =
        connect(addr).await?.active_alerts(pb::ActiveAlertsRequest { matchers }).await.map_err(status)?.into_inner();
    let mut rows: Vec<Vec<String>> = r
        .alerts
        .iter()
        .map(|a| {
            let muted = if !a.silenced_by.is_empty() {
                format!("silenced by {}", a.silenced_by.join(","))
            } else if a.inhibited {
                "inhibited".into()
            } else {
                String::new()
            };
            vec![
                a.state.replace("inactive", "resolved"),
                a.labels.get("alertname").cloned().unwrap_or_default(),
                labels(&a.labels),
                when(&a.active_at),
                ms(&a.active_at).map_or("-".into(), |t| span(now_ms - t)),
                crate::promql::fmt_value(a.value),
                muted,
            ]
        })
        .collect();
    rows.sort();
    if rows.is_empty() {
        return Ok("no alerts\n".into());
    }
    Ok(table(&["STATE", "ALERT", "LABELS", "ACTIVE SINCE", "FOR", "VALUE", "MUTED"], &rows))
}

pub async fn history(addr: &str, range: pb::TimeRange, matchers: Vec<String>) -> Result<String, String> {
    let r = connect(addr)
        .await?
        .alert_history(pb::AlertHistoryRequest { range: Some(range), matchers, limit: 0 })
        .await
        .map_err(status)?
        .into_inner();
    let rows: Vec<Vec<String>> = r
        .periods
        .iter()
        .map(|p| {
            let (s, e) = (ms(&p.start).unwrap_or(0), ms(&p.end));
            vec![
                p.state.clone(),
                p.labels.get("alertname").cloned().unwrap_or_default(),
                labels(&p.labels),
                when(&p.start),
                if e.is_some() { when(&p.end) } else { "(still)".into() },
                e.map_or("-".into(), |e| span(e - s)),
            ]
        })
        .collect();
    if rows.is_empty() {
        return Ok("no alerts in that range\n".into());
    }
    let mut out = table(&["STATE", "ALERT", "LABELS", "FROM", "UNTIL", "LASTED"], &rows);
    if r.truncated {
        out.push_str("(more periods matched; narrow the range or the matchers)\n");
    }
    Ok(out)
}

pub async fn groups(addr: &str) -> Result<String, String> {
    let r = connect(addr)
        .await?
        .list_notification_groups(pb::ListNotificationGroupsRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let rows: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|g| vec![g.receiver.clone(), g.group_key.clone(), g.alerts.to_string(), when(&g.next_flush)])
        .collect();
    Ok(table(&["RECEIVER", "GROUP", "ALERTS", "NEXT FLUSH"], &rows))
}

fn silence_rows(list: &[pb::SilenceInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.state.clone(),
                s.matchers.join(" "),
                when(&s.starts_at),
                when(&s.ends_at),
                s.created_by.clone(),
                s.comment.clone(),
            ]
        })
        .collect();
    table(&["ID", "STATE", "MATCHERS", "STARTS", "ENDS", "BY", "COMMENT"], &rows)
}

pub struct SilenceArgs {
    pub matchers: Vec<String>,
    pub duration: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub author: String,
    pub comment: String,
}

fn parse_time(what: &'static str, s: &str) -> Result<prost_types::Timestamp, String> {
    let ms = crate::query::parse_time(what, s).map_err(|e| e.to_string())?;
    crate::query::timestamp(ms).ok_or_else(|| format!("{what}: out of range"))
}

pub async fn silence_add(addr: &str, a: SilenceArgs) -> Result<String, String> {
    let duration = match (&a.duration, &a.end) {
        (Some(_), Some(_)) => return Err("give --duration or --end, not both".into()),
        (None, None) => Some("1h".to_string()),
        (d, _) => d.clone(),
    };
    let duration = duration
        .map(|d| {
            crate::query::parse_duration("--duration", &d)
                .map(|d| prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
                .map_err(|e| e.to_string())
        })
        .transpose()?;
    let req = pb::CreateSilenceRequest {
        matchers: a.matchers,
        starts_at: a.start.as_deref().map(|s| parse_time("--start", s)).transpose()?,
        ends_at: a.end.as_deref().map(|s| parse_time("--end", s)).transpose()?,
        duration,
        created_by: a.author,
        comment: a.comment,
    };
    let s = connect(addr).await?.create_silence(req).await.map_err(status)?.into_inner();
    Ok(silence_rows(&[s]))
}

pub async fn silence_list(addr: &str, expired: bool) -> Result<String, String> {
    let r = connect(addr)
        .await?
        .list_silences(pb::ListSilencesRequest { include_expired: expired })
        .await
        .map_err(status)?
        .into_inner();
    if r.silences.is_empty() {
        return Ok("no silences\n".into());
    }
    Ok(silence_rows(&r.silences))
}

pub async fn silence_expire(addr: &str, ids: Vec<String>) -> Result<String, String> {
    let mut c = connect(addr).await?;
    let mut out = Vec::new();
    for id in ids {
        out.push(c.expire_silence(pb::ExpireSilenceRequest { id }).await.map_err(status)?.into_inner());
    }
    Ok(silence_rows(&out))
}
