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
            let series: Vec<(Labels, f64)> = vs.into_iter().filter_map(|s| s.vals[0].map(|v| (s.labels, v))).collect();
            ev.budget.answer(series.len())?;
            Ok(Answer::Vector { t, series })
        }
        eval::Value::Matrix(m) => {
            ev.budget.answer(m.iter().map(|s| s.ts.len()).sum())?;
            Ok(Answer::Matrix(m))
        }
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
    // One series' points already past `query.max_points`: refused before any work.
    budget.answer(n)?;
    let steps: Vec<i64> = (0..n as i64).map(|i| start + i * step).collect();
    let mut ev = eval::Evaluator::new(src, opts, budget, steps.clone(), start, end, step);
    let value = ev.eval(expr)?;
    let mut out = Vec::new();
    match value {
        eval::Value::Scalar(v) => {
            out.push(RangeSeries { labels: Vec::new(), ts: steps, vals: v });
        }
        eval::Value::Vector(vs) => {
            ev.budget.answer(vs.iter().map(|s| s.vals.iter().flatten().count()).sum())?;
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

/// The longest window, offset or time a query works with, in ms: 2^50, about 35,700 years.
/// Anything longer reaches as far as data can, and times and windows this size add and
/// subtract without overflow.
pub const MAX_MS: i64 = 1 << 50;

/// A duration in ms, at most [`MAX_MS`].
pub fn duration_ms(d: &Duration) -> i64 {
    d.as_millis().min(MAX_MS as u128) as i64
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
    use super::*;
    use crate::config::QueryConfig;
    use crate::query::QueryError;

    /// `series` series `x{i="k"}` with a sample every second for `secs` seconds from 0, each
    /// value different (`k * 1e6 + t`).
    fn source(series: usize, secs: i64) -> MemSource {
        let mut src = MemSource::new();
        for k in 0..series {
            let labels = vec![(NAME.to_string(), "x".to_string()), ("i".to_string(), k.to_string())];
            for t in 0..secs {
                src.add(&labels, t * 1000, (k as i64 * 1_000_000 + t) as f64);
            }
        }
        src
    }

    fn run(src: &MemSource, q: &str, step_ms: i64, cfg: QueryConfig) -> Result<Answer, PromqlError> {
        range(src, &parse(q).unwrap(), 0, 599_000, step_ms, &Opts::default(), &mut Budget::new(&cfg))
    }

    fn too_costly(r: Result<Answer, PromqlError>) -> String {
        match r {
            Err(PromqlError::Query(QueryError::TooCostly(m))) => m,
            other => panic!("expected a limit, got {other:?}"),
        }
    }

    #[test]
    fn an_answer_past_max_points_is_refused_though_each_series_fits() {
        // 20 series over 600 steps: each series' 600 points fit under 1,000, the 12,000 do not.
        let src = source(20, 600);
        let cfg = QueryConfig { max_points: 1_000, ..QueryConfig::default() };
        let m = too_costly(run(&src, "x", 1_000, cfg.clone()));
        assert!(m.contains("12000 points") && m.contains("query.max_points = 1000"), "{m}");
        let m = too_costly(run(&src, "rate(x[1m])", 1_000, cfg.clone()));
        assert!(m.contains("query.max_points = 1000"), "{m}");
        // Fewer steps, or fewer series, answer.
        assert!(run(&src, "x", 20_000, cfg.clone()).is_ok());
        assert!(run(&src, r#"x{i="3"}"#, 1_000, cfg.clone()).is_ok());
        let instant = instant(
            &src,
            &parse("x").unwrap(),
            10_000,
            &Opts::default(),
            &mut Budget::new(&QueryConfig { max_points: 19, ..QueryConfig::default() }),
        );
        assert!(too_costly(instant).contains("20 points"));
    }

    #[test]
    fn values_worked_out_by_range_functions_and_count_values_count_against_max_samples() {
        // 20 series of 600 samples: 12,000 read. A range function over 600 steps works out
        // 12,000 values more; count_values makes a series per distinct value, each with a
        // value slot per step (600 series × 600 steps here).
        let src = source(20, 600);
        let cfg = QueryConfig { max_samples: 20_000, max_points: u64::MAX, ..QueryConfig::default() };
        assert!(run(&src, "sum_over_time(x[10m] @ 599)", 1_000, cfg.clone()).is_err(), "the pinned window too");
        let m = too_costly(run(&src, "rate(x[1m])", 1_000, cfg.clone()));
        assert!(m.contains("values") && m.contains("query.max_samples = 20000"), "{m}");
        // Through a subquery too.
        let m = too_costly(run(&src, "max_over_time(x[1m:1s])", 1_000, cfg.clone()));
        assert!(m.contains("query.max_samples = 20000"), "{m}");
        let cfg = QueryConfig { max_samples: 100_000, max_points: u64::MAX, ..QueryConfig::default() };
        assert!(run(&src, "rate(x[1m])", 1_000, cfg.clone()).is_ok());
        let m = too_costly(run(&src, r#"count_values("v", x{i="0"})"#, 1_000, cfg));
        assert!(m.contains("values") && m.contains("query.max_samples = 100000"), "{m}");
        // histogram_quantiles makes a series per histogram and quantile (up to 10): the 20
        // series as the buckets of one histogram (24,000 read and worked out), then 600 values
        // a quantile.
        let cfg = QueryConfig { max_samples: 28_000, max_points: u64::MAX, ..QueryConfig::default() };
        let hq = |k: usize| {
            let qs: Vec<String> = (1..=k).map(|j| format!("{}", j as f64 / (k + 1) as f64)).collect();
            format!(
                r#"histogram_quantiles(sum by (le) (label_replace(x, "le", "$1", "i", "(.*)")), "q", {})"#,
                qs.join(", ")
            )
        };
        let Ok(Answer::Matrix(m)) = run(&src, &hq(1), 1_000, cfg.clone()) else { panic!("one quantile") };
        assert_eq!(m.len(), 1);
        let m = too_costly(run(&src, &hq(10), 1_000, cfg));
        assert!(m.contains("values") && m.contains("query.max_samples = 28000"), "{m}");
    }

    #[test]
    fn a_subquery_of_billions_of_steps_is_refused_before_they_are_made() {
        // 31.5 G inner steps: 252 GB of step times, which ended the daemon before.
        let src = source(2, 600);
        for q in ["x[1y:1ms]", "max_over_time(x[1y:1ms])", "x[100000y:1ms] offset 100000y", "x[1d:1ms] @ 1e18"] {
            let r =
                instant(&src, &parse(q).unwrap(), 599_000, &Opts::default(), &mut Budget::new(&QueryConfig::default()));
            let m = too_costly(r);
            assert!(m.contains("query.max_samples"), "{q}: {m}");
        }
        // Windows and offsets past any data answer nothing, without overflow.
        for q in ["x offset 100000000y", "x[100000000y]", "count_over_time(x[100000000y] @ 1e18)", "x @ -1e18"] {
            let r =
                instant(&src, &parse(q).unwrap(), 599_000, &Opts::default(), &mut Budget::new(&QueryConfig::default()));
            assert!(r.is_ok(), "{q}: {r:?}");
        }
    }

    #[test]
    fn a_range_function_stops_at_the_deadline_within_a_series() {
        // One series of 200,000 samples and a window over all of them at each of 1,000 steps:
        // 200 M samples through quantile_over_time if nothing stopped it.
        let mut src = MemSource::new();
        let labels = vec![(NAME.to_string(), "y".to_string())];
        for t in 0..200_000 {
            src.add(&labels, t, (t % 977) as f64);
        }
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let rs = RawSeries { labels, ts: (0..200_000).collect(), vals: vec![1.0; 200_000] };
        let ends: Vec<i64> = (0..1_000).map(|i| 200_000 + i).collect();
        let past = std::time::Instant::now().checked_sub(Duration::from_secs(1));
        let got = functions::windows_for_test(&rs, &ends, 1_000_000, past, &calls);
        assert!(got.is_none(), "a series cut short at the deadline gives nothing");
        assert!(calls.into_inner() <= 1, "the windows after the deadline are not worked out");
        let cfg = QueryConfig { timeout: Duration::from_millis(1), ..QueryConfig::default() };
        let r = range(
            &src,
            &parse("quantile_over_time(0.5, y[1000s])").unwrap(),
            200_000,
            201_000,
            1,
            &Opts::default(),
            &mut Budget::new(&cfg),
        );
        assert!(matches!(r, Err(PromqlError::Query(QueryError::Timeout(_)))), "{r:?}");
    }

    /// PromQL expressions from a small grammar that reaches the costly corners: windows and
    /// subqueries from a millisecond to millennia, offsets and `@` far out, every kind of
    /// operator over them.
    fn any_expr() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let dur = prop::sample::select(vec!["1ms", "1s", "5m", "1d", "1y", "1000y", "100000000y"]);
        let sel = prop::sample::select(vec!["x", r#"x{i="1"}"#, r#"x{i=~".+"}"#, "nope", r#"{__name__=~"x|y"}"#]);
        let at =
            prop::sample::select(vec!["", " offset 1y", " offset -1000y", " @ 1e18", " @ -1e18", " @ start()", " @ 0"]);
        let leaf = prop_oneof![
            sel.clone().prop_map(String::from),
            (sel.clone(), at.clone()).prop_map(|(s, a)| format!("{s}{a}")),
            prop::sample::select(vec!["1", "-2.5", "NaN", "Inf", "time()", "vector(3)", "pi()"]).prop_map(String::from),
        ];
        let range_fn = prop::sample::select(vec![
            "rate",
            "increase",
            "delta",
            "deriv",
            "irate",
            "resets",
            "changes",
            "avg_over_time",
            "sum_over_time",
            "count_over_time",
            "max_over_time",
            "stddev_over_time",
            "mad_over_time",
            "last_over_time",
            "absent_over_time",
            "present_over_time",
        ]);
        let window = prop_oneof![
            (sel.clone(), dur.clone(), at.clone()).prop_map(|(s, d, a)| format!("{s}[{d}]{a}")),
            (sel, dur.clone(), dur, at).prop_map(|(s, r, st, a)| format!("{s}[{r}:{st}]{a}")),
        ];
        let base = prop_oneof![
            leaf.clone(),
            (range_fn, window.clone()).prop_map(|(f, w)| format!("{f}({w})")),
            window.prop_map(|w| format!("quantile_over_time(0.9, {w})")),
        ];
        base.prop_recursive(3, 12, 2, |inner| {
            let agg = prop::sample::select(vec!["sum", "avg", "max", "count", "stddev", "group"]);
            let op = prop::sample::select(vec!["+", "/", "%", "^", "and", "or", "unless", ">", "< bool", "== bool"]);
            prop_oneof![
                (agg, inner.clone()).prop_map(|(a, e)| format!("{a} by (i) ({e})")),
                (inner.clone(), op, inner.clone()).prop_map(|(l, o, r)| format!("({l}) {o} ({r})")),
                inner.clone().prop_map(|e| format!(r#"count_values("v", {e})"#)),
                inner.clone().prop_map(|e| format!("topk(2, {e})")),
                inner.clone().prop_map(|e| format!("abs({e})")),
                inner.clone().prop_map(|e| format!(r#"label_replace({e}, "j", "$1", "i", "(.*)")"#)),
                inner.prop_map(|e| format!("max_over_time(({e})[10m:1m])")),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 400, ..Default::default() })]

        /// Whatever the expression, evaluation returns (an answer or an error that names a
        /// limit), never panics, and an answer stays within `max_points`.
        #[test]
        fn any_expression_is_answered_within_its_budget(q in any_expr(), range_query in proptest::prelude::any::<bool>()) {
            let Ok(expr) = parse(&q) else { return Ok(()) };
            let src = source(3, 600);
            let cfg = QueryConfig {
                max_samples: 200_000,
                max_points: 2_000,
                timeout: Duration::from_secs(5),
                ..QueryConfig::default()
            };
            let mut budget = Budget::new(&cfg);
            let r = if range_query {
                range(&src, &expr, 0, 599_000, 1_000, &Opts::default(), &mut budget)
            } else {
                instant(&src, &expr, 599_000, &Opts::default(), &mut budget)
            };
            if let Ok(a) = r {
                let points = match a {
                    Answer::Scalar { .. } | Answer::String { .. } => 1,
                    Answer::Vector { series, .. } => series.len(),
                    Answer::Matrix(m) => m.iter().map(|s| s.ts.len()).sum(),
                };
                proptest::prop_assert!(points <= 2_000, "{q}: {points} points");
            }
        }
    }

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
