//! Inference events and log records as series, computed at query time from what the store
//! keeps (the per-bucket inference aggregates and the raw logs), never copied into it.
//!
//! Resolution is the aggregate bucket (`storage.event_bucket`, 10 s): a bucket's figures are
//! one sample stamped at the bucket's end. Every series is a counter that starts from zero at
//! the top of each UTC hour (so that a query reads at most an hour before its window), with a
//! zero sample 1 ms after the hour; `rate` and `increase` see that as an ordinary counter reset
//! and stay exact. A series starts with a
//! zero at the start of its first bucket (so `increase` counts from the first event rather than
//! extrapolating), then has a sample at every bucket end to the end of the range (a quiet
//! bucket repeats the count).
//!
//! | series | labels |
//! |---|---|
//! | `modelwatch_inference_requests_total` | service, model, version, endpoint, status (ok, error, timeout, rejected) |
//! | `modelwatch_inference_errors_total` | service, model, version, endpoint, error_type |
//! | `modelwatch_inference_{prompt,completion}_tokens_total`, `..._{input,output}_bytes_total` | service, model, version, endpoint |
//! | `modelwatch_inference_latency_seconds_{bucket,sum,count}` | the above, `le` on `_bucket` |
//! | `modelwatch_inference_stage_latency_seconds_{bucket,count}` | the above, stage, `le` on `_bucket` |
//! | `modelwatch_log_records_total` | service, level, error_type |
//!
//! `histogram_quantile(φ, sum by (...) (rate(<latency>_bucket[w])))` (or `increase`, or without
//! the `sum`) is answered from the merged HDR histograms of the window ([`exact_quantile`]);
//! other uses of `_bucket` see the bounds of [`LE_BOUNDS`], or the one bound a selector names
//! with `le="<seconds>"`. `rate` and `increase` of these counters are exact bucket sums
//! ([`exact_increase`]).
use super::eval::{selector_matchers, Collector, Evaluator, Value};
use super::source::{matches_all, RawSeries};
use super::{Labels, PromqlError, NAME};
use crate::pb;
use crate::query::Budget;
use crate::store::aggs::{
    block_entries, block_heads, encode_slots, encoded_histogram, slot_value, sparse_count_le, Agg, BlockHead, Encoded,
    HistRef, Parts, Sparse, BLOCK, BLOCKS, STAGES, STATUS_NAMES,
};
use crate::store::Store;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Expr, LabelModifier};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

/// The `le` bounds (seconds) of the derived `_bucket` series.
pub const LE_BOUNDS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, f64::INFINITY];

const HOUR: i64 = 3_600_000;
const REQUESTS: &str = "modelwatch_inference_requests_total";
const ERRORS: &str = "modelwatch_inference_errors_total";
const LATENCY: &str = "modelwatch_inference_latency_seconds";
const STAGE_LATENCY: &str = "modelwatch_inference_stage_latency_seconds";
const LOGS: &str = "modelwatch_log_records_total";
const SUMS: [&str; 4] = [
    "modelwatch_inference_prompt_tokens_total",
    "modelwatch_inference_completion_tokens_total",
    "modelwatch_inference_input_bytes_total",
    "modelwatch_inference_output_bytes_total",
];
const GROUP_LABELS: [&str; 4] = ["service", "model", "version", "endpoint"];

/// Every derived metric name.
pub fn names() -> Vec<String> {
    let mut v = vec![REQUESTS.to_string(), ERRORS.to_string(), LOGS.to_string()];
    v.extend(SUMS.iter().map(|s| s.to_string()));
    for base in [LATENCY, STAGE_LATENCY] {
        v.push(format!("{base}_bucket"));
        v.push(format!("{base}_count"));
    }
    v.push(format!("{LATENCY}_sum"));
    v
}

fn le_label(le: f64) -> String {
    if le.is_infinite() {
        "+Inf".into()
    } else {
        format!("{le}")
    }
}

fn make_labels(pairs: &[(&str, &str)]) -> Labels {
    let mut ls: Labels =
        pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ls.sort();
    ls
}

/// Derived series matching `matchers`, with samples in `[start, end]`.
pub fn select(
    store: &Store,
    matchers: &[Matcher],
    start: i64,
    end: i64,
    budget: &mut Budget,
) -> Result<Vec<RawSeries>, PromqlError> {
    let Some(c) = counters(store, matchers, start, end, budget)? else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(c.series.len());
    for (labels, incs) in c.series {
        budget.values(counter_len(&incs, c.b0, c.b1, c.bucket, start, end))?;
        out.push(counter_series(labels, &incs, c.b0, c.b1, c.bucket, start, end));
    }
    Ok(out)
}

/// Derived counters as their increments per bucket (keyed by the bucket's start), before
/// [`counter_series`] makes them samples.
struct Counters {
    /// The first bucket read: the top of the hour of the first bucket whose end is in range.
    b0: i64,
    /// The last bucket whose end is in range.
    b1: i64,
    bucket: i64,
    series: Vec<(Labels, BTreeMap<i64, f64>)>,
}

/// The derived counters matching `matchers` with bucket ends in `[start, end]`; None when no
/// derived name can match or no bucket ends in range.
fn counters(
    store: &Store,
    matchers: &[Matcher],
    start: i64,
    end: i64,
    budget: &mut Budget,
) -> Result<Option<Counters>, PromqlError> {
    let wanted: Vec<String> =
        names().into_iter().filter(|n| matchers.iter().filter(|m| m.name == NAME).all(|m| m.is_match(n))).collect();
    // A selector without a name matcher (`{service="x"}`) sees derived series too, as it
    // would see any metric with those labels.
    if wanted.is_empty() {
        return Ok(None);
    }
    let bucket = store.bucket_ms();
    // Buckets whose end falls in [start, end], from the top of the hour of the first.
    let b_first = (start - bucket).div_euclid(bucket) * bucket;
    let b_read = b_first.div_euclid(HOUR) * HOUR;
    let b_last = (end - bucket).div_euclid(bucket) * bucket;
    if b_last < b_read {
        return Ok(None);
    }
    let mut out = Vec::new();
    let inference: Vec<&String> = wanted.iter().filter(|n| n.starts_with("modelwatch_inference_")).collect();
    if !inference.is_empty() {
        inference_series(store, &inference, matchers, b_read, b_last, budget, &mut out)?;
    }
    if wanted.iter().any(|n| n == LOGS) {
        log_series(store, matchers, b_read, b_last, bucket, budget, &mut out)?;
    }
    out.retain(|(labels, _)| matches_all(matchers, labels));
    Ok(Some(Counters { b0: b_read, b1: b_last, bucket, series: out }))
}

/// The groups (service, model, version, endpoint) whose labels can match `matchers`.
fn groups(store: &Store, matchers: &[Matcher]) -> Vec<(u32, [String; 4])> {
    store.inference_groups(|g| {
        matchers.iter().all(|m| match GROUP_LABELS.iter().position(|l| *l == m.name) {
            Some(i) => m.is_match(&g[i]),
            None => true,
        })
    })
}

/// What a row costs while a query holds it, in the 16-byte units that `query.max_samples`
/// counts (a sample, a value per step): about 20 for a row with a few histogram runs. Counted
/// as 1 before 2026-12-07, when a month of 40 groups' rows (3.3 M) took 7 GB.
fn row_units(p: &Parts<Sparse>) -> usize {
    let runs = p.latency.len() + p.stages.iter().flatten().map(Vec::len).sum::<usize>();
    let errors: usize = p.figures.by_error.keys().map(|k| 48 + k.len()).sum();
    (std::mem::size_of::<((u32, i64), Parts<Sparse>)>() + 24 * runs + errors).div_ceil(16)
}

