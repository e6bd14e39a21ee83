//! Handing the host's data to fleet-wide engines: Prometheus remote-write out
//! ([`remote_write`], fed from the store behind a persisted [`cursor`] per endpoint), the
//! `/federate` endpoint ([`federate`]), and the OTLP/gRPC receiver ([`otlp`]), which turns
//! OpenTelemetry metrics, logs and GenAI spans into the daemon's own batches.
pub mod cursor;
pub mod federate;
pub mod otlp;
pub mod relabel;
pub mod remote_write;
pub mod wire;

use crate::config::Config;
use crate::state::Ctx;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Starts every configured remote-write endpoint. An endpoint that cannot start (its cursor
/// is damaged, its certificate unreadable) stops the daemon's start with the reason.
pub fn start(ctx: &Arc<Ctx>, cfg: &Config, shutdown: &CancellationToken) -> Result<Vec<String>, String> {
    let dir = cfg.storage.data_dir.join("export");
    let mut names = Vec::new();
    for rw in &cfg.fleet.remote_write {
        let ep = remote_write::Endpoint::new(
            rw,
            &cfg.fleet.external_labels,
            &dir,
            ctx.clock.now_ms(),
            &cfg.query,
            cfg.retention.inference_stats,
        )
        .map_err(|e| format!("fleet.remote_write {}: {e}", rw.endpoint_name()))?;
        names.push(ep.name.clone());
        tracing::info!(endpoint = %ep.name, url = %rw.url, shards = rw.shards, "remote-write: sending");
        remote_write::spawn(Arc::new(ep), ctx.store.clone(), ctx.clock.clone(), shutdown.clone());
    }
    Ok(names)
}
