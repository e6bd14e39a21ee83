//! The embedded time-series store: sled for everything that is kept, plus our own write-ahead
//! log for what is not yet.
//!
//! Write path (one committer thread calls [`Store::apply`] then the WAL's append and sync):
//! - metrics: series resolved through the [`index`] (created on first sight, written to sled at
//!   once); samples appended to the series' in-memory head; a head of `chunk_samples` samples
//!   is cut into a compressed [`chunk`] (one sled key per chunk, never one per sample). Heads
//!   are also cut when older than `max_head_age` and at shutdown.
//! - inference events: the raw event is written under a time key (plus a request-id index)
//!   and folded into an [`events::Agg`] of its (service, model, version, endpoint) group and time
//!   bucket, kept in memory until the next checkpoint.
//! - logs: written under a time key, plus a request-id index.
//!
//! Durability: the committer acks a batch after its WAL record is synced. Sled is flushed only
//! at checkpoints; what it held before its last flush is whatever the WAL replays on restart:
//! - raw logs and events are keyed by (timestamp, lsn, index), so a replay rewrites the same
//!   keys: idempotent;
//! - metric samples at or before a series' last persisted chunk are skipped on replay;
//! - aggregates are written as rows keyed by (group, bucket, epoch) where the epoch is the lsn
//!   their accumulation started from; a replay after a crash rebuilds the same epoch and
//!   overwrites any rows a torn checkpoint left, so nothing counts twice;
//! - the de-duplication table (highest sequence per client and kind) and the counters are saved
//!   at each checkpoint and advanced by replay.
//!
//! Replay starts at the older of the checkpoint lsn and the oldest head's first lsn; WAL
//! segments older than that are deleted after the checkpoint's sled flush.

pub mod blocks;
pub mod chunk;
pub mod events;
pub mod index;
pub mod keys;
pub mod raw;
pub mod rid_index;
pub mod wal;

use crate::config::{Limits, Retention, StorageConfig};
use crate::pb;
use events::Agg;
use index::{Index, Matcher, SeriesMeta};
use keys::Meta;
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use wal::Wal;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data folder {path} cannot be opened: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error("data folder is damaged: {0}")]
    Decode(#[from] keys::DecodeError),
    #[error(transparent)]
    Blocks(#[from] blocks::BlockError),
}

/// The three kinds of telemetry; the number is the WAL record tag and the dedup key part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Metrics = 0,
    Logs = 1,
    Events = 2,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Metrics => "metrics",
            Kind::Logs => "logs",
            Kind::Events => "events",
        }
    }
}

pub enum Body {
    Metrics(pb::MetricBatch),
    Logs(pb::LogBatch),
    Events(pb::EventBatch),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Metrics(_) => Kind::Metrics,
            Body::Logs(_) => Kind::Logs,
            Body::Events(_) => Kind::Events,
        }
    }

    pub fn client_seq(&self) -> (&str, u64) {
        match self {
            Body::Metrics(b) => (&b.client_id, b.seq),
            Body::Logs(b) => (&b.client_id, b.seq),
            Body::Events(b) => (&b.client_id, b.seq),
        }
    }

    /// WAL payload: the kind tag, then the protobuf batch.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.kind() as u8];
        match self {
            Body::Metrics(b) => b.encode(&mut out),
            Body::Logs(b) => b.encode(&mut out),
            Body::Events(b) => b.encode(&mut out),
        }
        .expect("encoding into a Vec cannot fail");
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Body, String> {
        let (&tag, rest) = buf.split_first().ok_or("empty record")?;
        let e = |e: prost::DecodeError| e.to_string();
        Ok(match tag {
            0 => Body::Metrics(pb::MetricBatch::decode(rest).map_err(e)?),
            1 => Body::Logs(pb::LogBatch::decode(rest).map_err(e)?),
            2 => Body::Events(pb::EventBatch::decode(rest).map_err(e)?),
            t => return Err(format!("unknown record kind {t}")),
        })
    }
}

/// A batch after the handlers' stateless checks: rejected items are already removed.
pub struct Batch {
    pub body: Body,
    pub rejections: Vec<pb::Rejection>,
    pub rejected: u64,
    /// Original batch index of each item left in `body`.
    pub item_map: Vec<u32>,
    /// Metrics: original sample indices of the series (by position in `body`) that lost samples.
    pub sample_maps: HashMap<usize, Vec<u32>>,
    /// The WAL record of `body`, encoded by the handler (in parallel, off the committer); used
    /// when the committer rejects nothing more.
    pub encoded: Option<Vec<u8>>,
}

/// At most this many rejections travel in one ack; `rejected_count` has the total.
pub const MAX_REJECTIONS: usize = 100;