/// Each (group, bucket)'s aggregate, with sparse histograms, rows of one bucket merged.
fn merged_aggs(
    store: &Store,
    ids: &[u32],
    b0: i64,
    b1: i64,
    budget: &mut Budget,
) -> Result<BTreeMap<(u32, i64), Parts<Sparse>>, PromqlError> {
    let mut rows: BTreeMap<(u32, i64), Parts<Sparse>> = BTreeMap::new();
    let mut over = None;
    store.read_aggs_with(ids, b0, b1, Agg::decode_sparse, |g, b, a| {
        if let Err(e) = budget.read(row_units(&a)) {
            over = Some(e);
            return false;
        }
        match rows.get_mut(&(g, b)) {
            Some(m) => m.merge(&a),
            None => {
                rows.insert((g, b), a);
            }
        }
        true
    })?;
    if let Some(e) = over {
        return Err(e.into());
    }
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
fn inference_series(
    store: &Store,
    names: &[&String],
    matchers: &[Matcher],
    b0: i64,
    b1: i64,
    budget: &mut Budget,
    out: &mut Vec<(Labels, BTreeMap<i64, f64>)>,
) -> Result<(), PromqlError> {
    let groups = groups(store, matchers);
    let ids: Vec<u32> = groups.iter().map(|(id, _)| *id).collect();
    let rows = merged_aggs(store, &ids, b0, b1, budget)?;
    let want = |n: &str| names.iter().any(|x| *x == n);
    let bounds = le_bounds(matchers);
    for (id, g) in &groups {
        let base = [
            ("service", g[0].as_str()),
            ("model", g[1].as_str()),
            ("version", g[2].as_str()),
            ("endpoint", g[3].as_str()),
        ];
        // Per series (labels) its per-bucket increments.
        let mut incs: BTreeMap<Labels, BTreeMap<i64, f64>> = BTreeMap::new();
        let mut add = |extra: &[(&str, &str)], name: &str, b: i64, v: f64| {
            let mut pairs = base.to_vec();
            pairs.push((NAME, name));
            pairs.extend_from_slice(extra);
            *incs.entry(make_labels(&pairs)).or_default().entry(b).or_default() += v;
        };
        let mut any = false;
        for ((_, b), p) in rows.range((*id, i64::MIN)..=(*id, i64::MAX)) {
            any = true;
            let a = &p.figures;
            if want(REQUESTS) {
                add(&[("status", "ok")], REQUESTS, *b, (a.by_status[0] + a.by_status[1]) as f64);
                for (s, name) in STATUS_NAMES.iter().enumerate().skip(2) {
                    add(&[("status", name)], REQUESTS, *b, a.by_status[s] as f64);
                }
            }
            if want(ERRORS) {
                for (t, n) in &a.by_error {
                    add(&[("error_type", t)], ERRORS, *b, *n as f64);
                }
            }
            for (k, name) in SUMS.iter().enumerate() {
                if want(name) {
                    let v = [a.prompt_tokens, a.completion_tokens, a.input_bytes, a.output_bytes][k];
                    add(&[], name, *b, v as f64);
                }
            }
            let lat = |suffix: &str| format!("{LATENCY}_{suffix}");
            if want(&lat("count")) {
                add(&[], &lat("count"), *b, a.count as f64);
            }
            if want(&lat("sum")) {
                add(&[], &lat("sum"), *b, a.latency_sum_us as f64 / 1e6);
            }
            if want(&lat("bucket")) {
                for (le, name) in &bounds {
                    add(&[("le", name)], &lat("bucket"), *b, count_le(&p.latency, *le) as f64);
                }
            }
            let slat = |suffix: &str| format!("{STAGE_LATENCY}_{suffix}");
            for (st, h) in STAGES.iter().zip(&p.stages) {
                let Some(h) = h else { continue };
                if want(&slat("count")) {
                    add(&[("stage", st)], &slat("count"), *b, h.iter().map(|x| x.2).sum::<u64>() as f64);
                }
                if want(&slat("bucket")) {
                    for (le, name) in &bounds {
                        add(&[("stage", st), ("le", name)], &slat("bucket"), *b, count_le(h, *le) as f64);
                    }
                }
            }
        }
        if !any {
            continue;
        }
        out.extend(incs);
    }
    budget.series(out.len())?;
    Ok(())
}

/// The `le` bounds a `_bucket` selector sees, with their label values: the one it names with
/// `le="<seconds>"` (any bound, exact at the histograms' precision, so `count - bucket{le="0.5"}`
/// counts the requests slower than 500 ms), else [`LE_BOUNDS`].
fn le_bounds(matchers: &[Matcher]) -> Vec<(f64, String)> {
    let named = matchers.iter().find(|m| m.name == "le" && m.op == MatchOp::Equal).and_then(|m| {
        let v = if m.value == "+Inf" { f64::INFINITY } else { m.value.parse::<f64>().ok()? };
        (v >= 0.0).then(|| (v, m.value.clone()))
    });
    match named {
        Some(b) => vec![b],
        None => LE_BOUNDS.iter().map(|&le| (le, le_label(le))).collect(),
    }
}

/// Observations of `h` (µs) at or below `le` seconds.
fn count_le(h: &Sparse, le: f64) -> u64 {
    if le.is_infinite() {
        return h.iter().map(|x| x.2).sum();
    }
    let us = (le * 1e6) as u64;
    if us == 0 {
        return 0;
    }
    sparse_count_le(h, us)
}

/// The most samples [`counter_series`] makes of `incs`: one per bucket end in `[start, end]`
/// from its first bucket on, one per hour's restart, and the first zero. Charged to the budget
/// before they are made: a counter repeats its count through quiet buckets, so one event a
/// month back is 260,000 samples over a month's range.
fn counter_len(incs: &BTreeMap<i64, f64>, b0: i64, b1: i64, bucket: i64, start: i64, end: i64) -> usize {
    let first = incs.keys().next().copied().unwrap_or(b0).max(b0);
    let lo = first.max(start.saturating_sub(bucket));
    let hi = b1.min(end);
    if hi < lo {
        return 1;
    }
    let span = (hi - lo) as u64;
    usize::try_from(span / bucket as u64 + span / HOUR as u64 + 3).unwrap_or(usize::MAX)
}

/// A counter from per-bucket increments: cumulative within each UTC hour, one sample per
/// bucket end in `[start, end]` between the first and last bucket that has data.
fn counter_series(
    labels: Labels,
    incs: &BTreeMap<i64, f64>,
    b0: i64,
    b1: i64,
    bucket: i64,
    start: i64,
    end: i64,
) -> RawSeries {
    let (mut ts, mut vals) = (Vec::new(), Vec::new());
    let first = incs.keys().next().copied().unwrap_or(b0).max(b0);
    // The counter was zero until its first bucket began (nothing since the top of that hour):
    // saying so lets `increase` count from the first event instead of extrapolating.
    if first >= start && first <= end {
        ts.push(first);
        vals.push(0.0);
    }
    let mut acc = 0.0;
    let mut hour = first.div_euclid(HOUR);
    let mut b = first;
    while b <= b1 {
        if b.div_euclid(HOUR) != hour {
            hour = b.div_euclid(HOUR);
            // The reset as a zero one millisecond into the hour: the hour's first bucket may
            // count as many as the whole hour before it did, which a reader would not see as
            // a reset without it (and would count only the difference).
            if acc > 0.0 && (start..=end).contains(&(b + 1)) {
                ts.push(b + 1);
                vals.push(0.0);
            }
            acc = 0.0;
        }
        acc += incs.get(&b).copied().unwrap_or(0.0);
        let t = b + bucket;
        if t >= start && t <= end {
            ts.push(t);
            vals.push(acc);
        }
        b += bucket;
    }
    RawSeries { labels, ts, vals }
}

fn level_name(l: i32) -> &'static str {
    match pb::Level::try_from(l).unwrap_or(pb::Level::Unspecified) {
        pb::Level::Trace => "trace",
        pb::Level::Debug => "debug",
        pb::Level::Info | pb::Level::Unspecified => "info",
        pb::Level::Warn => "warn",
        pb::Level::Error => "error",
        pb::Level::Fatal => "fatal",
    }
}

