//! The daemon's own figures, every one defined here: what `/metrics` serves in the Prometheus
//! text format (0.0.4), and the ingest rates that `Status` reports.
//!
//! Three sources meet in [`render`]:
//! - the process-wide registry [`T`]: counters and histograms that the parts of the daemon
//!   bump as things happen (commit groups and fsyncs, rejections, queries, notifications,
//!   checkpoints, the start's replay), plus the per-model inference counters and latency
//!   histograms ([`Models`]), counted from acked, first-time event batches, so they are
//!   monotonic from the daemon's start (the derived series of the same names in PromQL restart
//!   every hour);
//! - gauges read at scrape time ([`Scrape`]: store and queue sizes, streams, alerts);
//! - the host and GPU samplers' latest readings, as they were stored.
use crate::pb;
use crate::store::aggs::STATUS_NAMES;
use crate::store::Store;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The registry; a process holds one daemon.
pub static T: Telemetry = Telemetry::new();

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A float gauge.
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicU64::new(0))
    }
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

const MAX_BOUNDS: usize = 16;

/// A histogram over fixed upper bounds (at most 16, `+Inf` implied).
pub struct Histogram {
    bounds: &'static [f64],
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    count: AtomicU64,
    sum: Mutex<f64>,
}

impl Histogram {
    pub const fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() <= MAX_BOUNDS);
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; MAX_BOUNDS + 1],
            count: AtomicU64::new(0),
            sum: Mutex::new(0.0),
        }
    }
    pub fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        *lock(&self.sum) += v;
    }
    pub fn since(&self, t: Instant) {
        self.observe(t.elapsed().as_secs_f64());
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(self.bounds.len() + 1);
        for (i, b) in self.bounds.iter().chain([&f64::INFINITY]).enumerate() {
            acc += self.buckets[i].load(Ordering::Relaxed);
            out.push((*b, acc));
        }
        (out, acc, *lock(&self.sum))
    }
}

/// Counters keyed by label values (few of them: reasons, receivers).
pub struct Family {
    labels: &'static [&'static str],
    map: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl Family {
    pub const fn new(labels: &'static [&'static str]) -> Family {
        Family { labels, map: Mutex::new(BTreeMap::new()) }
    }
    pub fn add(&self, values: &[&str], n: u64) {
        debug_assert_eq!(values.len(), self.labels.len());
        let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        *lock(&self.map).entry(key).or_default() += n;
    }
    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        lock(&self.map).get(&key).copied().unwrap_or(0)
    }
}

/// Float gauges by label values.
pub struct GaugeFamily {
    labels: &'static [&'static str],
    map: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl GaugeFamily {
    pub const fn new(labels: &'static [&'static str]) -> GaugeFamily {
        GaugeFamily { labels, map: Mutex::new(BTreeMap::new()) }
    }
    pub fn set(&self, values: &[&str], v: f64) {
        let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        lock(&self.map).insert(key, v);
    }
    pub fn get(&self, values: &[&str]) -> Option<f64> {
        let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        lock(&self.map).get(&key).copied()
    }
}

/// Seconds, for durations from a millisecond to a minute.
const SECONDS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];
/// Batches per commit group.
const GROUP: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

pub struct Telemetry {
    pub batches_stored: [Counter; 3],
    pub batches_duplicate: [Counter; 3],
    /// kind, code, field (indices removed: `series[].labels[].value`).
    pub rejected: Family,
    /// Whole batches refused: reason (the committer's, and the per-client limits).
    pub refused: Family,
    pub fsync: Histogram,
    /// The committer's stages, by [`COMMIT_STAGES`].
    pub commit_stage: [Histogram; 7],
    pub group: Histogram,
    pub wal_written: Counter,
    pub wal_bytes: Gauge,
    pub wal_since_checkpoint: Gauge,
    pub checkpoint: Histogram,
    pub checkpoint_failures: Counter,
    /// Merges of request-id runs (each call that merged anything) and those that failed.
    pub rid_merge: Histogram,
    pub rid_merge_failures: Counter,
    pub replay_seconds: Gauge,
    pub replay_records: Gauge,
    /// api (grpc, http, report).
    pub query: [Histogram; 3],
    pub queries_refused: Counter,
    pub rule_evaluation: Histogram,
    pub rule_errors: Counter,
    /// receiver, integration, outcome (delivered, retry, failed, expired).
    pub notifications: Family,
    /// protocol (grpc, http), reason (unauthenticated, forbidden).
    pub auth_refused: Family,
    /// Remote-write requests and samples by endpoint and outcome (sent, failed, retried, dropped).
    pub remote_write_requests: Family,
    pub remote_write_samples: Family,
    pub remote_write_lag_seconds: GaugeFamily,
    pub remote_write_pending_samples: GaugeFamily,
    /// OTLP export calls by signal (metrics, logs, traces) and outcome (accepted, partial, refused).
    pub otlp_requests: Family,
    pub tls_handshake_failures: Counter,
    /// what (tokens, tls), outcome (reloaded, failed).
    pub reloads: Family,
    /// Ingest calls refused above limits.memory_limit.
    pub memory_refused: Counter,
    /// 1 while ingest is refused for memory.
    pub memory_refusing: Gauge,
    /// Times a reader waited for room in limits.ingest_inflight_bytes.
    pub inflight_waits: Counter,
    pub models: Models,
}