impl Batch {
    pub fn new(body: Body) -> Batch {
        Batch {
            body,
            rejections: Vec::new(),
            rejected: 0,
            item_map: Vec::new(),
            sample_maps: HashMap::new(),
            encoded: None,
        }
    }

    pub fn reject(&mut self, item: u32, sample: i32, code: &str, field: String, reason: String) {
        self.rejected += 1;
        if self.rejections.len() < MAX_REJECTIONS {
            self.rejections.push(pb::Rejection { item, sample, code: code.into(), field, reason });
        }
    }
}

/// What the committer needs back from [`Store::apply`].
pub struct Applied {
    pub ack: pb::Ack,
    /// The WAL record to write, or `None` for a duplicate (nothing new to keep).
    pub record: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct Counters {
    pub samples: AtomicU64,
    pub events: AtomicU64,
    pub logs: AtomicU64,
}

struct Head {
    ts: Vec<i64>,
    vals: Vec<f64>,
    /// Lsn of the oldest WAL record that may hold one of these samples.
    first_lsn: u64,
    started: Instant,
}

struct MetricsState {
    index: Index,
    heads: index::FxMap<u64, Head>,
    /// Heads that reached `chunk_samples`, cut by [`Store::cut_due`].
    due: Vec<u64>,
}

struct EventsState {
    groups: HashMap<[String; 4], u32>,
    group_list: Vec<(u32, [String; 4])>,
    aggs: HashMap<(u32, i64), Agg>,
    /// Lsn the in-memory aggregates started accumulating from (their rows' epoch).
    epoch: u64,
}

struct Trees {
    series: sled::Tree,
    chunks: sled::Tree,
    groups: sled::Tree,
    aggs: sled::Tree,
    events: sled::Tree,
    event_rid_runs: sled::Tree,
    logs: sled::Tree,
    log_rid_runs: sled::Tree,
    meta: sled::Tree,
}

pub struct StoreOptions {
    pub storage: StorageConfig,
    pub limits: Limits,
    pub retention: Retention,
}

pub type StoreRef = Arc<Store>;

pub struct Store {
    db: sled::Db,
    blocks: blocks::Blocks,
    event_rids: rid_index::RidIndex,
    log_rids: rid_index::RidIndex,
    t: Trees,
    dir: PathBuf,
    chunk_samples: usize,
    max_head_age: Duration,
    bucket_ms: i64,
    max_series_per_service: usize,
    retention: Retention,
    metrics: Mutex<MetricsState>,
    events: Mutex<EventsState>,
    dedup: Mutex<HashMap<(String, u8), u64>>,
    pub counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a store lock is a bug; the state it guards is still consistent for
    // reads (every mutation is a single push/insert), so keep serving rather than cascade.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Label set of a series as stored: sorted by name, with `service` added from the batch when
/// the series has none.
pub fn canonical_labels(labels: &[pb::Label], service: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
    if !service.is_empty() && !out.iter().any(|(k, _)| k == "service") {
        out.push(("service".into(), service.into()));
    }
    out.sort();
    out
}

/// The series id of `s` (with the batch's service label added when it has none), without
/// allocating: this runs for every series of every batch.
fn lookup_series(index: &Index, s: &pb::Series, service: &str) -> Option<u64> {
    let mut refs: Vec<(&str, &str)> = Vec::with_capacity(s.labels.len() + 1);
    refs.extend(s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
    if !service.is_empty() && !refs.iter().any(|(k, _)| *k == "service") {
        refs.push(("service", service));
    }
    refs.sort_unstable();
    index.lookup(&s.name, &refs)
}

impl Store {
    /// Opens (or creates) the store in `storage.data_dir` and replays the WAL. Returns the
    /// store and the WAL positioned for appends; the caller's committer owns the WAL.
    pub fn open(opts: StoreOptions) -> Result<(StoreRef, Wal), StoreError> {
        let dir = opts.storage.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Open { path: dir.clone(), detail: e.to_string() })?;
        let db_path = dir.join("db");
        let cfg = sled::Config::new()
            .path(&db_path)
            // Durability comes from our WAL; sled flushes at checkpoints only.
            .flush_every_ms(None)
            .cache_capacity(256 << 20)
            .mode(sled::Mode::HighThroughput);
        // sled reports most damage as errors but can panic on some; neither may take the
        // daemon down with a backtrace instead of a message.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cfg.open()))
            .map_err(|p| StoreError::Open { path: db_path.clone(), detail: panic_text(p) })?
            .map_err(|e| StoreError::Open { path: db_path.clone(), detail: e.to_string() })?;
        let tree = |name: &str| db.open_tree(name);
        let t = Trees {
            series: tree(keys::TREE_SERIES)?,
            chunks: tree(keys::TREE_CHUNKS)?,
            groups: tree(keys::TREE_AGG_GROUPS)?,
            aggs: tree(keys::TREE_AGGS)?,
            events: tree(keys::TREE_EVENTS)?,
            event_rid_runs: tree(keys::TREE_EVENT_RID_RUNS)?,
            logs: tree(keys::TREE_LOGS)?,
            log_rid_runs: tree(keys::TREE_LOG_RID_RUNS)?,
            meta: tree(keys::TREE_META)?,
        };
        let meta = match t.meta.get(keys::META_KEY)? {
            Some(v) => keys::decode_meta(&v)?,
            None => Meta::default(),
        };
        let mut index = Index::default();
        for item in t.series.iter() {
            let (k, v) = item?;
            let id = keys::decode_series_key(&k)?;
            let (kind, name, labels) = keys::decode_series(&v)?;
            let persisted_max_ts =
                match t.chunks.range(keys::chunk_key(id, i64::MIN)..=keys::chunk_key(id, i64::MAX)).next_back() {
                    Some(item) => keys::decode_chunk_ref(&item?.1)?.last_ts,
                    None => i64::MIN,
                };
            index.insert(SeriesMeta { id, name, labels, kind, persisted_max_ts });
        }
        let blocks = blocks::Blocks::open(&dir.join("blocks"), opts.storage.block_file_bytes)?;
        for item in t.chunks.iter() {
            let r = keys::decode_chunk_ref(&item?.1)?;
            blocks.note_live(&blocks::Loc { file: r.file, offset: r.offset, len: r.len });
        }
        raw::note_live(&blocks, &t.events)?;
        raw::note_live(&blocks, &t.logs)?;
        let event_rids = rid_index::RidIndex::open(t.event_rid_runs.clone(), &blocks)?;
        let log_rids = rid_index::RidIndex::open(t.log_rid_runs.clone(), &blocks)?;
        let mut groups = HashMap::new();
        let mut group_list = Vec::new();
        for item in t.groups.iter() {
            let (k, v) = item?;
            let id = u32::from_be_bytes(k.as_ref().try_into().map_err(|_| keys::DecodeError {
                what: "aggregate group key",
                detail: format!("{} bytes", k.len()),
            })?);
            let g = keys::decode_group(&v)?;
            groups.insert(g.clone(), id);
            group_list.push((id, g));
        }
        let store = Store {
            db,
            blocks,
            event_rids,
            log_rids,
            t,
            dir: dir.clone(),
            chunk_samples: opts.storage.chunk_samples,
            max_head_age: opts.storage.max_head_age,
            bucket_ms: opts.storage.event_bucket.as_millis() as i64,
            max_series_per_service: opts.limits.max_series_per_service,
            retention: opts.retention,
            metrics: Mutex::new(MetricsState { index, heads: Default::default(), due: Vec::new() }),
            events: Mutex::new(EventsState { groups, group_list, aggs: HashMap::new(), epoch: meta.checkpoint_lsn }),
            dedup: Mutex::new(meta.dedup.iter().map(|(c, k, s)| ((c.clone(), *k), *s)).collect()),
            counters: Counters {
                samples: AtomicU64::new(meta.samples),
                events: AtomicU64::new(meta.events),
                logs: AtomicU64::new(meta.logs),
            },
        };
        let from = meta.metrics_replay_from.min(meta.checkpoint_lsn);
        let started = Instant::now();
        let mut replayed = 0u64;
        let wal = Wal::open(&dir.join("wal"), opts.storage.wal_segment_bytes, from, |lsn, payload| {
            let body = Body::decode(payload)?;
            let mut batch = Batch::new(body);
            store.apply_inner(&mut batch, lsn, true, lsn >= meta.checkpoint_lsn).map_err(|e| e.to_string())?;
            store.persist(&batch, lsn).map_err(|e| e.to_string())?;
            store.cut_due().map_err(|e| e.to_string())?;
            replayed += 1;
            Ok(())
        })?;
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                from_lsn = from,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "replayed write-ahead log"
            );
        }
        Ok((Arc::new(store), wal))
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Applies one validated batch; `lsn` is the WAL position its record will take.
    pub fn apply(&self, batch: &mut Batch, lsn: u64) -> Result<Applied, StoreError> {
        let rejected_before = batch.rejected;
        let (ack, dup) = self.apply_inner(batch, lsn, false, true)?;
        let record = match (dup, batch.encoded.take()) {
            (true, _) => None,
            (false, Some(enc)) if batch.rejected == rejected_before => Some(enc),
            (false, _) => Some(batch.body.encode()),
        };
        Ok(Applied { record, ack })
    }

