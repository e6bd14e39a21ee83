//! Head parts: the samples of open heads that a checkpoint saves, so that replay never needs
//! more of the WAL than the checkpoint before last ([`super::memtable`] says why).
//!
//! One checkpoint's parts go into one file of their own, `DATA/parts/<lsn>.parts`
//! ([`super::part_files`]), written and synced before its record. A part dies when chunks or a
//! newer part of its head hold its samples; a file is deleted once none of its parts is live,
//! after the record of the checkpoint after the last one died ([`Live`] counts them). Heads
//! whose parts sit in a file with a quarter or less of its parts live (series that went
//! quiet) are saved whole again, so that the file can go: memory holds every head's samples,
//! so this is always possible, and it keeps the folder within about four times the live parts.
//!
//! Until 2026-12-06 parts were sled values, one per group of 32 series (key
//! [`keys::part_group_key`]`(series id >> 5, lsn)`, value: the lsn of the checkpoint that wrote
//! it, then per part `series id & 31 | length | samples`), and before that one per part
//! ([`keys::part_key`]). Folders that hold such entries load them; their heads are saved whole
//! into a file by the first checkpoint with a new lsn, and the entries are deleted after its
//! record as each dies.
use super::memtable::{Head, MetricsState};
use super::*;

/// Series per group entry of folders from before part files: `1 << GROUP_SHIFT`.
const GROUP_SHIFT: u32 = 5;

/// Parts a head holds at most: a checkpoint that finds this many saves the whole head as one
/// new part, and the old ones die. A head fed slowly gains a part every other checkpoint until
/// it is cut (2 h at the default `max_head_age`): 100,000 series at one sample in 10 s put
/// 100,000 parts into `head_parts` every 20 s, and sled's cache and file grew with them
/// (70 MB of file and 600 MB of RSS in three minutes).
const MERGE_PARTS: usize = 2;

/// Samples from which a head that this checkpoint saves whole is cut into a chunk right after
/// it ([`cut_instead`]): Prometheus' chunk length. Each whole save rewrites every sample the
/// head holds, so a slowly fed head kept to `max_head_age` cost work that grew with the square
/// of its length, and its samples and parts stayed in memory (100,000 series at one sample a
/// second for five minutes: RSS rose from 107 to 181 MiB, against level at 137 MiB with this
/// cut; at one sample in 10 s, checkpoints took about half the daemon's CPU).
pub(super) const CUT_WHOLE_FROM: usize = 120;

/// Whether a checkpoint cuts this head (after saving it whole) instead of letting it grow: it
/// holds [`MERGE_PARTS`] parts and at least [`CUT_WHOLE_FROM`] samples.
pub(super) fn cut_instead(h: &Head) -> bool {
    h.parts.len() >= MERGE_PARTS && h.samples.len() >= CUT_WHOLE_FROM
}

/// In a head's part list, the lsn of a part that sled holds under its own key (folders from
/// before grouping) carries this bit, and one in a group entry of sled (folders from before
/// part files) [`GROUPED`]; the lsn of a part in a file carries neither. Parts in different
/// places can have the same lsn (the first checkpoint after an upgrade, when no record came
/// since the last one).
const SINGLE: u64 = 1 << 63;
const GROUPED: u64 = 1 << 62;

fn in_file(lsn: u64) -> bool {
    lsn & (SINGLE | GROUPED) == 0
}

/// Live parts: of each part file, (live, written) by lsn; of each sled group entry of an older
/// folder, live by (group, lsn).
#[derive(Default)]
pub(super) struct Live {
    files: index::FxMap<u64, (u32, u32)>,
    groups: index::FxMap<(u64, u64), u32>,
    /// Live parts that sled holds under their own keys.
    singles: usize,
}

/// What died since the last checkpoint began: part files by lsn, and sled entries of older
/// folders by key. The next checkpoint deletes them after its record.
#[derive(Default)]
pub(super) struct Dead {
    pub(super) files: Vec<u64>,
    pub(super) keys: Vec<Vec<u8>>,
}

impl Dead {
    pub(super) fn extend(&mut self, other: Dead) {
        self.files.extend(other.files);
        self.keys.extend(other.keys);
    }
}

