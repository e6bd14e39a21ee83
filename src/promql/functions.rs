//! PromQL functions: over range vectors (`rate`, `*_over_time`, ...) and over instant vectors
//! (math, labels, time, sorting, `histogram_quantile`). Float samples only: the native-histogram
//! functions answer that native histograms are not supported.
use super::eval::{each_window, Collector, Evaluator, Series, Value};
use super::source::RawSeries;
use super::summary::Reduce;
use super::{exec, label, set_label, without_name, Labels, PromqlError, NAME};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};
use std::time::Instant;

pub fn call(ev: &mut Evaluator, c: &Call) -> Result<Value, PromqlError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let n = ev.n();
    match name {
        "rate" | "increase" => match super::derived::exact_increase(ev, args[0], name == "rate")? {
            Some(v) => Ok(v),
            None => extrapolated_fn(ev, args[0], true, name == "rate"),
        },
        "delta" => extrapolated_fn(ev, args[0], false, false),
        "irate" | "idelta" => {
            let is_rate = name == "irate";
            range_fn(ev, args[0], false, |_, ts, vals| instant_value(ts, vals, is_rate))
        }
        "deriv" => range_fn(ev, args[0], false, |_, ts, vals| {
            (ts.len() >= 2).then(|| linear_regression(ts, vals, ts[0]).0)
        }),
        "predict_linear" => {
            let secs = ev.eval_scalar(args[1])?;
            let steps = ev.steps.clone();
            range_fn_i(ev, args[0], false, |i, _, ts, vals| {
                if ts.len() < 2 {
                    return None;
                }
                let (slope, intercept) = linear_regression(ts, vals, steps[i]);
                Some(slope * secs[i] + intercept)
            })
        }
        "resets" => range_fn(ev, args[0], false, |_, _, vals| {
            (!vals.is_empty()).then(|| vals.windows(2).filter(|w| w[1] < w[0]).count() as f64)
        }),
        "changes" => range_fn(ev, args[0], false, |_, _, vals| {
            (!vals.is_empty()).then(|| {
                vals.windows(2).filter(|w| !(w[1] == w[0] || (w[1].is_nan() && w[0].is_nan()))).count() as f64
            })
        }),
        "avg_over_time" => range_fn(ev, args[0], false, |_, _, v| (!v.is_empty()).then(|| avg(v))),
        "sum_over_time" => range_fn(ev, args[0], false, |_, _, v| (!v.is_empty()).then(|| kahan_sum(v.iter().copied()))),
        "count_over_time" | "min_over_time" | "max_over_time" => {
            let how = match name {
                "count_over_time" => Reduce::Count,
                "min_over_time" => Reduce::Min,
                _ => Reduce::Max,
            };
            if let Some(v) = super::summary::over_time(ev, args[0], how)? {
                return Ok(v);
            }
            range_fn(ev, args[0], false, |_, _, v| match how {
                Reduce::Count => (!v.is_empty()).then_some(v.len() as f64),
                Reduce::Min => v.iter().copied().reduce(|m, x| if x < m || m.is_nan() { x } else { m }),
                Reduce::Max => v.iter().copied().reduce(|m, x| if x > m || m.is_nan() { x } else { m }),
            })
        }
        "last_over_time" => range_fn(ev, args[0], true, |_, _, v| v.last().copied()),
        "first_over_time" => range_fn(ev, args[0], true, |_, _, v| v.first().copied()),
        "present_over_time" => range_fn(ev, args[0], false, |_, _, v| (!v.is_empty()).then_some(1.0)),
        "stddev_over_time" => range_fn(ev, args[0], false, |_, _, v| (!v.is_empty()).then(|| variance(v).sqrt())),
        "stdvar_over_time" => range_fn(ev, args[0], false, |_, _, v| (!v.is_empty()).then(|| variance(v))),
        "mad_over_time" => range_fn(ev, args[0], false, |_, _, v| {
            if v.is_empty() {
                return None;
            }
            if v.iter().any(|x| x.is_nan()) {
                return Some(f64::NAN);
            }
            let med = quantile(0.5, &mut v.to_vec());
            let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
            Some(quantile(0.5, &mut dev))
        }),
        "quantile_over_time" => {
            let q = ev.eval_scalar(args[0])?;
            range_fn_i(ev, args[1], false, |i, _, _, v| (!v.is_empty()).then(|| quantile(q[i], &mut v.to_vec())))
        }
        "ts_of_min_over_time" | "ts_of_max_over_time" | "ts_of_first_over_time" | "ts_of_last_over_time" => {
            range_fn(ev, args[0], false, |_, ts, v| {
                if v.is_empty() {
                    return None;
                }
                let pick = match name {
                    "ts_of_first_over_time" => 0,
                    "ts_of_last_over_time" => v.len() - 1,
                    _ => {
                        let want_max = name == "ts_of_max_over_time";
                        let mut best = 0;
                        for (j, x) in v.iter().enumerate() {
                            let b = v[best];
                            let better = if want_max { *x >= b || b.is_nan() } else { *x <= b || b.is_nan() };
                            if better && !x.is_nan() {
                                best = j;
                            }
                        }
                        best
                    }
                };
                Some(ts[pick] as f64 / 1000.0)
            })
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let sf = ev.eval_scalar(args[1])?;
            let tf = ev.eval_scalar(args[2])?;
            for (s, t) in sf.iter().zip(&tf) {
                if !(*s > 0.0 && *s < 1.0) {
                    return Err(exec(format!("invalid smoothing factor. Expected: 0 < sf < 1, got: {s}")));
                }
                if !(*t > 0.0 && *t < 1.0) {
                    return Err(exec(format!("invalid trend factor. Expected: 0 < tf < 1, got: {t}")));
                }
            }
            range_fn_i(ev, args[0], false, |i, _, _, v| smoothing(v, sf[i], tf[i]))
        }
        "absent_over_time" => {
            let w = ev.windows(args[0])?;
            let mut present = vec![false; n];
            for s in 0..w.series.len() {
                w.each(s, |i, ts, _| present[i] |= !ts.is_empty());
            }
            Ok(absent_value(args[0], &present))
        }
        "absent" => {
            let vs = ev.eval_vector(args[0])?;
            let present: Vec<bool> = (0..n).map(|i| vs.iter().any(|s| s.vals[i].is_some())).collect();
            Ok(absent_value(args[0], &present))
        }
        "step" => Ok(Value::Scalar(vec![ev.step_ms() as f64 / 1000.0; n])),
        "range" => Ok(Value::Scalar(vec![(ev.end() - ev.start()) as f64 / 1000.0; n])),
        "start" => Ok(Value::Scalar(vec![ev.start() as f64 / 1000.0; n])),
        "end" => Ok(Value::Scalar(vec![ev.end() as f64 / 1000.0; n])),
        "min_of" | "max_of" => {
            let mut acc = ev.eval_scalar(args[0])?;
            for a in &args[1..] {
                let v = ev.eval_scalar(a)?;
                for (x, y) in acc.iter_mut().zip(v) {
                    // NaN wins, as in Go's math.Min / math.Max.
                    *x = if x.is_nan() || y.is_nan() {
                        f64::NAN
                    } else if name == "min_of" {
                        x.min(y)
                    } else {
                        x.max(y)
                    };
                }
            }
            Ok(Value::Scalar(acc))
        }
        "time" => Ok(Value::Scalar(ev.steps.iter().map(|t| *t as f64 / 1000.0).collect())),
        "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; n])),
        "vector" => {
            let v = ev.eval_scalar(args[0])?;
            Ok(Value::Vector(vec![Series { labels: Vec::new(), vals: v.into_iter().map(Some).collect() }]))
        }
        "scalar" => {
            let vs = ev.eval_vector(args[0])?;
            Ok(Value::Scalar(
                (0..n)
                    .map(|i| {
                        let mut present = vs.iter().filter_map(|s| s.vals[i]);
                        match (present.next(), present.next()) {
                            (Some(v), None) => v,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let vs = match unparen(args[0]) {
                Expr::VectorSelector(sel) => ev.vector_selector(sel, true)?,
                other => {
                    let vs = ev.eval_vector(other)?;
                    let steps = ev.steps.clone();
                    vs.into_iter()
                        .map(|s| Series {
                            labels: s.labels,
                            vals: s.vals.iter().zip(&steps).map(|(v, t)| v.map(|_| *t as f64 / 1000.0)).collect(),
                        })
                        .collect()
                }
            };
            map_values(vs, true, |_, v| Some(v))
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "sin" | "cos" | "tan"
        | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh" | "acosh" | "atanh" | "deg" | "rad" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |x: f64| if x > 0.0 { 1.0 } else if x < 0.0 { -1.0 } else { x },
                "sin" => f64::sin,
                "cos" => f64::cos,
                "tan" => f64::tan,
                "asin" => f64::asin,
                "acos" => f64::acos,
                "atan" => f64::atan,
                "sinh" => f64::sinh,
                "cosh" => f64::cosh,
                "tanh" => f64::tanh,
                "asinh" => f64::asinh,
                "acosh" => f64::acosh,
                "atanh" => f64::atanh,
                "deg" => f64::to_degrees,
                _ => f64::to_radians,
            };
            let vs = ev.eval_vector(args[0])?;
            map_values(vs, true, |_, v| Some(f(v)))
        }
        "round" => {
            let vs = ev.eval_vector(args[0])?;
            let to = if args.len() > 1 { ev.eval_scalar(args[1])? } else { vec![1.0; n] };
            map_values(vs, true, |i, v| {
                let inv = 1.0 / to[i];
                Some((v * inv + 0.5).floor() / inv)
            })
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let vs = ev.eval_vector(args[0])?;
            let a = ev.eval_scalar(args[1])?;
            let b = if name == "clamp" { ev.eval_scalar(args[2])? } else { Vec::new() };
            map_values(vs, true, |i, v| match name {
                "clamp" if a[i] > b[i] => None,
                "clamp" => Some(v.max(a[i]).min(b[i])),
                "clamp_min" => Some(v.max(a[i])),
                _ => Some(v.min(a[i])),
            })
        }
        "minute" | "hour" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "month" | "year" => {
            let vs = if args.is_empty() {
                vec![Series { labels: Vec::new(), vals: ev.steps.iter().map(|t| Some(*t as f64 / 1000.0)).collect() }]
            } else {
                ev.eval_vector(args[0])?
            };
            map_values(vs, true, |_, v| Some(date_part(name, v)))
        }
        "sort" | "sort_desc" => {
            let mut vs = ev.eval_vector(args[0])?;
            if n == 1 {
                let desc = name == "sort_desc";
                vs.sort_by(|a, b| {
                    let (x, y) = (a.vals[0].unwrap_or(f64::NAN), b.vals[0].unwrap_or(f64::NAN));
                    // NaN last either way, as Prometheus orders them.
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if desc => y.total_cmp(&x),
                        _ => x.total_cmp(&y),
                    }
                });
            }
            Ok(Value::Vector(vs))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut vs = ev.eval_vector(args[0])?;
            let mut names = Vec::new();
            for a in &args[1..] {
                names.push(string_arg(a)?);
            }
            vs.sort_by(|a, b| {
                let mut o = std::cmp::Ordering::Equal;
                for l in &names {
                    o = natural_cmp(label(&a.labels, l).unwrap_or(""), label(&b.labels, l).unwrap_or(""));
                    if o.is_ne() {
                        break;
                    }
                }
                // Ties: by the whole label set.
                let o = o.then_with(|| a.labels.cmp(&b.labels));
                if name == "sort_by_label_desc" {
                    o.reverse()
                } else {
                    o
                }
            });
            Ok(Value::Vector(vs))
        }
        "label_replace" => {
            let vs = ev.eval_vector(args[0])?;
            let dst = string_arg(args[1])?;
            let repl = string_arg(args[2])?;
            let src = string_arg(args[3])?;
            let re_s = string_arg(args[4])?;
            let re = regex::Regex::new(&format!("^(?s:{re_s})$"))
                .map_err(|e| exec(format!("invalid regular expression in label_replace(): {re_s}: {e}")))?;
            if !valid_label_name(&dst) {
                return Err(exec(format!("invalid destination label name in label_replace(): {dst}")));
            }
            relabel(vs, n, |ls| {
                let v = label(ls, &src).unwrap_or("").to_string();
                if let Some(caps) = re.captures(&v) {
                    let mut out = String::new();
                    caps.expand(&repl, &mut out);
                    set_label(ls, &dst, &out);
                }
            })
        }
        "label_join" => {
            let vs = ev.eval_vector(args[0])?;
            let dst = string_arg(args[1])?;
            let sep = string_arg(args[2])?;
            let mut srcs = Vec::new();
            for a in &args[3..] {
                srcs.push(string_arg(a)?);
            }
            if !valid_label_name(&dst) {
                return Err(exec(format!("invalid destination label name in label_join(): {dst}")));
            }
            relabel(vs, n, |ls| {
                let joined: Vec<&str> = srcs.iter().map(|s| label(ls, s).unwrap_or("")).collect();
                let v = joined.join(&sep);
                set_label(ls, &dst, &v);
            })
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(args[0])?;
            if let Some(v) = super::derived::exact_quantile(ev, args[1], &q)? {
                return Ok(v);
            }
            let vs = ev.eval_vector(args[1])?;
            histogram_quantile(vs, &q, n)
        }
        "histogram_quantiles" => {
            let vs = ev.eval_vector(args[0])?;
            let lname = string_arg(args[1])?;
            // A series per histogram and quantile, each with a value per step.
            let made = bucket_groups(&vs).len().saturating_mul(n).saturating_mul(args.len().saturating_sub(2));
            ev.budget.values(made)?;
            let mut c = Collector::new(n);
            for a in &args[2..] {
                let q = ev.eval_scalar(a)?;
                let Value::Vector(out) = histogram_quantile(vs.clone(), &q, n)? else { unreachable!() };
                for s in out {
                    for (i, v) in s.vals.iter().enumerate() {
                        if let Some(v) = v {
                            let mut ls = s.labels.clone();
                            set_label(&mut ls, &lname, &fmt_quantile(q[i]));
                            c.put(ls, i, *v)?;
                        }
                    }
                }
            }
            Ok(Value::Vector(c.finish()))
        }
        "histogram_fraction" => {
            let lo = ev.eval_scalar(args[0])?;
            let hi = ev.eval_scalar(args[1])?;
            let vs = ev.eval_vector(args[2])?;
            let mut c = Collector::new(n);
            for (labels, buckets) in bucket_groups(&vs) {
                for i in 0..n {
                    let mut b: Vec<(f64, f64)> =
                        buckets.iter().filter_map(|(le, k)| vs[*k].vals[i].map(|v| (*le, v))).collect();
                    if !b.is_empty() {
                        c.put(without_name(labels.clone()), i, bucket_fraction(lo[i], hi[i], &mut b))?;
                    }
                }
            }
            Ok(Value::Vector(c.finish()))
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev" | "histogram_stdvar" => Err(exec(format!(
            "{name}() works on native histograms, which modelwatch does not store (use histogram_quantile over _bucket series)"
        ))),
        other => Err(exec(format!("function {other}() is not supported"))),
    }
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

fn string_arg(e: &Expr) -> Result<String, PromqlError> {
    match unparen(e) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        other => Err(exec(format!("expected a string literal, got {other}"))),
    }
}