    /// `trusted`: a WAL replay (no limits, no dedup skip). `fresh`: the record is newer than the
    /// last checkpoint, so it also feeds aggregates and counters.
    fn apply_inner(
        &self,
        batch: &mut Batch,
        lsn: u64,
        trusted: bool,
        fresh: bool,
    ) -> Result<(pb::Ack, bool), StoreError> {
        let kind = batch.body.kind();
        let (client, seq) = batch.body.client_seq();
        let mut acked_seq = seq;
        if !client.is_empty() && seq > 0 {
            let mut d = lock(&self.dedup);
            let slot = d.entry((client.to_string(), kind as u8)).or_insert(0);
            if !trusted && seq <= *slot {
                let ack = pb::Ack { seq, acked_seq: *slot, duplicate: true, ..Default::default() };
                return Ok((ack, true));
            }
            *slot = (*slot).max(seq);
            acked_seq = *slot;
        }
        if batch.item_map.is_empty() {
            let n = match &batch.body {
                Body::Metrics(b) => b.series.len(),
                Body::Logs(b) => b.records.len(),
                Body::Events(b) => b.events.len(),
            };
            batch.item_map = (0..n as u32).collect();
        }
        let accepted = match kind {
            Kind::Metrics => self.apply_metrics(batch, lsn, trusted, fresh)?,
            Kind::Logs => self.apply_logs(batch, fresh)?,
            Kind::Events => self.apply_events(batch, fresh)?,
        };
        let ack = pb::Ack {
            seq,
            acked_seq,
            accepted,
            rejected_count: batch.rejected,
            rejections: std::mem::take(&mut batch.rejections),
            duplicate: false,
        };
        Ok((ack, false))
    }