pub const KINDS: [&str; 3] = ["metrics", "logs", "events"];
/// `queue`: a batch waiting for its group (per batch); `reserve`: WAL room made for a group
/// (a new segment when the open one is full); `apply`: a group applied to memory and appended
/// to the WAL; `persist`: its raw records written; `cut`: full heads cut after it;
/// `checkpoint`: the committer's own steps of a checkpoint (the first and the last, groups
/// wait meanwhile); `ack`: a batch from its queueing to its reply (per batch). The fsync
/// between apply and persist is `modelwatch_wal_fsync_seconds`.
pub const COMMIT_STAGES: [&str; 7] = ["queue", "reserve", "apply", "persist", "cut", "checkpoint", "ack"];
pub const STAGE_QUEUE: usize = 0;
pub const STAGE_RESERVE: usize = 1;
pub const STAGE_APPLY: usize = 2;
pub const STAGE_PERSIST: usize = 3;
pub const STAGE_CUT: usize = 4;
pub const STAGE_CHECKPOINT: usize = 5;
pub const STAGE_ACK: usize = 6;
pub const QUERY_APIS: [&str; 3] = ["grpc", "http", "report"];
pub const GRPC: usize = 0;
pub const HTTP: usize = 1;
pub const REPORT: usize = 2;

impl Telemetry {
    const fn new() -> Telemetry {
        Telemetry {
            batches_stored: [const { Counter::new() }; 3],
            batches_duplicate: [const { Counter::new() }; 3],
            rejected: Family::new(&["kind", "code", "field"]),
            refused: Family::new(&["reason"]),
            fsync: Histogram::new(&SECONDS),
            commit_stage: [const { Histogram::new(&SECONDS) }; 7],
            group: Histogram::new(&GROUP),
            wal_written: Counter::new(),
            wal_bytes: Gauge::new(),
            wal_since_checkpoint: Gauge::new(),
            checkpoint: Histogram::new(&SECONDS),
            checkpoint_failures: Counter::new(),
            rid_merge: Histogram::new(&SECONDS),
            rid_merge_failures: Counter::new(),
            replay_seconds: Gauge::new(),
            replay_records: Gauge::new(),
            query: [const { Histogram::new(&SECONDS) }; 3],
            queries_refused: Counter::new(),
            rule_evaluation: Histogram::new(&SECONDS),
            rule_errors: Counter::new(),
            notifications: Family::new(&["receiver", "integration", "outcome"]),
            auth_refused: Family::new(&["protocol", "reason"]),
            remote_write_requests: Family::new(&["endpoint", "outcome"]),
            remote_write_samples: Family::new(&["endpoint", "outcome"]),
            remote_write_lag_seconds: GaugeFamily::new(&["endpoint"]),
            remote_write_pending_samples: GaugeFamily::new(&["endpoint"]),
            otlp_requests: Family::new(&["signal", "outcome"]),
            tls_handshake_failures: Counter::new(),
            reloads: Family::new(&["what", "outcome"]),
            memory_refused: Counter::new(),
            memory_refusing: Gauge::new(),
            inflight_waits: Counter::new(),
            models: Models::new(),
        }
    }

    /// Counts one rejected item under its kind, code and field with the indices taken out.
    pub fn reject(&self, kind: usize, code: &str, field: &str) {
        let mut f = String::with_capacity(field.len());
        let mut skip = false;
        for ch in field.chars() {
            match ch {
                '[' => {
                    skip = true;
                    f.push('[');
                }
                ']' => {
                    skip = false;
                    f.push(']');
                }
                _ if skip => {}
                c => f.push(c),
            }
        }
        self.rejected.add(&[KINDS[kind], code, &f], 1);
    }
}

// ---- per-model inference figures -------------------------------------------------------

/// The labels of the derived inference series: service, model, version, endpoint.
type GroupKey = [String; 4];

/// The latency bounds of `modelwatch_inference_latency_seconds` (those of the derived series).
use crate::promql::derived::LE_BOUNDS;

