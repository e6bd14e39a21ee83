//! The evaluator: walks the parsed expression once for all steps of the query.
//!
//! Values are dense per step ([`Series::vals`] holds one optional value per step), so every
//! operator is a loop over steps with the same code for instant and range queries. Selectors
//! read each series once for the whole query (from the earliest window start to the latest
//! step) and are then cut into per-step windows with two pointers, since step times only grow.
use super::source::RawSeries;
use super::{duration_ms, exec, is_stale, without_name, Labels, Opts, PromqlError, RangeSeries, Source, NAME};
use crate::query::Budget;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// An instant-vector series: its labels and one optional value per step.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    pub vals: Vec<Option<f64>>,
}

pub enum Value {
    Scalar(Vec<f64>),
    Vector(Vec<Series>),
    /// Only as the answer of an instant query (`x[5m]`).
    Matrix(Vec<RangeSeries>),
    String(String),
}

/// What a range function computes for one series: its value at each window end (`ends`,
/// windows `range_ms` long), None when it has none at any.
pub type PerSeries<'a> = dyn Fn(&RawSeries, &[i64], i64) -> Option<Vec<Option<f64>>> + Sync + 'a;

/// A range-vector argument: per series its samples (staleness markers removed), and per step
/// the window `(end - range, end]`.
pub struct Windows {
    pub series: Vec<RawSeries>,
    pub range_ms: i64,
    /// Per step: the window's end (the step time, moved by `offset` or pinned by `@`).
    pub ends: Vec<i64>,
}

impl Windows {
    /// Calls `f(step, ts, vals)` for every step's window of series `s`.
    pub fn each(&self, s: usize, mut f: impl FnMut(usize, &[i64], &[f64])) {
        let rs = &self.series[s];
        self.each_range(s, |i, lo, hi| f(i, &rs.ts[lo..hi], &rs.vals[lo..hi]));
    }

    /// Calls `f(step, lo, hi)`: the window of series `s` at each step as sample indices.
    pub fn each_range(&self, s: usize, f: impl FnMut(usize, usize, usize)) {
        each_window(&self.series[s].ts, &self.ends, self.range_ms, f);
    }
}

/// Calls `f(step, lo, hi)`: the window `(end - range, end]` of samples `ts` at each of `ends`,
/// as sample indices.
pub fn each_window(ts: &[i64], ends: &[i64], range_ms: i64, mut f: impl FnMut(usize, usize, usize)) {
    let (mut lo, mut hi) = (0usize, 0usize);
    for (i, &end) in ends.iter().enumerate() {
        let start = end - range_ms;
        // Ends only grow (or stay, under `@`), so both bounds move forward.
        if i > 0 && end < ends[i - 1] {
            lo = 0;
            hi = 0;
        }
        while hi < ts.len() && ts[hi] <= end {
            hi += 1;
        }
        while lo < hi && ts[lo] <= start {
            lo += 1;
        }
        f(i, lo, hi);
    }
}

/// Drops staleness markers from a series read for a range vector.
pub fn drop_stale(s: &mut RawSeries) {
    if s.vals.iter().fold(false, |any, v| any | is_stale(*v)) {
        let (ts, vals) = s.ts.iter().zip(&s.vals).filter(|(_, v)| !is_stale(**v)).map(|(t, v)| (*t, *v)).unzip();
        s.ts = ts;
        s.vals = vals;
    }
}

pub struct Evaluator<'a> {
    pub src: &'a dyn Source,
    pub opts: &'a Opts,
    pub budget: &'a mut Budget,
    /// The step times (ms).
    pub steps: Vec<i64>,
    /// The query's start and end, for `@ start()` and `@ end()`.
    start: i64,
    end: i64,
    step: i64,
}

/// Collects output series by label set; two values for one label set at one step are the
/// error Prometheus reports.
pub struct Collector {
    index: HashMap<Labels, usize>,
    pub out: Vec<Series>,
    n: usize,
}

impl Collector {
    pub fn new(n: usize) -> Collector {
        Collector { index: HashMap::new(), out: Vec::new(), n }
    }

    pub fn slot(&mut self, labels: Labels) -> usize {
        let n = self.n;
        let out = &mut self.out;
        *self.index.entry(labels).or_insert_with_key(|l| {
            out.push(Series { labels: l.clone(), vals: vec![None; n] });
            out.len() - 1
        })
    }

    pub fn put(&mut self, labels: Labels, step: usize, v: f64) -> Result<(), PromqlError> {
        let i = self.slot(labels);
        let cell = &mut self.out[i].vals[step];
        if cell.is_some() {
            return Err(exec("vector cannot contain metrics with the same labelset"));
        }
        *cell = Some(v);
        Ok(())
    }