pub fn valid_label_name(s: &str) -> bool {
    // Prometheus 3 accepts any UTF-8 label name; an empty one is never valid.
    !s.is_empty() && std::str::from_utf8(s.as_bytes()).is_ok()
}

/// A function over a range vector, one value per step and series.
fn range_fn(
    ev: &mut Evaluator,
    arg: &Expr,
    keep_name: bool,
    f: impl Fn(&RangeCtx, &[i64], &[f64]) -> Option<f64> + Sync,
) -> Result<Value, PromqlError> {
    range_fn_i(ev, arg, keep_name, |_, w, ts, v| f(w, ts, v))
}

pub struct RangeCtx {
    pub start: i64,
    pub end: i64,
    pub range_s: f64,
}

fn range_fn_i(
    ev: &mut Evaluator,
    arg: &Expr,
    keep_name: bool,
    f: impl Fn(usize, &RangeCtx, &[i64], &[f64]) -> Option<f64> + Sync,
) -> Result<Value, PromqlError> {
    let deadline = ev.budget.deadline();
    ev.map_windows(arg, keep_name, &|rs: &RawSeries, ends: &[i64], range_ms: i64| {
        series_windows(rs, ends, range_ms, deadline, |i, ctx, lo, hi| f(i, ctx, &rs.ts[lo..hi], &rs.vals[lo..hi]))
    })
}

