//! # modelwatch-client
//!
//! Push metrics, structured logs and inference events to a modelwatch daemon without ever
//! slowing the service down: every call only puts the item on a bounded in-memory queue.
//! A background thread (with its own small tokio runtime, so it works whether or not the
//! service uses tokio) batches the queues by size and linger time, streams the batches,
//! keeps a window of unacked batches per stream and resends them, in order, after a
//! reconnect; the daemon stores a resent batch once.
//!
//! When a queue is full the newest item is dropped and counted ([`Stats::dropped`]): the
//! service is never blocked and never fails because the daemon is down or slow.
//!
//! ```no_run
//! # async fn f() {
//! use modelwatch_client::{Client, Config, Stage};
//! let client = Client::start(Config::new("http://127.0.0.1:7070", "ocr"));
//! let mut t = client.timer("card-detector", "req-1");
//! t.stage(Stage::Preprocess);
//! t.stage(Stage::Inference);
//! t.label("card_type", "id_card");
//! t.finish_ok();
//! client.gauge("queue_depth", &[("model", "card-detector")], 3.0);
//! client.close(std::time::Duration::from_secs(5));
//! # }
//! ```
//!
//! # Layout
//! - [`Client`]: the handle (cheap to clone); enqueue calls, [`Client::flush`],
//!   [`Client::close`], [`Client::stats`].
//! - [`InferenceTimer`]: times one request and its stages, then records the event.
//! - [`layer::ModelwatchLayer`]: a `tracing` layer that ships the service's own events as logs.
//! - `lane` (private): one per kind; batching, the stream, the unacked window, reconnects.

mod lane;
pub mod layer;

pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("modelwatch.v1");
}

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Client settings; [`Config::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Daemon address: `http://127.0.0.1:7070`, `https://host:7070` (TLS) or the local socket,
    /// `unix:/run/modelwatch/ingest.sock`.
    pub endpoint: String,
    /// Bearer token for a daemon with `server.tokens_file` (an `ingest` token for `service`);
    /// sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// PEM CA certificate(s) that signed an `https://` daemon's certificate; `None`: the
    /// Mozilla roots (webpki-roots).
    pub ca_pem: Option<String>,
    /// PEM (certificate, key) when the daemon requires client certificates.
    pub client_identity: Option<(String, String)>,
    pub service: String,
    pub instance: String,
    pub host: String,
    pub pid: u32,
    /// (name, version) of the models this process serves.
    pub models: Vec<(String, String)>,
    /// Most items waiting per kind; past it the newest are dropped and counted.
    pub queue_capacity: usize,
    /// Most items per batch.
    pub batch_size: usize,
    /// Longest an item waits for its batch to fill.
    pub linger: Duration,
    /// Unacked batches in flight per stream.
    pub window: usize,
    /// Longest wait between reconnect attempts (backoff doubles up to it).
    pub max_backoff: Duration,
}

impl Config {
    pub fn new(endpoint: &str, service: &str) -> Config {
        Config {
            endpoint: endpoint.to_string(),
            token: None,
            ca_pem: None,
            client_identity: None,
            service: service.to_string(),
            instance: String::new(),
            host: std::env::var("HOSTNAME").unwrap_or_default(),
            pid: std::process::id(),
            models: Vec::new(),
            queue_capacity: 100_000,
            batch_size: 2_000,
            linger: Duration::from_millis(200),
            window: 8,
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Counts of items (samples, log records, events) since the client started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Enqueued by the service.
    pub enqueued: u64,
    /// Sent in a batch (first sends only).
    pub sent: u64,
    /// Acked by the daemon (stored, or rejected by it: see `rejected`).
    pub acked: u64,
    /// Dropped because a queue was full.
    pub dropped: u64,
    /// Sent again after a reconnect.
    pub retried: u64,
    /// Refused by the daemon's limits (counted in `acked` too).
    pub rejected: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub enqueued: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub dropped: AtomicU64,
    pub retried: AtomicU64,
    pub rejected: AtomicU64,
}

/// A bounded queue of one kind of item. A std `Mutex`: held for a push or a drain only, never
/// across an await, which is cheaper than any async lock on the caller's hot path.
pub(crate) struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    batch_size: usize,
    pub wake: tokio::sync::Notify,
}

impl<T> Queue<T> {
    fn new(capacity: usize, batch_size: usize) -> Queue<T> {
        Queue { items: Mutex::new(VecDeque::new()), capacity, batch_size, wake: tokio::sync::Notify::new() }
    }

