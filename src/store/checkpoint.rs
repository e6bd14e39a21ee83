//! Checkpoints: what memory holds goes to sled and the block files, sled is flushed, and the
//! WAL segments no longer needed are deleted. The order is the durability argument (see the
//! module docs of [`super`]): everything the checkpoint record vouches for is written and the
//! block files synced before the record; deletions that a crash must not keep without the
//! record come after it; WAL segments and doomed block files go only after sled's flush.
//!
//! A checkpoint has three steps, so that the slow middle one need not hold up ingest:
//! 1. [`Store::checkpoint_begin`], on the committer thread between two groups: the WAL
//!    rotates (the checkpoint's lsn), old heads are cut, the aggregates are written (as rows,
//!    or finished hours with nothing stored yet as packs: [`super::packs`]), the
//!    heads to save and how many of their samples are chosen, the counters and the
//!    de-duplication table are copied as of that lsn, and the hours of aggregates to pack are
//!    chosen;
//! 2. [`Store::checkpoint_write`], anywhere (the committer runs it on a thread of its own
//!    while groups go on): the series made before its lsn are appended to the catalog file
//!    ([`super::catalog`]), the parts are copied from the heads a slice at a time, encoded and
//!    written ([`Store::write_parts`]), request ids go into runs, the
//!    block files are synced up to their end, the record is written, past hours of aggregates
//!    are packed ([`super::packs`]), sled is flushed. What
//!    the committer writes meanwhile (chunks, raw records) lies past the recorded block end or
//!    is rewritten by replay, exactly as if it came after the checkpoint;
//! 3. [`Store::checkpoint_finish`], on the committer thread: the heads learn what was saved
//!    and the WAL is cut.
//!
//! After a checkpoint the committer merges request-id runs on a thread of its own
//! ([`Store::merge_request_ids`]): a merge at 100 M events took 6–10 s, and while the
//! checkpoint waited for it the next one could not begin, so the WAL and memory grew.
//!
//! A step that fails leaves memory as it was, so the next checkpoint redoes it; the WAL keeps
//! everything meanwhile.
use super::parts::{self, cut_instead, PartsPlan};
use super::*;
use std::collections::BTreeSet;

/// Heads cut together when a checkpoint cuts every head (see [`Store::checkpoint_begin`]); two
/// in tests, so that the model test's few series take several slices.
const CUT_ALL_SLICE: usize = if cfg!(test) { 2 } else { 4096 };

/// A checkpoint between its steps.
pub struct Checkpoint {
    cp_lsn: u64,
    replay_from: u64,
    cut_all: bool,
    /// The heads to save, and once written, what was saved.
    plans: PartsPlan,
    /// Part files and entries whose parts chunks held when it began: deleted after its record.
    dead_parts: parts::Dead,
    /// Whether it may have written a part file (at its lsn).
    writes_parts: bool,
    meta: Meta,
    /// Hours to pack ([`super::packs`]), with rows of epochs below `pack_below`.
    pack: Vec<(u32, i64)>,
    pack_below: u64,
    /// Series made before its lsn, for the catalog file.
    series: catalog::Pending,
    written: bool,
}

impl Store {
    /// Removes the aggregate rows of epoch `epoch` and later, those of checkpoints that began
    /// after the record of lsn `epoch` and never wrote their own (see [`Store::open_with`]),
    /// and returns the hours (group, pack start) of the rows that stay. Not only `epoch`: a
    /// checkpoint whose middle step failed (a full disk) leaves its rows, of epoch `epoch`,
    /// and moves memory's epoch on, so the next one writes rows of its own lsn; when that one
    /// dies before its record too, both epochs are torn.
    pub(super) fn drop_torn_aggs(&self, epoch: u64) -> Result<BTreeSet<(u32, i64)>, StoreError> {
        let mut torn = sled::Batch::default();
        let mut hours = BTreeSet::new();
        for k in self.t.aggs.iter().keys() {
            let k = k?;
            let (g, b, e) = keys::decode_agg_key(&k)?;
            if e >= epoch {
                torn.remove(k);
            } else {
                hours.insert((g, self.pack_start(b)));
            }
        }
        self.t.aggs.apply_batch(torn)?;
        Ok(hours)
    }

    /// A whole checkpoint, its three steps in a row. `cut_all` (shutdown) cuts every head so
    /// that the WAL can be emptied.
    pub fn checkpoint(&self, wal: &mut Wal, cut_all: bool) -> Result<(), StoreError> {
        let mut c = self.checkpoint_begin(wal, cut_all)?;
        let r = self.checkpoint_write(&mut c);
        self.checkpoint_finish(wal, c)?;
        wal.remove_doomed()?;
        r
    }