/// Samples a window loop goes through between looks at the clock.
const CLOCK_EVERY: usize = 1 << 16;

/// One series' value at each window end: `f(step, window, lo, hi)` over every non-empty window
/// (`lo..hi` its samples); None when no window gave a value, or when `deadline` passed on the
/// way (the caller's budget then names the timeout: a series of a million steps over windows
/// of thousands of samples is minutes of work).
fn series_windows(
    rs: &RawSeries,
    ends: &[i64],
    range_ms: i64,
    deadline: Option<Instant>,
    mut f: impl FnMut(usize, &RangeCtx, usize, usize) -> Option<f64>,
) -> Option<Vec<Option<f64>>> {
    let mut vals: Option<Vec<Option<f64>>> = None;
    let (mut work, mut late) = (0usize, false);
    each_window(&rs.ts, ends, range_ms, |i, lo, hi| {
        if hi == lo || late {
            return;
        }
        work += hi - lo;
        if work >= CLOCK_EVERY {
            work = 0;
            late = deadline.is_some_and(|d| Instant::now() > d);
            if late {
                return;
            }
        }
        let ctx = RangeCtx { start: ends[i] - range_ms, end: ends[i], range_s: range_ms as f64 / 1000.0 };
        if let Some(v) = f(i, &ctx, lo, hi) {
            vals.get_or_insert_with(|| vec![None; ends.len()])[i] = Some(v);
        }
    });
    if late {
        return None;
    }
    vals
}

