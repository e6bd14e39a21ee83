//! Query: turns the query RPCs' requests into store reads and computes the answers (range
//! parsing, PromQL-style selectors, step aggregation, inference statistics from merged HDR
//! histograms, log search). Plain functions over the store, so they are tested without tonic.
use crate::pb;
use crate::store::aggs::{Agg, STAGES, STATUS_NAMES};
use crate::store::index::{MatchOp, Matcher, NAME_LABEL};
use crate::store::{Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError::Invalid { field, reason: reason.into() }
}

pub const DEFAULT_RANGE: Duration = Duration::from_secs(3600);
/// Most points one QueryRange series may return.
pub const MAX_POINTS: i64 = 11_000;

pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration, QueryError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| invalid(field, format!("{s:?} is not a duration like \"30s\", \"5m\" or \"1h\": {e}")))
}

fn parse_time(field: &'static str, s: &str) -> Result<i64, QueryError> {
    let t = humantime::parse_rfc3339_weak(s.trim()).map_err(|e| {
        invalid(field, format!("{s:?} is not an RFC 3339 timestamp like \"2024-05-01T12:00:00Z\": {e}"))
    })?;
    Ok(t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
}

pub fn fmt_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// (start, end) in ms, inclusive. `last` wins; else `start`/`end`; else the last hour.
pub fn parse_range(r: Option<&pb::TimeRange>, now: i64) -> Result<(i64, i64), QueryError> {
    let r = r.cloned().unwrap_or_default();
    if !r.last.is_empty() {
        if !r.start.is_empty() {
            return Err(invalid("range", "give either `last` or `start`/`end`, not both"));
        }
        let d = parse_duration("range.last", &r.last)?;
        return Ok((now - d.as_millis() as i64, now));
    }
    let end = if r.end.is_empty() { now } else { parse_time("range.end", &r.end)? };
    let start =
        if r.start.is_empty() { end - DEFAULT_RANGE.as_millis() as i64 } else { parse_time("range.start", &r.start)? };
    if start > end {
        return Err(invalid("range", format!("start {} is after end {}", r.start, fmt_ms(end))));
    }
    Ok((start, end))
}

/// Parses `name{label="v", other=~"re", x!="y", z!~"w"}`; the name and the braces are each
/// optional.
pub fn parse_selector(s: &str) -> Result<Vec<Matcher>, QueryError> {
    let s = s.trim();
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    let (name, rest) = match s.find('{') {
        Some(i) => (s[..i].trim(), &s[i..]),
        None => (s, ""),
    };
    let bad = |why: &str| invalid("selector", format!("{s:?}: {why}"));
    if !name.is_empty() {
        out.push(Matcher::new(NAME_LABEL, MatchOp::Eq, name).map_err(|e| bad(&e.to_string()))?);
    }
    if rest.is_empty() {
        return Ok(out);
    }
    let body = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')).ok_or_else(|| bad("unbalanced braces"))?;
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i].is_whitespace() || chars[*i] == ',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        if label.is_empty() {
            return Err(bad(&format!("expected a label name at position {start}")));
        }
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let op_str: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let (op, len) = match op_str.as_str() {
            "=~" => (MatchOp::Re, 2),
            "!=" => (MatchOp::Neq, 2),
            "!~" => (MatchOp::Nre, 2),
            _ if op_str.starts_with('=') => (MatchOp::Eq, 1),
            _ => return Err(bad(&format!("expected =, !=, =~ or !~ after {label}"))),
        };
        i += len;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() || chars[i] != '"' {
            return Err(bad(&format!("expected a quoted value for {label}")));
        }
        i += 1;
        let mut value = String::new();
        loop {
            match chars.get(i) {
                None => return Err(bad("unterminated string")),
                Some('"') => {
                    i += 1;
                    break;
                }
                Some('\\') => {
                    match chars.get(i + 1) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(*c),
                        None => return Err(bad("unterminated string")),
                    }
                    i += 2;
                }
                Some(c) => {
                    value.push(*c);
                    i += 1;
                }
            }
        }
        out.push(Matcher::new(&label, op, &value).map_err(|e| bad(&format!("bad regex for {label}: {e}")))?);
    }
    Ok(out)
}

fn matchers_of(selector: &str, list: &[pb::Matcher]) -> Result<Vec<Matcher>, QueryError> {
    let mut ms = parse_selector(selector)?;
    for (i, m) in list.iter().enumerate() {
        let op = pb::MatchOp::try_from(m.op).map_err(|_| {
            invalid(
                "matchers",
                format!("matchers[{i}].op {} is not a known value (MATCH_OP_EQ, _NEQ, _RE, _NRE)", m.op),
            )
        })?;
        let op = match op {
            pb::MatchOp::Eq => MatchOp::Eq,
            pb::MatchOp::Neq => MatchOp::Neq,
            pb::MatchOp::Re => MatchOp::Re,
            pb::MatchOp::Nre => MatchOp::Nre,
        };
        ms.push(
            Matcher::new(&m.name, op, &m.value)
                .map_err(|e| invalid("matchers", format!("bad regex for {}: {e}", m.name)))?,
        );
    }
    if ms.is_empty() || ms.iter().all(|m| m.matches("")) {
        return Err(invalid(
            "selector",
            "give at least one matcher that does not match everything, e.g. a metric name",
        ));
    }
    Ok(ms)
}

