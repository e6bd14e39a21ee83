//! The error report: failed inference events and error logs by service and error type, with
//! the newest examples and their request ids (for `GetRequest`).
use super::{attach_messages, count, example, selector, Env, Prom, Scan, Span};
use crate::pb;
use crate::promql::{label, PromqlError};
use crate::query::{timestamp, Budget};
use crate::store::Scanned;
use std::collections::BTreeMap;

const REQ: &str = "modelwatch_inference_requests_total";

type Groups = BTreeMap<(String, String), pb::ErrorGroup>;

/// The group of a (service, error_type) series.
fn group_of<'a>(groups: &'a mut Groups, ls: &crate::promql::Labels) -> &'a mut pb::ErrorGroup {
    let k = (label(ls, "service").unwrap_or("").to_string(), label(ls, "error_type").unwrap_or("").to_string());
    groups.entry(k.clone()).or_insert_with(|| pb::ErrorGroup { service: k.0, error_type: k.1, ..Default::default() })
}

pub fn error_report(
    env: &Env,
    req: &pb::ErrorReportRequest,
    budget: &mut Budget,
) -> Result<pb::ErrorReportResponse, PromqlError> {
    let span = Span::of(env, req.range.as_ref())?;
    let per_group = if req.examples == 0 { 3 } else { req.examples.min(50) as usize };
    let sel = selector(&[("service", &req.service), ("model", &req.model)], &[]);
    let log_sel = selector(&[("service", &req.service)], &["level=~\"error|fatal\""]);
    let w = span.window();
    let mut p = Prom::new(env, budget, span);
    let by_status = p.by("requests_by_status", "status", &format!("sum by (status) (increase({REQ}{sel}[{w}]))"))?;
    let requests = count(by_status.values().sum());
    let failed = count(by_status.iter().filter(|(s, _)| *s != "ok").map(|(_, v)| v).sum());
    let events = p.vector(
        "event_errors",
        &format!("sum by (service, model, error_type) (increase(modelwatch_inference_errors_total{sel}[{w}]))"),
    )?;
    let logs = p.vector(
        "error_logs",
        &format!("sum by (service, error_type) (increase(modelwatch_log_records_total{log_sel}[{w}]))"),
    )?;
    let queries = p.into_queries();

    let mut groups: Groups = BTreeMap::new();
    for (ls, v) in &events {
        let g = group_of(&mut groups, ls);
        g.events += count(*v);
        *g.models.entry(label(ls, "model").unwrap_or("").to_string()).or_default() += count(*v);
    }
    let mut error_logs = 0;
    for (ls, v) in &logs {
        let g = group_of(&mut groups, ls);
        g.logs += count(*v);
        error_logs += count(*v);
    }

    // The newest examples of each group: failed events first, then error logs.
    let mut scan = Scan::new(env.cfg);
    // Groups of events only wait for event examples; log-only groups for the log scan.
    let full = |groups: &Groups, events_only: bool| {
        groups.values().filter(|g| !events_only || g.events > 0).all(|g| g.examples.len() >= per_group)
    };
    if !groups.is_empty() {
        // Only groups with failed events (of the model asked for) are decoded.
        let failed_event = |t: &[&str; 5], status: i32| {
            (status >= pb::Status::Error as i32 || !t[4].is_empty()) && (req.model.is_empty() || t[1] == req.model)
        };
        env.store.scan_events_where(span.start, span.end - 1, &failed_event, |s| {
            let e = match s {
                Scanned::Passed(n) => return scan.pass(n),
                Scanned::Record(_, e) => e,
            };
            if !scan.take() {
                return false;
            }
            let failed = e.status >= pb::Status::Error as i32 || !e.error_type.is_empty();
            if !failed || (!req.model.is_empty() && e.model != req.model) {
                return true;
            }
            if let Some(g) = groups.get_mut(&(e.service.clone(), e.error_type.clone())) {
                if g.last_seen.is_none() {
                    g.last_seen = timestamp(e.timestamp_ms);
                }
                if g.examples.len() < per_group {
                    g.examples.push(example(e.timestamp_ms, &e.request_id, &e.service, &e.model, "event"));
                }
            }
            !full(&groups, true)
        })?;
        if req.model.is_empty() && !full(&groups, false) {
            let error_log = |_: &[&str; 5], level: i32| level >= pb::Level::Error as i32;
            env.store.scan_logs_where(span.start, span.end - 1, None, &error_log, |s| {
                let r = match s {
                    Scanned::Passed(n) => return scan.pass(n),
                    Scanned::Record(_, r) => r,
                };
                if !scan.take() {
                    return false;
                }
                if r.level < pb::Level::Error as i32 {
                    return true;
                }
                if let Some(g) = groups.get_mut(&(r.service.clone(), r.error_type.clone())) {
                    let t = timestamp(r.timestamp_ms);
                    if g.last_seen.as_ref().is_none_or(|l| t.as_ref().is_some_and(|t| t.seconds > l.seconds)) {
                        g.last_seen = t;
                    }
                    if g.examples.len() < per_group
                        && !g.examples.iter().any(|x| x.request_id == r.request_id && !x.request_id.is_empty())
                    {
                        let mut ex = example(r.timestamp_ms, &r.request_id, &r.service, "", "log");
                        ex.message = r.message.clone();
                        g.examples.push(ex);
                    }
                }
                !full(&groups, false)
            })?;
        }
    }
    let mut groups: Vec<pb::ErrorGroup> = groups.into_values().collect();
    for g in &mut groups {
        attach_messages(env.store, &mut g.examples)?;
    }
    groups.sort_by(|a, b| (b.events + b.logs).cmp(&(a.events + a.logs)).then(a.service.cmp(&b.service)));
    Ok(pb::ErrorReportResponse {
        start: timestamp(span.start),
        end: timestamp(span.end),
        requests,
        failed_requests: failed,
        error_rate: if requests > 0 { failed as f64 / requests as f64 } else { 0.0 },
        error_logs,
        groups,
        scanned: scan.read,
        scan_complete: scan.complete,
        queries,
    })
}
