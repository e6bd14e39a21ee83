//! Head parts: the samples of open heads that a checkpoint saves, so that replay never needs
//! more of the WAL than the checkpoint before last ([`super::memtable`] says why).
//!
//! One checkpoint's parts are written per group of 32 series (series id >> 5) as one sled
//! value, key [`keys::part_group_key`]`(group, checkpoint lsn)`: sled keeps about 400 bytes of
//! memory and 150 bytes of file per entry whatever its size, and one entry per series cost 43 MB
//! of the heap at 100,000 series fed slowly (half the daemon's memory). Value layout: the lsn
//! of the checkpoint that wrote it, then per part `series id & 31 | length | samples`
//! ([`super::chunk`] encoding), all LEB128 but the samples.
//!
//! A part dies when chunks or a newer part of its head hold its samples; an entry is deleted
//! when it holds no live part, at the checkpoint after the last one died, after that
//! checkpoint's record: sled applies operations in order, so a crash can never keep the
//! deletion but lose the record that vouches for the chunk. [`Groups`] counts the live parts of
//! each entry. Folders from before grouping hold one entry per part ([`keys::part_key`]); they
//! load and die the same way, one at a time.
use super::memtable::{Head, MetricsState};
use super::*;

/// Series per group entry: `1 << GROUP_SHIFT`.
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

/// In a head's part list, the lsn of a part stored under its own key (folders from before
/// grouping) carries this bit: such a part and a group entry can have the same lsn (the first
/// checkpoint after an upgrade, when no record came since the last one).
const SINGLE: u64 = 1 << 63;

/// Live parts of each group entry that an open found or a checkpoint wrote, by (group, lsn).
#[derive(Default)]
pub(super) struct Groups(index::FxMap<(u64, u64), u32>);

impl Groups {
    /// A part of series `id` that chunks or a newer part now hold: the key of its entry joins
    /// `dead` once that entry holds no live part (a part from before grouping: its own key).
    pub(super) fn kill(&mut self, dead: &mut Vec<Vec<u8>>, id: u64, part: (i64, i64, u64)) {
        if part.2 & SINGLE != 0 {
            dead.push(keys::part_key(id, part.0, part.2 & !SINGLE));
            return;
        }
        let g = (id >> GROUP_SHIFT, part.2);
        match self.0.get_mut(&g) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.0.remove(&g);
                dead.push(keys::part_group_key(g.0, g.1).to_vec());
            }
            // Every part in a head's list is counted; were one not, its entry stays until the
            // next open drops what chunks hold, which is safe, where deleting it might not be.
            None => {}
        }
    }

    /// Group entries that hold live parts.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// A head's samples as a checkpoint found them, and the first of them no part holds yet.
pub(super) struct PartPlan {
    id: u64,
    /// In [`PartsPlan::bytes`].
    samples: head::Copied,
    from: usize,
    cut_before: u64,
    /// The whole head (`from` 0), replacing the head's parts.
    whole: bool,
}

/// What a checkpoint saves: parts by series id.
#[derive(Default)]
pub(super) struct PartsPlan {
    parts: Vec<PartPlan>,
    /// The planned heads' samples ([`head::Samples::copy_to`]).
    bytes: Vec<u8>,
}

/// A part written: its range, and how many of its head's samples were saved by it (counted
/// from the head's front as it was planned).
pub(super) struct SavedPart {
    id: u64,
    first: i64,
    last: i64,
    upto: usize,
    cut_before: u64,
    whole: bool,
    lsn: u64,
}