/// [`series_windows`] counting the windows it works out, for the deadline's test.
#[cfg(test)]
pub fn windows_for_test(
    rs: &RawSeries,
    ends: &[i64],
    range_ms: i64,
    deadline: Option<Instant>,
    calls: &std::sync::atomic::AtomicUsize,
) -> Option<Vec<Option<f64>>> {
    series_windows(rs, ends, range_ms, deadline, |_, _, _, _| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(1.0)
    })
}

/// Applies `f` to every value; drops the metric name when `drop_name`.
fn map_values(vs: Vec<Series>, drop_name: bool, f: impl Fn(usize, f64) -> Option<f64>) -> Result<Value, PromqlError> {
    let n = vs.first().map_or(0, |s| s.vals.len());
    let mut c = Collector::new(n);
    for s in vs {
        let labels = if drop_name { without_name(s.labels) } else { s.labels };
        for (i, v) in s.vals.iter().enumerate() {
            if let Some(v) = v.and_then(|v| f(i, v)) {
                c.put(labels.clone(), i, v)?;
            }
        }
    }
    Ok(Value::Vector(c.finish().into_iter().filter(|s| s.vals.iter().any(Option::is_some)).collect()))
}

fn relabel(vs: Vec<Series>, n: usize, f: impl Fn(&mut Labels)) -> Result<Value, PromqlError> {
    let mut c = Collector::new(n);
    for s in vs {
        let mut labels = s.labels;
        f(&mut labels);
        for (i, v) in s.vals.iter().enumerate() {
            if let Some(v) = v {
                c.put(labels.clone(), i, *v)?;
            }
        }
    }
    Ok(Value::Vector(c.finish()))
}

