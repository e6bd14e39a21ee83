//! Where the engine reads series from: one small trait, so that the evaluator runs the same
//! over the daemon's store ([`StoreSource`]) and over an in-memory set ([`MemSource`], for the
//! conformance runner and rule unit tests).
use super::{derived, Labels, PromqlError, NAME};
use crate::query::Budget;
use crate::store::index::{MatchOp, Matcher};
use crate::store::Store;
use promql_parser::label::{MatchOp as PMatchOp, Matcher as PMatcher};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// One series and its samples in the asked range, in time order.
#[derive(Debug, Clone)]
pub struct RawSeries {
    pub labels: Labels,
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
}

/// A series turned into its labels and a value per step, by [`Source::select_map`].
pub type Mapped = (Labels, Vec<Option<f64>>);
pub type MapFn<'a> = dyn Fn(RawSeries) -> Option<Mapped> + Sync + 'a;

pub trait Source: Sync {
    /// Series matching every matcher, with their samples in `[start, end]` (ms). Spends the
    /// budget on series matched and samples read.
    fn select(
        &self,
        matchers: &[PMatcher],
        start: i64,
        end: i64,
        budget: &mut Budget,
    ) -> Result<Vec<RawSeries>, PromqlError>;

    /// [`Source::select`] with `f` applied to each series as it is read (on the reading
    /// threads, where there are several), keeping what `f` returns instead of the samples.
    fn select_map(
        &self,
        matchers: &[PMatcher],
        start: i64,
        end: i64,
        budget: &mut Budget,
        f: &MapFn,
    ) -> Result<Vec<Mapped>, PromqlError> {
        Ok(self.select(matchers, start, end, budget)?.into_iter().filter_map(f).collect())
    }

    /// The daemon's store behind this source, for the plans that read its aggregates directly
    /// (the exact latency quantiles of [`derived`]).
    fn store(&self) -> Option<&Store> {
        None
    }
}

pub fn convert_matchers(ms: &[PMatcher]) -> Result<Vec<Matcher>, PromqlError> {
    ms.iter()
        .map(|m| {
            let op = match m.op {
                PMatchOp::Equal => MatchOp::Eq,
                PMatchOp::NotEqual => MatchOp::Neq,
                PMatchOp::Re(_) => MatchOp::Re,
                PMatchOp::NotRe(_) => MatchOp::Nre,
            };
            Matcher::new(&m.name, op, &m.value)
                .map_err(|e| PromqlError::Parse(format!("invalid regular expression {:?}: {e}", m.value)))
        })
        .collect()
}

pub fn matches_all(ms: &[PMatcher], ls: &Labels) -> bool {
    ms.iter().all(|m| m.is_match(super::label(ls, &m.name).unwrap_or("")))
}

/// The daemon's store: metric series as stored, plus the derived inference and log series.
pub struct StoreSource<'a> {
    pub store: &'a Store,
}

impl Source for StoreSource<'_> {
    fn store(&self) -> Option<&Store> {
        Some(self.store)
    }

    fn select(
        &self,
        matchers: &[PMatcher],
        start: i64,
        end: i64,
        budget: &mut Budget,
    ) -> Result<Vec<RawSeries>, PromqlError> {
        self.read(matchers, start, end, budget, Some)
    }

    fn select_map(
        &self,
        matchers: &[PMatcher],
        start: i64,
        end: i64,
        budget: &mut Budget,
        f: &MapFn,
    ) -> Result<Vec<Mapped>, PromqlError> {
        self.read(matchers, start, end, budget, f)
    }
}

impl StoreSource<'_> {
    /// The matching series, each through `f` as soon as it is read.
    fn read<T: Send>(
        &self,
        matchers: &[PMatcher],
        start: i64,
        end: i64,
        budget: &mut Budget,
        f: impl Fn(RawSeries) -> Option<T> + Sync,
    ) -> Result<Vec<T>, PromqlError> {
        let derived = derived::select(self.store, matchers, start, end, budget)?;
        let ms = convert_matchers(matchers)?;
        let metas = self.store.select(&ms);
        budget.series(metas.len() + derived.len())?;
        let mut out: Vec<T> = derived.into_iter().filter_map(&f).collect();
        // Series are read on up to two threads (the query threads run below ingest's priority,
        // so a heavy query uses what ingest leaves); the sample limit is shared between them so
        // that it still bounds memory while reading.
        let threads = if metas.len() >= 32 { 2 } else { 1 };
        let limit = budget.read_left();
        let used = AtomicU64::new(0);
        let per = metas.len().div_ceil(threads.max(1)).max(1);
        let store = self.store;
        let shared: &Budget = budget;
        let f = &f;
        let read_part = |part: &[crate::store::index::SeriesMeta]| -> Result<(Vec<T>, usize), PromqlError> {
            let mut got = Vec::with_capacity(part.len());
            let mut n = 0usize;
            for m in part {
                shared.time()?;
                let (ts, vals) = store.read_samples(m.id, start, end)?;
                n += ts.len();
                // Past the limit: stop reading; `budget.read` below names the limit.
                if used.fetch_add(ts.len() as u64, Ordering::Relaxed) + ts.len() as u64 > limit {
                    break;
                }
                let mut labels = m.labels.clone();
                let at = labels.partition_point(|(k, _)| k.as_str() < NAME);
                labels.insert(at, (NAME.to_string(), m.name.clone()));
                got.extend(f(RawSeries { labels, ts, vals }));
            }
            Ok((got, n))
        };
        let parts: Vec<Result<(Vec<T>, usize), PromqlError>> = if threads == 1 {
            vec![read_part(&metas)]
        } else {
            std::thread::scope(|sc| {
                let handles: Vec<_> = metas.chunks(per).map(|c| sc.spawn(|| read_part(c))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(super::exec("a series read failed"))))
                    .collect()
            })
        };
        let mut total = 0usize;
        for p in parts {
            let (got, n) = p?;
            total += n;
            out.extend(got);
        }
        budget.read(total)?;
        Ok(out)
    }
}

/// Series held in memory, keyed by label set.
#[derive(Default)]
pub struct MemSource {
    series: BTreeMap<Labels, (Vec<i64>, Vec<f64>)>,
}

impl MemSource {
    pub fn new() -> MemSource {
        MemSource::default()
    }

    /// Adds a sample; samples of a series must come in time order (a repeated timestamp
    /// replaces the value).
    pub fn add(&mut self, labels: &Labels, t: i64, v: f64) {
        let (ts, vals) = self.series.entry(labels.clone()).or_default();
        if ts.last() == Some(&t) {
            *vals.last_mut().expect("same length") = v;
        } else {
            ts.push(t);
            vals.push(v);
        }
    }

    pub fn clear(&mut self) {
        self.series.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

impl Source for MemSource {
    fn select(
        &self,
        matchers: &[PMatcher],
        start: i64,
        end: i64,
        budget: &mut Budget,
    ) -> Result<Vec<RawSeries>, PromqlError> {
        let mut out = Vec::new();
        for (labels, (ts, vals)) in &self.series {
            if !matches_all(matchers, labels) {
                continue;
            }
            let a = ts.partition_point(|&t| t < start);
            let b = ts.partition_point(|&t| t <= end);
            budget.read(b - a)?;
            out.push(RawSeries { labels: labels.clone(), ts: ts[a..b].to_vec(), vals: vals[a..b].to_vec() });
        }
        budget.series(out.len())?;
        Ok(out)
    }
}
