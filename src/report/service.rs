//! The service report: one service, model or version over a range.
use super::{attach_messages, count, points, selector, Env, Prom, Scan, Span};
use crate::pb;
use crate::promql::PromqlError;
use crate::query::{duration, parse_duration, timestamp, Budget, QueryError};
use crate::store::aggs::STAGES;
use crate::store::Scanned;
use std::collections::{BTreeMap, HashMap};

const REQ: &str = "modelwatch_inference_requests_total";
const LAT: &str = "modelwatch_inference_latency_seconds";
const STAGE: &str = "modelwatch_inference_stage_latency_seconds";
const QUANTILES: [(&str, f64); 5] = [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)];
/// Examples kept per error type.
const EXAMPLES: usize = 3;

fn invalid(field: &'static str, reason: String) -> PromqlError {
    QueryError::Invalid { field, reason }.into()
}

/// The interval of the per-interval series: asked, or the span in about 60 whole buckets.
fn step_of(req: &pb::ServiceReportRequest, span: Span, bucket: i64) -> Result<i64, PromqlError> {
    if req.step.is_empty() {
        let raw = (span.ms() / 60).max(bucket);
        return Ok(raw.div_euclid(bucket).max(1) * bucket);
    }
    let s = parse_duration("step", &req.step)?.as_millis() as i64;
    if s < bucket || s % bucket != 0 {
        return Err(invalid(
            "step",
            format!("{} must be a multiple of the aggregation bucket ({bucket} ms, storage.event_bucket)", req.step),
        ));
    }
    Ok(s)
}