/// Loads the heads saved by checkpoints up to `checkpoint_lsn` (the last complete one), and
/// counts the live parts of each entry. Parts that chunks already hold (a cut whose deletion did
/// not happen) are dropped or trimmed, and entries written by a checkpoint that did not finish
/// are dropped: replay rebuilds their samples (and counts them) from the WAL. Entries left with
/// no live part are deleted.
pub(super) fn load_heads(
    tree: &sled::Tree,
    index: &Index,
    persisted: &index::FxMap<u64, i64>,
    checkpoint_lsn: u64,
) -> Result<(index::FxMap<u64, Head>, Groups), StoreError> {
    let mut heads: index::FxMap<u64, Head> = Default::default();
    let mut groups = Groups::default();
    let mut stale = Vec::new();
    // Single parts sort before group entries, and a series' parts come in the order their
    // checkpoints wrote them (or, single, by first timestamp): each adds what is newer than
    // what its head already holds.
    let mut add = |id: u64, first: Option<i64>, lsn: u64, bytes: &[u8]| -> Result<bool, StoreError> {
        let persisted = persisted.get(&id).copied().unwrap_or(i64::MIN);
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        chunk::decode_into(bytes, &mut ts, &mut vals)?;
        let (Some(&first_ts), Some(&last)) = (ts.first(), ts.last()) else { return Ok(false) };
        if last <= persisted {
            return Ok(false);
        }
        let head = heads.entry(id).or_insert_with(Head::new);
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
                if !index.contains(id) || !add(id, Some(first), lsn | SINGLE, rd.rest())? {
                    stale.push(k);
                }
            }
            keys::PartKey::Group(group, lsn) => {
                let mut live = 0;
                while !rd.done() {
                    let id = (group << GROUP_SHIFT) | rd.varint()?;
                    let len = rd.varint()? as usize;
                    let bytes = rd.bytes(len)?;
                    if index.contains(id) && add(id, None, lsn, bytes)? {
                        live += 1;
                    }
                }
                if live == 0 {
                    stale.push(k);
                } else {
                    groups.0.insert((group, lsn), live);
                }
            }
        }
    }
    for k in stale {
        tree.remove(k)?;
    }
    Ok((heads, groups))
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
        let mut bytes = Vec::new();
        let same_lsn = cp_lsn == older_than;
        for (id, head) in st.heads.iter_mut() {
            let Some(lsn) = head.unsaved_lsn() else { continue };
            if head.samples.len() == head.saved as usize {
                head.set_unsaved_lsn(None);
            } else if lsn >= older_than || same_lsn {
                replay_from = replay_from.min(lsn);
            } else {
                let whole = head.parts.len() >= MERGE_PARTS;
                plans.push(PartPlan {
                    id: *id,
                    samples: head.samples.copy_to(&mut bytes),
                    from: if whole { 0 } else { head.saved as usize },
                    cut_before: head.cut_samples,
                    whole,
                });
            }
        }
        plans.sort_unstable_by_key(|p| p.id);
        (PartsPlan { parts: plans, bytes }, replay_from)
    }

    /// Encodes and writes planned parts, one entry per group, tagged with the checkpoint that
    /// saves them (one that does not finish leaves entries that the next open drops). Touches
    /// no head.
    pub(super) fn write_parts(&self, plan: &PartsPlan, cp_lsn: u64) -> Result<Vec<SavedPart>, StoreError> {
        let mut b = Sliced::new(&self.t.head_parts);
        let mut saved = Vec::with_capacity(plan.parts.len());
        let (mut all_ts, mut all_vals) = (Vec::new(), Vec::new());
        let mut entry: Option<(u64, Vec<u8>)> = None;
        for p in &plan.parts {
            let group = p.id >> GROUP_SHIFT;
            if entry.as_ref().is_some_and(|(g, _)| *g != group) {
                let (g, v) = entry.take().expect("checked");
                b.insert(&keys::part_group_key(g, cp_lsn), v)?;
            }
            if entry.is_none() {
                let mut v = Vec::new();
                keys::put_varint(&mut v, cp_lsn);
                entry = Some((group, v));
            }
            let v = &mut entry.as_mut().expect("set above").1;
            all_ts.clear();
            all_vals.clear();
            head::decode_copied(&plan.bytes, p.samples, &mut all_ts, &mut all_vals);
            let (ts, vals) = (&all_ts[p.from..], &all_vals[p.from..]);
            let enc = chunk::encode(ts, vals);
            keys::put_varint(v, p.id & ((1 << GROUP_SHIFT) - 1));
            keys::put_varint(v, enc.len() as u64);
            v.extend_from_slice(&enc);
            saved.push(SavedPart {
                id: p.id,
                first: ts[0],
                last: ts[ts.len() - 1],
                upto: all_ts.len(),
                cut_before: p.cut_before,
                whole: p.whole,
                lsn: cp_lsn,
            });
        }
        if let Some((g, v)) = entry {
            b.insert(&keys::part_group_key(g, cp_lsn), v)?;
        }
        b.finish()?;
        Ok(saved)
    }

    /// Records written parts in their heads, once their checkpoint is complete (a failed one
    /// leaves the heads as they were). A head cut since the plan has lost samples from its
    /// front: the part's samples sit that many places earlier, and a part that a chunk now
    /// holds whole is dead at once. Samples that arrived since the plan came from records at or
    /// after `cp_lsn`.
    pub(super) fn mark_parts(&self, st: &mut MetricsState, saved: Vec<SavedPart>, cp_lsn: u64) {
        for p in &saved {
            *st.part_groups.0.entry((p.id >> GROUP_SHIFT, p.lsn)).or_insert(0) += 1;
        }
        for p in saved {
            let part = (p.first, p.last, p.lsn);
            let persisted = st.persisted.get(&p.id).copied().unwrap_or(i64::MIN);
            let Some(head) = st.heads.get_mut(&p.id) else {
                st.part_groups.kill(&mut st.dead_parts, p.id, part);
                continue;
            };
            if p.last <= persisted {
                st.part_groups.kill(&mut st.dead_parts, p.id, part);
            } else {
                if p.whole {
                    // It holds every sample they hold that no chunk does.
                    for old in head.parts.take() {
                        st.part_groups.kill(&mut st.dead_parts, p.id, old);
                    }
                }
                head.parts.push(part);
            }
            let removed = (head.cut_samples - p.cut_before) as usize;
            let saved = (head.saved as usize).max(p.upto.saturating_sub(removed)).min(head.samples.len());
            head.saved = saved as u32;
            head.set_unsaved_lsn((saved < head.samples.len()).then_some(cp_lsn));
        }
    }

    /// Deletes the entries whose parts chunks or newer parts hold (after the checkpoint record
    /// that vouches for them).
    pub(super) fn delete_parts(&self, dead: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut b = Sliced::new(&self.t.head_parts);
        for k in dead {
            b.remove(&k[..])?;
        }
        b.finish()?;
        Ok(())
    }
}