impl Live {
    /// A part of series `id` that chunks or a newer part now hold: its file (or sled entry)
    /// joins `dead` once that holds no live part.
    pub(super) fn kill(&mut self, dead: &mut Dead, id: u64, part: (i64, i64, u64)) {
        let lsn = part.2;
        if lsn & SINGLE != 0 {
            self.singles = self.singles.saturating_sub(1);
            dead.keys.push(keys::part_key(id, part.0, lsn & !SINGLE));
            return;
        }
        // Every part in a head's list is counted; were one not, its file or entry stays until
        // the next open drops what chunks hold, which is safe, where deleting it might not be.
        if lsn & GROUPED != 0 {
            let g = (id >> GROUP_SHIFT, lsn & !GROUPED);
            match self.groups.get_mut(&g) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    self.groups.remove(&g);
                    dead.keys.push(keys::part_group_key(g.0, g.1).to_vec());
                }
                None => {}
            }
            return;
        }
        match self.files.get_mut(&lsn) {
            Some((n, _)) if *n > 1 => *n -= 1,
            Some(_) => {
                self.files.remove(&lsn);
                dead.files.push(lsn);
            }
            None => {}
        }
    }

    /// Files with a quarter or less of their parts live: their heads are saved whole again.
    fn sparse(&self) -> index::FxSet<u64> {
        self.files.iter().filter(|(_, (live, written))| live * 4 <= *written).map(|(lsn, _)| *lsn).collect()
    }

    /// Whether sled holds live parts (an older folder's).
    fn legacy_live(&self) -> bool {
        self.singles > 0 || !self.groups.is_empty()
    }

    /// Part files that hold live parts.
    #[cfg(test)]
    pub(super) fn files(&self) -> usize {
        self.files.len()
    }

    /// Sled entries of older folders that hold live parts.
    #[cfg(test)]
    pub(super) fn legacy(&self) -> usize {
        self.groups.len() + self.singles
    }
}

/// A head as a checkpoint found it: how many samples it held, and the first of them no part
/// holds yet. The samples themselves are copied later, a slice of heads at a time, and the
/// part's range filled in ([`Store::write_parts`]).
pub(super) struct PartPlan {
    id: u64,
    /// The head's [`Head::cut_samples`] then: samples cut since sit that many places earlier.
    cut_before: u64,
    /// The part's first and last timestamps, once written.
    first: i64,
    last: i64,
    /// Samples of records before the checkpoint's lsn, counted from the head's front then:
    /// what the part and chunks save once it is written.
    n: u32,
    from: u32,
    /// The whole head (`from` 0), replacing the head's parts.
    whole: bool,
    /// Whether it is in the part file: false when chunks held all its samples before it was
    /// copied.
    written: bool,
}

/// What a checkpoint saves: parts by series id. 48 bytes a head: 100,000 heads fed every 10 s
/// are planned at every other checkpoint, and the plan lives until the checkpoint finishes
/// (a plan and a separate list of what was written took 8.2 MB of 40-byte entries and doubled
/// capacity).
#[derive(Default)]
pub(super) struct PartsPlan {
    parts: Vec<PartPlan>,
}

/// Heads copied per taking of the metrics lock by [`Store::write_parts`]: about 0.1 ms of
/// copying at a hundred or so bytes a head, short beside a group's apply.
const COPY_SLICE: usize = 1024;

/// Damage that a salvaging open skipped: (file, offset, what, bytes), as
/// [`wal::Salvage::skipped`] lists it.
pub(super) type Skipped = Vec<(PathBuf, u64, String, u64)>;

