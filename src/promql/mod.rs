//! PromQL over the store: the one query language of the daemon. Alert rules, reports, the
//! Prometheus HTTP API, `Query/Eval` and `modelwatch query` all evaluate through here.
//!
//! # Layout
//! - parsing is the `promql-parser` crate's (its AST is what [`eval`] walks);
//! - [`source`]: the small reader trait the engine reads series through ([`Source`]), its
//!   implementation over the store (metric series plus the derived series of [`derived`]),
//!   and an in-memory one ([`MemSource`]) for the conformance runner and rule unit tests;
//! - [`derived`]: inference requests, latency histograms and log records as series, computed
//!   from the store's aggregates and raw logs at query time (never copied into the store);
//! - [`eval`]: the evaluator (selectors, lookback, staleness, `offset`, `@`, subqueries);
//!   [`functions`], [`aggregate`] and [`binary`] hold the operators;
//! - [`script`]: Prometheus' test-script format (`load`, `eval`), run by the conformance test.
//!
//! # Evaluation model
//! A query is evaluated for all its steps at once: an instant vector is a list of series, each
//! with one optional value per step (dense, so a range query costs series × steps points, which
//! the [`Budget`]'s `max_points` bounds). Semantics follow Prometheus 3: a selector takes the
//! newest sample in the left-open window `(t - lookback, t]` unless it is a staleness marker;
//! range windows are left-open `(t - range, t]`; `@` pins a selector or subquery to one time.
pub mod aggregate;
pub mod binary;
pub mod derived;
pub mod eval;
pub mod functions;
pub mod script;
pub mod source;
pub mod summary;

pub use source::{MemSource, RawSeries, Source, StoreSource};

use crate::query::{Budget, QueryError};
use promql_parser::parser::Expr;
use std::time::Duration;

/// The label that carries the metric name.
pub const NAME: &str = "__name__";

/// A label set, sorted by name, names unique; the metric name is the `__name__` label.
pub type Labels = Vec<(String, String)>;

pub use crate::store::STALE_NAN;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

pub fn label<'a>(ls: &'a Labels, name: &str) -> Option<&'a str> {
    ls.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok().map(|i| ls[i].1.as_str())
}

pub fn without_name(mut ls: Labels) -> Labels {
    ls.retain(|(k, _)| k != NAME);
    ls
}

/// Sets (or, with an empty value, removes) a label, keeping the order.
pub fn set_label(ls: &mut Labels, name: &str, value: &str) {
    match ls.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
        Ok(i) if value.is_empty() => {
            ls.remove(i);
        }
        Ok(i) => ls[i].1 = value.to_string(),
        Err(_) if value.is_empty() => {}
        Err(i) => ls.insert(i, (name.to_string(), value.to_string())),
    }
}

/// `{__name__="m", a="1"}` as Prometheus prints a label set in messages.
pub fn fmt_labels(ls: &Labels) -> String {
    let all: Vec<String> = ls.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", all.join(", "))
}

#[derive(Debug, thiserror::Error)]
pub enum PromqlError {
    /// The expression does not parse (Prometheus' `bad_data`).
    #[error("parse error: {0}")]
    Parse(String),
    /// A well-formed query that cannot be evaluated (Prometheus' `execution`).
    #[error("{0}")]
    Exec(String),
    /// A `[query]` limit, a timeout or a store failure.
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl From<crate::store::StoreError> for PromqlError {
    fn from(e: crate::store::StoreError) -> Self {
        PromqlError::Query(QueryError::Store(e))
    }
}

pub fn exec(msg: impl Into<String>) -> PromqlError {
    PromqlError::Exec(msg.into())
}

/// Engine settings (`[query]`).
#[derive(Debug, Clone)]
pub struct Opts {
    /// How far back a selector looks for the newest sample (Prometheus: 5 m).
    pub lookback_ms: i64,
    /// The step of a subquery written without one (`x[1h:]`; Prometheus: the global
    /// evaluation interval, 1 m by default).
    pub subquery_step_ms: i64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts { lookback_ms: 5 * 60_000, subquery_step_ms: 60_000 }
    }
}

pub fn parse(q: &str) -> Result<Expr, PromqlError> {
    if q.trim().is_empty() {
        return Err(PromqlError::Parse("the query is empty".into()));
    }
    promql_parser::parser::parse(q).map_err(PromqlError::Parse)
}

/// A series of a range answer, or of a range vector in an instant answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
}

/// What a query answers, in Prometheus' result types.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Scalar {
        t: i64,
        v: f64,
    },
    String {
        t: i64,
        s: String,
    },
    /// An instant vector at `t`.
    Vector {
        t: i64,
        series: Vec<(Labels, f64)>,
    },
    /// A range vector (instant query of `x[5m]`) or a range query's answer.
    Matrix(Vec<RangeSeries>),
}