    /// Step 1: fixes the checkpoint's lsn and what it saves. Batches must not be applied
    /// while it runs (the committer calls it between groups).
    pub fn checkpoint_begin(&self, wal: &mut Wal, cut_all: bool) -> Result<Checkpoint, StoreError> {
        let cp_lsn = wal.rotate()?;
        let (plans, replay_from) = {
            let mut st = lock(&self.metrics);
            let st = &mut *st;
            let old: Vec<u64> = st
                .heads
                .iter()
                .filter(|(_, h)| !h.samples.is_empty() && (cut_all || h.age() >= self.max_head_age || cut_instead(h)))
                .map(|(id, _)| *id)
                .collect();
            if cut_all {
                // A slice at a time: one cut of every head held the cut list and the emptied
                // heads of all of them at once (21 MB at 100,000 series, the heap's peak), at
                // shutdown and, worse, when memory relief cuts every head.
                let mut old = old;
                old.sort_unstable();
                for ids in old.chunks(CUT_ALL_SLICE) {
                    self.cut(st, ids.to_vec(), true)?;
                }
                st.due_old.clear();
            } else {
                // Heads that began together age together: the committer cuts them a few at a
                // time after its groups (until then this checkpoint saves them as parts).
                st.due_old = old;
            }
            st.heads.retain(|_, h| !h.samples.is_empty() || !h.parts.is_empty());
            let older_than = st.last_checkpoint;
            self.plan_parts(st, older_than, cp_lsn)
        };
        let (pack, pack_below) = {
            // Hours to pack straight from memory ([`super::packs`]) are written under the pack
            // lock, which readers take before the events lock.
            let from_memory = self.hours_to_pack_from_memory(&lock(&self.events));
            let _packing = (!from_memory.is_empty()).then(|| write(&self.pack_lock));
            let mut st = lock(&self.events);
            let st = &mut *st;
            let epoch = st.epoch;
            if !from_memory.is_empty() {
                self.pack_from_memory(st, from_memory, epoch, cp_lsn)?;
            }
            let mut b = Sliced::new(&self.t.aggs);
            let mut written = BTreeSet::new();
            // Taken, not cleared: a cleared map keeps its capacity, and a backfill's checkpoint
            // of hundreds of thousands of buckets kept the daemon above its memory limit.
            for ((gid, bucket), mut agg) in std::mem::take(&mut st.aggs) {
                b.insert(&keys::agg_key(gid, bucket, epoch)[..], aggs::store_row(agg.encoded()))?;
                written.insert((gid, self.pack_start(bucket)));
            }
            b.finish()?;
            st.epoch = cp_lsn;
            st.loose.extend(written.iter().copied());
            let pack: Vec<(u32, i64)> =
                packs::packable(&st.loose).filter(|h| !written.contains(h)).take(packs::PACK_HOURS).collect();
            for h in &pack {
                st.loose.remove(h);
            }
            (pack, epoch)
        };
        let meta = Meta {
            checkpoint_lsn: cp_lsn,
            replay_from,
            blocks_end: None,
            catalog_end: None,
            samples: self.counters.samples.load(Ordering::Relaxed),
            events: self.counters.events.load(Ordering::Relaxed),
            logs: self.counters.logs.load(Ordering::Relaxed),
            dedup: lock(&self.dedup).iter().map(|((c, k), (s, seen))| (c.clone(), *k, *s, *seen)).collect(),
        };
        let dead_parts = std::mem::take(&mut lock(&self.metrics).dead_parts);
        let series = self.catalog.take();
        Ok(Checkpoint {
            cp_lsn,
            replay_from,
            cut_all,
            plans,
            dead_parts,
            writes_parts: false,
            meta,
            pack,
            pack_below,
            series,
            written: false,
        })
    }

    /// Step 2: writes what step 1 copied and makes it durable. Safe while batches go on.
    pub fn checkpoint_write(&self, c: &mut Checkpoint) -> Result<(), StoreError> {
        // First, so that nothing can fail between the take and the write: a failed write puts
        // the series back itself.
        c.meta.catalog_end = Some(self.catalog.write(std::mem::take(&mut c.series))?);
        c.writes_parts = !c.plans.is_empty();
        self.write_parts(&mut c.plans, c.cp_lsn)?;
        // Request-id entries of everything before cp_lsn go into runs now: those records will
        // not be replayed. (Entries of later records may come along; a replay adds them again,
        // and runs and look-ups de-duplicate.)
        self.event_rids.flush()?;
        self.log_rids.flush()?;
        c.meta.blocks_end = Some(self.blocks.sync_to_end()?);
        self.t.meta.insert(keys::META_KEY, keys::encode_meta(&c.meta))?;
        // After the record that vouches for the chunks holding them (sled applies in order).
        self.delete_parts(&c.dead_parts.keys)?;
        self.pack_hours(&c.pack, c.pack_below)?;
        let doomed = self.blocks.take_doomed();
        let doomed_runs = [self.event_rids.take_doomed(), self.log_rids.take_doomed()];
        self.db.flush()?;
        recover::write_checkpoint_file(&self.dir, c.cp_lsn)
            .map_err(|source| StoreError::Io { path: self.dir.join("checkpoint"), source })?;
        c.written = true;
        // The record vouches for the hours packed from memory up to it (kept until the next
        // flush: an open drops entries that its record vouches for).
        if let Err(e) = self.forget_memory_packs(c.cp_lsn) {
            tracing::warn!(error = %e, "cannot drop the entries of hours packed from memory; the next open does");
        }
        if self.legacy_series.swap(false, Ordering::Relaxed) {
            // The record just flushed names the catalog file that holds them now.
            self.t.series.clear()?;
        }
        self.delete_part_files(c);
        self.blocks.delete(&doomed)?;
        self.event_rids.delete(&doomed_runs[0])?;
        self.log_rids.delete(&doomed_runs[1])?;
        Ok(())
    }

