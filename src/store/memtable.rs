//! The memtable: one in-memory head per series, cut into compressed chunks when full, when old
//! (`storage.max_head_age`), when a checkpoint saves a long one whole ([`super::parts`]'s
//! `cut_instead`: 120 samples or more), and at shutdown.
//!
//! A head that fills slowly would pin the WAL for up to `max_head_age` (its samples exist
//! nowhere else). So a checkpoint saves the samples of every head that has held unsaved
//! samples since the checkpoint before it as a *part* (chunk-encoded, in that checkpoint's
//! part file), and replay never needs more than the WAL since the checkpoint before last. Heads that
//! fill fast are cut into chunks before that and cost no parts; [`super::parts`] saves, loads
//! and deletes them.
use super::chunk_index::MAX_SPAN_MS;
use super::*;

pub(super) struct Head {
    /// The samples not yet in a chunk, compressed ([`super::head`]).
    pub(super) samples: head::Samples,
    /// When the head took its first sample, in [`head::ticks`].
    pub(super) started: u32,
    /// How many of the first samples are saved in parts.
    pub(super) saved: u32,
    /// Lsn of the oldest WAL record that may hold an unsaved sample ([`NO_LSN`]: all saved).
    unsaved: u64,
    /// (first ts, last ts, lsn of its entry) of each saved part ([`super::parts`]; the lsn's top
    /// bit marks a part stored under its own key).
    pub(super) parts: Parts,
    /// Samples cut from the front of this head so far: a part planned before a cut finds
    /// where its samples went when it is copied ([`Store::write_parts`]) and recorded
    /// ([`Store::mark_parts`]).
    pub(super) cut_samples: u64,
}

/// [`Head::unsaved`] when every sample is saved.
const NO_LSN: u64 = u64::MAX;

impl Head {
    pub(super) fn new() -> Head {
        Head {
            samples: head::Samples::new(),
            started: head::ticks(),
            saved: 0,
            unsaved: NO_LSN,
            parts: Parts::default(),
            cut_samples: 0,
        }
    }

    pub(super) fn unsaved_lsn(&self) -> Option<u64> {
        (self.unsaved != NO_LSN).then_some(self.unsaved)
    }

    pub(super) fn set_unsaved_lsn(&mut self, lsn: Option<u64>) {
        self.unsaved = lsn.unwrap_or(NO_LSN);
    }

    /// How long ago the head took its first sample (to a tenth of a second).
    pub(super) fn age(&self) -> Duration {
        Duration::from_millis(u64::from(head::ticks().saturating_sub(self.started)) * head::TICK_MS)
    }
}

/// A head's parts: one or two as a rule, so a boxed slice that grows one at a time (a `Vec`
/// that doubled took 64 bytes a head, 6.4 MB at 100,000 series; its capacity field 8 more).
#[derive(Default)]
pub(super) struct Parts(Box<[(i64, i64, u64)]>);

impl Parts {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn push(&mut self, p: (i64, i64, u64)) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.reserve_exact(1);
        v.push(p);
        self.0 = v.into_boxed_slice();
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &(i64, i64, u64)> {
        self.0.iter()
    }

    pub(super) fn take(&mut self) -> Vec<(i64, i64, u64)> {
        std::mem::take(&mut self.0).into_vec()
    }

    pub(super) fn retain(&mut self, keep: impl FnMut(&(i64, i64, u64)) -> bool) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.retain(keep);
        self.0 = v.into_boxed_slice();
    }
}

/// The write side of metrics, behind one mutex that readers take only to copy a head: the
/// label index lives apart (a `RwLock` in [`Store`]) so that selections and regex matching
/// never hold what the committer needs.
pub(super) struct MetricsState {
    pub(super) heads: index::FxMap<u64, Head>,
    /// Timestamp of each series' last sample in a persisted chunk (absent: none).
    pub(super) persisted: index::FxMap<u64, i64>,
    /// Heads that reached `chunk_samples`, cut by [`Store::cut_due`].
    pub(super) due: Vec<u64>,
    /// Heads older than `max_head_age`, found by a checkpoint, cut whole by [`Store::cut_due`].
    pub(super) due_old: Vec<u64>,
    /// Part files (and sled entries of older folders) whose parts chunks or newer parts now
    /// hold, deleted by the next checkpoint.
    pub(super) dead_parts: parts::Dead,
    /// How many live parts each part file (and sled entry) holds.
    pub(super) live_parts: parts::Live,
    /// Lsn of the last checkpoint: heads unsaved since before it are saved by the next one.
    pub(super) last_checkpoint: u64,
    /// Where the last checkpoint record says replay starts: the next checkpoint keeps the WAL
    /// from there too (see [`Store::checkpoint`]).
    pub(super) last_replay_from: u64,
}