#[allow(clippy::too_many_arguments)]
fn log_series(
    store: &Store,
    matchers: &[Matcher],
    b0: i64,
    b1: i64,
    bucket: i64,
    budget: &mut Budget,
    out: &mut Vec<(Labels, BTreeMap<i64, f64>)>,
) -> Result<(), PromqlError> {
    // Each record is counted by its group's tuple (service, logger, error type; level): the
    // store reads groups no further than their tuples (no messages), and each tuple's labels
    // are made and matched once per group.
    let mut series: Vec<(Labels, BTreeMap<i64, f64>)> = Vec::new();
    let mut by_labels: HashMap<Labels, usize> = HashMap::new();
    let mut over = None;
    store.tally_logs(b0, b1 + bucket - 1, |t| {
        if let Err(e) = budget.read(t.ts.len()) {
            over = Some(e);
            return false;
        }
        let slots: Vec<Option<usize>> = t
            .tuples
            .iter()
            .map(|(s, level)| {
                let labels = make_labels(&[
                    (NAME, LOGS),
                    ("service", &s[0]),
                    ("level", level_name(*level)),
                    ("error_type", &s[2]),
                ]);
                if !matches_all(matchers, &labels) {
                    return None;
                }
                let next = series.len();
                Some(*by_labels.entry(labels.clone()).or_insert_with(|| {
                    series.push((labels, BTreeMap::new()));
                    next
                }))
            })
            .collect();
        for (&ts, &tuple) in t.ts.iter().zip(&t.tuple_of) {
            if let Some(i) = slots[tuple] {
                *series[i].1.entry(ts.div_euclid(bucket) * bucket).or_default() += 1.0;
            }
        }
        true
    })?;
    if let Some(e) = over {
        return Err(e.into());
    }
    series.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(series);
    budget.series(out.len())?;
    Ok(())
}

/// `rate` and `increase` over a derived counter (`rate(modelwatch_inference_requests_total[1h])`):
/// the exact sum of the buckets whose end lies in the window, counted from the last sample
/// before the window and not extrapolated (as VictoriaMetrics computes `increase`). Prometheus'
/// extrapolation would add a share of a bucket at the window's start; here every bucket is
/// whole, so `sum(increase(...[24h]))` is the number of requests in those 24 hours. `None`
/// when `arg` is not a selector of one derived counter.
pub fn exact_increase(ev: &mut Evaluator, arg: &Expr, is_rate: bool) -> Result<Option<Value>, PromqlError> {
    let Expr::MatrixSelector(ms) = unparen(arg) else { return Ok(None) };
    let sets = selector_matchers(&ms.vs);
    let [matchers] = sets.as_slice() else { return Ok(None) };
    let Some(name) = matchers.iter().find(|m| m.name == NAME && m.op == MatchOp::Equal) else { return Ok(None) };
    if !names().contains(&name.value) {
        return Ok(None);
    }
    let Some(store) = ev.src.store() else { return Ok(None) };
    let bucket = store.bucket_ms();
    let range = super::duration_ms(&ms.range);
    let ends = ev.windows_spec(&ms.vs);
    // One bucket more than the windows: the sample each window counts from.
    let lo = ends.iter().copied().min().unwrap_or(0) - range - bucket;
    let hi = ends.iter().copied().max().unwrap_or(0);
    let Some(c) = counters(store, matchers, lo, hi, ev.budget)? else { return Ok(Some(Value::Vector(Vec::new()))) };
    // A value per series and step, as map_windows charges them.
    ev.budget.values(c.series.len().saturating_mul(ev.n()))?;
    let mut out = Collector::new(ev.n());
    for (labels, incs) in &c.series {
        let labels = super::without_name(labels.clone());
        for (i, v) in window_increases(incs, &c, lo, hi, &ends, range).into_iter().enumerate() {
            if let Some(v) = v {
                out.put(labels.clone(), i, if is_rate { v / (range as f64 / 1000.0) } else { v })?;
            }
        }
    }
    Ok(Some(Value::Vector(out.finish())))
}

/// A derived counter's increase over each window `(end - range, end]`, from its increments per
/// bucket without making its samples: what [`cumulative`] gives over [`counter_series`]`(incs,
/// c.b0, c.b1, c.bucket, start, end)` between the last sample at or before the window's start
/// and the last at or before its end (the sum of the buckets whose end is in the window), and
/// None where no sample lies in the window. Per window, two binary searches: a month of
/// 10-second buckets costs what the buckets with events cost.
fn window_increases(
    incs: &BTreeMap<i64, f64>,
    c: &Counters,
    start: i64,
    end: i64,
    ends: &[i64],
    range: i64,
) -> Vec<Option<f64>> {
    let bucket = c.bucket;
    let first = incs.keys().next().copied().unwrap_or(c.b0).max(c.b0);
    let keys: Vec<i64> = incs.keys().copied().collect();
    let mut prefix = Vec::with_capacity(keys.len() + 1);
    prefix.push(0.0);
    for v in incs.values() {
        prefix.push(prefix[prefix.len() - 1] + v);
    }
    // Σ of the buckets that start in [lo, hi).
    let started_in = |lo: i64, hi: i64| {
        let (a, b) = (keys.partition_point(|&k| k < lo), keys.partition_point(|&k| k < hi));
        if b > a {
            prefix[b] - prefix[a]
        } else {
            0.0
        }
    };
    let in_range = |t: i64| t >= start && t <= end;
    // Whether counter_series puts a sample in (a, e].
    let sample_in = |a: i64, e: i64| {
        // The zero before the first bucket.
        if in_range(first) && first > a && first <= e {
            return true;
        }
        // Bucket ends: first + k × bucket, k ≥ 1, up to the last bucket's end.
        let after = a.max(start - 1);
        let k = ((after - first).div_euclid(bucket) + 1).max(1);
        let t = first + k * bucket;
        if t <= e && t <= end && t <= c.b1 + bucket {
            return true;
        }
        // An hour's restart: a zero 1 ms after the hour, when the hour before counted some.
        let mut h = a.div_euclid(HOUR) * HOUR;
        if h < a {
            h += HOUR;
        }
        h < e && in_range(h + 1) && h > first && h <= c.b1 && started_in((h - HOUR).max(first), h) > 0.0
    };
    ends.iter().map(|&e| sample_in(e - range, e).then(|| started_in(e - range - bucket + 1, e - bucket + 1))).collect()
}