impl Answer {
    pub fn result_type(&self) -> &'static str {
        match self {
            Answer::Scalar { .. } => "scalar",
            Answer::String { .. } => "string",
            Answer::Vector { .. } => "vector",
            Answer::Matrix(_) => "matrix",
        }
    }
}

/// Evaluates `expr` at `t` (ms).
pub fn instant(src: &dyn Source, expr: &Expr, t: i64, opts: &Opts, budget: &mut Budget) -> Result<Answer, PromqlError> {
    let mut ev = eval::Evaluator::new(src, opts, budget, vec![t], t, t, 0);
    match ev.eval(expr)? {
        eval::Value::Scalar(v) => Ok(Answer::Scalar { t, v: v[0] }),
        eval::Value::String(s) => Ok(Answer::String { t, s }),
        eval::Value::Vector(vs) => {
            Ok(Answer::Vector { t, series: vs.into_iter().filter_map(|s| s.vals[0].map(|v| (s.labels, v))).collect() })
        }
        eval::Value::Matrix(m) => Ok(Answer::Matrix(m)),
    }
}

/// Evaluates `expr` at `start`, `start + step`, ... up to `end` (ms).
pub fn range(
    src: &dyn Source,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    opts: &Opts,
    budget: &mut Budget,
) -> Result<Answer, PromqlError> {
    if step <= 0 {
        return Err(exec("zero or negative query resolution step widths are not accepted. Try a positive integer"));
    }
    if end < start {
        return Err(exec("end timestamp must not be before start time"));
    }
    let n = ((end - start) / step + 1) as usize;
    budget.points(n)?;
    let steps: Vec<i64> = (0..n as i64).map(|i| start + i * step).collect();
    let mut ev = eval::Evaluator::new(src, opts, budget, steps.clone(), start, end, step);
    let value = ev.eval(expr)?;
    let mut out = Vec::new();
    match value {
        eval::Value::Scalar(v) => {
            out.push(RangeSeries { labels: Vec::new(), ts: steps, vals: v });
        }
        eval::Value::Vector(vs) => {
            for s in vs {
                let (ts, vals): (Vec<i64>, Vec<f64>) =
                    steps.iter().zip(&s.vals).filter_map(|(t, v)| v.map(|v| (*t, v))).unzip();
                if !ts.is_empty() {
                    out.push(RangeSeries { labels: s.labels, ts, vals });
                }
            }
        }
        eval::Value::String(_) | eval::Value::Matrix(_) => {
            return Err(exec(format!(
                "invalid expression type {:?} for range query, must be Scalar or instant Vector",
                if matches!(value, eval::Value::String(_)) { "string" } else { "range vector" }
            )))
        }
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Answer::Matrix(out))
}

pub fn duration_ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

/// A float as Prometheus writes sample values (Go's `strconv.FormatFloat(v, 'f', -1, 64)`).
pub fn fmt_value(v: f64) -> String {
    let mut s = String::new();
    write_value(&mut s, v);
    s
}

/// [`fmt_value`] appended to `out`.
pub fn write_value(out: &mut String, v: f64) {
    use std::fmt::Write;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        // Shortest round-trip digits as `{v}` writes them (no exponent, no `.0`), by ryu
        // (several times faster on range answers), or by `{v}` where ryu would differ.
        // Where two 16- or 17-digit strings are equally short and both read back as `v`,
        // ryu and `{v}` may pick different ones: either is exact.
        let mut b = ryu::Buffer::new();
        let s = b.format_finite(v);
        if s.contains('e') {
            let _ = write!(out, "{v}");
        } else {
            out.push_str(s.strip_suffix(".0").unwrap_or(s));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_print_as_rust_and_prometheus_do() {
        let mut x: u64 = 88172645463325252;
        let mut vals =
            vec![0.0, -0.0, 1.0, -1.0, 0.1, 1e-5, 1e-7, 123456.789, 1e15, 1e16, 1e21, 5e-324, f64::MAX, 2.5e-8];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if v.is_finite() {
                vals.push(v);
            }
            vals.push((x % 1_000_000) as f64 / 1000.0);
            vals.push((x % (1 << 53)) as f64 / 7.0);
            vals.push(f64::from_bits(x) % 1e15);
            vals.push(1.0 / (x as f64));
        }
        for v in vals.into_iter().filter(|v| v.is_finite()) {
            let (got, want) = (super::fmt_value(v), format!("{v}"));
            // The same value, without an exponent, and the same digits wherever the shortest
            // form is unique (up to 15 significant digits).
            assert_eq!(got.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{got}");
            assert!(!got.contains('e'), "{got}");
            let digits = want.trim_start_matches(['-', '0', '.']).chars().filter(char::is_ascii_digit).count();
            if digits <= 15 || got.len() != want.len() {
                assert_eq!(got, want, "{v:e}");
            }
        }
    }
}