    fn apply_metrics(&self, batch: &mut Batch, lsn: u64, trusted: bool, fresh: bool) -> Result<u64, StoreError> {
        let Body::Metrics(mb) = &mut batch.body else { unreachable!("kind checked by caller") };
        let mut st = lock(&self.metrics);
        let st = &mut *st;
        let mut accepted = 0u64;
        let mut rejects = Vec::new();
        for (pos, s) in mb.series.iter_mut().enumerate() {
            let orig = batch.item_map.get(pos).copied().unwrap_or(pos as u32);
            if s.timestamps_ms.is_empty() {
                continue;
            }
            let id = match lookup_series(&st.index, s, &mb.service) {
                Some(id) => id,
                None => {
                    let labels = canonical_labels(&s.labels, &mb.service);
                    let service = labels.iter().find(|(k, _)| k == "service").map_or("", |(_, v)| v.as_str());
                    let have = st.index.service_count(service);
                    if !trusted && have >= self.max_series_per_service {
                        rejects.push((
                            orig,
                            -1,
                            "RESOURCE_EXHAUSTED",
                            format!("series[{orig}]"),
                            format!(
                                "new series {} would exceed limits.max_series_per_service = {} for service {service:?} (it has {have})",
                                s.name, self.max_series_per_service
                            ),
                        ));
                        s.timestamps_ms.clear();
                        s.values.clear();
                        continue;
                    }
                    let id = st.index.next_id();
                    let kind =
                        if s.kind == pb::MetricKind::Counter as i32 { s.kind } else { pb::MetricKind::Gauge as i32 };
                    self.t.series.insert(keys::series_key(id), keys::encode_series(kind, &s.name, &labels))?;
                    st.index.insert(SeriesMeta { id, name: s.name.clone(), labels, kind, persisted_max_ts: i64::MIN });
                    id
                }
            };
            let persisted = st.index.get(id).map_or(i64::MIN, |m| m.persisted_max_ts);
            let head = st.heads.entry(id).or_insert_with(|| Head {
                ts: Vec::new(),
                vals: Vec::new(),
                first_lsn: lsn,
                started: Instant::now(),
            });
            let mut last = head.ts.last().copied().unwrap_or(persisted);
            let mut w = 0;
            for j in 0..s.timestamps_ms.len() {
                let (t, v) = (s.timestamps_ms[j], s.values[j]);
                if t > last {
                    s.timestamps_ms[w] = t;
                    s.values[w] = v;
                    w += 1;
                    last = t;
                } else if !trusted {
                    let sample = batch.sample_maps.get(&pos).and_then(|m| m.get(j).copied()).unwrap_or(j as u32);
                    rejects.push((
                        orig,
                        sample as i32,
                        "INVALID_ARGUMENT",
                        format!("series[{orig}].timestamps_ms[{sample}]"),
                        format!("timestamp {t} is not after the series' last sample at {last}: samples of a series must be in time order, without duplicates"),
                    ));
                }
            }
            s.timestamps_ms.truncate(w);
            s.values.truncate(w);
            if w == 0 {
                continue;
            }
            if head.ts.is_empty() {
                head.first_lsn = lsn;
                head.started = Instant::now();
            }
            head.ts.extend_from_slice(&s.timestamps_ms);
            head.vals.extend_from_slice(&s.values);
            accepted += w as u64;
            if head.ts.len() >= self.chunk_samples {
                st.due.push(id);
            }
        }
        mb.series.retain(|s| !s.timestamps_ms.is_empty());
        for (item, sample, code, field, reason) in rejects {
            batch.reject(item, sample, code, field, reason);
        }
        if fresh {
            self.counters.samples.fetch_add(accepted, Ordering::Relaxed);
        }
        Ok(accepted)
    }

