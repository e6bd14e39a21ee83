//! The embedded time-series store: sled for indexes and small values, append-only block files
//! for payloads, and our own write-ahead log for what neither holds yet.
//!
//! # Layout
//! - [`wal`]: segments of CRC-checked records with sync marks; one `fdatasync` per group.
//! - [`commit`]: the committer thread: group commit (apply, WAL append, sync, acks in order),
//!   checkpoints on a timer, refusal below `storage.min_free_bytes`.
//! - [`recover`]: open: folder lock, sled, block files cut back to the last checkpoint, heads
//!   saved by it, WAL replay from it.
//! - [`apply`]: a validated [`Batch`] into memory (dedup, counters, aggregates) and, once
//!   synced, its raw records into the block files ([`raw`], [`rid_index`]).
//! - [`memtable`]: per-series heads (compressed as samples arrive, [`head`]), cut into
//!   [`chunk`]s; [`parts`]: what checkpoints save of them, one sled value per 32 series.
//! - [`checkpoint`]: memory into sled and the block files, sled flush, WAL truncation; its slow
//!   middle runs on a thread of its own while groups go on ([`lane`]: the long-lived threads of
//!   such slow jobs).
//! - [`read`]: selections, samples, aggregates, raw records. [`retention`]: expiry.
//! - [`packs`]: aggregate rows of past hours merged into a few values per group and hour.
//! - [`snapshot`]: a consistent copy of the folder while the daemon runs.
//! - [`catalog`]: the metric series' names and labels, an append-only file written at
//!   checkpoints.
//! - [`chunk_index`]: where each metric chunk is, grouped by 32 series and two hours per sled
//!   value.
//! - [`columns`]: inference events and log records column by column, the block files' form of
//!   their groups; [`messages`]: log messages as templates and the values in them.
//! - [`keys`]: every sled key and small value; [`blocks`]: the block files; [`index`]: the
//!   in-memory label index; [`aggs`]: inference aggregates (HDR histograms), filled by ingest as
//!   [`tally`]'s compact tallies.
//!
//! # Durability contract
//! An ack means the batch's WAL record is on disk (`fdatasync`). Everything else is rebuilt
//! from the WAL after a crash: a checkpoint (every `storage.checkpoint_interval`) writes the
//! aggregates, the open heads (as parts) and the request-id entries, syncs the block files,
//! records where they end, flushes sled, and only then deletes WAL segments before it. So
//! replay reads at most what arrived since the last checkpoint, whatever the heads' age. On
//! open, what a crash left past that checkpoint (block bytes, sled entries pointing at them) is
//! cut before replay rewrites it, so replay neither counts nor stores anything twice:
//! - raw logs and events are keyed by (slot, lsn), so a replay rewrites the same keys;
//! - metric samples at or before a series' last persisted sample are skipped;
//! - aggregates are rows keyed by (group, bucket, epoch = the lsn their accumulation started
//!   from); a replay rebuilds the same epoch and overwrites what a torn checkpoint left;
//! - the de-duplication table and the counters are saved at each checkpoint and advanced by
//!   replay.

pub mod aggs;
mod apply;
pub mod batch;
pub mod blocks;
pub mod catalog;
mod checkpoint;
pub mod chunk;
pub mod chunk_index;
mod columns;
pub mod commit;
mod head;
pub mod index;
pub mod keys;
mod lane;
mod memtable;
mod messages;
mod packs;
mod part_files;
mod parts;
pub mod raw;
mod read;
pub mod recover;
mod retention;
mod rid_block;
pub mod rid_index;
pub mod series_batch;
pub mod snapshot;
mod tally;
pub mod wal;
mod zctx;

pub use batch::{Applied, Batch, Body, Kind, MAX_REJECTIONS};
pub use columns::Tally;
pub use raw::{Scanned, TupleFilter};

/// Prometheus' staleness marker: a NaN with this exact bit pattern ends a series.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
pub use memtable::canonical_labels;
pub use read::Piece;
pub use recover::OpenReport;
pub use retention::RetentionReport;
pub use series_batch::{SeriesBatch, SeriesRef};