#[derive(Default, Clone)]
pub struct ModelStats {
    /// ok, error, timeout, rejected.
    status: [u64; 4],
    errors: BTreeMap<String, u64>,
    /// Per bound of [`LE_BOUNDS`] (not cumulative).
    le: [u64; 16],
    sum_s: f64,
    /// prompt tokens, completion tokens, input bytes, output bytes.
    sums: [u64; 4],
}

impl ModelStats {
    fn add(&mut self, o: &ModelStats) {
        for i in 0..4 {
            self.status[i] += o.status[i];
            self.sums[i] += o.sums[i];
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for i in 0..16 {
            self.le[i] += o.le[i];
        }
        self.sum_s += o.sum_s;
    }
}

/// Status names as the derived series spell them (index = `pb::Status` value, 0 and 1 = ok).
fn status_slot(status: i32) -> usize {
    match STATUS_NAMES.get(status as usize).copied().unwrap_or("ok") {
        "error" => 1,
        "timeout" => 2,
        "rejected" => 3,
        _ => 0,
    }
}

/// One batch's events summed per model group, made on the handler's thread before the batch
/// is queued, and added to [`Models`] once its ack says it was stored for the first time.
#[derive(Default)]
pub struct Tally(Vec<(GroupKey, ModelStats)>);

impl Tally {
    pub fn of(b: &pb::EventBatch) -> Tally {
        let mut t: Vec<(GroupKey, ModelStats)> = Vec::new();
        for e in &b.events {
            let service = if e.service.is_empty() { &b.service } else { &e.service };
            let key = [service.as_str(), &e.model, &e.model_version, &e.endpoint];
            let i = match t.iter().position(|(k, _)| k.iter().zip(key).all(|(a, b)| crate::store::keys::same(a, b))) {
                Some(i) => i,
                None => {
                    t.push((key.map(String::from), ModelStats::default()));
                    t.len() - 1
                }
            };
            let s = &mut t[i].1;
            let slot = status_slot(e.status);
            s.status[slot] += 1;
            if slot != 0 && !e.error_type.is_empty() {
                *s.errors.entry(e.error_type.clone()).or_default() += 1;
            }
            let secs = e.latency_us as f64 / 1e6;
            let b = LE_BOUNDS.iter().position(|le| secs <= *le).unwrap_or(15);
            s.le[b] += 1;
            s.sum_s += secs;
            s.sums[0] += u64::from(e.prompt_tokens);
            s.sums[1] += u64::from(e.completion_tokens);
            s.sums[2] += e.input_bytes;
            s.sums[3] += e.output_bytes;
        }
        Tally(t)
    }

    /// The tally of an events batch; `None` for other kinds.
    pub fn of_batch(b: &crate::store::Batch) -> Option<Tally> {
        match &b.body {
            crate::store::Body::Events(e) => Some(Tally::of(e)),
            _ => None,
        }
    }

    pub fn commit(self) {
        T.models.add(self);
    }
}

pub struct Models {
    groups: Mutex<BTreeMap<GroupKey, ModelStats>>,
    /// Most groups kept (`limits.max_series`); later ones are counted in `dropped`.
    cap: AtomicUsize,
    dropped: Counter,
}

impl Models {
    const fn new() -> Models {
        Models { groups: Mutex::new(BTreeMap::new()), cap: AtomicUsize::new(usize::MAX), dropped: Counter::new() }
    }

    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    fn add(&self, t: Tally) {
        let cap = self.cap.load(Ordering::Relaxed);
        let mut g = lock(&self.groups);
        for (k, s) in t.0 {
            if let Some(have) = g.get_mut(&k) {
                have.add(&s);
            } else if g.len() < cap {
                g.insert(k, s);
            } else {
                self.dropped.add(1);
            }
        }
    }
}

// ---- ingest rates for Status ------------------------------------------------------------

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<(Instant, [u64; 3])>>,
}

fn totals(store: &Store) -> [u64; 3] {
    let c = &store.counters;
    [c.samples.load(Ordering::Relaxed), c.events.load(Ordering::Relaxed), c.logs.load(Ordering::Relaxed)]
}

impl Rates {
    /// Records the counters now (called by a ticker and by each Status call).
    pub fn tick(&self, store: &Store) {
        let now = Instant::now();
        let mut q = lock(&self.samples);
        q.push_back((now, totals(store)));
        while q.len() > 2 && q.front().is_some_and(|(t, _)| now.duration_since(*t) > WINDOW) {
            q.pop_front();
        }
    }

    /// Per-second rates of samples, events and logs over the window.
    pub fn per_second(&self, store: &Store) -> [f64; 3] {
        self.tick(store);
        let q = lock(&self.samples);
        let (Some(a), Some(b)) = (q.front(), q.back()) else {
            return [0.0; 3];
        };
        let dt = b.0.duration_since(a.0).as_secs_f64();
        if dt <= 0.0 {
            return [0.0; 3];
        }
        [0, 1, 2].map(|i| (b.1[i] - a.1[i]) as f64 / dt)
    }
}