/// `acc[k]`: a counter's increase from sample 0 to sample k, resets counted.
#[cfg(test)]
fn cumulative(vals: &[f64]) -> Vec<f64> {
    let mut acc = Vec::with_capacity(vals.len());
    let mut sum = 0.0;
    for k in 0..vals.len() {
        if k > 0 {
            let (p, v) = (vals[k - 1], vals[k]);
            sum += if v < p { v } else { v - p };
        }
        acc.push(sum);
    }
    acc
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

/// `histogram_quantile(φ, [sum by (labels)] (rate|increase(<derived latency>_bucket[w])))`
/// answered from the HDR histograms of each window: `None` when `arg` is not of that shape.
pub fn exact_quantile(ev: &mut Evaluator, arg: &Expr, q: &[f64]) -> Result<Option<Value>, PromqlError> {
    let (by, inner): (Option<Vec<String>>, &Expr) = match unparen(arg) {
        Expr::Aggregate(a) if a.op.to_string().eq_ignore_ascii_case("sum") => match &a.modifier {
            Some(LabelModifier::Include(l)) => {
                (Some(l.labels.iter().filter(|x| *x != "le").cloned().collect()), &a.expr)
            }
            None => (Some(Vec::new()), &a.expr),
            Some(LabelModifier::Exclude(_)) => return Ok(None),
        },
        other => (None, other),
    };
    let Expr::Call(call) = unparen(inner) else { return Ok(None) };
    if call.func.name != "rate" && call.func.name != "increase" {
        return Ok(None);
    }
    let Some(Expr::MatrixSelector(ms)) = call.args.args.first().map(|a| unparen(a)) else { return Ok(None) };
    let sets = selector_matchers(&ms.vs);
    if sets.len() != 1 {
        return Ok(None);
    }
    let matchers = &sets[0];
    let stage = match matchers.iter().find(|m| m.name == NAME) {
        Some(m) if m.op == MatchOp::Equal && m.value == format!("{LATENCY}_bucket") => false,
        Some(m) if m.op == MatchOp::Equal && m.value == format!("{STAGE_LATENCY}_bucket") => true,
        _ => return Ok(None),
    };
    // A matcher on `le` would select some bounds only: not a whole histogram.
    if matchers.iter().any(|m| m.name == "le") {
        return Ok(None);
    }
    let Some(store) = ev.src.store() else { return Ok(None) };
    let w = ev.windows_spec(&ms.vs);
    let bucket = store.bucket_ms();
    let lo = w.iter().copied().min().unwrap_or(0) - super::duration_ms(&ms.range);
    let hi = w.iter().copied().max().unwrap_or(0);
    let b0 = (lo + 1 - bucket).div_euclid(bucket) * bucket;
    let b1 = (hi - bucket).div_euclid(bucket) * bucket;
    let groups = groups(store, matchers);
    // The output series, and per group the (stage, output series) pairs its rows feed: worked
    // out once per group, not per row.
    let mut outputs: Vec<Labels> = Vec::new();
    let mut out_index: HashMap<Labels, usize> = HashMap::new();
    let mut feeds: Vec<Feed> = Vec::new();
    for (g, grp) in &groups {
        let mut to = Vec::new();
        for st in if stage { 0..STAGES.len() } else { 0..1 } {
            if let Some(k) = output_labels(grp, stage.then_some(st), matchers, by.as_deref()) {
                let i = *out_index.entry(k.clone()).or_insert_with(|| {
                    outputs.push(k);
                    outputs.len() - 1
                });
                to.push((stage.then_some(st), i));
            }
        }
        if !to.is_empty() {
            feeds.push(Feed { group: *g, to });
        }
    }
    let parts = components(&feeds, outputs.len());
    let n = ev.n();
    let range = super::duration_ms(&ms.range);
    let limit = ev.budget.read_left();
    let used = AtomicU64::new(0);
    let values_over = std::sync::atomic::AtomicBool::new(false);
    let budget: &Budget = ev.budget;
    let (w, q, feeds, used_ref, values_over_ref) = (&w[..], q, &feeds[..], &used, &values_over);
    // One component at a time: its rows read, routed to its output series, and their windows
    // computed, so that a thread's rows are what one component holds.
    let one = move |comp: &[usize]| -> Result<Vec<(usize, Points)>, PromqlError> {
        let mut local: Vec<(usize, Vec<Row>)> = Vec::new();
        let mut values: Vec<Encoded> = Vec::new();
        let mut routes: HashMap<u32, Vec<Route>> = HashMap::new();
        for &f in comp {
            let feed = &feeds[f];
            let to = feed
                .to
                .iter()
                .map(|&(which, o)| {
                    let li = local.iter().position(|l| l.0 == o).unwrap_or_else(|| {
                        local.push((o, Vec::new()));
                        local.len() - 1
                    });
                    (which, li)
                })
                .collect();
            routes.insert(feed.group, to);
        }
        let ids: Vec<u32> = comp.iter().map(|&f| feeds[f].group).collect();
        let mut bad = None;
        let mut over = false;
        let mut mine = 0u64;
        if b1 >= b0 {
            let mut last: Option<(u32, &[Route])> = None;
            store.read_aggs_encoded(&ids, b0, b1, |g, b, row| {
                // Counted here, added to the shared count every `SHARE` rows (one shared
                // counter per row would bounce its cache line between the threads); past the
                // limit: stop, and `budget.read` names it once every thread is done.
                mine += 1;
                if mine.is_multiple_of(SHARE) && used_ref.fetch_add(SHARE, Ordering::Relaxed) + SHARE > limit {
                    over = true;
                    return false;
                }
                // Rows come group by group.
                let to = match last {
                    Some((lg, to)) if lg == g => to,
                    _ => {
                        let to = routes.get(&g).map_or(&[][..], |v| &v[..]);
                        last = Some((g, to));
                        to
                    }
                };
                // Rows lie in a few values (pack parts, whole rows): each is kept once.
                if !values.last().is_some_and(|v| row.lies_in(v)) {
                    values.push(row.value());
                }
                let span = Span { value: values.len() - 1, at: row.at, len: row.len };
                // Whether the row has the histogram a route takes (a stage's may be missing;
                // the request latency's bytes are left alone until the windows read them).
                for &(which, li) in to {
                    let has = match which {
                        None => Ok(true),
                        Some(_) => encoded_histogram(row.bytes(), which).map(|h| h.is_some()),
                    };
                    match has {
                        Ok(true) => local[li].1.push((b, which, span)),
                        Ok(false) => {}
                        Err(err) => {
                            bad = Some(err);
                            return false;
                        }
                    }
                }
                true
            })?;
        }
        used_ref.fetch_add(mine % SHARE, Ordering::Relaxed);
        if let Some(e) = bad {
            return Err(crate::store::StoreError::Decode(e).into());
        }
        if over || used_ref.load(Ordering::Relaxed) > limit {
            return Ok(Vec::new());
        }
        // Each output series with rows holds a value per step: counted before it is made.
        let made = (local.iter().filter(|(_, rows)| !rows.is_empty()).count() as u64).saturating_mul(n as u64);
        if used_ref.fetch_add(made, Ordering::Relaxed).saturating_add(made) > limit {
            values_over_ref.store(true, Ordering::Relaxed);
            return Ok(Vec::new());
        }
        local
            .into_iter()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(o, mut rows)| Ok((o, quantiles(&mut rows, &values, w, q, range, bucket, budget)?)))
            .collect()
    };
    // Components are independent: two threads share them when there are several and enough
    // rows to repay the second thread.
    let rows_expected = if b1 >= b0 { ((b1 - b0) / bucket + 1) as usize * feeds.len() } else { 0 };
    let results = if parts.len() >= 2 && rows_expected >= 4000 {
        let (a, b) = halves(&parts);
        let one = &one;
        std::thread::scope(|sc| {
            let second = sc.spawn(move || b.iter().map(|c| one(c)).collect::<Vec<_>>());
            let mut first: Vec<_> = a.iter().map(|c| one(c)).collect();
            match second.join() {
                Ok(rest) => first.extend(rest),
                Err(_) => first.push(Err(super::exec("a quantile evaluation failed"))),
            }
            first
        })
    } else {
        parts.iter().map(|c| one(c)).collect()
    };
    if values_over.load(Ordering::Relaxed) {
        return Err(Budget::too_many_values(ev.budget.max_samples()).into());
    }
    ev.budget.read(used.load(Ordering::Relaxed) as usize)?;
    let mut vals: Vec<Option<Vec<Option<f64>>>> = vec![None; outputs.len()];
    for r in results {
        for (o, v) in r? {
            vals[o] = Some(v);
        }
    }
    let mut c = Collector::new(n);
    for (labels, v) in outputs.into_iter().zip(vals) {
        if let Some(v) = v {
            c.put_all(labels, v)?;
        }
    }
    Ok(Some(Value::Vector(c.finish())))
}

