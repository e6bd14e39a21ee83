//! `min_over_time`, `max_over_time` and `count_over_time` of a stored metric over one window
//! (an instant query, an alert rule, a range query pinned with `@`): every stored chunk that
//! lies wholly in the window counts by the summary kept beside its reference, unread; only the
//! chunks at the window's edges and the in-memory head are read. Same answers as reading every
//! sample: PromQL's min and max skip NaN unless all are NaN, so they combine chunk by chunk.
use super::derived;
use super::eval::{selector_matchers, Collector, Evaluator, Value};
use super::source::convert_matchers;
use super::{is_stale, PromqlError, NAME};
use crate::store::Piece;
use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;

#[derive(Clone, Copy, PartialEq)]
pub enum Reduce {
    Min,
    Max,
    Count,
}

/// The function over `arg`, or None when `arg` is not one window of a selector naming a
/// stored metric (the general path answers then).
pub fn over_time(ev: &mut Evaluator, arg: &Expr, how: Reduce) -> Result<Option<Value>, PromqlError> {
    let mut e = arg;
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    let Expr::MatrixSelector(ms) = e else { return Ok(None) };
    let Some(store) = ev.src.store() else { return Ok(None) };
    let sets = selector_matchers(&ms.vs);
    let [matchers] = sets.as_slice() else { return Ok(None) };
    // Derived series are computed from aggregates, not kept in chunks.
    let Some(name) = matchers.iter().find(|m| m.name == NAME && m.op == MatchOp::Equal) else { return Ok(None) };
    if derived::names().contains(&name.value) {
        return Ok(None);
    }
    let ends = ev.windows_spec(&ms.vs);
    let Some(&end) = ends.first() else { return Ok(None) };
    if ends.iter().any(|&t| t != end) {
        return Ok(None);
    }
    // The window is left-open: (end - range, end].
    let start = end - super::duration_ms(&ms.range) + 1;
    let metas = store.select(&convert_matchers(matchers)?);
    ev.budget.series(metas.len())?;
    let n = ev.n();
    let mut c = Collector::new(n);
    for m in metas {
        ev.budget.time()?;
        let mut acc = Acc { how, v: f64::NAN, count: 0 };
        let mut read = 0usize;
        for p in store.read_pieces(m.id, start, end)? {
            match p {
                Piece::Summary { samples, summary, .. } => {
                    read += samples as usize;
                    if summary.count > 0 {
                        acc.add(if how == Reduce::Min { summary.min } else { summary.max }, u64::from(summary.count));
                    }
                }
                Piece::Samples(_, vals) => {
                    read += vals.len();
                    for v in vals.into_iter().filter(|v| !is_stale(*v)) {
                        acc.add(v, 1);
                    }
                }
            }
        }
        ev.budget.read(read)?;
        if acc.count == 0 {
            continue;
        }
        ev.budget.values(n)?;
        let v = if how == Reduce::Count { acc.count as f64 } else { acc.v };
        // Range functions drop the metric name; the index keeps it apart from the labels.
        for i in 0..n {
            c.put(m.labels.clone(), i, v)?;
        }
    }
    Ok(Some(Value::Vector(c.finish())))
}

struct Acc {
    how: Reduce,
    v: f64,
    count: u64,
}

impl Acc {
    /// Adds `count` samples whose min or max is `v`.
    fn add(&mut self, v: f64, count: u64) {
        let better = match self.how {
            Reduce::Min => v < self.v,
            Reduce::Max => v > self.v,
            Reduce::Count => false,
        };
        if self.count == 0 || better || self.v.is_nan() {
            self.v = v;
        }
        self.count += count;
    }
}
