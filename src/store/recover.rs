//! Opening the store: the folder lock, sled, the block files cut back to what the last
//! checkpoint vouches for, the indexes rebuilt in memory, the heads that checkpoint saved, then
//! WAL replay from that checkpoint.
//!
//! Why the cut: between checkpoints, sled is not flushed but may still write some of its
//! entries, and the block files receive chunks and raw groups. After a crash, everything past
//! the last checkpoint is rebuilt from the WAL; the leftovers of the first attempt (sled
//! entries pointing past the checkpoint's block end, and those bytes) are removed first, so that
//! N crashes leave the folder the size that none would, and replayed data is never counted or
//! stored twice.
use super::*;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

/// The file that names the last checkpoint's lsn outside sled, so that a sled database that
/// lost its checkpoint record is told apart from a WAL that lost segments.
const CHECKPOINT_FILE: &str = "checkpoint";
/// Holds the pid of the daemon that has the folder open (with an `flock` on it).
pub(super) const LOCK_FILE: &str = "LOCK";

/// What [`Store::open`] did, for the log and for `modelwatch recover`.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// WAL records replayed.
    pub replayed: u64,
    pub replay_from: u64,
    pub replay_ms: u64,
    /// sled's own open (its recovery reads all of its log written since the previous open).
    pub sled_ms: u64,
    /// The passes over the indexes and catalogs after it, before the replay.
    pub load_ms: u64,
    /// After the replay: torn aggregate rows dropped, hours with rows listed.
    pub finish_ms: u64,
    /// Block-file bytes past the last checkpoint that were cut (a crash's leftovers).
    pub cut_bytes: u64,
    /// Chunk entries moved from an older folder's `chunks` tree ([`chunk_index`]).
    pub chunks_moved: u64,
    /// What a salvaging open skipped.
    pub salvage: wal::Salvage,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Open { path: path.to_owned(), detail: e.to_string() }
}

/// Takes the folder's lock, or names the process that holds it.
fn lock_folder(dir: &Path) -> Result<File, StoreError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let mut f =
        OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io(&path))?;
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        return Err(StoreError::Locked { path: dir.to_owned(), pid: pid.trim().to_string() });
    }
    f.set_len(0).map_err(io(&path))?;
    write!(f, "{}", std::process::id()).map_err(io(&path))?;
    Ok(f)
}

pub(super) fn read_checkpoint_file(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).ok()?;
    let (lsn, crc) = text.trim().split_once(' ')?;
    (crc32fast::hash(lsn.as_bytes()).to_string() == crc).then(|| lsn.parse().ok())?
}

/// Writes the checkpoint file atomically (a new file renamed over the old one).
pub(super) fn write_checkpoint_file(dir: &Path, lsn: u64) -> std::io::Result<()> {
    let tmp = dir.join("checkpoint.tmp");
    let text = format!("{lsn} {}\n", crc32fast::hash(lsn.to_string().as_bytes()));
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
    wal::sync_dir(dir)
}

impl Store {
    /// Opens (or creates) the store in `storage.data_dir` and replays the WAL. Returns the
    /// store and the WAL positioned for appends; the caller's committer owns the WAL.
    pub fn open(opts: StoreOptions) -> Result<(StoreRef, Wal), StoreError> {
        let (store, wal, rep) = Self::open_with(opts, false)?;
        crate::telemetry::T.replay_seconds.set(rep.replay_ms as f64 / 1000.0);
        crate::telemetry::T.replay_records.set(rep.replayed as f64);
        if rep.replayed > 0 || rep.cut_bytes > 0 {
            tracing::info!(
                records = rep.replayed,
                from_lsn = rep.replay_from,
                elapsed_ms = rep.replay_ms,
                cut_bytes = rep.cut_bytes,
                "replayed write-ahead log"
            );
        }
        tracing::info!(
            sled_ms = rep.sled_ms,
            load_ms = rep.load_ms,
            replay_ms = rep.replay_ms,
            finish_ms = rep.finish_ms,
            sled_bytes = super::read::bytes_under(&store.dir.join("db")),
            "store opened"
        );
        if rep.chunks_moved > 0 {
            tracing::info!(entries = rep.chunks_moved, "moved the chunk index into grouped entries");
        }
        Ok((store, wal))
    }

