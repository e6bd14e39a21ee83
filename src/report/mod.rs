//! Reports operators read: one service ([`service`]), errors ([`errors`]), GPUs ([`gpu`]),
//! capacity advice ([`capacity`]) and any of them over two ranges ([`compare`]).
//!
//! Figures are PromQL over the derived inference and log series and the sampled host and GPU
//! series, evaluated by [`crate::promql`] through [`Prom`], which keeps each expression so the
//! answer can show it (for Grafana and `modelwatch query`). What PromQL cannot say (a label's
//! distribution, examples and their request ids) is read from the stored events and logs,
//! newest first, at most `report.max_scan` of them.
pub mod capacity;
pub mod compare;
pub mod errors;
pub mod gpu;
pub mod render;
pub mod service;
pub mod status;

pub use gpu::gpu_report;

use crate::config::ReportConfig;
use crate::pb;
use crate::promql::{Answer, Labels, Opts, PromqlError, RangeSeries};
use crate::query::{parse_range, Budget, QueryError};
use crate::store::Store;
use std::collections::BTreeMap;

/// What every report is computed with.
pub struct Env<'a> {
    pub store: &'a Store,
    pub opts: &'a Opts,
    pub cfg: &'a ReportConfig,
    pub now: i64,
}

/// A report's range in whole aggregate buckets, `[start, end)`: the bucket holding the range's
/// start through the one holding its end, so the newest events count.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    /// The range widened to whole buckets: two ranges that meet at a bucket boundary (as
    /// `compare` gives) share no bucket.
    pub fn of(env: &Env, range: Option<&pb::TimeRange>) -> Result<Span, QueryError> {
        let (start, end) = parse_range(range, env.now)?;
        let b = env.store.bucket_ms();
        let s = start.div_euclid(b) * b;
        let e = (end + b - 1).div_euclid(b) * b;
        Ok(Span { start: s, end: e.max(s + b) })
    }

    pub fn ms(&self) -> i64 {
        self.end - self.start
    }

    pub fn secs(&self) -> f64 {
        self.ms() as f64 / 1000.0
    }

    /// The range as a PromQL duration (`[86400s]`).
    pub fn window(&self) -> String {
        prom_duration(self.ms())
    }
}

