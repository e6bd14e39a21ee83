//! Query: turns the query RPCs' requests into store reads and computes the answers (step
//! aggregation, inference statistics from merged HDR histograms, log search). Plain functions
//! over the store, so they are tested without tonic.
//! - [`selector`]: PromQL-style selectors and matcher lists;
//! - [`eval`]: `Query/Eval` and `Query/EvalRange` (PromQL through [`crate::promql`]);
//! - [`plan`]: times (RFC 3339, any offset), durations, ranges;
//! - [`pool`]: the query threads (`query.max_concurrent`, below ingest's CPU priority);
//! - [`limits`]: the [`Budget`] every query spends (`[query]`: series, samples read, points
//!   returned, time), so that no request's cost is unbounded.
pub mod eval;
pub mod limits;
pub mod plan;
pub mod pool;
pub mod selector;

pub use limits::Budget;
pub use plan::{duration, fmt_ms, parse_duration, parse_range, parse_time, timestamp};
pub use selector::parse_selector;

use crate::pb;
use crate::store::aggs::{Agg, STAGES, STATUS_NAMES};
use crate::store::index::NAME_LABEL;
use crate::store::{Scanned, Store, StoreError};
use selector::matchers_of;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A `[query]` limit: the message names the key, the limit and what the query needed.
    #[error("{0}")]
    TooCostly(String),
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The evaluation panicked: a bug, reported as one (the query thread goes on).
    #[error("the query failed (a bug in the daemon, which goes on): {0}")]
    Failed(String),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError::Invalid { field, reason: reason.into() }
}

pub fn list_series(
    store: &Store,
    req: &pb::ListSeriesRequest,
    budget: &mut Budget,
) -> Result<pb::ListSeriesResponse, QueryError> {
    let ms = if req.selector.trim().is_empty() && req.matchers.is_empty() {
        Vec::new()
    } else {
        matchers_of(&req.selector, &req.matchers)?
    };
    let max = budget.max_series();
    if req.limit as usize > max {
        return Err(QueryError::TooCostly(format!("limit {} is more than query.max_series = {max}", req.limit)));
    }
    let limit = if req.limit == 0 { max } else { req.limit as usize };
    // Only the first `limit` (by name and labels) are returned; the rest is counted.
    let mut series = store.select(&ms);
    budget.time()?;
    series.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    let truncated = series.len() > limit;
    series.truncate(limit);
    Ok(pb::ListSeriesResponse {
        series: series
            .into_iter()
            .map(|s| pb::SeriesInfo { name: s.name, labels: s.labels.into_iter().collect(), kind: s.kind })
            .collect(),
        truncated,
    })
}