// ---- the exposition ---------------------------------------------------------------------

/// What is read when `/metrics` is scraped.
pub struct Scrape {
    pub version: &'static str,
    pub start_time_s: f64,
    /// samples, log records, events stored since the start.
    pub items: [u64; 3],
    pub series: u64,
    pub data_dir_bytes: u64,
    pub commit_queue: u64,
    /// Encoded bytes of ingest messages waiting for their fsync.
    pub inflight_bytes: u64,
    pub open_streams: u64,
    pub clients: u64,
    pub query_queue: u64,
    pub notify_queue: u64,
    /// Alerts by state (pending, firing).
    pub alerts: [u64; 2],
    /// The samplers' latest readings.
    pub samples: Vec<pb::Series>,
}

fn esc(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn labels(names: &[&str], values: &[&str]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = names.iter().zip(values).map(|(n, v)| format!("{n}=\"{}\"", esc(v))).collect();
    format!("{{{}}}", parts.join(","))
}

use crate::promql::fmt_value as num;

/// Where families go: the exposition text, or series to store (the daemon sampling itself).
enum Out {
    Text(String),
    Series { ts: i64, kind: pb::MetricKind, series: Vec<pb::Series> },
}

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        match self {
            Out::Text(t) => {
                let _ = writeln!(t, "# HELP {name} {help}\n# TYPE {name} {kind}");
            }
            Out::Series { kind: k, .. } => {
                *k = if kind == "gauge" { pb::MetricKind::Gauge } else { pb::MetricKind::Counter };
            }
        }
    }
    fn line(&mut self, name: &str, names: &[&str], values: &[&str], v: f64) {
        match self {
            Out::Text(t) => {
                let _ = writeln!(t, "{name}{} {}", labels(names, values), num(v));
            }
            Out::Series { ts, kind, series } => series.push(pb::Series {
                name: name.into(),
                labels: names
                    .iter()
                    .zip(values)
                    .map(|(n, v)| pb::Label { name: (*n).into(), value: (*v).into() })
                    .collect(),
                kind: *kind as i32,
                timestamps_ms: vec![*ts],
                values: vec![v],
            }),
        }
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.head(name, kind, help);
        self.line(name, &[], &[], v);
    }
    fn family(&mut self, name: &str, help: &str, f: &Family) {
        self.head(name, "counter", help);
        for (k, v) in lock(&f.map).iter() {
            let vals: Vec<&str> = k.iter().map(String::as_str).collect();
            self.line(name, f.labels, &vals, *v as f64);
        }
    }
    fn gauges(&mut self, name: &str, help: &str, f: &GaugeFamily) {
        self.head(name, "gauge", help);
        for (k, v) in lock(&f.map).iter() {
            let vals: Vec<&str> = k.iter().map(String::as_str).collect();
            self.line(name, f.labels, &vals, *v);
        }
    }
    fn hist_lines(&mut self, name: &str, names: &[&str], vals: &[&str], cum: &[(f64, u64)], count: u64, sum: f64) {
        let mut ln: Vec<&str> = names.to_vec();
        ln.push("le");
        for (le, c) in cum {
            let les = num(*le);
            let mut lv: Vec<&str> = vals.to_vec();
            lv.push(&les);
            self.line(&format!("{name}_bucket"), &ln, &lv, *c as f64);
        }
        self.line(&format!("{name}_sum"), names, vals, sum);
        self.line(&format!("{name}_count"), names, vals, count as f64);
    }
    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.head(name, "histogram", help);
        let (cum, count, sum) = h.snapshot();
        self.hist_lines(name, &[], &[], &cum, count, sum);
    }
}

/// The daemon's own process: CPU seconds and resident bytes (Linux).
fn process() -> (f64, f64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    let cpu = if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(ru.ru_utime) + t(ru.ru_stime)
    } else {
        0.0
    };
    (cpu, resident_bytes().unwrap_or(0) as f64)
}

/// glibc's heap: bytes handed out and not freed, and bytes free inside its arenas (held
/// but unused: fragmentation, or memory not yet returned). Other C libraries: none.
///
/// `mallinfo2` walks every free list of every arena under that arena's lock, which holds up
/// the threads allocating there (the committer among them): the figures are taken at most
/// once a second and reused by scrapes in between.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_bytes() -> Option<(u64, u64)> {
    static LAST: Mutex<Option<(Instant, (u64, u64))>> = Mutex::new(None);
    let mut last = lock(&LAST);
    if let Some((at, v)) = *last {
        if at.elapsed() < Duration::from_secs(1) {
            return Some(v);
        }
    }
    // SAFETY: mallinfo2 only reads the allocator's own counters.
    let m = unsafe { libc::mallinfo2() };
    let v = ((m.uordblks + m.hblkhd) as u64, m.fordblks as u64);
    *last = Some((Instant::now(), v));
    Some(v)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_bytes() -> Option<(u64, u64)> {
    None
}