/// `absent(x)` / `absent_over_time(x[w])`: 1 where nothing is present, labelled with the
/// selector's equality matchers.
fn absent_value(arg: &Expr, present: &[bool]) -> Value {
    let mut labels: Labels = Vec::new();
    let sel = match unparen(arg) {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    if let Some(vs) = sel {
        let mut dup: Vec<String> = Vec::new();
        for m in &vs.matchers.matchers {
            if vs.matchers.matchers.iter().filter(|o| o.name == m.name).count() > 1 {
                dup.push(m.name.clone());
            }
            if m.op == MatchOp::Equal && m.name != NAME {
                set_label(&mut labels, &m.name, &m.value);
            }
        }
        // A label matched twice for equality is ambiguous: Prometheus leaves it out.
        labels.retain(|(k, _)| !dup.contains(k));
    }
    Value::Vector(vec![Series { labels, vals: present.iter().map(|p| (!p).then_some(1.0)).collect() }])
}

/// `rate`, `increase` and `delta`. A counter's resets are summed once per series as prefix
/// sums, so each window costs the same whatever its length.
fn extrapolated_fn(ev: &mut Evaluator, arg: &Expr, counter: bool, is_rate: bool) -> Result<Value, PromqlError> {
    let deadline = ev.budget.deadline();
    ev.map_windows(arg, false, &|rs: &RawSeries, ends: &[i64], range_ms: i64| {
        // corr[k]: what the resets add up to sample k (Prometheus adds the value before each
        // drop); empty for the many counters that never reset.
        let mut corr: Vec<f64> = Vec::new();
        if counter && rs.vals.windows(2).any(|w| w[1] < w[0]) {
            let mut acc = 0.0;
            corr.push(0.0);
            corr.extend(rs.vals.windows(2).map(|w| {
                if w[1] < w[0] {
                    acc += w[0];
                }
                acc
            }));
        }
        series_windows(rs, ends, range_ms, deadline, |_, ctx, lo, hi| {
            if hi < lo + 2 {
                return None;
            }
            let mut result = rs.vals[hi - 1] - rs.vals[lo];
            if !corr.is_empty() {
                result += corr[hi - 1] - corr[lo];
            }
            Some(extrapolate(ctx, rs.ts[lo], rs.ts[hi - 1], hi - lo, result, rs.vals[lo], counter, is_rate))
        })
    })
}

/// Prometheus' extrapolation of a window's change (`result`, resets already added) to the
/// window's edges.
#[allow(clippy::too_many_arguments)]
fn extrapolate(
    w: &RangeCtx,
    first_t: i64,
    last_t: i64,
    count: usize,
    result: f64,
    first_v: f64,
    counter: bool,
    is_rate: bool,
) -> f64 {
    let n1 = (count - 1) as f64;
    let mut to_start = (first_t - w.start) as f64 / 1000.0;
    let mut to_end = (w.end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg_gap = sampled / n1;
    let threshold = avg_gap * 1.1;
    if to_start >= threshold {
        to_start = avg_gap / 2.0;
    }
    if counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_gap / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= w.range_s;
    }
    result * factor
}

fn instant_value(ts: &[i64], vals: &[f64], is_rate: bool) -> Option<f64> {
    if ts.len() < 2 {
        return None;
    }
    let (l, p) = (vals[vals.len() - 1], vals[vals.len() - 2]);
    let dt = ts[ts.len() - 1] - ts[ts.len() - 2];
    if dt == 0 {
        return None;
    }
    let mut v = if is_rate && l < p { l } else { l - p };
    if is_rate {
        v /= dt as f64 / 1000.0;
    }
    Some(v)
}

pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

pub fn kahan_sum(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for v in vals {
        (s, c) = kahan_inc(v, s, c);
    }
    if s.is_infinite() {
        s
    } else {
        s + c
    }
}

/// The mean, summing with compensation and falling back to an incremental mean when the sum
/// would overflow (Prometheus' `avg_over_time`).
pub fn avg(v: &[f64]) -> f64 {
    let (mut sum, mut c, mut mean) = (v[0], 0.0, 0.0);
    let mut incremental = false;
    for (i, &x) in v.iter().enumerate().skip(1) {
        let count = (i + 1) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(x, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(x / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        let count = v.len() as f64;
        sum / count + c / count
    }
}

/// Population variance (Welford's method with compensated sums).
pub fn variance(v: &[f64]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &x in v {
        count += 1.0;
        let delta = x - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (x - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}

/// The φ-quantile with linear interpolation between closest ranks (NaNs sort first).
pub fn quantile(q: f64, v: &mut [f64]) -> f64 {
    if v.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    v.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).expect("no NaN"),
    });
    let n = v.len() as f64;
    let rank = q * (n - 1.0);
    let lo = rank.floor().max(0.0);
    let hi = (lo + 1.0).min(n - 1.0);
    let w = rank - rank.floor();
    v[lo as usize] * (1.0 - w) + v[hi as usize] * w
}

/// Least-squares slope and intercept (at `intercept_t`, ms), Prometheus' `linearRegression`.
fn linear_regression(ts: &[i64], vals: &[f64], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = vals[0];
    let mut const_y = true;
    for (i, (&t, &y)) in ts.iter().zip(vals).enumerate() {
        if const_y && i > 0 && y != init {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(y, sy, cy);
        (sxy, cxy) = kahan_inc(x * y, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn smoothing(v: &[f64], sf: f64, tf: f64) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let (mut s0, mut s1, mut b) = (0.0, v[0], v[1] - v[0]);
    for (i, &x) in v.iter().enumerate().skip(1) {
        let scaled = sf * x;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = scaled + y;
    }
    Some(s1)
}

fn date_part(name: &str, secs: f64) -> f64 {
    if !secs.is_finite() {
        return f64::NAN;
    }
    let s = secs.floor() as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    match name {
        "minute" => ((sod / 60) % 60) as f64,
        "hour" => (sod / 3600) as f64,
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => (dim[..(m - 1) as usize].iter().sum::<i64>() + d) as f64,
        "days_in_month" => dim[(m - 1) as usize] as f64,
        "month" => m as f64,
        _ => y as f64,
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `histogram_quantile` over classic buckets: series grouped by their labels without `le`.
/// Series grouped into classic histograms: by their labels without `le` (name included), with
/// each bucket's bound and series index.
fn bucket_groups(vs: &[Series]) -> Vec<(Labels, Vec<(f64, usize)>)> {
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    for (k, s) in vs.iter().enumerate() {
        let Some(le) = label(&s.labels, "le").and_then(parse_le) else {
            continue;
        };
        let mut key = s.labels.clone();
        key.retain(|(k, _)| k != "le");
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((le, k));
    }
    groups
}

fn fmt_quantile(q: f64) -> String {
    let s = super::fmt_value(q);
    if q.is_finite() && !s.contains('.') {
        format!("{s}.0")
    } else {
        s
    }
}

/// Natural order: digit runs compare as numbers (`cpu2` before `cpu10`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let i = x.iter().position(|c| !c.is_ascii_digit()).unwrap_or(x.len());
                let j = y.iter().position(|c| !c.is_ascii_digit()).unwrap_or(y.len());
                let (nx, ny) = (&x[..i], &y[..j]);
                let tx = nx.iter().position(|c| *c != b'0').map_or(&nx[nx.len()..], |p| &nx[p..]);
                let ty = ny.iter().position(|c| *c != b'0').map_or(&ny[ny.len()..], |p| &ny[p..]);
                let o = tx.len().cmp(&ty.len()).then(tx.cmp(ty));
                if o.is_ne() {
                    return o;
                }
                x = &x[i..];
                y = &y[j..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// Buckets sorted by bound with equal bounds added up; `None` without a `+Inf` bucket.
fn sorted_buckets(b: &mut [(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return None;
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for &(le, v) in b.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += v,
            _ => merged.push((le, v)),
        }
    }
    Some(merged)
}

/// The fraction of observations between `lo` and `hi` in classic buckets, interpolating
/// linearly inside a bucket (the first bucket starts at 0 when its bound is positive).
fn bucket_fraction(lo: f64, hi: f64, b: &mut [(f64, f64)]) -> f64 {
    let Some(merged) = sorted_buckets(b) else { return f64::NAN };
    let total = merged[merged.len() - 1].1;
    if total == 0.0 || lo.is_nan() || hi.is_nan() {
        return f64::NAN;
    }
    if lo >= hi {
        return 0.0;
    }
    // Observations at or below x.
    // Inside an infinite-width bucket nothing can be interpolated: a value there counts as
    // the bucket's finite edge.
    let rank_at = |x: f64| -> f64 {
        let mut prev_bound = f64::NEG_INFINITY;
        let mut prev_count = 0.0;
        for (k, &(le, cum)) in merged.iter().enumerate() {
            let lower = if k == 0 {
                if le > 0.0 {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            } else {
                prev_bound
            };
            if x <= lower {
                return prev_count;
            }
            if x < le {
                if lower.is_infinite() || le.is_infinite() {
                    return if lower.is_infinite() { cum } else { prev_count };
                }
                return prev_count + (cum - prev_count) * (x - lower) / (le - lower);
            }
            prev_bound = le;
            prev_count = cum;
        }
        total
    };
    (rank_at(hi) - rank_at(lo)).max(0.0) / total
}

fn histogram_quantile(vs: Vec<Series>, q: &[f64], n: usize) -> Result<Value, PromqlError> {
    let groups = bucket_groups(&vs);
    let mut c = Collector::new(n);
    for (labels, buckets) in groups {
        let labels = without_name(labels);
        for (i, &qi) in q.iter().enumerate().take(n) {
            let mut b: Vec<(f64, f64)> =
                buckets.iter().filter_map(|(le, k)| vs[*k].vals[i].map(|v| (*le, v))).collect();
            if b.is_empty() {
                continue;
            }
            c.put(labels.clone(), i, bucket_quantile(qi, &mut b))?;
        }
    }
    Ok(Value::Vector(c.finish()))
}

fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < eps * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Prometheus' `bucketQuantile`: (upper bound, cumulative count) pairs.
pub fn bucket_quantile(q: f64, b: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let Some(mut merged) = sorted_buckets(b) else { return f64::NAN };
    let b = &mut merged;
    // Monotonicity: ignore tiny float differences, remove decreases.
    let mut prev = b[0].1;
    for x in b.iter_mut().skip(1) {
        let cur = x.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) || cur < prev {
            x.1 = prev;
            continue;
        }
        prev = cur;
    }
    if b.len() < 2 {
        return f64::NAN;
    }
    let obs = b[b.len() - 1].1;
    if obs == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * obs;
    let idx = b[..b.len() - 1].partition_point(|x| x.1 < rank);
    if idx == b.len() - 1 {
        return b[b.len() - 2].0;
    }
    if idx == 0 && b[0].0 <= 0.0 {
        return b[0].0;
    }
    let (mut start, end, mut count) = (0.0, b[idx].0, b[idx].1);
    if idx > 0 {
        start = b[idx - 1].0;
        count -= b[idx - 1].1;
        rank -= b[idx - 1].1;
    }
    start + (end - start) * (rank / count)
}