/// Rows a quantile's thread reads between updates of the shared count.
const SHARE: u64 = 256;

/// Where a group's rows go: (stage, None for the request latency; output series index).
type Route = (Option<usize>, usize);

/// An output series' value at each window end.
type Points = Vec<Option<f64>>;

/// A group whose rows go into output series of a quantile.
struct Feed {
    group: u32,
    to: Vec<Route>,
}

/// The output series of a group's latency (`stage` None) or stage latency, or None when the
/// matchers leave it out: the group's labels (and the stage), those of `by` only when given.
fn output_labels(
    grp: &[String; 4],
    stage: Option<usize>,
    matchers: &[Matcher],
    by: Option<&[String]>,
) -> Option<Labels> {
    let mut all: Vec<(&str, &str)> = GROUP_LABELS.iter().copied().zip(grp.iter().map(String::as_str)).collect();
    if let Some(st) = stage {
        all.push(("stage", STAGES[st]));
    }
    let full = make_labels(&all);
    let mut with_name = full.clone();
    with_name.push((
        NAME.to_string(),
        if stage.is_some() { format!("{STAGE_LATENCY}_bucket") } else { format!("{LATENCY}_bucket") },
    ));
    with_name.sort();
    let keep =
        matchers.iter().filter(|m| m.name != NAME).all(|m| m.is_match(super::label(&with_name, &m.name).unwrap_or("")));
    keep.then(|| match by {
        Some(keep) => full.into_iter().filter(|(k, _)| keep.contains(k)).collect(),
        None => full,
    })
}

/// The feeds (indices into `feeds`) in components: feeds that share an output series are in
/// one, since that series' windows need the rows of all of them.
fn components(feeds: &[Feed], outputs: usize) -> Vec<Vec<usize>> {
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..feeds.len()).collect();
    let mut owner: Vec<Option<usize>> = vec![None; outputs];
    for (f, feed) in feeds.iter().enumerate() {
        for &(_, o) in &feed.to {
            match owner[o] {
                None => owner[o] = Some(f),
                Some(other) => {
                    let (a, b) = (root(&mut parent, f), root(&mut parent, other));
                    parent[a] = b;
                }
            }
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for f in 0..feeds.len() {
        let r = root(&mut parent, f);
        by_root.entry(r).or_default().push(f);
    }
    by_root.into_values().collect()
}

/// Components split in two with about as many groups each (largest first, each to the
/// lighter side).
fn halves(parts: &[Vec<usize>]) -> (Vec<&[usize]>, Vec<&[usize]>) {
    let mut order: Vec<&[usize]> = parts.iter().map(|p| &p[..]).collect();
    order.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut wa, mut wb) = (0, 0);
    for p in order {
        if wa <= wb {
            wa += p.len();
            a.push(p);
        } else {
            wb += p.len();
            b.push(p);
        }
    }
    (a, b)
}

/// How many rows ahead [`quantiles`] touches a row's bytes.
const PREFETCH: usize = 8;

/// A row of an output series: bucket start, stage (None: the request latency), aggregate.
type Row = (i64, Option<usize>, Span);

/// Where a row's aggregate lies: bytes `at..at + len` of value `value` of those read.
#[derive(Clone, Copy)]
struct Span {
    value: usize,
    at: usize,
    len: usize,
}

/// An output series' rows and the values (pack parts, whole rows) they lie in.
#[derive(Clone, Copy)]
struct Rows<'a> {
    rows: &'a [Row],
    values: &'a [Encoded],
}

impl<'a> Rows<'a> {
    fn bytes(&self, i: usize) -> &'a [u8] {
        let s = self.rows[i].2;
        &self.values[s.value][s.at..s.at + s.len]
    }
}

/// One output series' quantile at each window end `w[i]`, from its rows (bucket, stage,
/// aggregate), sorted here.
fn quantiles(
    per_bucket: &mut [Row],
    values: &[Encoded],
    w: &[i64],
    q: &[f64],
    range: i64,
    bucket: i64,
    budget: &Budget,
) -> Result<Vec<Option<f64>>, PromqlError> {
    // Groups' rows one after another: in bucket order (a stable sort keeps rows of one bucket
    // as they came).
    per_bucket.sort_by_key(|r| r.0);
    let rows = Rows { rows: per_bucket, values };
    let mut out = vec![None; w.len()];
    let mut win = Window::new();
    let mut next = 0;
    for (i, &end) in w.iter().enumerate() {
        if i % 32 == 0 {
            budget.time()?;
        }
        // Buckets whose end lies in (end - range, end].
        let lo_b = end - range - bucket + 1;
        let hi_b = end - bucket;
        if i > 0 && end < w[i - 1] {
            win.clear();
            next = 0;
        }
        while next < per_bucket.len() && per_bucket[next].0 <= hi_b {
            // Rows lie in memory one after another, but not in the caches: a later row's bytes
            // are asked for now, so that the loads overlap instead of each row's waiting for
            // its own.
            if next + PREFETCH < per_bucket.len() {
                prefetch(rows.bytes(next + PREFETCH));
            }
            let at = next;
            next += 1;
            // Rows older than this window are in no later one either (ends ascend).
            if per_bucket[at].0 >= lo_b {
                win.add(rows, at)?;
            }
        }
        win.drop_before(rows, lo_b);
        if win.rows.is_empty() {
            continue;
        }
        out[i] = Some(if win.total == 0 || q[i].is_nan() {
            // A window with buckets but no observations: no rate, as Prometheus gives NaN.
            f64::NAN
        } else if q[i] < 0.0 {
            f64::NEG_INFINITY
        } else if q[i] > 1.0 {
            f64::INFINITY
        } else {
            // As HDR's value_at_quantile: the first value whose cumulative count reaches
            // ceil(q * total) (at least 1), at its highest equivalent value.
            let want = ((q[i] * win.total as f64).ceil() as u64).max(1);
            slot_value(win.rank(rows, want)) as f64 / 1e6
        });
    }
    Ok(out)
}