/// Fixes glibc's mmap threshold at 1 MiB, unless `GLIBC_TUNABLES` sets one. Left dynamic,
/// glibc raises it to the size of every mmapped block freed (up to 32 MiB): once the heads
/// map of 100,000 series had grown past its old table, a checkpoint's 10-MB lists came from
/// the arenas and left them fragmented, and a daemon fed slowly by 100,000 series held RSS at
/// 140-241 MiB against 107-167 MiB with the threshold fixed (heap in use 85-111 MB in both;
/// `benches/HISTORY.md`). Ingest moved by less than its run-to-run spread. Call it before
/// any thread starts. Fixing it also fixes the trim threshold, at 128 KiB (see
/// [`OpenHeap`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_heap() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("mmap_threshold")) {
        return;
    }
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
}

/// While it lives, glibc's trim threshold is 2 MiB instead of 128 KiB (unless `GLIBC_TUNABLES`
/// sets one): the store holds one over its open. It matters for folders whose sled log is
/// compressed (made 2026-11-25 to 2026-12-06; new ones are plain, see `store::zctx`): sled's
/// open decompresses each message of such a log with a new zstd context, and at 128 KiB each
/// such block freed at the top of a thread's arena was handed back with `madvise` and faulted
/// in again by the next. An open after a
/// backfilled week (219 MB of sled) took 38-41 s, and 19-21 s with 2 MiB (16 MiB did no
/// better). Kept for the whole run, 2 MiB cost RSS: fed 100,000 series every second, 79-94
/// MiB and a 100-MiB peak against 79-87 and 90 (2026-12-07, side by side).
pub struct OpenHeap(bool);

impl OpenHeap {
    pub fn new() -> OpenHeap {
        let set = cfg!(all(target_os = "linux", target_env = "gnu"))
            && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("trim_threshold"));
        if set {
            set_trim_threshold(2 << 20);
        }
        OpenHeap(set)
    }
}

impl Default for OpenHeap {
    fn default() -> Self {
        OpenHeap::new()
    }
}