    fn apply_logs(&self, batch: &mut Batch, fresh: bool) -> Result<u64, StoreError> {
        let Body::Logs(lb) = &batch.body else { unreachable!("kind checked by caller") };
        let n = lb.records.len() as u64;
        if fresh {
            self.counters.logs.fetch_add(n, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// Writes a batch's raw records to sled. Called only once the batch's WAL record is synced:
    /// a record that reached sled before its WAL record was durable would, after a crash, be
    /// stored again when the client resends the unacked batch (under a new lsn).
    pub fn persist(&self, batch: &Batch, lsn: u64) -> Result<(), StoreError> {
        match &batch.body {
            Body::Metrics(_) => Ok(()),
            Body::Logs(lb) => raw::write(
                &self.blocks,
                &self.t.logs,
                &self.log_rids,
                lsn,
                lb.records.iter().map(|r| (r.timestamp_ms, &r.request_id, r.encode_to_vec())),
            ),
            Body::Events(eb) => raw::write(
                &self.blocks,
                &self.t.events,
                &self.event_rids,
                lsn,
                eb.events.iter().map(|e| (e.timestamp_ms, &e.request_id, e.encode_to_vec())),
            ),
        }
    }

    /// Cuts every head that reached `chunk_samples` into chunks. Called after a WAL sync, for
    /// the same reason as [`Store::persist`].
    pub fn cut_due(&self) -> Result<(), StoreError> {
        let mut st = lock(&self.metrics);
        let due = std::mem::take(&mut st.due);
        if due.is_empty() {
            return Ok(());
        }
        self.cut(&mut st, due, false)
    }

    /// Cuts heads into chunks: payloads appended to the block files and synced, then the index
    /// entries written and the heads drained, all under the metrics lock so that readers see
    /// every sample exactly once. `all`: cut whole heads (shutdown, age), else full chunks only.
    fn cut(&self, st: &mut MetricsState, mut ids: Vec<u64>, all: bool) -> Result<(), StoreError> {
        // A series can be due twice (two batches of one group filled it): cut it once.
        ids.sort_unstable();
        ids.dedup();
        let mut cuts: Vec<(u64, keys::ChunkRef, i64, usize)> = Vec::new();
        for id in ids {
            let Some(head) = st.heads.get(&id) else { continue };
            let mut from = 0;
            while head.ts.len() - from >= self.chunk_samples || (all && from < head.ts.len()) {
                let n = (head.ts.len() - from).min(self.chunk_samples);
                let enc = chunk::encode(&head.ts[from..from + n], &head.vals[from..from + n]);
                let loc = self.blocks.append(&enc)?;
                let last_ts = head.ts[from + n - 1];
                let r = keys::ChunkRef { file: loc.file, offset: loc.offset, len: loc.len, count: n as u32, last_ts };
                cuts.push((id, r, head.ts[from], n));
                from += n;
            }
        }
        if cuts.is_empty() {
            return Ok(());
        }
        self.blocks.sync()?;
        let mut b = sled::Batch::default();
        for (id, r, first_ts, _) in &cuts {
            b.insert(&keys::chunk_key(*id, *first_ts)[..], &keys::encode_chunk_ref(r)[..]);
        }
        self.t.chunks.apply_batch(b)?;
        for (id, r, _, n) in cuts {
            if let Some(head) = st.heads.get_mut(&id) {
                head.ts.drain(..n);
                head.vals.drain(..n);
            }
            if let Some(m) = st.index.get_mut(id) {
                m.persisted_max_ts = r.last_ts;
            }
        }
        Ok(())
    }

    fn apply_events(&self, batch: &mut Batch, fresh: bool) -> Result<u64, StoreError> {
        let Body::Events(eb) = &batch.body else { unreachable!("kind checked by caller") };
        let n = eb.events.len() as u64;
        if fresh {
            let mut st = lock(&self.events);
            for e in &eb.events {
                let g = [e.service.clone(), e.model.clone(), e.model_version.clone(), e.endpoint.clone()];
                let gid = match st.groups.get(&g) {
                    Some(&id) => id,
                    None => {
                        let id = st.group_list.iter().map(|(id, _)| id + 1).max().unwrap_or(1);
                        self.t.groups.insert(keys::group_key(id), keys::encode_group(&g))?;
                        st.groups.insert(g.clone(), id);
                        st.group_list.push((id, g));
                        id
                    }
                };
                let bucket = e.timestamp_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
                st.aggs.entry((gid, bucket)).or_default().record(e);
            }
            self.counters.events.fetch_add(n, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// Puts what memory holds into sled, flushes sled, and drops WAL segments no longer needed.
    /// `cut_all` (shutdown) cuts every head so that the WAL can be emptied.
    pub fn checkpoint(&self, wal: &mut Wal, cut_all: bool) -> Result<(), StoreError> {
        let cp_lsn = wal.rotate()?;
        let metrics_replay_from = {
            let mut st = lock(&self.metrics);
            let st = &mut *st;
            let old: Vec<u64> = st
                .heads
                .iter()
                .filter(|(_, h)| !h.ts.is_empty() && (cut_all || h.started.elapsed() >= self.max_head_age))
                .map(|(id, _)| *id)
                .collect();
            self.cut(st, old, true)?;
            st.heads.retain(|_, h| !h.ts.is_empty());
            st.heads.values().map(|h| h.first_lsn).min().unwrap_or(cp_lsn)
        };
        {
            let mut st = lock(&self.events);
            let epoch = st.epoch;
            let mut b = sled::Batch::default();
            for ((gid, bucket), agg) in st.aggs.drain() {
                b.insert(&keys::agg_key(gid, bucket, epoch)[..], agg.encode());
            }
            self.t.aggs.apply_batch(b)?;
            st.epoch = cp_lsn;
        }
        let meta = Meta {
            checkpoint_lsn: cp_lsn,
            metrics_replay_from,
            samples: self.counters.samples.load(Ordering::Relaxed),
            events: self.counters.events.load(Ordering::Relaxed),
            logs: self.counters.logs.load(Ordering::Relaxed),
            dedup: lock(&self.dedup).iter().map(|((c, k), s)| (c.clone(), *k, *s)).collect(),
        };
        self.t.meta.insert(keys::META_KEY, keys::encode_meta(&meta))?;
        // Request-id entries of everything before cp_lsn go into runs now: those records will
        // not be replayed. Then block data before the sled index that points at it.
        self.event_rids.flush(&self.blocks)?;
        self.log_rids.flush(&self.blocks)?;
        self.blocks.sync()?;
        self.db.flush()?;
        wal.truncate_before(metrics_replay_from.min(cp_lsn))?;
        Ok(())
    }

    /// Highest stored sequence per kind for a client (for Register).
    pub fn last_seqs(&self, client: &str) -> [u64; 3] {
        let d = lock(&self.dedup);
        [Kind::Metrics, Kind::Logs, Kind::Events].map(|k| d.get(&(client.to_string(), k as u8)).copied().unwrap_or(0))
    }

    // ---- reads ---------------------------------------------------------------------------

    pub fn series_count(&self) -> usize {
        lock(&self.metrics).index.len()
    }

    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesMeta> {
        let st = lock(&self.metrics);
        st.index.select(matchers).into_iter().filter_map(|id| st.index.get(id).cloned()).collect()
    }

    /// Samples of one series with `start <= ts <= end`, in time order.
    pub fn read_samples(&self, id: u64, start: i64, end: i64) -> Result<(Vec<i64>, Vec<f64>), StoreError> {
        // Snapshot the head and the persisted boundary together; chunk samples past the
        // boundary (cut after the snapshot) are ignored, so a concurrent cut neither hides
        // nor doubles samples.
        let (head_ts, head_vals, boundary) = {
            let st = lock(&self.metrics);
            let boundary = st.index.get(id).map_or(i64::MIN, |m| m.persisted_max_ts);
            match st.heads.get(&id) {
                Some(h) => {
                    let a = h.ts.partition_point(|&t| t < start);
                    let b = h.ts.partition_point(|&t| t <= end);
                    (h.ts[a..b].to_vec(), h.vals[a..b].to_vec(), boundary)
                }
                None => (Vec::new(), Vec::new(), boundary),
            }
        };
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        if boundary >= start {
            let lo = keys::chunk_key(id, i64::MIN);
            let first = self.t.chunks.range(lo..keys::chunk_key(id, start)).next_back().transpose()?;
            let rest = self.t.chunks.range(keys::chunk_key(id, start)..=keys::chunk_key(id, end.min(boundary)));
            for item in first.into_iter().map(Ok).chain(rest) {
                let (_, v) = item?;
                let r = keys::decode_chunk_ref(&v)?;
                if r.last_ts < start {
                    continue;
                }
                let data = self.blocks.read(&blocks::Loc { file: r.file, offset: r.offset, len: r.len })?;
                let base = ts.len();
                chunk::decode_into(&data, &mut ts, &mut vals)?;
                // Trim to the range and the boundary, keeping ts and vals aligned.
                let mut w = base;
                for r in base..ts.len() {
                    let t = ts[r];
                    if t >= start && t <= end && t <= boundary {
                        ts[w] = t;
                        vals[w] = vals[r];
                        w += 1;
                    }
                }
                ts.truncate(w);
                vals.truncate(w);
            }
        }
        ts.extend(head_ts);
        vals.extend(head_vals);
        Ok((ts, vals))
    }

    /// Groups (service, model, version, endpoint) that pass `keep`.
    pub fn inference_groups(&self, keep: impl Fn(&[String; 4]) -> bool) -> Vec<(u32, [String; 4])> {
        lock(&self.events).group_list.iter().filter(|(_, g)| keep(g)).cloned().collect()
    }

    pub fn bucket_ms(&self) -> i64 {
        self.bucket_ms
    }

    /// Calls `f(group, bucket_start, agg)` for every stored and in-memory aggregate of `groups`
    /// with `b0 <= bucket_start <= b1` (several calls per bucket are possible: merge them).
    pub fn read_aggs(
        &self,
        groups: &[u32],
        b0: i64,
        b1: i64,
        mut f: impl FnMut(u32, i64, &Agg),
    ) -> Result<(), StoreError> {
        // The lock spans the sled scan: a checkpoint moves aggregates from memory to sled
        // under it, and a reader must see each exactly once.
        let st = lock(&self.events);
        for &g in groups {
            for item in self.t.aggs.range(keys::agg_key(g, b0, 0)..=keys::agg_key(g, b1, u64::MAX)) {
                let (k, v) = item?;
                let (_, bucket, _) = keys::decode_agg_key(&k)?;
                f(g, bucket, &Agg::decode(&v)?);
            }
        }
        for ((g, bucket), agg) in st.aggs.iter() {
            if groups.contains(g) && *bucket >= b0 && *bucket <= b1 {
                f(*g, *bucket, agg);
            }
        }
        Ok(())
    }

    /// Log records with `start <= ts <= end`, newest first, strictly before `before` (a page
    /// token) when given; `f` returns false to stop. Returns the key of the last record seen.
    pub fn scan_logs(
        &self,
        start: i64,
        end: i64,
        before: Option<[u8; 20]>,
        f: impl FnMut(&[u8; 20], pb::LogRecord) -> bool,
    ) -> Result<(), StoreError> {
        raw::scan(&self.blocks, &self.t.logs, start, end, before, |r: &pb::LogRecord| r.timestamp_ms, f)
    }

    pub fn logs_by_request(&self, request_id: &str) -> Result<Vec<pb::LogRecord>, StoreError> {
        raw::by_request(&self.blocks, &self.t.logs, &self.log_rids, request_id, |r: &pb::LogRecord| &r.request_id)
    }

    pub fn events_by_request(&self, request_id: &str) -> Result<Vec<pb::InferenceEvent>, StoreError> {
        raw::by_request(&self.blocks, &self.t.events, &self.event_rids, request_id, |e: &pb::InferenceEvent| {
            &e.request_id
        })
    }

    /// Bytes the data folder takes on disk (sled and WAL).
    pub fn disk_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }

    // ---- retention -----------------------------------------------------------------------

    /// Deletes data older than its kind's retention. Safe beside ingest: it only removes keys
    /// older than every range ingest still writes to (apart from a backfill older than the
    /// retention, which the next run removes).
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport, StoreError> {
        let cutoff = |d: Duration| now_ms.saturating_sub(d.as_millis() as i64);
        let mut rep = RetentionReport::default();
        let metrics_cut = cutoff(self.retention.metrics);
        let ids: Vec<u64> = lock(&self.metrics).index.ids().collect();
        for id in ids {
            for item in self.t.chunks.range(keys::chunk_key(id, i64::MIN)..keys::chunk_key(id, metrics_cut)) {
                let (k, v) = item?;
                let r = keys::decode_chunk_ref(&v)?;
                if r.last_ts < metrics_cut {
                    self.t.chunks.remove(k)?;
                    self.blocks.release(&blocks::Loc { file: r.file, offset: r.offset, len: r.len })?;
                    rep.chunks += 1;
                }
            }
        }
        let agg_cut = cutoff(self.retention.inference_stats);
        let groups: Vec<u32> = lock(&self.events).group_list.iter().map(|(g, _)| *g).collect();
        for g in groups {
            for item in self.t.aggs.range(keys::agg_key(g, i64::MIN, 0)..keys::agg_key(g, agg_cut - self.bucket_ms, 0))
            {
                self.t.aggs.remove(item?.0)?;
                rep.aggregates += 1;
            }
        }
        rep.events =
            raw::expire(&self.blocks, &self.t.events, &self.event_rids, cutoff(self.retention.inference_events))?;
        rep.logs = raw::expire(&self.blocks, &self.t.logs, &self.log_rids, cutoff(self.retention.logs))?;
        Ok(rep)
    }
}

#[derive(Debug, Default)]
pub struct RetentionReport {
    pub chunks: u64,
    pub aggregates: u64,
    pub events: u64,
    pub logs: u64,
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "sled panicked while opening".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        /// Append `n` samples to series `s` (timestamps continue the series), as one batch.
        Push {
            s: u8,
            n: u16,
        },
        /// Two batches for one series in one commit group.
        PushTwice {
            s: u8,
            n: u16,
        },
        Checkpoint,
        /// Close and reopen (WAL replay).
        Reopen,
        /// Reopen without a final checkpoint, as after a crash after the last sync.
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4, 1u16..40).prop_map(|(s, n)| Op::Push { s, n }),
            2 => (0u8..4, 1u16..40).prop_map(|(s, n)| Op::PushTwice { s, n }),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Reopen),
            1 => Just(Op::Crash),
        ]
    }

    fn open(dir: &Path) -> (StoreRef, Wal) {
        let mut cfg = Config::default();
        cfg.storage.data_dir = dir.to_owned();
        cfg.storage.chunk_samples = 16;
        // sled releases its file lock from a background thread after the Db is dropped, so an
        // immediate reopen in the same process can race it (a restarted daemon is a new
        // process: exit releases the lock). Retry that case only.
        for _ in 0..200 {
            let opts = StoreOptions {
                storage: cfg.storage.clone(),
                limits: cfg.limits.clone(),
                retention: cfg.retention.clone(),
            };
            match Store::open(opts) {
                Ok(s) => return s,
                Err(e) if e.to_string().contains("lock") => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("reopen failed: {e}"),
            }
        }
        panic!("the sled lock was not released within 2 s");
    }

    fn batch(s: u8, from: i64, n: u16) -> Batch {
        let ts: Vec<i64> = (0..i64::from(n)).map(|i| from + i).collect();
        let values = ts.iter().map(|t| (*t as f64) / 8.0).collect();
        let series = vec![pb::Series { name: format!("m{s}"), timestamps_ms: ts, values, ..Default::default() }];
        Batch::new(Body::Metrics(pb::MetricBatch { service: "t".into(), series, ..Default::default() }))
    }

    /// Commits batches as the committer does: apply, WAL append, sync, persist, cut.
    fn commit(store: &Store, wal: &mut Wal, mut batches: Vec<Batch>) {
        let mut lsns = Vec::new();
        for b in batches.iter_mut() {
            let lsn = wal.next_lsn();
            let applied = store.apply(b, lsn).unwrap();
            wal.append(&applied.record.unwrap()).unwrap();
            lsns.push(lsn);
        }
        wal.sync().unwrap();
        for (b, lsn) in batches.iter().zip(lsns) {
            store.persist(b, lsn).unwrap();
        }
        store.cut_due().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn samples_match_a_model_across_cuts_checkpoints_and_restarts(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let (mut store, mut wal) = open(dir.path());
            let mut model: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Push { s, n } => {
                        let from = model.get(&s).and_then(|v| v.last()).map_or(1000, |t| t + 1);
                        commit(&store, &mut wal, vec![batch(s, from, n)]);
                        model.entry(s).or_default().extend(from..from + i64::from(n));
                    }
                    Op::PushTwice { s, n } => {
                        let from = model.get(&s).and_then(|v| v.last()).map_or(1000, |t| t + 1);
                        let mid = from + i64::from(n);
                        commit(&store, &mut wal, vec![batch(s, from, n), batch(s, mid, n)]);
                        model.entry(s).or_default().extend(from..mid + i64::from(n));
                    }
                    Op::Checkpoint => store.checkpoint(&mut wal, false).unwrap(),
                    Op::Reopen => {
                        store.checkpoint(&mut wal, true).unwrap();
                        drop((store, wal));
                        (store, wal) = open(dir.path());
                    }
                    Op::Crash => {
                        drop((store, wal));
                        (store, wal) = open(dir.path());
                    }
                }
                for (s, want) in &model {
                    let m = Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, &format!("m{s}")).unwrap();
                    let id = store.select(&[m])[0].id;
                    let (ts, vals) = store.read_samples(id, i64::MIN, i64::MAX).unwrap();
                    prop_assert_eq!(&ts, want);
                    prop_assert!(ts.iter().zip(&vals).all(|(t, v)| *v == (*t as f64) / 8.0));
                    let (mid_ts, _) = store.read_samples(id, want[want.len() / 2], i64::MAX).unwrap();
                    prop_assert_eq!(&mid_ts[..], &want[want.len() / 2..]);
                }
            }
        }
    }
}