pub fn service_report(
    env: &Env,
    req: &pb::ServiceReportRequest,
    budget: &mut Budget,
) -> Result<pb::ServiceReportResponse, PromqlError> {
    let span = Span::of(env, req.range.as_ref())?;
    let bucket = env.store.bucket_ms();
    let slow_ms = if req.slow_threshold.is_empty() {
        1000
    } else {
        parse_duration("slow_threshold", &req.slow_threshold)?.as_millis() as i64
    };
    let step = step_of(req, span, bucket)?;
    let top_n = if req.top_errors == 0 { 5 } else { req.top_errors.min(100) as usize };
    let pairs = [("service", req.service.as_str()), ("model", req.model.as_str()), ("version", req.version.as_str())];
    let sel = selector(&pairs, &[]);
    let w = span.window();
    let mut p = Prom::new(env, budget, span);

    let by_status = p.by("requests_by_status", "status", &format!("sum by (status) (increase({REQ}{sel}[{w}]))"))?;
    let requests = count(by_status.values().sum());
    let errors = count(by_status.iter().filter(|(s, _)| *s != "ok").map(|(_, v)| v).sum());
    let mut latency = pb::LatencySummary {
        count: count(p.scalar("latency_count", &format!("sum(increase({LAT}_count{sel}[{w}]))"))?),
        mean_ms: 1000.0
            * p.scalar(
                "latency_mean",
                &format!("sum(increase({LAT}_sum{sel}[{w}])) / sum(increase({LAT}_count{sel}[{w}]))"),
            )?,
        ..Default::default()
    };
    let mut stages: BTreeMap<String, pb::LatencySummary> = BTreeMap::new();
    for (k, st) in p.by("stage_count", "stage", &format!("sum by (stage) (increase({STAGE}_count{sel}[{w}]))"))? {
        stages.entry(k).or_default().count = count(st);
    }
    for (name, q) in QUANTILES {
        let v = 1000.0
            * p.scalar(
                &format!("latency_{name}"),
                &format!("histogram_quantile({q}, sum(rate({LAT}_bucket{sel}[{w}])))"),
            )?;
        set_quantile(&mut latency, name, v);
        let per_stage = p.by(
            &format!("stage_{name}"),
            "stage",
            &format!("histogram_quantile({q}, sum by (stage) (rate({STAGE}_bucket{sel}[{w}])))"),
        )?;
        for (st, v) in per_stage {
            set_quantile(stages.entry(st).or_default(), name, 1000.0 * v);
        }
    }
    // Stage latencies have no sums: their mean is not kept.
    let le = crate::promql::fmt_value(slow_ms as f64 / 1000.0);
    let slow = count(p.scalar(
        "slow_requests",
        &format!(
            "sum(increase({LAT}_count{sel}[{w}])) - sum(increase({LAT}_bucket{}[{w}]))",
            selector(&pairs, &[&format!("le=\"{le}\"")])
        ),
    )?);
    let sums: Vec<u64> = ["prompt_tokens", "completion_tokens", "input_bytes", "output_bytes"]
        .iter()
        .map(|k| Ok(count(p.scalar(k, &format!("sum(increase(modelwatch_inference_{k}_total{sel}[{w}]))"))?)))
        .collect::<Result<_, PromqlError>>()?;
    let top = p.by(
        "top_errors",
        "error_type",
        &format!("topk({top_n}, sum by (error_type) (increase(modelwatch_inference_errors_total{sel}[{w}])))"),
    )?;

    // Per interval: requests, errors and p95 of each step ending at the point.
    let sw = super::prom_duration(step);
    let (first, last) = (span.start + step, span.end);
    let err_sel = selector(&pairs, &["status!=\"ok\""]);
    let reqs = points(&p.range("series_requests", &format!("sum(increase({REQ}{sel}[{sw}]))"), first, last, step)?);
    let errs = points(&p.range("series_errors", &format!("sum(increase({REQ}{err_sel}[{sw}]))"), first, last, step)?);
    let p95s = points(&p.range(
        "series_p95",
        &format!("histogram_quantile(0.95, sum(rate({LAT}_bucket{sel}[{sw}])))"),
        first,
        last,
        step,
    )?);
    let interval = |t: i64, len: i64, n: f64, e: f64, p95: Option<&f64>| pb::IntervalFigures {
        start: timestamp(t - len),
        requests: count(n),
        throughput_per_s: n / (len as f64 / 1000.0),
        error_rate: if n > 0.0 { e / n } else { 0.0 },
        p95_ms: p95.filter(|v| v.is_finite()).map_or(0.0, |v| v * 1000.0),
    };
    let series = reqs
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(t, n)| interval(*t, step, *n, errs.get(t).copied().unwrap_or(0.0), p95s.get(t)))
        .collect();

    // Busiest hours: requests in each UTC hour of the range.
    const HOUR: i64 = 3_600_000;
    let h0 = span.start.div_euclid(HOUR) * HOUR + HOUR;
    let h1 = (span.end + HOUR - 1).div_euclid(HOUR) * HOUR;
    let hreqs = points(&p.range("hourly_requests", &format!("sum(increase({REQ}{sel}[1h]))"), h0, h1, HOUR)?);
    let herrs = points(&p.range("hourly_errors", &format!("sum(increase({REQ}{err_sel}[1h]))"), h0, h1, HOUR)?);
    let hp95 = points(&p.range(
        "hourly_p95",
        &format!("histogram_quantile(0.95, sum(rate({LAT}_bucket{sel}[1h])))"),
        h0,
        h1,
        HOUR,
    )?);
    let mut hours: Vec<(i64, f64)> = hreqs.into_iter().filter(|(_, n)| *n > 0.0).collect();
    hours.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let busiest_hours = hours
        .iter()
        .take(5)
        .map(|(t, n)| interval(*t, HOUR, *n, herrs.get(t).copied().unwrap_or(0.0), hp95.get(t)))
        .collect();
    let queries = p.into_queries();

    // Stored events: the label's distribution and the newest examples of each top error type.
    let mut scan = Scan::new(env.cfg);
    let mut dist: HashMap<String, u64> = HashMap::new();
    let mut examples: HashMap<String, Vec<pb::ErrorExample>> = HashMap::new();
    let want_examples = !top.is_empty();
    if !req.label.is_empty() || want_examples {
        // Only groups with events of the service, model and version asked for are decoded.
        let asked = |t: &[&str; 5], _: i32| {
            [(&req.service, t[0]), (&req.model, t[1]), (&req.version, t[2])]
                .iter()
                .all(|(f, v)| f.is_empty() || *f == v)
        };
        env.store.scan_events_where(span.start, span.end - 1, &asked, |s| {
            let e = match s {
                Scanned::Passed(n) => return scan.pass(n),
                Scanned::Record(_, e) => e,
            };
            if !scan.take() {
                return false;
            }
            let keep = [(&req.service, &e.service), (&req.model, &e.model), (&req.version, &e.model_version)]
                .iter()
                .all(|(f, v)| f.is_empty() || f == v);
            if !keep {
                return true;
            }
            if !req.label.is_empty() {
                *dist.entry(e.labels.get(&req.label).cloned().unwrap_or_default()).or_default() += 1;
            }
            if !e.error_type.is_empty() && top.contains_key(&e.error_type) {
                let v = examples.entry(e.error_type.clone()).or_default();
                if v.len() < EXAMPLES {
                    v.push(super::example(e.timestamp_ms, &e.request_id, &e.service, &e.model, "event"));
                }
            }
            // Without a label to count, stop once every top type has its examples.
            !req.label.is_empty() || examples.len() < top.len() || examples.values().any(|v| v.len() < EXAMPLES)
        })?;
    }
    let events_seen: u64 = dist.values().sum();
    let mut label_distribution: Vec<pb::LabelShare> = dist
        .into_iter()
        .map(|(value, n)| pb::LabelShare {
            value,
            count: n,
            share: if events_seen > 0 { n as f64 / events_seen as f64 } else { 0.0 },
        })
        .collect();
    label_distribution.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
    let mut top_errors: Vec<pb::ErrorTypeSummary> = top
        .into_iter()
        .map(|(t, n)| {
            let mut ex = examples.remove(&t).unwrap_or_default();
            attach_messages(env.store, &mut ex)?;
            Ok(pb::ErrorTypeSummary {
                count: count(n),
                share: if requests > 0 { n / requests as f64 } else { 0.0 },
                examples: ex,
                error_type: t,
            })
        })
        .collect::<Result<_, PromqlError>>()?;
    top_errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.error_type.cmp(&b.error_type)));

    Ok(pb::ServiceReportResponse {
        start: timestamp(span.start),
        end: timestamp(span.end),
        requests,
        errors,
        success_rate: if requests > 0 { 1.0 - errors as f64 / requests as f64 } else { 0.0 },
        throughput_per_s: requests as f64 / span.secs(),
        latency: Some(latency),
        stages: stages.into_iter().filter(|(k, _)| STAGES.contains(&k.as_str())).collect(),
        slow_threshold: duration(slow_ms),
        slow_requests: slow,
        slow_share: if requests > 0 { slow as f64 / requests as f64 } else { 0.0 },
        label: req.label.clone(),
        label_distribution,
        top_errors,
        busiest_hours,
        prompt_tokens: sums[0],
        completion_tokens: sums[1],
        input_bytes: sums[2],
        output_bytes: sums[3],
        step: duration(step),
        series,
        events_scanned: scan.read,
        scan_complete: scan.complete,
        queries,
    })
}

fn set_quantile(s: &mut pb::LatencySummary, name: &str, v: f64) {
    let v = if v.is_finite() { v } else { 0.0 };
    match name {
        "p50" => s.p50_ms = v,
        "p90" => s.p90_ms = v,
        "p95" => s.p95_ms = v,
        "p99" => s.p99_ms = v,
        _ => s.max_ms = v,
    }
}