pub fn prom_duration(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A PromQL string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{a="x",b="y"}` of the non-empty pairs, plus `extra` matchers as written.
pub fn selector(pairs: &[(&str, &str)], extra: &[&str]) -> String {
    let mut parts: Vec<String> =
        pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", quote(v))).collect();
    parts.extend(extra.iter().map(|s| s.to_string()));
    format!("{{{}}}", parts.join(","))
}

/// PromQL for a report: evaluates at the span's end and remembers each expression by name.
pub struct Prom<'a, 'b> {
    pub env: &'a Env<'a>,
    pub budget: &'b mut Budget,
    pub queries: BTreeMap<String, String>,
    at: i64,
}

impl<'a, 'b> Prom<'a, 'b> {
    pub fn new(env: &'a Env<'a>, budget: &'b mut Budget, span: Span) -> Self {
        Prom { env, budget, queries: BTreeMap::new(), at: span.end }
    }

    fn note(&mut self, key: &str, q: &str) {
        self.queries.entry(key.to_string()).or_insert_with(|| q.to_string());
    }

    /// An instant vector at the span's end: each series' labels and value (NaN dropped).
    pub fn vector(&mut self, key: &str, q: &str) -> Result<Vec<(Labels, f64)>, PromqlError> {
        self.note(key, q);
        match crate::query::eval::instant(self.env.store, q, self.at, self.env.opts, self.budget)? {
            Answer::Vector { series, .. } => Ok(series.into_iter().filter(|(_, v)| !v.is_nan()).collect()),
            Answer::Scalar { v, .. } => Ok(if v.is_nan() { Vec::new() } else { vec![(Vec::new(), v)] }),
            _ => Err(crate::promql::exec(format!("{key}: expected a vector from {q}"))),
        }
    }

    /// One number: the single series' value, 0 when the answer is empty.
    pub fn scalar(&mut self, key: &str, q: &str) -> Result<f64, PromqlError> {
        Ok(self.vector(key, q)?.first().map_or(0.0, |(_, v)| *v))
    }

    /// Values keyed by one label.
    pub fn by(&mut self, key: &str, label: &str, q: &str) -> Result<BTreeMap<String, f64>, PromqlError> {
        Ok(self
            .vector(key, q)?
            .into_iter()
            .map(|(ls, v)| (crate::promql::label(&ls, label).unwrap_or("").to_string(), v))
            .collect())
    }

    /// A range query from `start` to `end` at `step`.
    pub fn range(
        &mut self,
        key: &str,
        q: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<RangeSeries>, PromqlError> {
        self.note(key, q);
        match crate::query::eval::range(self.env.store, q, (start, end, step), self.env.opts, self.budget)? {
            Answer::Matrix(m) => Ok(m),
            _ => Err(crate::promql::exec(format!("{key}: expected a matrix from {q}"))),
        }
    }

    pub fn into_queries(self) -> std::collections::HashMap<String, String> {
        self.queries.into_iter().collect()
    }
}

/// The single series of a range answer as (time, value) pairs.
pub fn points(m: &[RangeSeries]) -> BTreeMap<i64, f64> {
    m.first().map(|s| s.ts.iter().copied().zip(s.vals.iter().copied()).collect()).unwrap_or_default()
}

/// Rounds a count that PromQL computed as a float.
pub fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// A stored-record read bounded by `report.max_scan`: counts what it read and whether it
/// stopped early.
pub struct Scan {
    pub left: u64,
    pub read: u64,
    pub complete: bool,
}

impl Scan {
    pub fn new(cfg: &ReportConfig) -> Scan {
        Scan { left: cfg.max_scan, read: 0, complete: true }
    }

    /// Counts one record; false once the bound is reached.
    pub fn take(&mut self) -> bool {
        if self.left == 0 {
            self.complete = false;
            return false;
        }
        self.left -= 1;
        self.read += 1;
        true
    }

    /// Counts `n` records that a scan passed over by their tuple, not decoded: a sixteenth
    /// of a record each ([`crate::query::passed_cost`]); false once the bound is reached.
    pub fn pass(&mut self, n: usize) -> bool {
        let cost = crate::query::passed_cost(n) as u64;
        if self.left < cost {
            self.left = 0;
            self.complete = false;
            return false;
        }
        self.left -= cost;
        self.read += n as u64;
        true
    }
}

/// An error example (its message is filled in later from the request's error log).
pub fn example(time: i64, request_id: &str, service: &str, model: &str, source: &str) -> pb::ErrorExample {
    pb::ErrorExample {
        time: crate::query::timestamp(time),
        request_id: request_id.to_string(),
        message: String::new(),
        service: service.to_string(),
        model: model.to_string(),
        source: source.to_string(),
    }
}

/// Fills each event example's message from the error log of its request, where one exists.
pub fn attach_messages(store: &Store, examples: &mut [pb::ErrorExample]) -> Result<(), PromqlError> {
    for ex in examples.iter_mut().filter(|e| e.message.is_empty() && !e.request_id.is_empty()) {
        let logs = store.logs_by_request(&ex.request_id)?;
        if let Some(r) = logs.iter().filter(|r| r.level >= pb::Level::Warn as i32).max_by_key(|r| r.level) {
            ex.message = r.message.clone();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_quote() {
        assert_eq!(selector(&[("service", "a\"b"), ("model", "")], &["le=\"0.5\""]), r#"{service="a\"b",le="0.5"}"#);
        assert_eq!(prom_duration(86_400_000), "86400s");
        assert_eq!(prom_duration(1500), "1500ms");
    }
}