    fn push(&self, item: T, c: &Counters) {
        let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= self.capacity {
            drop(q);
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push_back(item);
        let full = q.len() == self.batch_size;
        drop(q);
        c.enqueued.fetch_add(1, Ordering::Relaxed);
        if full {
            self.wake.notify_one();
        }
    }

    pub fn take(&self, n: usize) -> Vec<T> {
        let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let n = n.min(q.len());
        q.drain(..n).collect()
    }

    pub fn len(&self) -> usize {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A metric sample waiting for its batch.
pub(crate) struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub kind: pb::MetricKind,
    pub ts: i64,
    pub value: f64,
}

pub(crate) struct Shared {
    pub cfg: Config,
    pub metrics: Queue<Sample>,
    pub logs: Queue<pb::LogRecord>,
    pub events: Queue<pb::InferenceEvent>,
    pub counters: Counters,
    /// Lanes cut batches at once instead of waiting for the linger time.
    pub flushing: AtomicBool,
    pub closing: AtomicBool,
    /// Client id the daemon gave at registration.
    pub client_id: Mutex<String>,
}

/// Handle to a running client. Clones share the queues and the background thread.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Client {
    /// Starts the background thread. Never fails and never waits for the daemon: it connects
    /// (and reconnects) in the background.
    pub fn start(cfg: Config) -> Client {
        let shared = Arc::new(Shared {
            metrics: Queue::new(cfg.queue_capacity, cfg.batch_size),
            logs: Queue::new(cfg.queue_capacity, cfg.batch_size),
            events: Queue::new(cfg.queue_capacity, cfg.batch_size),
            counters: Counters::default(),
            flushing: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            client_id: Mutex::new(String::new()),
            cfg,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("modelwatch-client".into())
            .spawn(move || lane::run(s))
            .expect("spawning the modelwatch client thread");
        Client { shared, thread: Arc::new(Mutex::new(Some(thread))) }
    }

    fn sample(&self, kind: pb::MetricKind, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let s = Sample { name: name.to_string(), labels, kind, ts: now_ms(), value };
        self.shared.metrics.push(s, &self.shared.counters);
    }

    /// Records a gauge sample, stamped now.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(pb::MetricKind::Gauge, name, labels, value);
    }

    /// Records a counter's current total, stamped now.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)], total: f64) {
        self.sample(pb::MetricKind::Counter, name, labels, total);
    }

    /// Enqueues a structured log record (timestamp 0 means now).
    pub fn log_record(&self, mut r: pb::LogRecord) {
        if r.timestamp_ms == 0 {
            r.timestamp_ms = now_ms();
        }
        self.shared.logs.push(r, &self.shared.counters);
    }

    /// Enqueues a log line.
    pub fn log(&self, level: pb::Level, message: &str, request_id: &str) {
        self.log_record(pb::LogRecord {
            level: level as i32,
            message: message.to_string(),
            request_id: request_id.to_string(),
            ..Default::default()
        });
    }

    /// Enqueues an inference event (timestamp 0 means now).
    pub fn event(&self, mut e: pb::InferenceEvent) {
        if e.timestamp_ms == 0 {
            e.timestamp_ms = now_ms();
        }
        self.shared.events.push(e, &self.shared.counters);
    }

    /// Starts timing one inference request.
    pub fn timer(&self, model: &str, request_id: &str) -> InferenceTimer {
        let now = Instant::now();
        InferenceTimer {
            client: self.clone(),
            start: now,
            mark: now,
            ev: pb::InferenceEvent {
                timestamp_ms: now_ms(),
                model: model.to_string(),
                request_id: request_id.to_string(),
                ..Default::default()
            },
            stages: pb::Stages::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            enqueued: c.enqueued.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// The id the daemon knows this client by (empty until the first registration).
    pub fn client_id(&self) -> String {
        self.shared.client_id.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends what is queued now and waits (blocking this thread, up to `deadline`) until every
    /// item enqueued so far is acked or dropped. Returns whether it got there in time.
    pub fn flush(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        self.shared.flushing.store(true, Ordering::Relaxed);
        for q in [&self.shared.metrics.wake, &self.shared.logs.wake, &self.shared.events.wake] {
            q.notify_one();
        }
        let target = self.stats().enqueued;
        let done = loop {
            let s = self.stats();
            if s.acked >= target {
                break true;
            }
            if Instant::now() >= until {
                break false;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        self.shared.flushing.store(false, Ordering::Relaxed);
        done
    }

    /// [`Client::flush`] for async code: waits on the blocking pool.
    pub async fn flush_async(&self, deadline: Duration) -> bool {
        let c = self.clone();
        tokio::task::spawn_blocking(move || c.flush(deadline)).await.unwrap_or(false)
    }

    /// Flushes up to `deadline`, then stops the background thread. Items still unacked then
    /// are lost (and the return value says so).
    pub fn close(&self, deadline: Duration) -> bool {
        let flushed = self.flush(deadline);
        self.shared.closing.store(true, Ordering::Relaxed);
        for q in [&self.shared.metrics.wake, &self.shared.logs.wake, &self.shared.events.wake] {
            q.notify_one();
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        flushed
    }
}

/// Inference stages an [`InferenceTimer`] can mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Queue,
    Preprocess,
    Inference,
    Postprocess,
}

/// Times one request: each [`InferenceTimer::stage`] call closes a stage that began at the
/// previous mark (or at the start); `finish_*` records the event.
pub struct InferenceTimer {
    client: Client,
    start: Instant,
    mark: Instant,
    ev: pb::InferenceEvent,
    stages: pb::Stages,
}

fn us(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX).max(1)
}

impl InferenceTimer {
    /// Ends `stage` now (it began at the previous mark).
    pub fn stage(&mut self, stage: Stage) -> &mut Self {
        let now = Instant::now();
        let d = us(now - self.mark);
        self.mark = now;
        match stage {
            Stage::Queue => self.stages.queue_us += d,
            Stage::Preprocess => self.stages.preprocess_us += d,
            Stage::Inference => self.stages.inference_us += d,
            Stage::Postprocess => self.stages.postprocess_us += d,
        }
        self
    }

    /// Time to first token, measured from the start.
    pub fn first_token(&mut self) -> &mut Self {
        self.stages.time_to_first_token_us = us(self.start.elapsed());
        self
    }

    pub fn version(&mut self, v: &str) -> &mut Self {
        self.ev.model_version = v.to_string();
        self
    }

    pub fn endpoint(&mut self, e: &str) -> &mut Self {
        self.ev.endpoint = e.to_string();
        self
    }

    pub fn label(&mut self, k: &str, v: &str) -> &mut Self {
        self.ev.labels.insert(k.to_string(), v.to_string());
        self
    }

    /// Token counts; with completion tokens and a first-token mark, the time per output
    /// token is derived.
    pub fn tokens(&mut self, prompt: u32, completion: u32) -> &mut Self {
        self.ev.prompt_tokens = prompt;
        self.ev.completion_tokens = completion;
        self
    }

    pub fn sizes(&mut self, input_bytes: u64, output_bytes: u64) -> &mut Self {
        self.ev.input_bytes = input_bytes;
        self.ev.output_bytes = output_bytes;
        self
    }

    fn finish(mut self, status: pb::Status, error_type: &str) {
        let total = us(self.start.elapsed());
        self.ev.latency_us = total;
        let s = &mut self.stages;
        if s.time_to_first_token_us > 0 && self.ev.completion_tokens > 1 {
            s.time_per_output_token_us =
                total.saturating_sub(s.time_to_first_token_us) / u64::from(self.ev.completion_tokens - 1);
        }
        self.ev.stages = Some(std::mem::take(&mut self.stages));
        self.ev.status = status as i32;
        self.ev.error_type = error_type.to_string();
        let ev = std::mem::take(&mut self.ev);
        self.client.event(ev);
    }

    pub fn finish_ok(self) {
        self.finish(pb::Status::Ok, "");
    }

    /// Records a failure: `status` error, timeout or rejected, and an error type
    /// (e.g. `CudaOOM`).
    pub fn finish_err(self, status: pb::Status, error_type: &str) {
        self.finish(status, error_type);
    }
}
