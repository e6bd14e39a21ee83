//! The daemon's shared state: the handles every part of it (gRPC services, samplers,
//! background tasks) works through. Owned by [`crate::app`], passed around as `Arc<Ctx>`.
use crate::clock::ClockRef;
use crate::config::{Limits, QueryConfig};
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
}