impl Drop for OpenHeap {
    fn drop(&mut self) {
        if self.0 {
            // glibc's default, which a fixed mmap threshold leaves it at.
            set_trim_threshold(128 << 10);
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_trim_threshold(bytes: i32) {
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, bytes) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_trim_threshold(_: i32) {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_heap() {}

/// Returns free heap memory to the kernel (`malloc_trim`) when more than [`TRIM_FROM`] bytes
/// are resident beyond what the heap has in use, and the arenas hold that much free. glibc
/// keeps what a thread frees inside that thread's arena: after a checkpoint of 100,000 series,
/// 160 MB (more than the 156 MB in use) stayed resident and unused; after 100,000 heads fed
/// every 10 s were cut together at 120 samples, 26-29 MB did (RSS 108-111 MiB against 93-96 MB
/// in use), below the 64 MiB of free heap that this asked for until 2026-12-07. Counting what
/// is resident rather than free alone means that a trim, which leaves the pages it returns on
/// glibc's free lists, is not repeated while they stay returned. The checkpoint thread calls
/// this after each checkpoint, at nice +10, and it trims at most once a minute: a trim takes
/// each arena's lock while it returns that arena's pages (87 ms over 141 MB free, measured at
/// 100,000 series), so a thread that allocates in that arena meanwhile waits.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let mut last = lock(&LAST);
    if last.is_some_and(|at| at.elapsed() < Duration::from_secs(60)) {
        return;
    }
    let (Some((in_use, free)), Some(resident)) = (heap_bytes(), resident_bytes()) else { return };
    if free > TRIM_FROM && resident.saturating_sub(in_use) > TRIM_FROM {
        let began = Instant::now();
        // SAFETY: malloc_trim only releases memory that no allocation holds.
        unsafe { libc::malloc_trim(0) };
        *last = Some(Instant::now());
        tracing::debug!(
            free,
            in_use,
            resident,
            ms = began.elapsed().as_millis() as u64,
            "returned free heap memory to the kernel"
        );
    }
}

/// Resident bytes beyond the heap in use, and free bytes in the arenas, from which
/// [`trim_heap`] trims: an idle daemon is 10 MiB resident in all.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_FROM: u64 = 16 << 20;

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() {}

/// The daemon's resident set size, from `/proc/self/statm` (Linux).
pub fn resident_bytes() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as u64 } else { 4096 };
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

/// The whole exposition.
pub fn render(s: &Scrape) -> String {
    let mut o = Out::Text(String::with_capacity(16 << 10));
    render_own(&mut o, s);
    render_models(&mut o);
    render_samples(&mut o, &s.samples);
    match o {
        Out::Text(t) => t,
        Out::Series { .. } => unreachable!("text was asked for"),
    }
}

/// The daemon's own figures as series stamped `ts`, to be stored like a sampler's readings
/// (so that PromQL, the rules and the daemon's dashboard see them). The per-model figures and
/// the samplers' readings are left out: the store has them already.
pub fn own_series(s: &Scrape, ts: i64) -> Vec<pb::Series> {
    let mut o = Out::Series { ts, kind: pb::MetricKind::Gauge, series: Vec::new() };
    render_own(&mut o, s);
    match o {
        Out::Series { series, .. } => series,
        Out::Text(_) => Vec::new(),
    }
}

fn render_own(o: &mut Out, s: &Scrape) {
    let t = &T;
    o.head("modelwatch_build_info", "gauge", "The daemon's version.");
    o.line("modelwatch_build_info", &["version"], &[s.version], 1.0);
    o.one("modelwatch_start_time_seconds", "gauge", "When the daemon started (Unix seconds).", s.start_time_s);
    let (cpu, rss) = process();
    o.one("modelwatch_process_cpu_seconds_total", "counter", "CPU time the daemon has used.", cpu);
    o.one("modelwatch_process_resident_memory_bytes", "gauge", "The daemon's resident memory.", rss);
    if let Some((used, free)) = heap_bytes() {
        let name = "modelwatch_process_heap_bytes";
        o.head(name, "gauge", "glibc's heap: bytes in use, and bytes free but held in its arenas.");
        o.line(name, &["state"], &["in_use"], used as f64);
        o.line(name, &["state"], &["free"], free as f64);
    }

    // Ingest.
    o.head("modelwatch_ingest_items_total", "counter", "Samples, log records and events stored since the start.");
    for (k, v) in ["metrics", "logs", "events"].iter().zip(s.items) {
        o.line("modelwatch_ingest_items_total", &["kind"], &[k], v as f64);
    }
    o.head(
        "modelwatch_ingest_batches_total",
        "counter",
        "Batches acked, by kind and outcome (stored, or a duplicate resend).",
    );
    for (i, k) in KINDS.iter().enumerate() {
        let stored = t.batches_stored[i].get() as f64;
        o.line("modelwatch_ingest_batches_total", &["kind", "outcome"], &[k, "stored"], stored);
        let duplicate = t.batches_duplicate[i].get() as f64;
        o.line("modelwatch_ingest_batches_total", &["kind", "outcome"], &[k, "duplicate"], duplicate);
    }
    o.family(
        "modelwatch_ingest_rejected_total",
        "Items rejected, by kind, gRPC code and field (indices removed); the acks name each one.",
        &t.rejected,
    );
    o.family(
        "modelwatch_ingest_refused_batches_total",
        "Whole batches refused, by reason (disk_full, storage, shutting_down; client_streams, client_rate: the per-client limits).",
        &t.refused,
    );
    o.one("modelwatch_ingest_streams_open", "gauge", "Ingest streams open now.", s.open_streams as f64);
    o.one("modelwatch_ingest_clients", "gauge", "Registered clients seen within limits.client_ttl.", s.clients as f64);
    o.one("modelwatch_commit_queue_batches", "gauge", "Batches waiting for the committer.", s.commit_queue as f64);
    o.one(
        "modelwatch_ingest_inflight_bytes",
        "gauge",
        "Encoded bytes of received ingest messages waiting for their fsync (at most limits.ingest_inflight_bytes, in KiB steps).",
        s.inflight_bytes as f64,
    );
    o.one(
        "modelwatch_ingest_inflight_waits_total",
        "counter",
        "Times an ingest stream or call waited for room in limits.ingest_inflight_bytes (its sender held back by flow control).",
        t.inflight_waits.get() as f64,
    );
    o.histogram("modelwatch_commit_group_batches", "Batches made durable by one fsync.", &t.group);
    o.histogram("modelwatch_wal_fsync_seconds", "Time of each write-ahead-log fsync.", &t.fsync);
    o.head(
        "modelwatch_commit_stage_seconds",
        "histogram",
        "Time in the committer's stages: queue and ack per batch (ack: queued to acknowledged); reserve, apply, persist and cut per group; checkpoint: its steps on the committer.",
    );
    for (i, stage) in COMMIT_STAGES.iter().enumerate() {
        let (cum, count, sum) = t.commit_stage[i].snapshot();
        o.hist_lines("modelwatch_commit_stage_seconds", &["stage"], &[stage], &cum, count, sum);
    }
    o.one(
        "modelwatch_wal_written_bytes_total",
        "counter",
        "Bytes appended to the write-ahead log.",
        t.wal_written.get() as f64,
    );
    o.one("modelwatch_wal_bytes", "gauge", "Write-ahead-log segment bytes on disk.", t.wal_bytes.get());
    o.one(
        "modelwatch_wal_since_checkpoint_bytes",
        "gauge",
        "Write-ahead-log bytes a replay would decode now (records at their decoded size).",
        t.wal_since_checkpoint.get(),
    );
    o.histogram("modelwatch_checkpoint_seconds", "Time of each checkpoint.", &t.checkpoint);
    o.one(
        "modelwatch_checkpoint_failures_total",
        "counter",
        "Checkpoints that failed (the WAL keeps everything until one succeeds).",
        t.checkpoint_failures.get() as f64,
    );
    o.histogram(
        "modelwatch_request_id_merge_seconds",
        "Time of each round of request-id run merges (after a checkpoint, on a thread of its own).",
        &t.rid_merge,
    );
    o.one(
        "modelwatch_request_id_merge_failures_total",
        "counter",
        "Rounds of request-id run merges that failed (a damaged run: its runs stay as they are).",
        t.rid_merge_failures.get() as f64,
    );
    o.one(
        "modelwatch_replay_seconds",
        "gauge",
        "Time the start's write-ahead-log replay took.",
        t.replay_seconds.get(),
    );
    o.one("modelwatch_replay_records", "gauge", "Write-ahead-log records the start replayed.", t.replay_records.get());
    o.one("modelwatch_store_series", "gauge", "Metric series in the store.", s.series as f64);
    o.one(
        "modelwatch_data_dir_bytes",
        "gauge",
        "Bytes in the data folder (store, block files, WAL, notification queue).",
        s.data_dir_bytes as f64,
    );

    // Queries, rules, notifications.
    o.head("modelwatch_query_duration_seconds", "histogram", "Time queries ran on the query threads, by API.");
    for (i, api) in QUERY_APIS.iter().enumerate() {
        let (cum, count, sum) = t.query[i].snapshot();
        o.hist_lines("modelwatch_query_duration_seconds", &["api"], &[api], &cum, count, sum);
    }
    o.one("modelwatch_query_queue", "gauge", "Queries waiting for a query thread.", s.query_queue as f64);
    o.one(
        "modelwatch_queries_refused_total",
        "counter",
        "Queries refused because query.max_concurrent's queue was full.",
        t.queries_refused.get() as f64,
    );
    o.histogram("modelwatch_rule_evaluation_seconds", "Time of each round of due rule groups.", &t.rule_evaluation);
    o.one("modelwatch_rule_errors_total", "counter", "Rule evaluations that failed.", t.rule_errors.get() as f64);
    o.head("modelwatch_alerts", "gauge", "Alerts by state.");
    o.line("modelwatch_alerts", &["state"], &["pending"], s.alerts[0] as f64);
    o.line("modelwatch_alerts", &["state"], &["firing"], s.alerts[1] as f64);
    o.family(
        "modelwatch_notification_attempts_total",
        "Notification attempts by receiver, integration and outcome (delivered, retry, failed, expired).",
        &t.notifications,
    );
    o.one("modelwatch_notification_queue", "gauge", "Notifications queued for delivery.", s.notify_queue as f64);

    // Security.
    o.family(
        "modelwatch_auth_refused_total",
        "Requests refused for their credentials, by protocol (grpc, http) and reason (unauthenticated, forbidden).",
        &t.auth_refused,
    );
    o.one(
        "modelwatch_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out (a client certificate from another CA, say).",
        t.tls_handshake_failures.get() as f64,
    );
    o.one(
        "modelwatch_memory_refused_total",
        "counter",
        "Ingest calls refused with RESOURCE_EXHAUSTED because the daemon's RSS was above limits.memory_limit.",
        t.memory_refused.get() as f64,
    );
    o.one(
        "modelwatch_memory_refusing",
        "gauge",
        "1 while ingest is refused for memory (from above limits.memory_limit until below its resume mark).",
        t.memory_refusing.get(),
    );
    // Fleet.
    o.family(
        "modelwatch_remote_write_requests_total",
        "Remote-write requests by endpoint and outcome: sent (2xx), failed (any other answer or none), retried (failed with 5xx, 429 or no answer, and sent again after a backoff), dropped (a single sample refused with another 4xx, skipped).",
        &t.remote_write_requests,
    );
    o.family(
        "modelwatch_remote_write_samples_total",
        "Samples in those requests, by endpoint and outcome.",
        &t.remote_write_samples,
    );
    o.gauges(
        "modelwatch_remote_write_lag_seconds",
        "How far the endpoint's cursor is behind the newest stored sample of the series still to send (0: caught up), at each sender's last pass.",
        &t.remote_write_lag_seconds,
    );
    o.gauges(
        "modelwatch_remote_write_pending_samples",
        "Samples stored but not yet acknowledged by the endpoint (chunks straddling the cursor counted whole).",
        &t.remote_write_pending_samples,
    );
    o.family(
        "modelwatch_otlp_requests_total",
        "OTLP export calls by signal (metrics, logs, traces) and outcome (accepted, partial, refused).",
        &t.otlp_requests,
    );
    o.family(
        "modelwatch_config_reloads_total",
        "Reloads of the tokens file and the TLS files when they changed, by outcome (reloaded, failed).",
        &t.reloads,
    );
}

fn key(k: &GroupKey) -> [&str; 4] {
    [k[0].as_str(), &k[1], &k[2], &k[3]]
}

fn render_models(o: &mut Out) {
    let m = &T.models;
    let g = lock(&m.groups).clone();
    let names = ["service", "model", "version", "endpoint"];
    o.head("modelwatch_inference_requests_total", "counter", "Inference events stored since the start, by status.");
    for (k, s) in &g {
        for (i, st) in ["ok", "error", "timeout", "rejected"].iter().enumerate() {
            if s.status[i] > 0 || i == 0 {
                let mut n = names.to_vec();
                n.push("status");
                let mut v = key(k).to_vec();
                v.push(st);
                o.line("modelwatch_inference_requests_total", &n, &v, s.status[i] as f64);
            }
        }
    }
    o.head("modelwatch_inference_errors_total", "counter", "Failed inference events since the start, by error type.");
    for (k, s) in &g {
        for (e, c) in &s.errors {
            let mut n = names.to_vec();
            n.push("error_type");
            let mut v = key(k).to_vec();
            v.push(e);
            o.line("modelwatch_inference_errors_total", &n, &v, *c as f64);
        }
    }
    o.head(
        "modelwatch_inference_latency_seconds",
        "histogram",
        "End-to-end latency of inference events since the start.",
    );
    for (k, s) in &g {
        let mut acc = 0;
        let cum: Vec<(f64, u64)> = LE_BOUNDS
            .iter()
            .zip(s.le)
            .map(|(le, c)| {
                acc += c;
                (*le, acc)
            })
            .collect();
        o.hist_lines("modelwatch_inference_latency_seconds", &names, &key(k), &cum, acc, s.sum_s);
    }
    let sums = [
        ("modelwatch_inference_prompt_tokens_total", "Prompt tokens of stored inference events."),
        ("modelwatch_inference_completion_tokens_total", "Completion tokens of stored inference events."),
        ("modelwatch_inference_input_bytes_total", "Input bytes of stored inference events."),
        ("modelwatch_inference_output_bytes_total", "Output bytes of stored inference events."),
    ];
    for (i, (name, help)) in sums.iter().enumerate() {
        o.head(name, "counter", help);
        for (k, s) in &g {
            o.line(name, &names, &key(k), s.sums[i] as f64);
        }
    }
    o.one(
        "modelwatch_telemetry_dropped_groups_total",
        "counter",
        "Events whose model group was not counted on /metrics: past limits.max_series groups.",
        m.dropped.get() as f64,
    );
}

/// The samplers' latest readings, one family per name.
fn render_samples(o: &mut Out, samples: &[pb::Series]) {
    let mut by_name: BTreeMap<&str, Vec<&pb::Series>> = BTreeMap::new();
    for s in samples {
        by_name.entry(s.name.as_str()).or_default().push(s);
    }
    for (name, list) in by_name {
        let counter = list[0].kind == pb::MetricKind::Counter as i32;
        let help =
            if counter { "Sampled counter (its latest reading)." } else { "Sampled gauge (its latest reading)." };
        o.head(name, if counter { "counter" } else { "gauge" }, help);
        for s in list {
            let Some(v) = s.values.last() else { continue };
            let n: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
            let vals: Vec<&str> = s.labels.iter().map(|l| l.value.as_str()).collect();
            o.line(name, &n, &vals, *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_lose_their_indices() {
        let t = Telemetry::new();
        t.reject(0, "INVALID_ARGUMENT", "series[3].labels[12].value");
        t.reject(0, "INVALID_ARGUMENT", "series[0].labels[1].value");
        assert_eq!(t.rejected.get(&["metrics", "INVALID_ARGUMENT", "series[].labels[].value"]), 2);
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.5, 9.0] {
            h.observe(v);
        }
        let (cum, count, sum) = h.snapshot();
        assert_eq!(cum, vec![(1.0, 1), (2.0, 3), (f64::INFINITY, 4)]);
        assert_eq!((count, sum), (4, 12.5));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&["a"], &["x\"y\\z\nw"]), "{a=\"x\\\"y\\\\z\\nw\"}");
    }
}