    /// Opens the store; with `salvage`, damaged WAL stretches are skipped and reported instead
    /// of stopping the open (`modelwatch recover`).
    pub fn open_with(opts: StoreOptions, salvage: bool) -> Result<(StoreRef, Wal, OpenReport), StoreError> {
        let _heap = crate::telemetry::OpenHeap::new();
        let dir = opts.storage.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_file = lock_folder(&dir)?;
        let db_path = dir.join("db");
        let opened = Instant::now();
        let cfg = sled::Config::new()
            .path(&db_path)
            // Durability comes from our WAL; sled flushes at checkpoints only.
            .flush_every_ms(None)
            // Readers find their chunk index values and aggregate packs with a few lookups
            // each; at 256 MiB the cache held every head part a checkpoint wrote.
            .cache_capacity(64 << 20)
            .mode(sled::Mode::HighThroughput)
            .use_compression(sled_compressed(&db_path))
            // sled's default, for databases made compressed: zstd's level 5 (faster levels
            // saved less on its nodes).
            .compression_factor(5);
        // sled reports most damage as errors but can panic on some; neither may take the
        // daemon down with a backtrace instead of a message.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cfg.open()))
            .map_err(|p| StoreError::SledDamaged { path: db_path.clone(), detail: panic_text(p) })?
            .map_err(|e| StoreError::SledDamaged { path: db_path.clone(), detail: e.to_string() })?;
        let sled_err = |e: sled::Error| StoreError::SledDamaged { path: db_path.clone(), detail: e.to_string() };
        let tree = |name: &str| db.open_tree(name).map_err(sled_err);
        let t = Trees {
            series: tree(keys::TREE_SERIES)?,
            head_parts: tree(keys::TREE_HEAD_PARTS)?,
            groups: tree(keys::TREE_AGG_GROUPS)?,
            aggs: tree(keys::TREE_AGGS)?,
            agg_packs: tree(keys::TREE_AGG_PACKS)?,
            events: tree(keys::TREE_EVENTS)?,
            event_rid_runs: tree(keys::TREE_EVENT_RID_RUNS)?,
            logs: tree(keys::TREE_LOGS)?,
            log_rid_runs: tree(keys::TREE_LOG_RID_RUNS)?,
            meta: tree(keys::TREE_META)?,
        };
        let meta = match t.meta.get(keys::META_KEY).map_err(sled_err)? {
            Some(v) => keys::decode_meta(&v)
                .map_err(|e| StoreError::SledDamaged { path: db_path.clone(), detail: e.to_string() })?,
            // A folder never checkpointed: sled vouches for nothing yet.
            None => Meta { blocks_end: Some((0, 0)), ..Meta::default() },
        };
        // The checkpoint file is written after each checkpoint's sled flush: sled can be ahead
        // of it (a crash between the two), never behind.
        if let Some(lsn) = read_checkpoint_file(&dir) {
            if lsn > meta.checkpoint_lsn {
                return Err(StoreError::SledDamaged {
                    path: db_path,
                    detail: format!(
                        "its checkpoint record says the write-ahead log was applied up to record {}, but {} says {lsn}: the database lost data or was replaced",
                        meta.checkpoint_lsn,
                        dir.join(CHECKPOINT_FILE).display()
                    ),
                });
            }
        }

        let blocks = blocks::Blocks::open(&dir.join("blocks"), opts.storage.block_file_bytes)?;
        let mut rep = OpenReport {
            replay_from: meta.replay_from,
            sled_ms: opened.elapsed().as_millis() as u64,
            ..OpenReport::default()
        };
        let loading = Instant::now();
        // One pass over every payload reference: leftovers past the last checkpoint's block end
        // are collected for removal (sled entries first, then the bytes), the rest counted as
        // live per block file. (This pass reads the whole index: it, not the replay, is what
        // grows with the data; see `benches/HISTORY.md`.)
        let mut live: HashMap<u32, u64> = HashMap::new();
        let chunks = chunk_index::ChunkIndex::new(tree(keys::TREE_CHUNK_INDEX)?, t.meta.clone())?;
        // A folder from before the grouped index has one sled entry per chunk: moved first, so
        // that the pass below drops those past the block end with the rest.
        if db.tree_names().iter().any(|n| n.as_ref() == keys::TREE_CHUNKS.as_bytes()) {
            let legacy = tree(keys::TREE_CHUNKS)?;
            rep.chunks_moved = chunks.migrate(&legacy)?;
            drop(legacy);
            db.drop_tree(keys::TREE_CHUNKS)?;
        }
        let mut persisted = index::FxMap::default();
        chunks.load(meta.blocks_end, &mut live, &mut persisted)?;
        for tree in [&t.events, &t.logs] {
            let mut doomed = Vec::new();
            for item in tree.iter() {
                let (k, v) = item?;
                let loc = keys::decode_block_ref(&v)?.loc();
                if meta.blocks_end.is_some_and(|end| blocks::Blocks::is_after(&loc, end)) {
                    doomed.push(k);
                } else {
                    *live.entry(loc.file).or_default() += 1;
                }
            }
            for k in doomed {
                tree.remove(k)?;
            }
        }
        if let Some(end) = meta.blocks_end {
            rep.cut_bytes = blocks.cut_after(end)?;
        }
        for (file, n) in live {
            blocks.add_live(file, n);
        }

        // The series catalog: its file, or (a folder from before it) sled's `series` tree,
        // which the next checkpoint moves into the file.
        let (catalog, mut listed) = catalog::Catalog::open(&dir, meta.catalog_end)?;
        let legacy_series = meta.catalog_end.is_none() && !t.series.is_empty();
        if legacy_series {
            for item in t.series.iter() {
                let (k, v) = item?;
                let id = keys::decode_series_key(&k)?;
                let (kind, name, labels) = keys::decode_series(&v)?;
                catalog.add(id, kind, &name, &labels);
                listed.push((id, (kind, name, labels)));
            }
        } else if !t.series.is_empty() {
            // Moved already; a crash came between that checkpoint's flush and the tree's removal.
            t.series.clear()?;
        }
        let mut index = Index::default();
        for (id, (kind, name, labels)) in listed {
            if index.contains(id) {
                continue;
            }
            index.insert(id, &name, &labels, kind);
        }
        let event_rids = rid_index::RidIndex::open(t.event_rid_runs.clone(), &dir.join("rid/events"), &blocks)?;
        let log_rids = rid_index::RidIndex::open(t.log_rid_runs.clone(), &dir.join("rid/logs"), &blocks)?;
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
        let parts_dir = dir.join(part_files::DIR);
        std::fs::create_dir_all(&parts_dir).map_err(io(&parts_dir))?;
        let mut parts_skipped = Vec::new();
        let (heads, live_parts) = parts::load_heads(
            &t.head_parts,
            &parts_dir,
            &index,
            &persisted,
            meta.checkpoint_lsn,
            salvage.then_some(&mut parts_skipped),
        )?;
        let store = Store {
            db,
            _lock: lock_file,
            blocks,
            catalog,
            chunks,
            legacy_series: legacy_series.into(),
            event_rids,
            log_rids,
            t,
            dir: dir.clone(),
            maintenance: Mutex::new(()),
            pack_lock: Default::default(),
            chunk_samples: opts.storage.chunk_samples,
            max_head_age: opts.storage.max_head_age,
            bucket_ms: opts.storage.event_bucket.as_millis() as i64,
            max_series_per_service: opts.limits.max_series_per_service,
            max_series: opts.limits.max_series,
            retention: opts.retention,
            index: std::sync::RwLock::new(index),
            metrics: Mutex::new(MetricsState {
                heads,
                persisted,
                due: Vec::new(),
                due_old: Vec::new(),
                dead_parts: Default::default(),
                live_parts,
                last_checkpoint: meta.checkpoint_lsn,
                last_replay_from: meta.replay_from,
            }),
            events: Mutex::new(EventsState {
                groups,
                group_list,
                aggs: Default::default(),
                epoch: meta.checkpoint_lsn,
                loose: Default::default(),
            }),
            dedup: Mutex::new(meta.dedup.iter().map(|(c, k, s, seen)| ((c.clone(), *k), (*s, *seen))).collect()),
            counters: Counters {
                samples: AtomicU64::new(meta.samples),
                events: AtomicU64::new(meta.events),
                logs: AtomicU64::new(meta.logs),
            },
        };
        rep.load_ms = loading.elapsed().as_millis() as u64;
        // Hours that checkpoints after the last complete one packed straight from memory: the
        // replay rebuilds their buckets (before it, so that nothing it writes is taken for them).
        store.drop_torn_memory_packs(meta.checkpoint_lsn)?;
        let started = Instant::now();
        let mut replayed = 0u64;
        let (wal, salvage_rep) =
            Wal::open(&dir.join("wal"), opts.storage.wal_segment_bytes, meta.replay_from, salvage, |lsn, payload| {
                let body = Body::decode(payload)?;
                let mut batch = Batch::new(body);
                let fresh = lsn >= meta.checkpoint_lsn;
                store.apply_inner(&mut batch, lsn, true, fresh)?;
                if fresh {
                    store.persist(&batch, lsn)?;
                }
                store.cut_due()?;
                replayed += 1;
                Ok(())
            })?;
        rep.replay_ms = started.elapsed().as_millis() as u64;
        let finishing = Instant::now();
        // Checkpoints after the last complete one may have written aggregate rows before they
        // stopped: their epochs are this lsn or later, and the replay just rebuilt those
        // buckets in memory from the same records, so readers would count them twice. The
        // hours of the rows that stay go to the next checkpoints to pack.
        lock(&store.events).loose = store.drop_torn_aggs(meta.checkpoint_lsn)?;
        rep.finish_ms = finishing.elapsed().as_millis() as u64;
        rep.replayed = replayed;
        rep.salvage = salvage_rep;
        rep.salvage.skipped.extend(parts_skipped);
        Ok((Arc::new(store), wal, rep))
    }
}

/// Whether sled's log is zstd-compressed: no for a new database; one created before
/// 2026-12-07 is opened as it was made (sled records the choice in `db/conf` and refuses the
/// other). sled makes a zstd context for each log message it reads or writes, and each costs
/// two `cpuid` traps on a virtual machine ([`super::zctx`]): an open after a backfilled week
/// spent 78% of its 16 s there (190 MB of log to recover), and checkpoints their share of each
/// flush. The large values (aggregate packs) are compressed by [`super::packs`] instead.
fn sled_compressed(db_path: &Path) -> bool {
    // Text lines, then a checksum in binary.
    match std::fs::read(db_path.join("conf")) {
        Ok(conf) => String::from_utf8_lossy(&conf).lines().any(|l| l.trim() == "use_compression: true"),
        Err(_) => false,
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    crate::panic_text(&*p).unwrap_or_else(|| "sled panicked while opening".into())
}
