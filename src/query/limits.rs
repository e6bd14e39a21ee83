//! What one query may cost (`[query]`): series matched, samples (or log records, or aggregate
//! buckets) read, points returned, and wall time. Each query carries a [`Budget`]; running out
//! is an error that names the key, the limit and what the query needed, and the query stops
//! there. Memory per query follows: `max_samples` bounds the samples read and the values a
//! PromQL evaluation works out from them (a series' value at each step, 16 bytes each), and
//! `max_points` the points of the answer (about 32 bytes each).
use super::QueryError;
use crate::config::QueryConfig;
use std::time::Instant;

pub struct Budget {
    cfg: QueryConfig,
    started: Instant,
    read: u64,
    points: u64,
}

impl Budget {
    pub fn new(cfg: &QueryConfig) -> Budget {
        Budget { cfg: cfg.clone(), started: Instant::now(), read: 0, points: 0 }
    }

    pub fn max_series(&self) -> usize {
        self.cfg.max_series
    }

    /// `n` series matched.
    pub fn series(&self, n: usize) -> Result<(), QueryError> {
        if n > self.cfg.max_series {
            return Err(QueryError::TooCostly(format!(
                "the selector matches {n} series, more than query.max_series = {}: narrow it",
                self.cfg.max_series
            )));
        }
        Ok(())
    }

    /// `n` more samples, records or buckets read.
    pub fn read(&mut self, n: usize) -> Result<(), QueryError> {
        self.read += n as u64;
        if self.read > self.cfg.max_samples {
            return Err(QueryError::TooCostly(format!(
                "the query reads more than query.max_samples = {} samples or records: shorten the range or narrow the selector",
                self.cfg.max_samples
            )));
        }
        self.time()
    }

    /// `n` more values worked out (PromQL keeps a value per series and step): counted with the
    /// samples read, against `query.max_samples`.
    pub fn values(&mut self, n: usize) -> Result<(), QueryError> {
        self.read += n as u64;
        if self.read > self.cfg.max_samples {
            return Err(Self::too_many_values(self.cfg.max_samples));
        }
        self.time()
    }

    /// The error of [`Budget::values`], for the threads that count values on their own.
    pub fn too_many_values(max_samples: u64) -> QueryError {
        QueryError::TooCostly(format!(
            "the query works out more than query.max_samples = {max_samples} values and samples (a value per series and step): use a longer step, a shorter range or a narrower selector"
        ))
    }

    pub fn max_samples(&self) -> u64 {
        self.cfg.max_samples
    }

    /// Samples that may still be read before `query.max_samples`.
    pub fn read_left(&self) -> u64 {
        self.cfg.max_samples.saturating_sub(self.read)
    }

    /// `n` more points in the answer.
    pub fn points(&mut self, n: usize) -> Result<(), QueryError> {
        self.points += n as u64;
        if self.points > self.cfg.max_points {
            return Err(QueryError::TooCostly(format!(
                "the answer would hold {} points or more, more than query.max_points = {}: use a longer step or a shorter range",
                self.points, self.cfg.max_points
            )));
        }
        Ok(())
    }

    /// Fails when an answer of `n` points would be more than `query.max_points` (counted on its
    /// own: the points of [`Budget::points`] are not added).
    pub fn answer(&self, n: usize) -> Result<(), QueryError> {
        if n as u64 > self.cfg.max_points {
            return Err(QueryError::TooCostly(format!(
                "the answer would hold {n} points, more than query.max_points = {}: use a longer step, a shorter range or a narrower selector",
                self.cfg.max_points
            )));
        }
        Ok(())
    }

    /// When the query passes `query.timeout` (None: a timeout past what a clock can hold), for
    /// loops that cannot reach the budget: each checks it now and then and stops, and
    /// [`Budget::time`] then names the limit.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.checked_add(self.cfg.timeout)
    }

    /// Fails once the query has run longer than `query.timeout`.
    pub fn time(&self) -> Result<(), QueryError> {
        if self.started.elapsed() > self.cfg.timeout {
            return Err(QueryError::Timeout(format!(
                "the query ran longer than query.timeout = {}",
                humantime::format_duration(self.cfg.timeout)
            )));
        }
        Ok(())
    }
}
