//! Checkpoints: what memory holds goes to sled and the block files, sled is flushed, and the
//! WAL segments no longer needed are deleted. The order is the durability argument (see the
//! module docs of [`super`]): everything the checkpoint record vouches for is written and the
//! block files synced before the record; deletions that a crash must not keep without the
//! record come after it; WAL segments and doomed block files go only after sled's flush.
//!
//! A step that fails leaves memory as it was, so the next checkpoint redoes it; the WAL keeps
//! everything meanwhile.
use super::*;

impl Store {
    /// Removes aggregate rows of epoch `epoch` for the buckets memory holds (see
    /// [`Store::open_with`]).
    pub(super) fn drop_torn_aggs(&self, epoch: u64) -> Result<(), StoreError> {
        let st = lock(&self.events);
        let mut b = sled::Batch::default();
        for (gid, bucket) in st.aggs.keys() {
            b.remove(&keys::agg_key(*gid, *bucket, epoch)[..]);
        }
        self.t.aggs.apply_batch(b)?;
        Ok(())
    }

    /// Puts what memory holds into sled, flushes sled, and drops WAL segments no longer needed.
    /// `cut_all` (shutdown) cuts every head so that the WAL can be emptied.
    pub fn checkpoint(&self, wal: &mut Wal, cut_all: bool) -> Result<(), StoreError> {
        let cp_lsn = wal.rotate()?;
        let replay_from = {
            let mut st = lock(&self.metrics);
            let st = &mut *st;
            let old: Vec<u64> = st
                .heads
                .iter()
                .filter(|(_, h)| !h.samples.is_empty() && (cut_all || h.started.elapsed() >= self.max_head_age))
                .map(|(id, _)| *id)
                .collect();
            self.cut(st, old, true)?;
            st.heads.retain(|_, h| !h.samples.is_empty() || !h.parts.is_empty());
            let older_than = st.last_checkpoint;
            self.save_parts(st, older_than, cp_lsn)?
        };
        {
            let mut st = lock(&self.events);
            let epoch = st.epoch;
            let mut b = sled::Batch::default();
            for ((gid, bucket), agg) in st.aggs.iter_mut() {
                b.insert(&keys::agg_key(*gid, *bucket, epoch)[..], agg.encoded());
            }
            self.t.aggs.apply_batch(b)?;
            st.aggs.clear();
            st.epoch = cp_lsn;
        }
        // Request-id entries of everything before cp_lsn go into runs now: those records will
        // not be replayed.
        self.event_rids.flush()?;
        self.log_rids.flush()?;
        self.blocks.sync()?;
        let meta = Meta {
            checkpoint_lsn: cp_lsn,
            replay_from,
            blocks_end: Some(self.blocks.end()),
            samples: self.counters.samples.load(Ordering::Relaxed),
            events: self.counters.events.load(Ordering::Relaxed),
            logs: self.counters.logs.load(Ordering::Relaxed),
            dedup: lock(&self.dedup).iter().map(|((c, k), (s, seen))| (c.clone(), *k, *s, *seen)).collect(),
        };
        self.t.meta.insert(keys::META_KEY, keys::encode_meta(&meta))?;
        // The WAL is kept from where the previous checkpoint record says replay starts, too:
        // if sled comes back after a crash with that record instead of this one (both can
        // name the same checkpoint lsn when no record came between them, so the checkpoint
        // file cannot tell them apart), the open still finds every segment it needs. Cutting
        // every head (shutdown, memory relief, a snapshot) empties the WAL as before.
        let keep_from = {
            let mut st = lock(&self.metrics);
            self.delete_dead_parts(&mut st)?;
            st.last_checkpoint = cp_lsn;
            if cut_all {
                replay_from
            } else {
                replay_from.min(st.last_replay_from)
            }
        };
        let doomed = self.blocks.take_doomed();
        let doomed_runs = [self.event_rids.take_doomed(), self.log_rids.take_doomed()];
        self.db.flush()?;
        recover::write_checkpoint_file(&self.dir, cp_lsn)
            .map_err(|source| StoreError::Io { path: self.dir.join("checkpoint"), source })?;
        self.blocks.delete(&doomed)?;
        self.event_rids.delete(&doomed_runs[0])?;
        self.log_rids.delete(&doomed_runs[1])?;
        wal.truncate_before(keep_from)?;
        lock(&self.metrics).last_replay_from = replay_from;
        Ok(())
    }
}
