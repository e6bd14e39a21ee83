//! The daemon's shared state: the handles every part of it (gRPC services, samplers,
//! background tasks) works through. Owned by [`crate::app`], passed around as `Arc<Ctx>`.
use crate::clock::ClockRef;
use crate::config::{Limits, QueryConfig, ReportConfig};
use crate::ingest::{Registry, Validator};
use crate::store::commit::Committer;
use crate::store::StoreRef;
use crate::telemetry::Rates;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tokio_util::sync::CancellationToken;

pub struct Ctx {
    pub store: StoreRef,
    pub committer: Committer,
    pub validator: Validator,
    pub limits: Limits,
    pub query: QueryConfig,
    pub report: ReportConfig,
    /// The threads queries run on.
    pub query_pool: crate::query::pool::QueryPool,
    pub clock: ClockRef,
    pub registry: Arc<Registry>,
    pub rates: Arc<Rates>,
    pub started: SystemTime,
    pub started_at: Instant,
    pub shutdown: CancellationToken,
    pub max_message_bytes: usize,
    /// Ingest streams still open; shutdown waits for them, not for other long-lived calls
    /// (a health Watch never ends on its own).
    pub open_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// The rules and their alerts.
    pub alerts: Arc<crate::alert::manager::Manager>,
    /// Groups, silences and the notification queue.
    pub notifier: Arc<crate::notify::Notifier>,
    /// What each sampler does, or why it is off (shown by Status).
    pub samplers: Arc<Mutex<BTreeMap<String, String>>>,
    /// Each sampler's latest readings, for `/metrics`.
    pub latest_samples: Mutex<BTreeMap<&'static str, Vec<crate::pb::Series>>>,
    /// Ingest refused above the memory mark.
    pub admission: Arc<crate::server::admission::Admission>,
    /// Streams and batch rate per client.
    pub client_limits: Arc<crate::ingest::limiter::ClientLimits>,
    /// `fleet.external_labels`, sorted: added to what `/federate` serves.
    pub external_labels: Vec<(String, String)>,
}

impl Ctx {
    /// Connected instances per service (for capacity advice).
    pub fn instances(&self) -> BTreeMap<String, u32> {
        let mut seen: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for c in self.registry.clients() {
            seen.entry(c.info.service.clone()).or_default().insert(format!("{}/{}", c.info.instance, c.info.pid));
        }
        seen.into_iter().map(|(k, v)| (k, v.len() as u32)).collect()
    }

    /// Runs a report on the query threads with a fresh budget.
    pub async fn report<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&crate::report::Env, &mut crate::query::Budget) -> Result<T, crate::promql::PromqlError>
            + Send
            + 'static,
    ) -> Result<T, crate::promql::PromqlError> {
        let ctx = self.clone();
        let now = ctx.clock.now_ms();
        let mut budget = crate::query::Budget::new(&ctx.query);
        self.query_pool
            .run(crate::telemetry::REPORT, move || {
                let opts = ctx.query.promql();
                let env = crate::report::Env { store: &ctx.store, opts: &opts, cfg: &ctx.report, now };
                f(&env, &mut budget)
            })
            .await?
    }
}