/// Loads the heads saved by checkpoints up to `checkpoint_lsn` (the last complete one): the
/// sled entries of older folders, then the part files oldest first, and counts the live parts
/// of each. Parts that chunks already hold (a cut whose deletion did not happen) are dropped or
/// trimmed, and files and entries written by a checkpoint that did not finish are dropped:
/// replay rebuilds their samples (and counts them) from the WAL. Files and entries left with no
/// live part are deleted. Damage in a part file stops the open, unless `salvage` takes it: then
/// the file is written again with the parts that check out, and the damage is listed.
pub(super) fn load_heads(
    tree: &sled::Tree,
    dir: &Path,
    index: &Index,
    persisted: &index::FxMap<u64, i64>,
    checkpoint_lsn: u64,
    mut salvage: Option<&mut Skipped>,
) -> Result<(index::FxMap<u64, Head>, Live), StoreError> {
    let mut heads: index::FxMap<u64, Head> = Default::default();
    let mut live = Live::default();
    let mut stale = Vec::new();
    // Single parts sort before group entries, group entries come before files, and a series'
    // parts come in the order their checkpoints wrote them (or, single, by first timestamp):
    // each adds what is newer than what its head already holds, and a later part that starts
    // at or before that replaces it from its start.
    let mut add = |id: u64, first: Option<i64>, lsn: u64, bytes: &[u8]| -> Result<bool, StoreError> {
        if !index.contains(id) {
            return Ok(false);
        }
        let persisted = persisted.get(&id).copied().unwrap_or(i64::MIN);
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        chunk::decode_into(bytes, &mut ts, &mut vals)?;
        let (Some(&first_ts), Some(&last)) = (ts.first(), ts.last()) else { return Ok(false) };
        if last <= persisted {
            return Ok(false);
        }
        let head = heads.entry(id).or_insert_with(Head::new);
        let later = head.parts.iter().all(|p| p.2 & !(SINGLE | GROUPED) < lsn & !(SINGLE | GROUPED));
        if later && head.samples.last_ts().is_some_and(|held| first_ts <= held) {
            // A later save of the head from `first_ts` on: a whole one ([`PartPlan::whole`]),
            // a copy of what memory held then. It replaces what the older parts say from
            // there, and those parts are dead (their files stay for other heads' parts). Adding
            // only what was newer than them lost the samples between the whole part's start
            // and the dead parts' end (found by the model test). Only a later one: single
            // parts of older folders come by first timestamp, so an older part can follow.
            // A part with samples before `first_ts` stays live for them (none are expected:
            // those went to chunks before the whole save).
            let (kept_ts, kept_vals) = head.samples.window(i64::MIN, first_ts - 1);
            head.samples = head::Samples::from_slices(&kept_ts, &kept_vals);
            head.parts.retain(|p| p.0 < first_ts);
        }
        let keep = ts.partition_point(|&t| t <= persisted.max(head.samples.last_ts().unwrap_or(i64::MIN)));
        head.samples.extend(&ts[keep..], &vals[keep..]);
        head.parts.push((first.unwrap_or(first_ts), last, lsn));
        head.saved = head.samples.len() as u32;
        Ok(true)
    };
    for item in tree.iter() {
        let (k, v) = item?;
        let mut rd = keys::Reader::new(&v, "head part");
        let saved_at = rd.varint()?;
        if saved_at > checkpoint_lsn {
            stale.push(k);
            continue;
        }
        match keys::decode_part_key(&k)? {
            keys::PartKey::Single(id, first, lsn) => {
                if add(id, Some(first), lsn | SINGLE, rd.rest())? {
                    live.singles += 1;
                } else {
                    stale.push(k);
                }
            }
            keys::PartKey::Group(group, lsn) => {
                let mut n = 0;
                while !rd.done() {
                    let id = (group << GROUP_SHIFT) | rd.varint()?;
                    let len = rd.varint()? as usize;
                    let bytes = rd.bytes(len)?;
                    if add(id, None, lsn | GROUPED, bytes)? {
                        n += 1;
                    }
                }
                if n == 0 {
                    stale.push(k);
                } else {
                    live.groups.insert((group, lsn), n);
                }
            }
        }
    }
    for k in stale {
        tree.remove(k)?;
    }
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io { path: path.to_owned(), source }
    }
    let mut files = Vec::new();
    for (lsn, path) in part_files::list(dir)? {
        if lsn > checkpoint_lsn {
            std::fs::remove_file(&path).map_err(io(&path))?;
            continue;
        }
        let mut written = 0u32;
        let damage = part_files::read(&path, lsn, |id, bytes| {
            written += 1;
            add(id, None, lsn, bytes)?;
            Ok(())
        })?;
        if let Some(d) = damage.first() {
            let Some(skipped) = salvage.as_deref_mut() else { return Err(part_files::damaged(&path, d)) };
            // What checks out, into a whole file of the same name.
            let mut w = part_files::Writer::new(dir, lsn);
            part_files::read(&path, lsn, |id, bytes| w.add(id, bytes))?;
            if !w.finish()? {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
            skipped.extend(damage.into_iter().map(|d| (path.clone(), d.offset, d.detail, d.bytes)));
        }
        files.push((lsn, path, written));
    }
    // Live parts per file, counted once every file is read: a later whole part kills parts
    // of earlier files.
    let mut n: index::FxMap<u64, u32> = Default::default();
    for p in heads.values().flat_map(|h| h.parts.iter()).filter(|p| in_file(p.2)) {
        *n.entry(p.2).or_default() += 1;
    }
    for (lsn, path, written) in files {
        match n.get(&lsn) {
            Some(&n) => {
                live.files.insert(lsn, (n, written));
            }
            None => part_files::delete(dir, lsn).map_err(io(&path))?,
        }
    }
    Ok((heads, live))
}