use crate::config::{Limits, Retention, StorageConfig};
use crate::pb;
use aggs::Agg;
use apply::EventsState;
use index::{Index, Matcher, SeriesMeta};
use keys::Meta;
use memtable::MetricsState;
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
    #[error("data folder {path} is in use by another modelwatch (pid {pid}): stop it first, or give this one another --data-dir")]
    Locked { path: PathBuf, pid: String },
    #[error("the sled database {path} is damaged: {detail} (the write-ahead log is not at fault)")]
    SledDamaged { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error("data folder is damaged: {0}")]
    Decode(#[from] keys::DecodeError),
    #[error(transparent)]
    Blocks(#[from] blocks::BlockError),
    #[error(
        "the series catalog {path} is damaged at byte {offset}: {detail} (restore the data folder from a snapshot)"
    )]
    Catalog { path: PathBuf, offset: u64, detail: String },
    #[error(
        "the head part file {path} is damaged at byte {offset}: {detail} (its samples are nowhere else: `modelwatch recover` opens the folder without them and names what was lost)"
    )]
    PartFile { path: PathBuf, offset: u64, detail: String },
    #[error("snapshot: {0}")]
    Snapshot(String),
}

#[derive(Default)]
pub struct Counters {
    pub samples: AtomicU64,
    pub events: AtomicU64,
    pub logs: AtomicU64,
}

struct Trees {
    series: sled::Tree,
    head_parts: sled::Tree,
    groups: sled::Tree,
    aggs: sled::Tree,
    agg_packs: sled::Tree,
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
    /// The folder's `flock`, held while the store is open.
    _lock: std::fs::File,
    blocks: blocks::Blocks,
    /// The metric series' names and labels ([`catalog`]).
    catalog: catalog::Catalog,
    /// Where the metric chunks are ([`chunk_index`]).
    chunks: chunk_index::ChunkIndex,
    /// The catalog was read from sled's `series` tree (an older folder): the tree is emptied
    /// after the first checkpoint has written it into the catalog file.
    legacy_series: std::sync::atomic::AtomicBool,
    event_rids: rid_index::RidIndex,
    log_rids: rid_index::RidIndex,
    t: Trees,
    dir: PathBuf,
    /// Held by retention and by a snapshot's copy, so that a copy sees no deletions.
    maintenance: Mutex<()>,
    /// Aggregate readers hold it for reading, a pack is written under it ([`packs`]).
    pack_lock: std::sync::RwLock<()>,
    chunk_samples: usize,
    max_head_age: Duration,
    bucket_ms: i64,
    max_series_per_service: usize,
    max_series: usize,
    retention: Retention,
    /// Label index: readers select under a read lock; the committer takes the write lock only
    /// to add a series.
    index: std::sync::RwLock<Index>,
    metrics: Mutex<MetricsState>,
    events: Mutex<EventsState>,
    /// Highest stored sequence per (client id, kind), and when it was last written (ms).
    dedup: Mutex<HashMap<(String, u8), (u64, i64)>>,
    pub counters: Counters,
}

/// Writes to one sled tree in batches of at most [`Sliced::SLICE`] writes. sled applies a batch
/// under one epoch guard, and the copy of a node that each insert makes is freed only once that
/// guard is gone: one batch of a checkpoint's 100,000 head parts held 600 MB of copies until
/// long after (heaptrack). The callers need no atomicity across slices: whatever a crash leaves
/// of a partial write is vouched for by no checkpoint record, and the open drops it.
pub(crate) struct Sliced<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    n: usize,
}

impl<'a> Sliced<'a> {
    const SLICE: usize = 256;

    pub(crate) fn new(tree: &'a sled::Tree) -> Self {
        Sliced { tree, batch: sled::Batch::default(), n: 0 }
    }

    pub(crate) fn insert(&mut self, k: &[u8], v: impl Into<sled::IVec>) -> Result<(), sled::Error> {
        self.batch.insert(k, v);
        self.wrote()
    }

    pub(crate) fn remove(&mut self, k: &[u8]) -> Result<(), sled::Error> {
        self.batch.remove(k);
        self.wrote()
    }

    fn wrote(&mut self) -> Result<(), sled::Error> {
        self.n += 1;
        if self.n == Self::SLICE {
            self.n = 0;
            self.tree.apply_batch(std::mem::take(&mut self.batch))?;
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<(), sled::Error> {
        if self.n > 0 {
            self.tree.apply_batch(self.batch)?;
        }
        Ok(())
    }
}

fn read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a store lock is a bug; the state it guards is still consistent for
    // reads (every mutation is a single push/insert), so keep serving rather than cascade.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
pub(crate) mod tests;