pub fn list_series(store: &Store, req: &pb::ListSeriesRequest) -> Result<pb::ListSeriesResponse, QueryError> {
    let ms = if req.selector.trim().is_empty() && req.matchers.is_empty() {
        Vec::new()
    } else {
        matchers_of(&req.selector, &req.matchers)?
    };
    let mut series = store.select(&ms);
    series.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    let limit = if req.limit == 0 { 10_000 } else { req.limit as usize };
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

pub fn query_range(store: &Store, req: &pb::QueryRangeRequest, now: i64) -> Result<pb::QueryRangeResponse, QueryError> {
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
    if span / step >= MAX_POINTS {
        return Err(invalid(
            "step",
            format!("{} over this range gives {} points; the most is {MAX_POINTS}", req.step, span / step + 1),
        ));
    }
    // Window k covers [start + k*step, start + (k+1)*step) and is stamped at its start, so a
    // step of at least the range gives one figure for the whole range.
    let nsteps = ((span + 1) + step - 1) / step;
    let nsteps = nsteps as usize;
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
    for s in store.select(&ms) {
        let (ts, vals) = store.read_samples(s.id, start, end)?;
        let counter = s.kind == pb::MetricKind::Counter as i32;
        let slot = if grouped {
            let key: Vec<String> = req
                .group_by
                .iter()
                .map(|g| s.labels.iter().find(|(k, _)| k == g).map(|(_, v)| v.clone()).unwrap_or_default())
                .collect();
            *slot_of.entry(key.clone()).or_insert_with(|| {
                out.push(Acc {
                    name: if req.group_by.iter().any(|g| g == NAME_LABEL) { s.name.clone() } else { String::new() },
                    labels: req.group_by.iter().cloned().zip(key).filter(|(k, _)| k != NAME_LABEL).collect(),
                    values: vec![Vec::new(); nsteps],
                });
                out.len() - 1
            })
        } else {
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
                    pb::Point { timestamp_ms: start + w as i64 * step, value }
                })
                .collect();
            pb::SeriesResult { name: a.name, labels: a.labels.into_iter().collect(), points }
        })
        .collect();
    Ok(pb::QueryRangeResponse { series, start_ms: start, end_ms: end, step_ms: step })
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

fn figures(a: &Agg, start: i64, end: i64) -> pb::InferenceFigures {
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
        start_ms: start,
        end_ms: end,
        count: a.count,
        throughput_per_s: a.count as f64 / secs,
        error_rate: if a.count == 0 { 0.0 } else { errors as f64 / a.count as f64 },
        latency: Some(latency_summary(&a.latency, Some(a.latency_sum_us))),
        stages: STAGES
            .iter()
            .zip(&a.stages)
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
        if (b1 - b0) / s > MAX_POINTS {
            return Err(invalid("step", format!("too many steps; the most is {MAX_POINTS}")));
        }
        Some(s)
    };
    let filter = [&req.service, &req.model, &req.model_version, &req.endpoint];
    let groups = store.inference_groups(|g| filter.iter().zip(g).all(|(f, v)| f.is_empty() || *f == v));
    let key_of: HashMap<u32, Vec<String>> =
        groups.iter().map(|(id, g)| (*id, by.iter().map(|&i| g[i].clone()).collect())).collect();
    let ids: Vec<u32> = groups.iter().map(|(id, _)| *id).collect();
    let mut totals: BTreeMap<Vec<String>, Agg> = BTreeMap::new();
    let mut steps: BTreeMap<(Vec<String>, i64), Agg> = BTreeMap::new();
    store.read_aggs(&ids, b0, b1, |g, b, a| {
        let key = key_of.get(&g).cloned().unwrap_or_default();
        if let Some(s) = step {
            let w = b0 + (b - b0).div_euclid(s) * s;
            steps.entry((key.clone(), w)).or_default().merge(a);
        }
        totals.entry(key).or_default().merge(a);
    })?;
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
    Ok(pb::InferenceStatsResponse { groups, start_ms: b0, end_ms: range_end, bucket_ms: bucket })
}

pub fn search_logs(store: &Store, req: &pb::SearchLogsRequest, now: i64) -> Result<pb::SearchLogsResponse, QueryError> {
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
        let mut all: Vec<pb::LogRecord> =
            store.logs_by_request(&req.request_id)?.into_iter().filter(|r| keep(r)).collect();
        all.reverse();
        all.truncate(limit);
        records = all;
    } else {
        let mut last = None;
        store.scan_logs(start, end, before, |k, r| {
            if keep(&r) {
                records.push(r);
            }
            last = Some(*k);
            records.len() < limit
        })?;
        if records.len() == limit {
            if let Some(k) = last {
                next = encode_hex(&k);
            }
        }
    }
    Ok(pb::SearchLogsResponse { records, next_page_token: next })
}

pub fn get_request(store: &Store, req: &pb::GetRequestRequest) -> Result<pb::GetRequestResponse, QueryError> {
    if req.request_id.is_empty() {
        return Err(invalid("request_id", "is required"));
    }
    Ok(pb::GetRequestResponse {
        events: store.events_by_request(&req.request_id)?,
        logs: store.logs_by_request(&req.request_id)?,
    })
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