impl PartsPlan {
    pub(super) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

impl Store {
    /// Plans the parts of a checkpoint: a copy of every head that has held unsaved samples
    /// since before `older_than` (the previous checkpoint's lsn), to be encoded and written by
    /// [`Store::write_parts`] (possibly on another thread while batches go on) and recorded by
    /// [`Store::mark_parts`]. Returns the plan and the oldest lsn whose records
    /// may still hold samples that no part saves (replay must start there).
    ///
    /// A checkpoint with the lsn of the one before it (no record came between them) saves no
    /// parts: its entries would have the keys of that one's, which may be doomed already or
    /// become so while it writes (every part of such an entry died: its deletion would take
    /// the new parts with it). Until 2026-12-06 it merged its parts into those entries, and a
    /// crash after that deletion lost the samples that only they held (found by
    /// `samples_match_a_model_across_cuts_checkpoints_and_restarts`). Replay starts where the
    /// unsaved heads need it instead; the next record gives the next checkpoint a new lsn.
    pub(super) fn plan_parts(&self, st: &mut MetricsState, older_than: u64, cp_lsn: u64) -> (PartsPlan, u64) {
        let mut replay_from = cp_lsn;
        let mut plans = Vec::new();
        let same_lsn = cp_lsn == older_than;
        // Heads with a part in a file that few live parts keep, or in sled (older folders),
        // are saved whole, so that the file or entry can go.
        let sparse = if same_lsn { Default::default() } else { st.live_parts.sparse() };
        let resave_any = !same_lsn && (!sparse.is_empty() || st.live_parts.legacy_live());
        for (id, head) in st.heads.iter_mut() {
            let resave = resave_any
                && !head.samples.is_empty()
                && head.parts.iter().any(|p| !in_file(p.2) || sparse.contains(&p.2));
            if !resave {
                let Some(lsn) = head.unsaved_lsn() else { continue };
                if head.samples.len() == head.saved as usize {
                    head.set_unsaved_lsn(None);
                    continue;
                }
                if lsn >= older_than || same_lsn {
                    replay_from = replay_from.min(lsn);
                    continue;
                }
            }
            let whole = resave || head.parts.len() >= MERGE_PARTS;
            plans.push(PartPlan {
                id: *id,
                cut_before: head.cut_samples,
                first: 0,
                last: 0,
                n: head.samples.len() as u32,
                from: if whole { 0 } else { head.saved },
                whole,
                written: false,
            });
        }
        plans.sort_unstable_by_key(|p| p.id);
        // Past glibc's mmap threshold, the shrink gives back pages in place.
        plans.shrink_to_fit();
        (PartsPlan { parts: plans }, replay_from)
    }