    /// Step 3: the heads take the parts written, and the WAL dooms the segments no longer
    /// needed ([`Wal::take_doomed`]), when step 2 got as far as its record; otherwise the dead
    /// parts wait for the next checkpoint.
    pub fn checkpoint_finish(&self, wal: &mut Wal, c: Checkpoint) -> Result<(), StoreError> {
        let keep_from = {
            let mut st = lock(&self.metrics);
            if !c.written {
                // Not written at all when step 2 never ran.
                self.catalog.restore(c.series);
                st.dead_parts.extend(c.dead_parts);
                if c.writes_parts {
                    // Its file, if written, is not needed once a later checkpoint has saved
                    // the same heads again (it is not marked in them); until then a crash may
                    // come back with a record that names it.
                    st.dead_parts.files.push(c.cp_lsn);
                }
                lock(&self.events).loose.extend(c.pack);
                return Ok(());
            }
            self.mark_parts(&mut st, c.plans, c.cp_lsn);
            st.last_checkpoint = c.cp_lsn;
            // The WAL is kept from where the previous checkpoint record says replay starts,
            // too: if sled comes back after a crash with that record instead of this one (both
            // can name the same checkpoint lsn when no record came between them, so the
            // checkpoint file cannot tell them apart), the open still finds every segment it
            // needs. Cutting every head (shutdown, memory relief, a snapshot) empties the WAL
            // as before.
            if c.cut_all {
                c.replay_from
            } else {
                c.replay_from.min(st.last_replay_from)
            }
        };
        wal.detach_before(keep_from);
        lock(&self.metrics).last_replay_from = c.replay_from;
        Ok(())
    }
}

impl Store {
    /// Deletes the part files that died before checkpoint `c` began, once its record is
    /// durable; a file of its own lsn that it wrote again is live instead (one that an earlier
    /// checkpoint of that lsn left when it failed). A file that cannot be deleted is logged and
    /// left to the next open, which loads it and finds its parts dead.
    fn delete_part_files(&self, c: &mut Checkpoint) {
        let dir = self.dir.join(part_files::DIR);
        for lsn in std::mem::take(&mut c.dead_parts.files) {
            if lsn == c.cp_lsn && c.writes_parts {
                continue;
            }
            if let Err(e) = part_files::delete(&dir, lsn) {
                tracing::warn!(file = %part_files::path(&dir, lsn).display(), error = %e, "cannot delete a dead head part file");
            }
        }
    }
}

impl Store {
    /// Merges request-id runs of a similar size ([`rid_index::RidIndex::maybe_merge`]), with
    /// retention held off so that no input expires mid-merge; the number of merges. Safe beside
    /// ingest, look-ups and checkpoints. After merging, sled is flushed (the catalog names the
    /// merged runs durably, not their inputs) and then the inputs' files are deleted, as a
    /// checkpoint does, so that an idle daemon does not keep them. `stop` (shutdown) gives up
    /// the merge in progress.
    pub fn merge_request_ids(&self, stop: &std::sync::atomic::AtomicBool) -> Result<u64, StoreError> {
        let mut merges = 0;
        for rids in [&self.event_rids, &self.log_rids] {
            let _maintenance = lock(&self.maintenance);
            merges += rids.maybe_merge(stop)?.merges;
        }
        if merges > 0 {
            // Only runs whose catalog entry is gone are doomed; a checkpoint beside this may
            // take some of them first, and deletes them after its own flush.
            let doomed = [self.event_rids.take_doomed(), self.log_rids.take_doomed()];
            self.db.flush()?;
            self.event_rids.delete(&doomed[0])?;
            self.log_rids.delete(&doomed[1])?;
        }
        Ok(merges)
    }
}