    /// Adds a whole series of values (one per step), moved in when its labels are new.
    pub fn put_all(&mut self, labels: Labels, vals: Vec<Option<f64>>) -> Result<(), PromqlError> {
        if let Some(&k) = self.index.get(&labels) {
            for (cell, v) in self.out[k].vals.iter_mut().zip(vals) {
                if v.is_some() {
                    if cell.is_some() {
                        return Err(exec("vector cannot contain metrics with the same labelset"));
                    }
                    *cell = v;
                }
            }
            return Ok(());
        }
        self.index.insert(labels.clone(), self.out.len());
        self.out.push(Series { labels, vals });
        Ok(())
    }

    pub fn finish(self) -> Vec<Series> {
        self.out
    }
}

/// A time in ms since the epoch, within ±[`super::MAX_MS`].
pub fn ms_of(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

fn offset_ms(o: Option<&Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

/// The matchers of a selector, the metric name included.
pub fn selector_matchers(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let mut sets: Vec<Vec<Matcher>> = if vs.matchers.or_matchers.is_empty() {
        vec![vs.matchers.matchers.clone()]
    } else {
        vs.matchers.or_matchers.clone()
    };
    if let Some(name) = &vs.name {
        for set in &mut sets {
            if !set.iter().any(|m| m.name == NAME) {
                set.push(Matcher::new(MatchOp::Equal, NAME, name));
            }
        }
    }
    sets
}

impl<'a> Evaluator<'a> {
    pub fn new(
        src: &'a dyn Source,
        opts: &'a Opts,
        budget: &'a mut Budget,
        steps: Vec<i64>,
        start: i64,
        end: i64,
        step: i64,
    ) -> Evaluator<'a> {
        Evaluator { src, opts, budget, steps, start, end, step }
    }

    pub fn start(&self) -> i64 {
        self.start
    }

    pub fn end(&self) -> i64 {
        self.end
    }

    /// The query's step (0 for an instant query).
    pub fn step_ms(&self) -> i64 {
        self.step
    }

    pub fn n(&self) -> usize {
        self.steps.len()
    }

    pub fn eval(&mut self, e: &Expr) -> Result<Value, PromqlError> {
        self.budget.time()?;
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; self.n()])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                Value::Vector(vs) => {
                    let mut c = Collector::new(self.n());
                    for s in vs {
                        let labels = super::without_name(s.labels);
                        for (i, v) in s.vals.iter().enumerate() {
                            if let Some(v) = v {
                                c.put(labels.clone(), i, -v)?;
                            }
                        }
                    }
                    Ok(Value::Vector(c.finish()))
                }
                _ => Err(exec("unary minus applies to scalars and instant vectors only")),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.vector_selector(vs, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                if self.n() != 1 {
                    return Err(exec(
                        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector",
                    ));
                }
                let w = self.windows(e)?;
                let mut out = Vec::new();
                for s in 0..w.series.len() {
                    let labels = w.series[s].labels.clone();
                    w.each(s, |_, ts, vals| {
                        if !ts.is_empty() {
                            out.push(RangeSeries { labels: labels.clone(), ts: ts.to_vec(), vals: vals.to_vec() });
                        }
                    });
                }
                Ok(Value::Matrix(out))
            }
            Expr::Call(c) => super::functions::call(self, c),
            Expr::Aggregate(a) => super::aggregate::eval(self, a),
            Expr::Binary(b) => super::binary::eval(self, b),
            Expr::Extension(_) => Err(exec("extension expressions are not supported")),
        }
    }

    pub fn eval_scalar(&mut self, e: &Expr) -> Result<Vec<f64>, PromqlError> {
        match self.eval(e)? {
            Value::Scalar(v) => Ok(v),
            _ => Err(exec(format!("expected a scalar, got {e}"))),
        }
    }

    pub fn eval_vector(&mut self, e: &Expr) -> Result<Vec<Series>, PromqlError> {
        match self.eval(e)? {
            Value::Vector(v) => Ok(v),
            Value::Scalar(_) => Err(exec(format!("expected an instant vector, got the scalar {e}"))),
            _ => Err(exec(format!("expected an instant vector, got {e}"))),
        }
    }

    /// The time each step reads at: the step time, or the `@` time, moved back by `offset`.
    fn times(&self, offset: Option<&Offset>, at: Option<&AtModifier>) -> Vec<i64> {
        let off = offset_ms(offset);
        match at {
            None => self.steps.iter().map(|t| t - off).collect(),
            Some(a) => {
                let t = match a {
                    AtModifier::Start => self.start,
                    AtModifier::End => self.end,
                    AtModifier::At(t) => ms_of(t),
                };
                vec![t - off; self.n()]
            }
        }
    }

    /// Per step, the end of a range window over `vs` (`offset` and `@` applied).
    pub fn windows_spec(&self, vs: &VectorSelector) -> Vec<i64> {
        self.times(vs.offset.as_ref(), vs.at.as_ref())
    }

    fn read(&mut self, vs: &VectorSelector, start: i64, end: i64) -> Result<Vec<RawSeries>, PromqlError> {
        let sets = selector_matchers(vs);
        if sets.len() == 1 {
            return self.src.select(&sets[0], start, end, self.budget);
        }
        // `{a="1" or b="2"}`: the union of the alternatives.
        let mut seen: HashMap<Labels, ()> = HashMap::new();
        let mut out = Vec::new();
        for set in &sets {
            for s in self.src.select(set, start, end, self.budget)? {
                if seen.insert(s.labels.clone(), ()).is_none() {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// An instant-vector selector: per step the newest sample in `(t - lookback, t]`, unless it
    /// is a staleness marker. With `sample_time`, the value is the sample's timestamp (s).
    pub fn vector_selector(&mut self, vs: &VectorSelector, sample_time: bool) -> Result<Vec<Series>, PromqlError> {
        let times = self.times(vs.offset.as_ref(), vs.at.as_ref());
        let lb = self.opts.lookback_ms;
        let lo = times.iter().copied().min().unwrap_or(0) - lb + 1;
        let hi = times.iter().copied().max().unwrap_or(0);
        let raw = self.read(vs, lo, hi)?;
        // Dense values cost memory like samples read: count them against query.max_samples.
        self.budget.values(raw.len() * self.n())?;
        let mut out = Vec::with_capacity(raw.len());
        for rs in raw {
            let mut vals = vec![None; times.len()];
            let mut j = 0usize;
            let mut any = false;
            for (i, &t) in times.iter().enumerate() {
                if i > 0 && t < times[i - 1] {
                    j = 0;
                }
                while j < rs.ts.len() && rs.ts[j] <= t {
                    j += 1;
                }
                if j > 0 && rs.ts[j - 1] > t - lb && !is_stale(rs.vals[j - 1]) {
                    vals[i] = Some(if sample_time { rs.ts[j - 1] as f64 / 1000.0 } else { rs.vals[j - 1] });
                    any = true;
                }
            }
            if any {
                out.push(Series { labels: rs.labels, vals });
            }
        }
        Ok(out)
    }

    /// A range-vector argument (`x[5m]` or a subquery) as per-step windows.
    pub fn windows(&mut self, e: &Expr) -> Result<Windows, PromqlError> {
        match e {
            Expr::Paren(p) => self.windows(&p.expr),
            Expr::MatrixSelector(ms) => {
                let range_ms = duration_ms(&ms.range);
                let ends = self.times(ms.vs.offset.as_ref(), ms.vs.at.as_ref());
                let lo = ends.iter().copied().min().unwrap_or(0) - range_ms + 1;
                let hi = ends.iter().copied().max().unwrap_or(0);
                let mut series = self.read(&ms.vs, lo, hi)?;
                series.iter_mut().for_each(drop_stale);
                Ok(Windows { series, range_ms, ends })
            }
            Expr::Subquery(sq) => self.subquery(sq),
            _ => Err(exec(format!("expected a range vector (x[5m] or a subquery), got {e}"))),
        }
    }

    /// A range function applied series by series: `per_series(series, ends, range)` gives a
    /// series' value at each step (None: no value at any). A selector's series are handed to
    /// it as they are read, on the reading threads, so the samples of all series are never
    /// held at once; a subquery's are evaluated first, then shared between two threads when
    /// there are many.
    pub fn map_windows(&mut self, arg: &Expr, keep_name: bool, per_series: &PerSeries) -> Result<Value, PromqlError> {
        let mut e = arg;
        while let Expr::Paren(p) = e {
            e = &p.expr;
        }
        let n = self.n();
        let out: Vec<(Labels, Vec<Option<f64>>)> = match e {
            Expr::MatrixSelector(ms) if selector_matchers(&ms.vs).len() == 1 => {
                let range_ms = duration_ms(&ms.range);
                let ends = self.times(ms.vs.offset.as_ref(), ms.vs.at.as_ref());
                let lo = ends.iter().copied().min().unwrap_or(0) - range_ms + 1;
                let hi = ends.iter().copied().max().unwrap_or(0);
                let sets = selector_matchers(&ms.vs);
                let ends = &ends;
                // Each series mapped holds a value per step: past what the budget has left,
                // the rest are not worked out (the reading threads share this count; the
                // budget names the limit below).
                let left = self.budget.read_left();
                let (made, over) = (&AtomicU64::new(0), &AtomicBool::new(false));
                let f = move |mut rs: RawSeries| {
                    if made.fetch_add(n as u64, Ordering::Relaxed) + n as u64 > left {
                        over.store(true, Ordering::Relaxed);
                        return None;
                    }
                    drop_stale(&mut rs);
                    let vals = per_series(&rs, ends, range_ms)?;
                    Some((if keep_name { rs.labels } else { without_name(rs.labels) }, vals))
                };
                let out = self.src.select_map(&sets[0], lo, hi, self.budget, &f)?;
                if over.load(Ordering::Relaxed) {
                    return Err(Budget::too_many_values(self.budget.max_samples()).into());
                }
                self.budget.values(out.len() * n)?;
                out
            }
            _ => {
                let w = self.windows(arg)?;
                self.budget.values(w.series.len() * n)?;
                let one = |rs: &RawSeries| {
                    let vals = per_series(rs, &w.ends, w.range_ms)?;
                    Some((if keep_name { rs.labels.clone() } else { without_name(rs.labels.clone()) }, vals))
                };
                let samples: usize = w.series.iter().map(|s| s.ts.len()).sum();
                if w.series.len() >= 16 && samples + w.series.len() * n >= 200_000 {
                    let (a, b) = w.series.split_at(w.series.len() / 2);
                    let one = &one;
                    std::thread::scope(|sc| {
                        let second = sc.spawn(move || b.iter().filter_map(one).collect::<Vec<_>>());
                        let mut first: Vec<_> = a.iter().filter_map(one).collect();
                        match second.join() {
                            Ok(rest) => {
                                first.extend(rest);
                                Ok(first)
                            }
                            Err(_) => Err(exec("a range evaluation failed")),
                        }
                    })?
                } else {
                    w.series.iter().filter_map(one).collect()
                }
            }
        };
        // `per_series` gives up on its series once past the deadline.
        self.budget.time()?;
        let mut c = Collector::new(n);
        for (labels, vals) in out {
            c.put_all(labels, vals)?;
        }
        Ok(Value::Vector(c.finish().into_iter().filter(|s| s.vals.iter().any(Option::is_some)).collect()))
    }

    fn subquery(&mut self, sq: &SubqueryExpr) -> Result<Windows, PromqlError> {
        let range_ms = duration_ms(&sq.range);
        let step = sq.step.map(|d: Duration| duration_ms(&d)).filter(|&s| s > 0).unwrap_or(self.opts.subquery_step_ms);
        let ends = self.times(sq.offset.as_ref(), sq.at.as_ref());
        let first = ends.iter().copied().min().unwrap_or(0) - range_ms;
        let last = ends.iter().copied().max().unwrap_or(0);
        // The inner steps: multiples of the step after the earliest window start (Go's
        // truncating division, as Prometheus aligns them).
        let mut t0 = step * (first / step);
        if t0 <= first {
            t0 += step;
        }
        // Counted before they are made: `x[1y:1ms]` is 31.5 G steps.
        let count = if t0 > last { 0 } else { (last - t0) / step + 1 };
        self.budget.values(usize::try_from(count).unwrap_or(usize::MAX))?;
        let inner: Vec<i64> = (0..count).map(|k| t0 + k * step).collect();
        let value = {
            let mut sub = Evaluator {
                src: self.src,
                opts: self.opts,
                budget: self.budget,
                steps: inner.clone(),
                start: self.start,
                end: self.end,
                step: self.step,
            };
            if inner.is_empty() {
                Value::Vector(Vec::new())
            } else {
                sub.eval(&sq.expr)?
            }
        };
        let series = match value {
            Value::Vector(vs) => vs
                .into_iter()
                .map(|s| {
                    let (ts, vals) = inner.iter().zip(&s.vals).filter_map(|(t, v)| v.map(|v| (*t, v))).unzip();
                    RawSeries { labels: s.labels, ts, vals }
                })
                .collect(),
            Value::Scalar(v) => vec![RawSeries { labels: Vec::new(), ts: inner.clone(), vals: v }],
            _ => return Err(exec("a subquery needs an instant vector or a scalar inside")),
        };
        Ok(Windows { series, range_ms, ends })
    }
}