/// Asks the CPU to bring `bytes` into its caches, one request per cache line, without waiting
/// for them (nothing on targets other than x86_64).
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for i in (0..bytes.len()).step_by(64) {
        // SAFETY: a prefetch is a hint that never faults; x86_64 always has SSE.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(bytes[i..].as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// A row's histogram in the blocked form: bytes of the stored row (its index among the
/// output series' rows), or re-encoded from an older aggregate's V2 histogram.
enum RowHist {
    Stored(usize, std::ops::Range<usize>),
    Owned(Vec<u8>),
}

impl RowHist {
    fn bytes<'a>(&'a self, rows: Rows<'a>) -> &'a [u8] {
        match self {
            RowHist::Stored(i, r) => &rows.bytes(*i)[r.clone()],
            RowHist::Owned(v) => v,
        }
    }
}

/// The merged histogram of the rows in a sliding window, kept as per-block sums (wrapping
/// arithmetic: counts from a damaged row give a wrong figure, never a panic): a quantile
/// walks the ~120 block sums to its block, then needs that block's slot counts only, which
/// are kept for one block at a time (rebuilt from the window's rows when the quantile moves to
/// another block, updated as rows come and go while it stays).
struct Window {
    sums: Vec<u64>,
    total: u64,
    rows: std::collections::VecDeque<(i64, RowHist, Vec<BlockHead>)>,
    spare: Vec<Vec<BlockHead>>,
    cur: Option<usize>,
    slots: [u64; BLOCK],
}

impl Window {
    fn new() -> Self {
        Window {
            sums: vec![0; BLOCKS],
            total: 0,
            rows: Default::default(),
            spare: Vec::new(),
            cur: None,
            slots: [0; BLOCK],
        }
    }

    fn clear(&mut self) {
        while let Some((_, _, h)) = self.rows.pop_front() {
            self.spare.push(h);
        }
        self.sums.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.cur = None;
    }

    /// Adds row `at` of `rows`.
    fn add(&mut self, rows: Rows, at: usize) -> Result<(), PromqlError> {
        let (bucket, stage, _) = &rows.rows[at];
        let e = rows.bytes(at);
        let bad = |detail: String| {
            crate::store::StoreError::Decode(crate::store::keys::DecodeError { what: "inference aggregate", detail })
        };
        let hist = match encoded_histogram(e, *stage).map_err(crate::store::StoreError::Decode)? {
            None => RowHist::Owned(Vec::new()),
            Some(HistRef::Blocked(b)) => {
                let from = b.as_ptr() as usize - e.as_ptr() as usize;
                RowHist::Stored(at, from..from + b.len())
            }
            Some(old) => {
                let mut slots = Vec::new();
                old.for_each_slot(|k, n| slots.push((k, n))).map_err(bad)?;
                let mut v = Vec::new();
                encode_slots(&slots, &mut v);
                RowHist::Owned(v)
            }
        };
        let mut heads = self.spare.pop().unwrap_or_default();
        let bytes = hist.bytes(rows);
        if !bytes.is_empty() {
            block_heads(bytes, &mut heads).map_err(bad)?;
        } else {
            heads.clear();
        }
        for h in &heads {
            self.sums[h.block] = self.sums[h.block].wrapping_add(h.sum);
            self.total = self.total.wrapping_add(h.sum);
            if self.cur == Some(h.block) {
                let slots = &mut self.slots;
                block_entries(bytes, h, |k, n| slots[k % BLOCK] = slots[k % BLOCK].wrapping_add(n));
            }
        }
        self.rows.push_back((*bucket, hist, heads));
        Ok(())
    }

    /// Takes out the rows of buckets before `lo`.
    fn drop_before(&mut self, rows: Rows, lo: i64) {
        while self.rows.front().is_some_and(|r| r.0 < lo) {
            let (_, hist, heads) = self.rows.pop_front().expect("a front row");
            for h in &heads {
                self.sums[h.block] = self.sums[h.block].wrapping_sub(h.sum);
                self.total = self.total.wrapping_sub(h.sum);
                if self.cur == Some(h.block) {
                    let slots = &mut self.slots;
                    block_entries(hist.bytes(rows), h, |k, n| slots[k % BLOCK] = slots[k % BLOCK].wrapping_sub(n));
                }
            }
            self.spare.push(heads);
        }
    }

    /// The first slot at which the cumulative count reaches `want`.
    fn rank(&mut self, rows: Rows, want: u64) -> usize {
        let mut acc = 0u64;
        let mut at = None;
        for (b, &n) in self.sums.iter().enumerate() {
            if acc.saturating_add(n) >= want {
                at = Some(b);
                break;
            }
            acc = acc.saturating_add(n);
        }
        let Some(b) = at else { return self.sums.iter().rposition(|&n| n > 0).map_or(0, |b| b * BLOCK + BLOCK - 1) };
        if self.cur != Some(b) {
            self.slots = [0; BLOCK];
            for (_, hist, heads) in &self.rows {
                if let Some(h) = heads.iter().find(|h| h.block == b) {
                    let slots = &mut self.slots;
                    block_entries(hist.bytes(rows), h, |k, n| slots[k % BLOCK] = slots[k % BLOCK].wrapping_add(n));
                }
            }
            self.cur = Some(b);
        }
        for (k, &n) in self.slots.iter().enumerate() {
            acc = acc.saturating_add(n);
            if acc >= want {
                return b * BLOCK + k;
            }
        }
        b * BLOCK + BLOCK - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event in the last bucket of an hour and two in the first of the next: the hour's
    /// restart must read as a reset, or the next hour's first bucket counts 2 - 1.
    #[test]
    fn an_hours_restart_is_a_reset_whatever_the_counts() {
        let bucket = 10_000;
        let h = 5 * HOUR;
        let incs: BTreeMap<i64, f64> = [(h - bucket, 1.0), (h, 2.0), (h + bucket, 1.0)].into();
        let rs = counter_series(Labels::default(), &incs, h - HOUR, h + 2 * bucket, bucket, h - HOUR, h + 3 * bucket);
        let acc = cumulative(&rs.vals);
        assert_eq!(acc.last().copied(), Some(4.0), "{:?} {:?}", rs.ts, rs.vals);
        // From the sample at the top of the hour: the 3 events after it.
        let at_top = rs.ts.iter().position(|&t| t == h).unwrap();
        assert_eq!(acc.last().unwrap() - acc[at_top], 3.0);
        // No events before the hour: nothing to reset, no extra sample.
        let incs: BTreeMap<i64, f64> = [(h, 2.0)].into();
        let rs = counter_series(Labels::default(), &incs, h - HOUR, h, bucket, h - HOUR, h + bucket);
        assert_eq!((rs.ts, rs.vals), (vec![h, h + bucket], vec![0.0, 2.0]));
    }

    /// The sliding block window against merging the rows' histograms afresh for every window:
    /// rows of both encodings, two rows in some buckets, windows that skip rows and move back.
    /// What `rate` and `increase` computed over the samples of [`counter_series`] until
    /// 2026-12-07: the increase from the last sample at or before each window's start to the
    /// last at or before its end, None without a sample in the window.
    fn dense_increases(rs: &RawSeries, ends: &[i64], range: i64) -> Vec<Option<f64>> {
        let acc = cumulative(&rs.vals);
        ends.iter()
            .map(|&end| {
                let upto = rs.ts.partition_point(|&t| t <= end);
                let before = rs.ts.partition_point(|&t| t <= end - range);
                (upto > 0 && upto > before).then(|| acc[upto - 1] - acc[before.saturating_sub(1)])
            })
            .collect()
    }

    /// [`window_increases`] against the samples' way, over random counters and windows: short
    /// and long windows, windows before, across and after the buckets, hours' restarts with
    /// and without counts before them, buckets of zero.
    #[test]
    fn window_increases_match_the_increase_over_the_samples() {
        let bucket = 10_000;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let h0 = 472_222 * HOUR;
        for case in 0..2_000 {
            let range = match rnd(6) {
                0 => 1 + rnd(bucket as u64) as i64,
                1 => bucket,
                2 => 1 + rnd(4 * bucket as u64) as i64,
                3 => 300_000,
                4 => HOUR,
                _ => 1 + rnd(3 * HOUR as u64) as i64,
            };
            let most = if rnd(2) == 0 { 20_000 } else { 900_000 };
            let mut step = 1 + rnd(most) as i64;
            let n = 1 + rnd(200) as i64;
            let mut first_end = h0 + rnd(3 * HOUR as u64) as i64;
            let mut range = range;
            // A third on whole seconds: windows that start right at an hour or a bucket's end.
            if case % 3 == 0 {
                range = 1_000 * (1 + rnd(15) as i64);
                step = 1_000 * (1 + rnd(10) as i64);
                first_end = first_end / 1_000 * 1_000;
            }
            let ends: Vec<i64> = (0..n).map(|i| first_end + i * step).collect();
            let (lo, hi) = (ends[0] - range - bucket, ends[ends.len() - 1]);
            let b0 = ((lo - bucket).div_euclid(bucket) * bucket).div_euclid(HOUR) * HOUR;
            let b1 = (hi - bucket).div_euclid(bucket) * bucket;
            if b1 < b0 {
                continue;
            }
            let buckets = (b1 - b0) / bucket + 1;
            let density = 1 + rnd(40);
            let mut incs: BTreeMap<i64, f64> = BTreeMap::new();
            for k in 0..buckets {
                if rnd(density) == 0 {
                    incs.insert(b0 + k * bucket, [0.0, 1.0, 3.0, 17.0][rnd(4) as usize]);
                }
            }
            if incs.is_empty() {
                incs.insert(b0 + rnd(buckets as u64) as i64 * bucket, 2.0);
            }
            let c = Counters { b0, b1, bucket, series: Vec::new() };
            let rs = counter_series(Labels::default(), &incs, b0, b1, bucket, lo, hi);
            let want = dense_increases(&rs, &ends, range);
            let got = window_increases(&incs, &c, lo, hi, &ends, range);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "case {case}: window {i} ending {} of {range} ms; {incs:?}", ends[i]);
            }
        }
    }

    #[test]
    fn window_quantiles_match_merging_every_window() {
        let bucket = 10_000;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Rows lie in shared values, as in pack parts: a value per 16 buckets.
        let mut rows: Vec<Row> = Vec::new();
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        let mut aggs: Vec<(i64, Agg)> = Vec::new();
        for b in 0..300i64 {
            if rnd() % 7 == 0 {
                continue;
            }
            for copy in 0..(1 + rnd() % 2) {
                let mut a = Agg::default();
                for _ in 0..(1 + rnd() % 60) {
                    // Mostly 1-50 ms, a tail to 20 s, some heavy repeats.
                    let us = match rnd() % 10 {
                        0 => 1 + rnd() % 20_000_000,
                        1 => 7_777,
                        _ => 1_000 + rnd() % 49_000,
                    };
                    a.record(&pb::InferenceEvent { latency_us: us, ..Default::default() });
                }
                let enc = if (b + copy as i64) % 3 == 0 { a.encode_v1() } else { a.encode() };
                if b % 16 == 0 || bufs.is_empty() {
                    bufs.push(Vec::new());
                }
                let value = bufs.len() - 1;
                let buf = &mut bufs[value];
                rows.push((b * bucket, None, Span { value, at: buf.len(), len: enc.len() }));
                buf.extend_from_slice(&enc);
                aggs.push((b * bucket, a));
            }
        }
        let range = 40 * bucket;
        let mut ends: Vec<i64> = (0..120).map(|i| 25 * bucket + i * 23_000 + 5_000).collect();
        ends.extend([200 * bucket, 100 * bucket, 150 * bucket + 1]);
        let q: Vec<f64> = ends.iter().enumerate().map(|(i, _)| [0.5, 0.95, 0.99, 1.0, 0.0][i % 5]).collect();
        let cfg = crate::config::QueryConfig::default();
        let budget = Budget::new(&cfg);
        let values: Vec<Encoded> = bufs.into_iter().map(Encoded::from).collect();
        let got = quantiles(&mut rows, &values, &ends, &q, range, bucket, &budget).unwrap();
        for (i, &end) in ends.iter().enumerate() {
            let mut m = Agg::default();
            let mut any = false;
            for (b, a) in &aggs {
                if *b + bucket > end - range && *b + bucket <= end {
                    m.merge(a);
                    any = true;
                }
            }
            let want = any.then(|| {
                let want = ((q[i] * m.latency.len() as f64).ceil() as u64).max(1);
                let mut acc = 0;
                let v = m.latency.iter_recorded().find(|v| {
                    acc += v.count_at_value();
                    acc >= want
                });
                v.map_or(f64::NAN, |v| v.value_iterated_to() as f64 / 1e6)
            });
            assert_eq!(got[i], want, "window ending {end}, q {}", q[i]);
        }
    }
    /// `histogram_quantile` over the store, exact path, against the quantile of the raw events
    /// of every window: four groups (two services, two models) over three hours, packed and
    /// loose rows, stage latencies; output series fed by one group, by two (two components,
    /// on two threads), by all four (one component), and per stage; then a read limit.
    #[test]
    fn exact_quantiles_match_the_events_of_each_window() {
        use crate::store::batch::{Batch, Body};
        let dir = tempfile::tempdir().unwrap();
        let (store, mut wal) = crate::store::tests::open(dir.path());
        let t0: i64 = 1_700_002_800_000;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut events = Vec::new();
        for b in 0..3 * 360i64 {
            for g in 0..4u64 {
                for _ in 0..(rnd() % 4) {
                    let latency_us = match rnd() % 8 {
                        0 => 1 + rnd() % 5_000_000,
                        _ => 2_000 + rnd() % (40_000 * (g + 1)),
                    };
                    let stages = (rnd() % 3 != 0).then(|| pb::Stages {
                        queue_us: rnd() % 3_000,
                        inference_us: 1 + rnd() % 90_000,
                        ..Default::default()
                    });
                    events.push(pb::InferenceEvent {
                        service: format!("s{}", g % 2),
                        model: format!("m{}", g / 2),
                        timestamp_ms: t0 + b * 10_000 + (rnd() % 10_000) as i64,
                        latency_us,
                        stages,
                        ..Default::default()
                    });
                }
            }
            // Hour by hour, with a checkpoint after each, so that the older hours are packed.
            if b % 360 == 359 {
                let batch = Batch::new(Body::Events(pb::EventBatch { events: events.clone(), ..Default::default() }));
                events.clear();
                crate::store::tests::commit(&store, &mut wal, vec![batch]);
                store.checkpoint(&mut wal, false).unwrap();
            }
        }
        // Every event again, from the store's own point of view: what the test expects.
        let mut all: Vec<pb::InferenceEvent> = Vec::new();
        store
            .scan_events(i64::MIN / 2, i64::MAX / 2, None, |_, e| {
                all.push(e);
                true
            })
            .unwrap();
        assert!(all.len() > 5_000, "{}", all.len());
        let (start, end, step) = (t0 + 300_000 + 25_000, t0 + 3 * HOUR, 60_000);
        let range = 300_000;
        let opts = super::super::Opts::default();
        let cfg = crate::config::QueryConfig::default();
        // (query, q, labels of an event's output series, its value for an event (None: not in it)).
        type Key = fn(&pb::InferenceEvent) -> Vec<(String, String)>;
        type Val = fn(&pb::InferenceEvent) -> Option<u64>;
        type PerEnd = BTreeMap<i64, Vec<u64>>;
        let lat: Val = |e| Some(e.latency_us);
        let inference: Val = |e| e.stages.as_ref().map(|s| s.inference_us).filter(|&v| v > 0);
        let queue: Val = |e| e.stages.as_ref().map(|s| s.queue_us).filter(|&v| v > 0);
        let cases: Vec<(&str, f64, Key, Vec<Val>)> = vec![
            (
                "histogram_quantile(0.95, sum by (model, le) (rate(modelwatch_inference_latency_seconds_bucket[5m])))",
                0.95,
                |e| vec![("model".into(), e.model.clone())],
                vec![lat],
            ),
            (
                "histogram_quantile(0.5, sum by (le) (increase(modelwatch_inference_latency_seconds_bucket[5m])))",
                0.5,
                |_| vec![],
                vec![lat],
            ),
            (
                "histogram_quantile(0.99, rate(modelwatch_inference_latency_seconds_bucket{service=\"s1\"}[5m]))",
                0.99,
                |e| vec![("model".into(), e.model.clone())],
                vec![lat],
            ),
            (
                "histogram_quantile(0.9, sum by (stage, le) (rate(modelwatch_inference_stage_latency_seconds_bucket{stage=~\"queue|inference\"}[5m])))",
                0.9,
                |_| vec![],
                vec![queue, inference],
            ),
        ];
        for (query, q, key, vals) in cases {
            let mut budget = Budget::new(&cfg);
            let expr = super::super::parse(query).unwrap();
            let ans = super::super::range(
                &crate::promql::source::StoreSource { store: &store },
                &expr,
                start,
                end,
                step,
                &opts,
                &mut budget,
            )
            .unwrap();
            let super::super::Answer::Matrix(got) = ans else { panic!("{query}: not a matrix") };
            // Expected: per (output key, stage) and window end, the events' values.
            let mut want: BTreeMap<(Vec<(String, String)>, usize), PerEnd> = BTreeMap::new();
            for e in &all {
                if query.contains("service=") && e.service != "s1" {
                    continue;
                }
                let bucket_end = e.timestamp_ms.div_euclid(10_000) * 10_000 + 10_000;
                for (st, val) in vals.iter().enumerate() {
                    let Some(v) = val(e) else { continue };
                    let mut t = start;
                    while t <= end {
                        if bucket_end > t - range && bucket_end <= t {
                            want.entry((key(e), st)).or_default().entry(t).or_default().push(v);
                        }
                        t += step;
                    }
                }
            }
            assert_eq!(got.len(), want.len(), "{query}: series");
            for ((k, st), per_t) in want {
                let s = got
                    .iter()
                    .find(|s| {
                        k.iter().all(|(n, v)| super::super::label(&s.labels, n) == Some(v.as_str()))
                            && (vals.len() == 1
                                || super::super::label(&s.labels, "stage") == Some(["queue", "inference"][st]))
                    })
                    .unwrap_or_else(|| panic!("{query}: no series for {k:?} {st}"));
                assert_eq!(s.ts, per_t.keys().copied().collect::<Vec<_>>(), "{query} {k:?}: steps");
                for (i, (t, mut vs)) in per_t.into_iter().enumerate() {
                    vs.sort_unstable();
                    let want = ((q * vs.len() as f64).ceil() as usize).max(1);
                    let v = vs[want - 1];
                    let exact = slot_value(crate::store::aggs::slot_of(v)) as f64 / 1e6;
                    assert_eq!(s.vals[i], exact, "{query} {k:?} stage {st} at {t}");
                }
            }
        }
        // A read limit below the rows: an error that names it, from either thread.
        let mut small = cfg.clone();
        small.max_samples = 1_000;
        let mut budget = Budget::new(&small);
        let expr = super::super::parse(
            "histogram_quantile(0.95, sum by (model, le) (rate(modelwatch_inference_latency_seconds_bucket[5m])))",
        )
        .unwrap();
        let err = super::super::range(
            &crate::promql::source::StoreSource { store: &store },
            &expr,
            start,
            end,
            step,
            &opts,
            &mut budget,
        )
        .unwrap_err();
        assert!(err.to_string().contains("query.max_samples = 1000"), "{err}");
    }

    /// What the derived series make is charged before it is made: the samples of a counter that
    /// repeats its count through quiet buckets, the values of `rate` on the exact path and of
    /// `histogram_quantile` on the exact path (a value per series and step each). Before
    /// 2026-12-07 none was, and `max_over_time(sum by (service) (rate(
    /// modelwatch_inference_requests_total[5m]))[56y:1m])` took the daemon past 24 GB.
    #[test]
    fn what_derived_series_make_counts_against_max_samples() {
        use crate::store::batch::{Batch, Body};
        let dir = tempfile::tempdir().unwrap();
        let (store, mut wal) = crate::store::tests::open(dir.path());
        let t: i64 = 1_700_002_800_000;
        let day = 24 * HOUR;
        let events = [t - 20 * day, t - 60_000]
            .map(|ts| pb::InferenceEvent {
                service: "s".into(),
                model: "m".into(),
                timestamp_ms: ts,
                latency_us: 20_000,
                ..Default::default()
            })
            .to_vec();
        let batch = Batch::new(Body::Events(pb::EventBatch { events, ..Default::default() }));
        crate::store::tests::commit(&store, &mut wal, vec![batch]);
        let src = crate::promql::source::StoreSource { store: &store };
        let opts = super::super::Opts::default();
        let run = |query: &str, steps: Option<(i64, i64)>, max_samples: u64| {
            let cfg = crate::config::QueryConfig { max_samples, ..Default::default() };
            let mut budget = Budget::new(&cfg);
            let expr = super::super::parse(query).unwrap();
            match steps {
                None => super::super::instant(&src, &expr, t, &opts, &mut budget),
                Some((start, step)) => super::super::range(&src, &expr, start, t, step, &opts, &mut budget),
            }
        };
        let refused = |r: Result<super::super::Answer, PromqlError>, what: &str| {
            let err = r.err().unwrap_or_else(|| panic!("{what}: answered"));
            assert!(err.to_string().contains("query.max_samples = 100000"), "{what}: {err}");
        };
        // The event 20 days back makes 172,800 samples a series (4 statuses) over 30 days.
        let q = "sum(count_over_time(modelwatch_inference_requests_total[30d]))";
        let Ok(super::super::Answer::Vector { series, .. }) = run(q, None, 50_000_000) else { panic!("{q}") };
        assert!(series[0].1 > 4.0 * 172_800.0, "{series:?}");
        refused(run(q, None, 100_000), q);
        // A day at 1 s: 86,400 steps of 4 series, though only the last 5 minutes have a value.
        let q = "rate(modelwatch_inference_requests_total[5m])";
        let Ok(super::super::Answer::Matrix(m)) = run(q, Some((t - day, 1_000)), 50_000_000) else { panic!("{q}") };
        assert_eq!(m.len(), 4);
        refused(run(q, Some((t - day, 1_000)), 100_000), q);
        // One output series of 86,400 steps, then 3 days of them.
        let q = "histogram_quantile(0.9, sum by (le) (rate(modelwatch_inference_latency_seconds_bucket[5m])))";
        let Ok(super::super::Answer::Matrix(m)) = run(q, Some((t - day, 1_000)), 100_000) else { panic!("{q}") };
        assert_eq!(m.len(), 1);
        refused(run(q, Some((t - 3 * day, 1_000)), 100_000), q);
    }
}
