//! The evaluation loop of the daemon: watches the clock (the injected one, so tests drive it),
//! evaluates the groups that are due on a blocking thread, commits their results, saves the
//! states, and hands the changes to the notifier. Reloads on a rule file change, on SIGHUP
//! (`Alerts/ReloadRules` reloads in its own call).
use super::eval::Storage;
use super::manager::Manager;
use crate::notify::Notifier;
use crate::pb;
use crate::promql::{Labels, Source, StoreSource, NAME};
use crate::query::Budget;
use crate::state::Ctx;
use crate::store::{Batch, Body};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rule results go through the committer, like client data (WAL, fsync, then visible).
struct DaemonStorage<'a> {
    ctx: &'a Ctx,
    src: StoreSource<'a>,
    handle: tokio::runtime::Handle,
    now: i64,
}

impl Storage for DaemonStorage<'_> {
    fn source(&self) -> &dyn Source {
        &self.src
    }

    fn append(&mut self, t: i64, samples: &[(Labels, f64)]) -> Result<(), String> {
        if samples.is_empty() {
            return Ok(());
        }
        let series: Vec<pb::Series> = samples
            .iter()
            .map(|(ls, v)| pb::Series {
                name: crate::promql::label(ls, NAME).unwrap_or_default().to_string(),
                labels: ls
                    .iter()
                    .filter(|(k, _)| k != NAME)
                    .map(|(k, v)| pb::Label { name: k.clone(), value: v.clone() })
                    .collect(),
                kind: pb::MetricKind::Gauge as i32,
                timestamps_ms: vec![t],
                values: vec![*v],
            })
            .collect();
        let n = series.len();
        // Not through the validator: staleness markers are NaNs, which client data may not
        // carry, and the names come from validated rules and stored series.
        let mut batch = Batch::new(Body::Metrics(pb::MetricBatch { series, ..Default::default() }.into()));
        batch.item_map = (0..n as u32).collect();
        batch.received_ms = self.now;
        let ack = self.handle.block_on(self.ctx.committer.submit(batch)).map_err(|e| format!("not stored: {e}"))?;
        if ack.rejected_count > 0 {
            return Err(format!("{} of {n} series not stored: {:?}", ack.rejected_count, ack.rejections.first()));
        }
        Ok(())
    }

    fn budget(&self) -> Budget {
        Budget::new(&self.ctx.query)
    }
}

/// How long to sleep: until the next evaluation or group flush, between 1 and 100 ms.
fn nap(mgr: &Manager, notifier: &Notifier, now: i64) -> Duration {
    let next = [mgr.next_due(), notifier.next_flush()].into_iter().flatten().min();
    Duration::from_millis(next.map_or(100, |t| (t - now).clamp(1, 100)) as u64)
}

/// Runs until `shutdown`.
pub async fn run(ctx: Arc<Ctx>, mgr: Arc<Manager>, notifier: Arc<Notifier>, shutdown: CancellationToken) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last_file_check = std::time::Instant::now();
    loop {
        let mut do_reload = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading rule files");
                do_reload = true;
            }
            // Until the next evaluation or flush is due, reading the clock at least every
            // 100 ms (so that a test's manual clock is followed too).
            _ = tokio::time::sleep(nap(&mgr, &notifier, ctx.clock.now_ms())) => {}
        }
        if !do_reload && last_file_check.elapsed() >= Duration::from_secs(2) {
            last_file_check = std::time::Instant::now();
            let m = mgr.clone();
            do_reload = tokio::task::spawn_blocking(move || m.files_changed()).await.unwrap_or(false);
            if do_reload {
                tracing::info!("a rule file changed: reloading");
            }
        }
        if do_reload {
            let (m, now) = (mgr.clone(), ctx.clock.now_ms());
            match tokio::task::spawn_blocking(move || m.reload(now)).await {
                Ok(Err(errs)) => tracing::error!(errors = ?errs, "rule files refused; the rules in force stay"),
                Err(e) => tracing::error!(error = %e, "reload task failed"),
                Ok(Ok(_)) => {}
            }
        }
        let now = ctx.clock.now_ms();
        if mgr.next_due().is_none_or(|d| d > now) {
            // Between evaluations, groups may still come due (group_wait, group_interval).
            if notifier.next_flush().is_some_and(|t| t <= now) {
                let n = notifier.clone();
                match tokio::task::spawn_blocking(move || n.flush(now)).await {
                    Ok(Err(e)) => tracing::error!(error = %e, "notifications not queued"),
                    Err(e) => tracing::error!(error = %e, "notification task failed"),
                    Ok(Ok(())) => {}
                }
            }
            continue;
        }
        let (m, c, n, handle) = (mgr.clone(), ctx.clone(), notifier.clone(), tokio::runtime::Handle::current());
        let done = tokio::task::spawn_blocking(move || {
            let mut st = DaemonStorage { ctx: &c, src: StoreSource { store: &c.store }, handle, now };
            let t = std::time::Instant::now();
            let (_, errors) = m.eval_due(now, &mut st);
            crate::telemetry::T.rule_evaluation.since(t);
            crate::telemetry::T.rule_errors.add(errors.len() as u64);
            // Notifications first (queued durably), then the states: a crash between the two
            // sends a notification twice rather than never.
            let alerts: Vec<_> = m.alerts().into_iter().map(|r| (r.alert, r.expr)).collect();
            let queued = n.update(&alerts, now);
            (errors, queued, m.save_states())
        })
        .await;
        let (errors, queued, saved) = match done {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "rule evaluation task failed");
                continue;
            }
        };
        for e in errors {
            tracing::warn!(error = %e, "rule evaluation");
        }
        if let Err(e) = queued {
            tracing::error!(error = %e, "notifications not queued");
        }
        if let Err(e) = saved {
            tracing::error!(error = %e, "alert states not saved");
        }
    }
}