/// Series that [`Store::apply_metrics`] looks up ahead of the one it stores, and whose heads
/// it fetches into the cache meanwhile: enough misses in flight to cover a memory latency,
/// few enough that the block's heads stay in the first-level cache.
const AHEAD: usize = 16;

/// Full heads' worth of samples that [`Store::cut_due`] cuts at most per call (a few
/// milliseconds of encoding at the default `chunk_samples`).
const CUT_HEADS: usize = 16;

/// Label set of a series as stored: sorted by name, with `service` added from the batch when
/// the series has none.
pub fn canonical_labels<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>, service: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = labels.map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if !service.is_empty() && !out.iter().any(|(k, _)| k == "service") {
        out.push(("service".into(), service.into()));
    }
    out.sort();
    out
}

/// The [`super::index::series_hashes`] of `s` (with the batch's service label added when it
/// has none), without allocating (up to 16 labels): this runs for every series
/// of every batch, on the handlers' threads ([`Batch::hash_series`]) or, for batches that
/// come without, on the committer.
pub(super) fn hash_series(s: SeriesRef<'_>, service: &str) -> (u64, u64) {
    const ON_STACK: usize = 16;
    let mut stack = [("", ""); ON_STACK];
    let mut heap = Vec::new();
    let room = s.label_count() + 1;
    let refs: &mut [(&str, &str)] = if room <= ON_STACK {
        &mut stack[..room]
    } else {
        heap.resize(room, ("", ""));
        &mut heap
    };
    let mut n = 0;
    for label in s.labels() {
        refs[n] = label;
        n += 1;
    }
    if !service.is_empty() && !refs[..n].iter().any(|(k, _)| *k == "service") {
        refs[n] = ("service", service);
        n += 1;
    }
    let refs = &mut refs[..n];
    refs.sort_unstable();
    super::index::series_hashes(s.name(), refs.iter().copied())
}