/// One step window's samples of one series reduced by `agg`.
fn reduce(agg: pb::Aggregation, q: f64, ts: &[i64], vals: &[f64], counter: bool) -> Option<f64> {
    if vals.is_empty() {
        return None;
    }
    use pb::Aggregation as A;
    Some(match agg {
        A::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
        A::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
        A::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        A::Sum => vals.iter().sum(),
        A::Count => vals.len() as f64,
        A::Last => *vals.last()?,
        A::Rate => {
            if vals.len() < 2 {
                return None;
            }
            // Increase with counter resets (a drop means the counter restarted from 0).
            let mut inc = 0.0;
            for w in vals.windows(2) {
                let d = w[1] - w[0];
                inc += if d < 0.0 && counter { w[1] } else { d };
            }
            let dt = (ts[ts.len() - 1] - ts[0]) as f64 / 1000.0;
            if dt <= 0.0 {
                return None;
            }
            inc / dt
        }
        A::Quantile => quantile(&mut vals.to_vec(), q),
    })
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

pub fn query_range(
    store: &Store,
    req: &pb::QueryRangeRequest,
    now: i64,
    budget: &mut Budget,
) -> Result<pb::QueryRangeResponse, QueryError> {
    let ms = matchers_of(&req.selector, &req.matchers)?;
    let (start, end) = parse_range(req.range.as_ref(), now)?;
    let agg = pb::Aggregation::try_from(req.aggregation)
        .map_err(|_| invalid("aggregation", format!("unknown value {}", req.aggregation)))?;
    if agg == pb::Aggregation::Quantile && !(0.0..=1.0).contains(&req.quantile) {
        return Err(invalid("quantile", format!("{} is outside [0, 1]", req.quantile)));
    }
    let span = end - start;
    let step = if req.step.is_empty() {
        (span / 120).max(1000)
    } else {
        parse_duration("step", &req.step)?.as_millis() as i64
    };
    if step <= 0 {
        return Err(invalid("step", "must be positive"));
    }
    // Window k covers [start + k*step, start + (k+1)*step) and is stamped at its start, so a
    // step of at least the range gives one figure for the whole range.
    let nsteps = ((span + 1) + step - 1) / step;
    let nsteps = nsteps as usize;
    budget.points(nsteps)?;
    let grouped = req.combine || !req.group_by.is_empty();
    // Per output series: name, labels, and per step either a value (ungrouped) or the
    // per-series values / pooled samples to combine.
    struct Acc {
        name: String,
        labels: BTreeMap<String, String>,
        values: Vec<Vec<f64>>,
    }
    let mut out: Vec<Acc> = Vec::new();
    let mut slot_of: HashMap<Vec<String>, usize> = HashMap::new();
    let selected = store.select(&ms);
    budget.series(selected.len())?;
    for s in selected {
        budget.time()?;
        let (ts, vals) = store.read_samples(s.id, start, end)?;
        budget.read(ts.len())?;
        let counter = s.kind == pb::MetricKind::Counter as i32;
        let slot = if grouped {
            let key: Vec<String> = req
                .group_by
                .iter()
                .map(|g| s.labels.iter().find(|(k, _)| k == g).map(|(_, v)| v.clone()).unwrap_or_default())
                .collect();
            if !slot_of.contains_key(&key) && !out.is_empty() {
                budget.points(nsteps)?;
            }
            *slot_of.entry(key.clone()).or_insert_with(|| {
                out.push(Acc {
                    name: if req.group_by.iter().any(|g| g == NAME_LABEL) { s.name.clone() } else { String::new() },
                    labels: req.group_by.iter().cloned().zip(key).filter(|(k, _)| k != NAME_LABEL).collect(),
                    values: vec![Vec::new(); nsteps],
                });
                out.len() - 1
            })
        } else {
            if !out.is_empty() {
                budget.points(nsteps)?;
            }
            out.push(Acc {
                name: s.name.clone(),
                labels: s.labels.iter().cloned().collect(),
                values: vec![Vec::new(); nsteps],
            });
            out.len() - 1
        };
        let mut i0 = 0;
        for w in 0..nsteps {
            let hi = start + (w as i64 + 1) * step;
            let mut i1 = i0;
            while i1 < ts.len() && ts[i1] < hi {
                i1 += 1;
            }
            if agg == pb::Aggregation::Quantile && grouped {
                out[slot].values[w].extend_from_slice(&vals[i0..i1]);
            } else if let Some(v) = reduce(agg, req.quantile, &ts[i0..i1], &vals[i0..i1], counter) {
                out[slot].values[w].push(v);
            }
            i0 = i1;
        }
    }
    let series = out
        .into_iter()
        .map(|a| {
            let points = a
                .values
                .into_iter()
                .enumerate()
                .filter(|(_, v)| !v.is_empty())
                .map(|(w, mut v)| {
                    use pb::Aggregation as A;
                    let value = if !grouped {
                        v[0]
                    } else {
                        match agg {
                            A::Sum | A::Count | A::Rate => v.iter().sum(),
                            A::Min => v.iter().copied().fold(f64::INFINITY, f64::min),
                            A::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                            A::Avg | A::Last => v.iter().sum::<f64>() / v.len() as f64,
                            A::Quantile => quantile(&mut v, req.quantile),
                        }
                    };
                    pb::Point { time: timestamp(start + w as i64 * step), value }
                })
                .collect();
            pb::SeriesResult { name: a.name, labels: a.labels.into_iter().collect(), points }
        })
        .collect();
    Ok(pb::QueryRangeResponse { series, start: timestamp(start), end: timestamp(end), step: duration(step) })
}

fn latency_summary(h: &hdrhistogram::Histogram<u64>, exact_sum_us: Option<u64>) -> pb::LatencySummary {
    let n = h.len();
    let ms = |us: u64| us as f64 / 1000.0;
    if n == 0 {
        return pb::LatencySummary::default();
    }
    pb::LatencySummary {
        count: n,
        mean_ms: exact_sum_us.map_or(h.mean() / 1000.0, |s| s as f64 / n as f64 / 1000.0),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

fn figures(agg: &Agg, start: i64, end: i64) -> pb::InferenceFigures {
    let a = &agg.figures;
    let secs = ((end - start) as f64 / 1000.0).max(0.001);
    let errors = a.count - a.by_status[0] - a.by_status[1];
    let mut by_status: HashMap<String, u64> = HashMap::new();
    by_status.insert("ok".into(), a.by_status[0] + a.by_status[1]);
    for (name, n) in STATUS_NAMES.iter().zip(a.by_status).skip(2) {
        if n > 0 {
            by_status.insert(name.to_string(), n);
        }
    }
    pb::InferenceFigures {
        start: timestamp(start),
        end: timestamp(end),
        count: a.count,
        throughput_per_s: a.count as f64 / secs,
        error_rate: if a.count == 0 { 0.0 } else { errors as f64 / a.count as f64 },
        latency: Some(latency_summary(&agg.latency, Some(a.latency_sum_us))),
        stages: STAGES
            .iter()
            .zip(&agg.stages)
            .filter_map(|(name, h)| h.as_ref().map(|h| (name.to_string(), latency_summary(h, None))))
            .collect(),
        by_status,
        by_error_type: a.by_error.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        prompt_tokens: a.prompt_tokens,
        completion_tokens: a.completion_tokens,
        input_bytes: a.input_bytes,
        output_bytes: a.output_bytes,
    }
}

pub fn inference_stats(
    store: &Store,
    req: &pb::InferenceStatsRequest,
    now: i64,
    budget: &mut Budget,
) -> Result<pb::InferenceStatsResponse, QueryError> {
    const FIELDS: [&str; 4] = ["service", "model", "model_version", "endpoint"];
    let mut by = Vec::new();
    for g in &req.group_by {
        match FIELDS.iter().position(|f| f == g) {
            Some(i) => by.push(i),
            None => {
                return Err(invalid("group_by", format!("{g:?} is not one of service, model, model_version, endpoint")))
            }
        }
    }
    let (start, end) = parse_range(req.range.as_ref(), now)?;
    let bucket = store.bucket_ms();
    // Buckets are whole: a range covers every bucket it touches.
    let b0 = start.div_euclid(bucket) * bucket;
    let b1 = end.div_euclid(bucket) * bucket;
    let step = if req.step.is_empty() {
        None
    } else {
        let s = parse_duration("step", &req.step)?.as_millis() as i64;
        if s < bucket || s % bucket != 0 {
            return Err(invalid(
                "step",
                format!(
                    "{} must be a multiple of the aggregation bucket ({} ms, storage.event_bucket)",
                    req.step, bucket
                ),
            ));
        }
        budget.points(((b1 - b0) / s + 1) as usize)?;
        Some(s)
    };
    let filter = [&req.service, &req.model, &req.model_version, &req.endpoint];
    let groups = store.inference_groups(|g| filter.iter().zip(g).all(|(f, v)| f.is_empty() || *f == v));
    let key_of: HashMap<u32, Vec<String>> =
        groups.iter().map(|(id, g)| (*id, by.iter().map(|&i| g[i].clone()).collect())).collect();
    let ids: Vec<u32> = groups.iter().map(|(id, _)| *id).collect();
    let mut totals: BTreeMap<Vec<String>, Agg> = BTreeMap::new();
    let mut steps: BTreeMap<(Vec<String>, i64), Agg> = BTreeMap::new();
    let mut over: Option<QueryError> = None;
    store.read_aggs(&ids, b0, b1, |g, b, a| {
        if let Err(e) = budget.read(1) {
            over = Some(e);
            return false;
        }
        let key = key_of.get(&g).cloned().unwrap_or_default();
        if let Some(s) = step {
            let w = b0 + (b - b0).div_euclid(s) * s;
            steps.entry((key.clone(), w)).or_default().merge(a);
        }
        totals.entry(key).or_default().merge(a);
        true
    })?;
    if let Some(e) = over {
        return Err(e);
    }
    let range_end = b1 + bucket;
    let groups = totals
        .into_iter()
        .map(|(key, agg)| {
            let step_figs = match step {
                Some(s) => steps
                    .range((key.clone(), i64::MIN)..=(key.clone(), i64::MAX))
                    .map(|((_, w), a)| figures(a, *w, (*w + s).min(range_end)))
                    .collect(),
                None => Vec::new(),
            };
            pb::InferenceGroup {
                key: by.iter().map(|&i| FIELDS[i].to_string()).zip(key).collect(),
                total: Some(figures(&agg, b0, range_end)),
                steps: step_figs,
            }
        })
        .collect();
    Ok(pb::InferenceStatsResponse { groups, start: timestamp(b0), end: timestamp(range_end), bucket: duration(bucket) })
}

pub fn search_logs(
    store: &Store,
    req: &pb::SearchLogsRequest,
    now: i64,
    budget: &mut Budget,
) -> Result<pb::SearchLogsResponse, QueryError> {
    let (start, end) = parse_range(req.range.as_ref(), now)?;
    if pb::Level::try_from(req.min_level).is_err() {
        return Err(invalid(
            "min_level",
            format!("{} is not a known level (LEVEL_TRACE … LEVEL_FATAL)", req.min_level),
        ));
    }
    let limit = match req.limit {
        0 => 100,
        n => (n as usize).min(10_000),
    };
    let keep = |r: &pb::LogRecord| {
        r.timestamp_ms >= start
            && r.timestamp_ms <= end
            && (req.service.is_empty() || r.service == req.service)
            && r.level >= req.min_level
            && (req.request_id.is_empty() || r.request_id == req.request_id)
            && (req.contains.is_empty() || r.message.contains(&req.contains))
    };
    let before = if req.page_token.is_empty() {
        None
    } else {
        let b = decode_hex(&req.page_token)
            .filter(|b| b.len() == 20)
            .ok_or_else(|| invalid("page_token", "not a token from a previous response"))?;
        Some(<[u8; 20]>::try_from(b.as_slice()).expect("length checked"))
    };
    let mut records = Vec::new();
    let mut next = String::new();
    if !req.request_id.is_empty() {
        // The request-id index is small per id: read it whole, newest first, no paging.
        let found = store.logs_by_request(&req.request_id)?;
        budget.read(found.len())?;
        let mut all: Vec<pb::LogRecord> = found.into_iter().filter(|r| keep(r)).collect();
        all.reverse();
        all.truncate(limit);
        records = all;
    } else {
        let mut last = None;
        let mut over = None;
        // Groups of other services or lower levels are read only as far as their tuples.
        let want =
            |t: &[&str; 5], level: i32| (req.service.is_empty() || t[0] == req.service) && level >= req.min_level;
        store.scan_logs_where(start, end, before, &want, |s| {
            let (k, r) = match s {
                Scanned::Record(k, r) => (k, r),
                Scanned::Passed(n) => {
                    return match budget.read(passed_cost(n)) {
                        Ok(()) => true,
                        Err(e) => {
                            over = Some(e);
                            false
                        }
                    }
                }
            };
            if let Err(e) = budget.read(1) {
                over = Some(e);
                return false;
            }
            if keep(&r) {
                records.push(r);
            }
            last = Some(k);
            records.len() < limit
        })?;
        if let Some(e) = over {
            return Err(e);
        }
        if records.len() == limit {
            if let Some(k) = last {
                next = encode_hex(&k);
            }
        }
    }
    Ok(pb::SearchLogsResponse { records, next_page_token: next })
}

/// What records that a scan passed over by their tuple count against `query.max_samples`: a
/// sixteenth of a decoded record each (reading a group's tuples costs about that much of
/// decoding it).
pub fn passed_cost(n: usize) -> usize {
    n.div_ceil(16)
}

pub fn get_request(
    store: &Store,
    req: &pb::GetRequestRequest,
    budget: &mut Budget,
) -> Result<pb::GetRequestResponse, QueryError> {
    if req.request_id.is_empty() {
        return Err(invalid("request_id", "is required"));
    }
    let events = store.events_by_request(&req.request_id)?;
    budget.read(events.len())?;
    let logs = store.logs_by_request(&req.request_id)?;
    budget.read(logs.len())?;
    Ok(pb::GetRequestResponse { events, logs })
}

fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::MatchOp;

    #[test]
    fn selectors_parse() {
        let ms = parse_selector(r#"gpu_util{gpu="0", model=~"m.*",x!="y" ,z!~"a|b"}"#).unwrap();
        assert_eq!(ms.len(), 5);
        assert_eq!((ms[0].name.as_str(), ms[0].value.as_str()), (NAME_LABEL, "gpu_util"));
        assert_eq!(ms[2].op, MatchOp::Re);
        assert_eq!(ms[3].op, MatchOp::Neq);
        assert_eq!(ms[4].op, MatchOp::Nre);
        assert!(ms[4].matches("c") && !ms[4].matches("a"));
        assert_eq!(parse_selector(r#"{a="q\"uote"}"#).unwrap()[0].value, "q\"uote");
        for bad in [r#"m{a="1""#, r#"m{a~"1"}"#, r#"m{="1"}"#, r#"m{a="1}"#, r#"m{a=~"("}"#] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_parse() {
        let now = 1_700_000_000_000;
        assert_eq!(
            parse_range(Some(&pb::TimeRange { last: "15m".into(), ..Default::default() }), now).unwrap(),
            (now - 900_000, now)
        );
        let r = pb::TimeRange {
            start: "2023-11-14T22:00:00Z".into(),
            end: "2023-11-14T22:13:20Z".into(),
            ..Default::default()
        };
        assert_eq!(parse_range(Some(&r), now).unwrap(), (1_699_999_200_000, 1_700_000_000_000));
        assert_eq!(parse_range(None, now).unwrap(), (now - 3_600_000, now));
        let err = parse_range(Some(&pb::TimeRange { last: "soon".into(), ..Default::default() }), now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("range.last"), "{err}");
    }

    #[test]
    fn reductions() {
        use pb::Aggregation as A;
        let ts = [0, 1000, 2000, 3000];
        let v = [10.0, 20.0, 5.0, 15.0];
        assert_eq!(reduce(A::Avg, 0.0, &ts, &v, false), Some(12.5));
        assert_eq!(reduce(A::Max, 0.0, &ts, &v, false), Some(20.0));
        assert_eq!(reduce(A::Last, 0.0, &ts, &v, false), Some(15.0));
        // counter reset at 5: increase 10 + 5 + 10 = 25 over 3 s
        assert_eq!(reduce(A::Rate, 0.0, &ts, &v, true), Some(25.0 / 3.0));
        assert_eq!(reduce(A::Quantile, 0.5, &ts, &v, false), Some(12.5));
        assert_eq!(reduce(A::Count, 0.0, &[], &[], false), None);
    }
}
