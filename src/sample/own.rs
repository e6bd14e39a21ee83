//! The daemon sampling itself: its own figures ([`crate::telemetry`]) read into a
//! [`Scrape`] for `/metrics`, and stored every `sampling.self_interval` like any sampler's
//! readings, so that PromQL, alert rules and the daemon's Grafana dashboard can use them
//! without a Prometheus in between.
use super::Sink;
use crate::state::Ctx;
use crate::telemetry::Scrape;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reads what `/metrics` shows at scrape time. Walks the data folder: call it off the
/// runtime's threads.
pub fn scrape(ctx: &Ctx) -> Scrape {
    let c = &ctx.store.counters;
    let mut alerts = [0u64; 2];
    for a in ctx.alerts.alerts() {
        match a.alert.state {
            crate::alert::eval::State::Pending => alerts[0] += 1,
            crate::alert::eval::State::Firing => alerts[1] += 1,
            crate::alert::eval::State::Inactive => {}
        }
    }
    let samples = ctx.latest_samples.lock().unwrap_or_else(|p| p.into_inner()).values().flatten().cloned().collect();
    Scrape {
        version: env!("CARGO_PKG_VERSION"),
        start_time_s: ctx.started.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        items: [c.samples.load(Relaxed), c.logs.load(Relaxed), c.events.load(Relaxed)],
        series: ctx.store.series_count() as u64,
        data_dir_bytes: ctx.store.disk_bytes(),
        commit_queue: ctx.committer.queue_depth() as u64,
        inflight_bytes: ctx.admission.inflight_bytes(),
        open_streams: ctx.open_streams.load(Relaxed) as u64,
        clients: ctx.registry.clients().len() as u64,
        query_queue: ctx.query_pool.waiting() as u64,
        notify_queue: ctx.notifier.queue_handle().len() as u64,
        alerts,
        samples,
    }
}

/// Stores the daemon's own figures every `interval` until `shutdown`.
pub async fn run(sink: Sink, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let ctx = sink.ctx().clone();
        let Ok(scrape) = tokio::task::spawn_blocking(move || scrape(&ctx)).await else { continue };
        let ts = sink.ctx().clock.now_ms();
        let set = super::SeriesSet { ts, series: crate::telemetry::own_series(&scrape, ts) };
        sink.store(set).await;
    }
}