impl Store {
    pub(super) fn apply_metrics(
        &self,
        batch: &mut Batch,
        lsn: u64,
        trusted: bool,
        fresh: bool,
    ) -> Result<u64, StoreError> {
        let Body::Metrics(mb) = &mut batch.body else { unreachable!("kind checked by caller") };
        let mut st = lock(&self.metrics);
        let st = &mut *st;
        // Lock order: metrics, then the index.
        let mut index = read(&self.index);
        // Hashed by the handler ([`Batch::hash_series`]) for this very list of series.
        let hashed = batch.series_hashes.len() == mb.len();
        let mut accepted = 0u64;
        let mut rejects = Vec::new();
        // Each series' head and the end of its bit stream are a cache miss or two (a batch
        // visits thousands of heads, and they come in a cold order), so the series are looked
        // up a block ahead and their heads' bit streams fetched while the block's samples go in:
        // `Samples::put` stalled on its first byte for a third of the committer's time.
        let mut ahead = [((0u64, 0u64), None::<u64>); AHEAD];
        let mut block = 0..0;
        for pos in 0..mb.len() {
            if pos == block.end {
                block = pos..(pos + AHEAD).min(mb.len());
                for (slot, p) in ahead.iter_mut().zip(block.clone()) {
                    let hashes = match batch.series_hashes.get(p) {
                        Some(h) if hashed => *h,
                        _ => hash_series(mb.get(p), mb.service()),
                    };
                    *slot = (hashes, index.lookup_hashed(hashes));
                }
                // A loop of its own: short, so that the CPU has many heads' misses in flight.
                for (_, id) in &ahead[..block.len()] {
                    if let Some(head) = id.and_then(|id| st.heads.get(&id)) {
                        head::prefetch_lines(head);
                        head.samples.prefetch();
                    }
                }
            }
            let (hashes, found) = ahead[pos - block.start];
            let orig = batch.item_map.get(pos).copied().unwrap_or(pos as u32);
            let s = mb.get(pos);
            if s.timestamps().is_empty() {
                continue;
            }
            // A series new to the block is looked up again: an earlier one of this batch may
            // have been it.
            let id = match found.or_else(|| index.lookup_hashed(hashes)) {
                Some(id) => id,
                None => {
                    let labels = canonical_labels(s.labels(), mb.service());
                    let service = labels.iter().find(|(k, _)| k == "service").map_or("", |(_, v)| v.as_str());
                    let have = index.service_count(service);
                    // Both series limits (a client names its own service, so the per-service
                    // one alone does not bound memory).
                    let over = if trusted {
                        None
                    } else if index.len() >= self.max_series {
                        Some(format!(
                            "new series {} would exceed limits.max_series = {} (the daemon holds {})",
                            s.name(),
                            self.max_series,
                            index.len()
                        ))
                    } else if have >= self.max_series_per_service {
                        Some(format!(
                            "new series {} would exceed limits.max_series_per_service = {} for service {service:?} (it has {have})",
                            s.name(), self.max_series_per_service
                        ))
                    } else {
                        None
                    };
                    if let Some(reason) = over {
                        rejects.push((orig, -1, "RESOURCE_EXHAUSTED", format!("series[{orig}]"), reason));
                        mb.truncate_samples(pos, 0);
                        continue;
                    }
                    let counter = pb::MetricKind::Counter as i32;
                    let kind = if s.kind() == counter { counter } else { pb::MetricKind::Gauge as i32 };
                    // The committer is the only writer: nothing changes between the read and the
                    // write lock.
                    drop(index);
                    let id = {
                        let mut ix = write(&self.index);
                        let id = ix.next_id();
                        ix.insert(id, s.name(), &labels, kind);
                        id
                    };
                    index = read(&self.index);
                    self.catalog.add(id, kind, s.name(), &labels);
                    id
                }
            };
            let head = st.heads.entry(id).or_insert_with(Head::new);
            let mut last = match head.samples.last_ts() {
                Some(t) => t,
                None => st.persisted.get(&id).copied().unwrap_or(i64::MIN),
            };
            let mut w = 0;
            let (ts, vals) = mb.samples_mut(pos);
            for j in 0..ts.len().min(vals.len()) {
                let (t, v) = (ts[j], vals[j]);
                if t > last {
                    ts[w] = t;
                    vals[w] = v;
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
            if w == 0 {
                mb.truncate_samples(pos, 0);
                continue;
            }
            if head.samples.is_empty() {
                head.started = head::ticks();
            }
            if head.unsaved_lsn().is_none() {
                head.set_unsaved_lsn(Some(lsn));
            }
            head.samples.extend(&ts[..w], &vals[..w]);
            mb.truncate_samples(pos, w);
            accepted += w as u64;
            if head.samples.len() >= self.chunk_samples
                || head.samples.first_ts().is_some_and(|f| last.saturating_sub(f) >= MAX_SPAN_MS)
            {
                st.due.push(id);
            }
        }
        mb.retain_with_samples();
        batch.series_hashes = Vec::new();
        for (item, sample, code, field, reason) in rejects {
            batch.reject(item, sample, code, field, reason);
        }
        if fresh {
            self.counters.samples.fetch_add(accepted, Ordering::Relaxed);
        }
        Ok(accepted)
    }

    /// Whether heads wait to be cut.
    pub fn has_due(&self) -> bool {
        let st = lock(&self.metrics);
        !st.due.is_empty() || !st.due_old.is_empty()
    }

    /// Cuts heads that reached `chunk_samples` into chunks, and heads past `max_head_age`
    /// whole. Called after a WAL sync, for the same reason as [`Store::persist`]. At most
    /// [`CUT_HEADS`] full heads' worth of samples a call (the committer calls it after each
    /// group): series pushed at one rate fill their heads together, and cutting thousands at
    /// once would hold one group's acks for all of them. The rest wait for the next groups.
    pub fn cut_due(&self) -> Result<(), StoreError> {
        let mut st = lock(&self.metrics);
        let st = &mut *st;
        let budget = CUT_HEADS * self.chunk_samples;
        for all in [true, false] {
            let list = if all { &mut st.due_old } else { &mut st.due };
            if list.is_empty() {
                continue;
            }
            let mut ids = std::mem::take(list);
            ids.sort_unstable();
            ids.dedup();
            let (mut n, mut take) = (0, 0);
            for id in &ids {
                n += st.heads.get(id).map_or(0, |h| h.samples.len());
                take += 1;
                if n >= budget {
                    break;
                }
            }
            let rest = ids.split_off(take);
            if all {
                st.due_old = rest;
            } else {
                st.due = rest;
            }
            self.cut(st, ids, all)?;
            if n >= budget {
                break;
            }
        }
        Ok(())
    }

    /// Cuts heads into chunks: payloads appended to the block files, then the index entries
    /// written and the heads drained, all under the metrics lock so that readers see every
    /// sample exactly once. `all`: cut whole heads (shutdown, age), else full chunks only.
    ///
    /// No sync here: until the next checkpoint records the block files' end, a crash discards
    /// these chunks and replay cuts them again from the WAL and the parts.
    pub(super) fn cut(&self, st: &mut MetricsState, mut ids: Vec<u64>, all: bool) -> Result<(), StoreError> {
        // A series can be due twice (two batches of one group filled it): cut it once.
        ids.sort_unstable();
        ids.dedup();
        let mut cuts: Vec<(u64, keys::BlockRef, keys::Summary, i64, usize)> = Vec::new();
        // The samples each cut head keeps, rebuilt into its head once the chunks are indexed.
        let mut rests: Vec<(u64, head::Samples)> = Vec::new();
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        for id in ids {
            let Some(head) = st.heads.get(&id) else { continue };
            let len = head.samples.len();
            let spanned = match (head.samples.first_ts(), head.samples.last_ts()) {
                (Some(f), Some(l)) => l.saturating_sub(f) >= MAX_SPAN_MS,
                _ => continue,
            };
            if !all && len < self.chunk_samples && !spanned {
                continue;
            }
            ts.clear();
            vals.clear();
            head.samples.decode_into(&mut ts, &mut vals);
            let mut from = 0;
            while from < len {
                // A chunk ends at `chunk_samples` or before a sample [`MAX_SPAN_MS`] after its
                // first: the index finds chunks by that bound. Without `all`, only chunks that
                // ended so are cut.
                let limit = ts[from].saturating_add(MAX_SPAN_MS);
                let in_span = ts[from..].partition_point(|&t| t < limit);
                let n = in_span.min(self.chunk_samples);
                if !all && n < self.chunk_samples && from + n == len {
                    break;
                }
                let enc = chunk::encode(&ts[from..from + n], &vals[from..from + n]);
                let loc = self.blocks.append(&enc)?;
                let last_ts = ts[from + n - 1];
                let r = keys::BlockRef { file: loc.file, offset: loc.offset, len: loc.len, count: n as u32, last_ts };
                cuts.push((id, r, summarize(&vals[from..from + n]), ts[from], n));
                from += n;
            }
            if from > 0 {
                rests.push((id, head::Samples::from_slices(&ts[from..], &vals[from..])));
            }
        }
        if cuts.is_empty() {
            return Ok(());
        }
        let entries: Vec<chunk_index::Entry> = cuts
            .iter()
            .map(|&(series, r, summary, first_ts, _)| chunk_index::Entry {
                series,
                first_ts,
                r,
                summary: Some(summary),
            })
            .collect();
        self.chunks.insert(&entries)?;
        for (id, rest) in rests {
            if let Some(head) = st.heads.get_mut(&id) {
                head.samples = rest;
            }
        }
        for &(id, r, _, _, n) in &cuts {
            if let Some(head) = st.heads.get_mut(&id) {
                head.saved = head.saved.saturating_sub(n as u32);
                head.cut_samples += n as u64;
                // Parts overlap after a merge or an open (a whole head beside the parts it
                // replaced): every one that the chunks now hold is dead, wherever it is.
                head.parts.retain(|p| {
                    let dead = p.1 <= r.last_ts;
                    if dead {
                        st.live_parts.kill(&mut st.dead_parts, id, *p);
                    }
                    !dead
                });
            }
            st.persisted.insert(id, r.last_ts);
        }
        // Only once every chunk cut from a head is counted (a head can give several): checked
        // after its first chunk, `saved` still counted saved samples that a later chunk took,
        // could equal what the head keeps, and marked the head all saved while its last
        // samples were nowhere but in the WAL. Found by the model test: an open's replay cut
        // two chunks from a head loaded from a part (17 saved samples, 16 replayed), the next
        // checkpoint let the WAL go, and the sample the head kept was lost at the open after.
        for &(id, ..) in &cuts {
            if let Some(head) = st.heads.get_mut(&id) {
                if head.saved as usize == head.samples.len() {
                    head.set_unsaved_lsn(None);
                }
            }
        }
        Ok(())
    }
}

/// The [`keys::Summary`] of a chunk's values: staleness markers left out, min and max as PromQL's `min/max_over_time` reduce them.
pub fn summarize(vals: &[f64]) -> keys::Summary {
    // Without a NaN (staleness markers are NaNs), the rules below are plain comparisons.
    if let Some((&first, rest)) = vals.split_first() {
        if !vals.iter().any(|v| v.is_nan()) {
            let (mut min, mut max) = (first, first);
            for &v in rest {
                if v < min {
                    min = v;
                }
                if v > max {
                    max = v;
                }
            }
            return keys::Summary { min, max, count: vals.len() as u32 };
        }
    }
    let mut s = keys::Summary { min: f64::NAN, max: f64::NAN, count: 0 };
    for &v in vals {
        summary_add(&mut s, v);
    }
    s
}

/// Adds one value to a summary (a staleness marker is not a value).
pub(super) fn summary_add(s: &mut keys::Summary, v: f64) {
    if v.to_bits() == super::STALE_NAN {
        return;
    }
    if s.count == 0 || v < s.min || s.min.is_nan() {
        s.min = v;
    }
    if s.count == 0 || v > s.max || s.max.is_nan() {
        s.max = v;
    }
    s.count += 1;
}

#[cfg(test)]
mod tests {
    /// A head is most of what an idle series costs: 100,000 of them in the heads map.
    #[test]
    fn a_head_stays_small() {
        let size = std::mem::size_of::<super::Head>();
        assert!(size <= 112, "a head takes {size} bytes");
    }
}
