//! Samplers: the host (sysinfo) and local GPUs (NVML, behind [`gpu::GpuSource`]) sampled on
//! their own schedules. What they read lands as ordinary series (and hardware faults as log
//! records plus counters) through the same validation and committer as client data, so
//! queries, reports and alerts use them like any other metric. Metric names are documented in
//! the README.
pub mod gpu;
pub mod host;
pub mod nvml;
pub mod own;

use crate::pb;
use crate::state::Ctx;
use std::sync::Arc;

/// Service name the samplers' data is stored under.
pub const SERVICE: &str = "modelwatch";

/// Builds one batch of gauge and counter series stamped with one time.
pub struct SeriesSet {
    pub ts: i64,
    pub series: Vec<pb::Series>,
}

impl SeriesSet {
    pub fn new(ts: i64) -> SeriesSet {
        SeriesSet { ts, series: Vec::new() }
    }

    fn push(&mut self, kind: pb::MetricKind, name: &str, labels: &[(&str, &str)], v: f64) {
        if !v.is_finite() {
            return;
        }
        self.series.push(pb::Series {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| pb::Label { name: (*k).into(), value: (*v).into() }).collect(),
            kind: kind as i32,
            timestamps_ms: vec![self.ts],
            values: vec![v],
        });
    }

    pub fn gauge(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.push(pb::MetricKind::Gauge, name, labels, v);
    }

    pub fn counter(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.push(pb::MetricKind::Counter, name, labels, v);
    }
}

/// Rounds a sampled float to 3 decimals: sysinfo's f32 readings widened to f64 have no
/// short decimal form, which costs 8 bytes per sample in the chunk encoding.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Where samplers put what they read: validated like client data, then committed.
#[derive(Clone)]
pub struct Sink {
    ctx: Arc<Ctx>,
}

impl Sink {
    pub fn new(ctx: Arc<Ctx>) -> Sink {
        Sink { ctx }
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Stores one sampler's readings and keeps them as its latest (served on `/metrics`).
    pub async fn metrics(&self, sampler: &'static str, set: SeriesSet) {
        if set.series.is_empty() {
            return;
        }
        self.ctx.latest_samples.lock().unwrap_or_else(|p| p.into_inner()).insert(sampler, set.series.clone());
        self.store(set).await;
    }

    /// Stores readings without keeping them as a sampler's latest.
    pub async fn store(&self, set: SeriesSet) {
        if set.series.is_empty() {
            return;
        }
        // seq 0: no de-duplication (a sampler restarts with the daemon).
        let b = pb::MetricBatch { service: SERVICE.into(), series: set.series, ..Default::default() };
        let batch = self.ctx.validator.metrics(b, self.ctx.clock.now_ms());
        self.submit(batch).await;
    }

    pub async fn logs(&self, records: Vec<pb::LogRecord>) {
        if records.is_empty() {
            return;
        }
        let b = pb::LogBatch { service: SERVICE.into(), records, ..Default::default() };
        let batch = self.ctx.validator.logs(b, self.ctx.clock.now_ms());
        self.submit(batch).await;
    }

    async fn submit(&self, batch: crate::store::Batch) {
        match self.ctx.committer.submit(batch).await {
            Ok(ack) if ack.rejected_count > 0 => {
                tracing::warn!(rejected = ack.rejected_count, first = ?ack.rejections.first(), "sampler data rejected")
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "sampler data not stored"),
        }
    }

    pub fn set_status(&self, sampler: &str, text: String) {
        self.ctx.samplers.lock().unwrap_or_else(|p| p.into_inner()).insert(sampler.into(), text);
    }
}

/// CPU time this thread has used, for the samplers' cost figures.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