    /// Copies the planned heads' samples, [`COPY_SLICE`] heads per taking of the metrics lock,
    /// encodes them and writes them as the part file of checkpoint `cp_lsn` (one that does not
    /// finish leaves a file that the next open drops, or loads if a later record vouches for
    /// it: its samples are acked ones either way). Changes no head.
    ///
    /// Until 2026-12-07 the plan copied every head it saved, all at once under the lock: at
    /// 100,000 series fed every 10 s that held the committer for the copy and doubled the
    /// heads' memory while the checkpoint wrote (tens of MB just before they are cut). Heads
    /// change meanwhile only as the committer changes them: samples come after the planned
    /// ones, and cuts take samples from the front into chunks ([`Head::cut_samples`] counts
    /// them). A part saves what of its samples no chunk holds yet; chunks cut before the copy
    /// are in the block files and the chunk index before this checkpoint syncs the one and
    /// writes its record into the other, so the record vouches for them too. A part whose
    /// samples chunks all hold is written nowhere ([`PartPlan::written`]).
    pub(super) fn write_parts(&self, plan: &mut PartsPlan, cp_lsn: u64) -> Result<(), StoreError> {
        let mut w = part_files::Writer::new(&self.dir.join(part_files::DIR), cp_lsn);
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        let mut bytes = Vec::new();
        // Per head of a slice: its copy, and how many of the copied samples chunks held (or
        // None when chunks held all that it planned).
        let mut copies: Vec<Option<(head::Copied, u32)>> = Vec::with_capacity(COPY_SLICE);
        for slice in plan.parts.chunks_mut(COPY_SLICE) {
            bytes.clear();
            copies.clear();
            {
                let st = lock(&self.metrics);
                for p in slice.iter() {
                    // Heads leave the map only when a checkpoint begins, never during one.
                    let copy = st.heads.get(&p.id).and_then(|head| {
                        let removed = head.cut_samples.checked_sub(p.cut_before)?;
                        let start = u64::from(p.from).max(removed);
                        (start < u64::from(p.n)).then(|| {
                            let c = head.samples.copy_first(p.n - removed as u32, &mut bytes);
                            (c, (start - removed) as u32)
                        })
                    });
                    copies.push(copy);
                }
            }
            for (p, copy) in slice.iter_mut().zip(&copies) {
                let Some((c, skip)) = *copy else { continue };
                ts.clear();
                vals.clear();
                head::decode_copied(&bytes, c, &mut ts, &mut vals);
                let (ts, vals) = (&ts[skip as usize..], &vals[skip as usize..]);
                w.add(p.id, &chunk::encode(ts, vals))?;
                (p.first, p.last, p.written) = (ts[0], ts[ts.len() - 1], true);
            }
        }
        w.finish()?;
        Ok(())
    }

    /// Records a checkpoint's parts in their heads, once it is complete (a failed one leaves
    /// the heads as they were). A head cut since the plan has lost samples from its front: the
    /// part's samples sit that many places earlier, and a part that a chunk now holds whole is
    /// dead at once; one that chunks held before it was copied is in no file, and only moves
    /// its head's count of saved samples. Samples that arrived since the plan came from
    /// records at or after `cp_lsn`.
    pub(super) fn mark_parts(&self, st: &mut MetricsState, saved: PartsPlan, cp_lsn: u64) {
        let written = saved.parts.iter().filter(|p| p.written).count() as u32;
        if written > 0 {
            st.live_parts.files.insert(cp_lsn, (written, written));
        }
        for p in saved.parts {
            let part = (p.first, p.last, cp_lsn);
            let persisted = st.persisted.get(&p.id).copied().unwrap_or(i64::MIN);
            let Some(head) = st.heads.get_mut(&p.id) else {
                if p.written {
                    st.live_parts.kill(&mut st.dead_parts, p.id, part);
                }
                continue;
            };
            if !p.written {
                // Chunks hold its samples; the cuts that made them killed the parts they hold.
            } else if p.last <= persisted {
                st.live_parts.kill(&mut st.dead_parts, p.id, part);
            } else {
                if p.whole {
                    // It holds every sample they hold that no chunk does.
                    for old in head.parts.take() {
                        st.live_parts.kill(&mut st.dead_parts, p.id, old);
                    }
                }
                head.parts.push(part);
            }
            let removed = (head.cut_samples - p.cut_before) as usize;
            let saved = (head.saved as usize).max((p.n as usize).saturating_sub(removed)).min(head.samples.len());
            head.saved = saved as u32;
            head.set_unsaved_lsn((saved < head.samples.len()).then_some(cp_lsn));
        }
    }

    /// Deletes the sled entries of older folders whose parts chunks or newer parts hold (after
    /// the checkpoint record that vouches for them).
    pub(super) fn delete_parts(&self, dead: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut b = Sliced::new(&self.t.head_parts);
        for k in dead {
            b.remove(&k[..])?;
        }
        b.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// A plan entry per head saved, 100,000 of them at 100,000 series fed every 10 s.
    #[test]
    fn a_part_plan_stays_small() {
        let size = std::mem::size_of::<super::PartPlan>();
        assert!(size <= 48, "a part plan takes {size} bytes");
    }
}
