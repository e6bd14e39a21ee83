//! The metric chunk index: where each stored chunk lies in the block files, with its
//! [`Summary`].
//!
//! sled costs about 150 bytes of its file per entry, however small the entry: measured with
//! sled 0.34.7 and its zstd compression, 10,000 entries of 64 bytes took 1.4 MB and 100,000
//! took 16 MB. That is as much as a chunk of 130 samples. So entries are grouped. One sled value
//! holds the chunks of [`GROUP`] consecutive series ids whose last sample falls in one
//! [`BUCKET_MS`] window. It is keyed `series id >> GROUP_BITS, bucket start` (the layout of
//! [`keys::chunk_key`]).
//!
//! A chunk spans less than [`MAX_SPAN_MS`]: the memtable cuts it there. So the chunks of a
//! series that can hold samples in `[start, end]` lie in the buckets from `start`'s to
//! `end + MAX_SPAN_MS`'s, and a query up to now reads one or two values per series, whatever
//! the retention. Chunks moved from an older folder's `chunks` tree may span more. The widest
//! span the index holds is kept in the meta tree, and readers look back that far.
//!
//! Value: `version | per slot (GROUP of them): byte length of its entries (varint) | the slots'
//! entries`. A slot holds one series' entries, ordered by first timestamp. Each entry is
//! `first ts | span (last − first) | file | offset | length | samples | flags | summary?`:
//! - the first ts is zigzagged, from the bucket start for a slot's first entry and from the
//!   previous entry's last ts after it;
//! - the summary is `count (absent when it equals samples) | min | max`. Each of min and max is
//!   an integer (zigzag; max as its difference from an integer min) or the 8 IEEE bytes, and
//!   the flags say which.
//!
//! Readers decode only their series' slot.
//!
//! Writers read, change and rewrite a value under one mutex. They are the committer's cuts,
//! retention, and the open. Crash safety is the block files' (see [`super::blocks`]): entries
//! pointing past the last checkpoint's block end are dropped at open ([`ChunkIndex::load`]).
use super::blocks::Blocks;
use super::keys::{self, put_varint, unzigzag, zigzag, BlockRef, DecodeError, Reader, Summary};
use super::{index::FxMap, lock, Sliced, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

pub const GROUP_BITS: u32 = 5;
/// Series per value.
pub const GROUP: usize = 1 << GROUP_BITS;
/// The window of last timestamps that one value covers.
pub const BUCKET_MS: i64 = 2 * 3600 * 1000;
/// A chunk's span (last − first timestamp) stays below this.
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
const VERSION: u8 = 1;
/// Meta tree key: the widest span the index holds, when wider than [`MAX_SPAN_MS`].
const SPAN_KEY: &[u8] = b"chunk_span";
/// Entries an older folder's tree is moved in at a time.
const MIGRATE_BATCH: usize = 4096;

const HAS_SUMMARY: u8 = 1;
const MIN_INT: u8 = 2;
const MAX_INT: u8 = 4;
/// The summary counts every sample (no staleness marker among them).
const COUNT_ALL: u8 = 8;

/// One chunk's index entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub series: u64,
    pub first_ts: i64,
    pub r: BlockRef,
    pub summary: Option<Summary>,
}

fn bucket_of(ts: i64) -> i64 {
    ts.div_euclid(BUCKET_MS).saturating_mul(BUCKET_MS)
}

fn key_of(e: &Entry) -> (u64, i64) {
    (e.series >> GROUP_BITS, bucket_of(e.r.last_ts))
}

fn slot_of(series: u64) -> usize {
    series as usize & (GROUP - 1)
}

/// `v` as an integer when it is one that f64 holds exactly (not -0).
fn as_int(v: f64) -> Option<i64> {
    (v.fract() == 0.0 && v.abs() < (1u64 << 53) as f64 && !(v == 0.0 && v.is_sign_negative())).then_some(v as i64)
}

fn encode_value(bucket: i64, slots: &[Vec<Entry>]) -> Vec<u8> {
    let mut bodies = Vec::with_capacity(GROUP);
    let mut total = 0;
    for slot in slots {
        let mut b = Vec::with_capacity(slot.len() * 24);
        let mut prev = bucket;
        for e in slot {
            let r = &e.r;
            put_varint(&mut b, zigzag(e.first_ts.wrapping_sub(prev)));
            put_varint(&mut b, r.last_ts.wrapping_sub(e.first_ts) as u64);
            put_varint(&mut b, u64::from(r.file));
            put_varint(&mut b, r.offset);
            put_varint(&mut b, u64::from(r.len));
            put_varint(&mut b, u64::from(r.count));
            prev = r.last_ts;
            let Some(s) = e.summary else {
                b.push(0);
                continue;
            };
            let (min, max) = (as_int(s.min), as_int(s.max));
            let flags = HAS_SUMMARY
                | if min.is_some() { MIN_INT } else { 0 }
                | if max.is_some() { MAX_INT } else { 0 }
                | if s.count == r.count { COUNT_ALL } else { 0 };
            b.push(flags);
            if s.count != r.count {
                put_varint(&mut b, u64::from(s.count));
            }
            match min {
                Some(m) => put_varint(&mut b, zigzag(m)),
                None => b.extend_from_slice(&s.min.to_le_bytes()),
            }
            match (max, min) {
                (Some(x), Some(m)) => put_varint(&mut b, zigzag(x - m)),
                (Some(x), None) => put_varint(&mut b, zigzag(x)),
                (None, _) => b.extend_from_slice(&s.max.to_le_bytes()),
            }
        }
        total += b.len();
        bodies.push(b);
    }
    let mut out = Vec::with_capacity(1 + GROUP + total);
    out.push(VERSION);
    for b in &bodies {
        put_varint(&mut out, b.len() as u64);
    }
    for b in bodies {
        out.extend_from_slice(&b);
    }
    out
}

/// The byte range of each slot in a value.
fn slot_ranges(v: &[u8]) -> Result<[(usize, usize); GROUP], DecodeError> {
    let mut r = Reader::new(v, "chunk index value");
    if r.byte()? != VERSION {
        return Err(r.err("unknown version"));
    }
    let mut lens = [0usize; GROUP];
    for l in &mut lens {
        *l = usize::try_from(r.varint()?).map_err(|_| r.err("slot length"))?;
    }
    let mut at = r.pos;
    let mut out = [(0, 0); GROUP];
    for (o, l) in out.iter_mut().zip(lens) {
        let end = at.checked_add(l).filter(|&e| e <= v.len()).ok_or_else(|| r.err("slot past the value's end"))?;
        *o = (at, end);
        at = end;
    }
    if at != v.len() {
        return Err(r.err(&format!("{} bytes after the last slot", v.len() - at)));
    }
    Ok(out)
}

fn decode_slot(bytes: &[u8], bucket: i64, series: u64, out: &mut Vec<Entry>) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes, "chunk index entry");
    let mut prev = bucket;
    let u32_of = |r: &Reader, v: u64, what: &str| u32::try_from(v).map_err(|_| r.err(what));
    while !r.done() {
        let first_ts = prev.wrapping_add(unzigzag(r.varint()?));
        let span = r.varint()?;
        if span > i64::MAX as u64 {
            return Err(r.err("span"));
        }
        let last_ts = first_ts.wrapping_add(span as i64);
        let v = r.varint()?;
        let file = u32_of(&r, v, "file")?;
        let offset = r.varint()?;
        let v = r.varint()?;
        let len = u32_of(&r, v, "length")?;
        let v = r.varint()?;
        let count = u32_of(&r, v, "count")?;
        let flags = r.byte()?;
        let summary = if flags & HAS_SUMMARY == 0 {
            None
        } else {
            let scount = if flags & COUNT_ALL != 0 {
                count
            } else {
                let v = r.varint()?;
                u32_of(&r, v, "summary count")?
            };
            let min_i = (flags & MIN_INT != 0).then(|| r.varint().map(unzigzag)).transpose()?;
            let min = match min_i {
                Some(m) => m as f64,
                None => f64::from_le_bytes(r.bytes(8)?.try_into().expect("8 bytes")),
            };
            let max = if flags & MAX_INT != 0 {
                let d = unzigzag(r.varint()?);
                min_i.map_or(d, |m| m.wrapping_add(d)) as f64
            } else {
                f64::from_le_bytes(r.bytes(8)?.try_into().expect("8 bytes"))
            };
            Some(Summary { min, max, count: scount })
        };
        out.push(Entry { series, first_ts, r: BlockRef { file, offset, len, count, last_ts }, summary });
        prev = last_ts;
    }
    Ok(())
}

fn decode_value(v: &[u8], group: u64, bucket: i64) -> Result<Vec<Vec<Entry>>, DecodeError> {
    let ranges = slot_ranges(v)?;
    let mut slots = Vec::with_capacity(GROUP);
    for (i, (a, b)) in ranges.into_iter().enumerate() {
        let mut s = Vec::new();
        decode_slot(&v[a..b], bucket, group << GROUP_BITS | i as u64, &mut s)?;
        slots.push(s);
    }
    Ok(slots)
}

pub struct ChunkIndex {
    tree: sled::Tree,
    meta: sled::Tree,
    /// The widest span of a chunk the index may hold (exclusive).
    span: AtomicI64,
    /// Held by every read-change-write of a value.
    write: Mutex<()>,
}

impl ChunkIndex {
    pub fn new(tree: sled::Tree, meta: sled::Tree) -> Result<ChunkIndex, StoreError> {
        let span = match meta.get(SPAN_KEY)? {
            Some(v) => {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                    StoreError::Decode(DecodeError { what: "chunk span", detail: format!("{} bytes", v.len()) })
                })?;
                i64::from_be_bytes(b).max(MAX_SPAN_MS)
            }
            None => MAX_SPAN_MS,
        };
        Ok(ChunkIndex { tree, meta, span: AtomicI64::new(span), write: Mutex::new(()) })
    }

    /// Adds entries (replacing any of the same series and first timestamp).
    pub fn insert(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let _w = lock(&self.write);
        let widest = entries.iter().map(|e| e.r.last_ts.saturating_sub(e.first_ts)).max().unwrap_or(0);
        if widest >= self.span.load(Ordering::Relaxed) {
            let span = widest.saturating_add(1);
            self.meta.insert(SPAN_KEY, &span.to_be_bytes())?;
            self.span.store(span, Ordering::Relaxed);
        }
        let mut by_key: BTreeMap<(u64, i64), Vec<&Entry>> = BTreeMap::new();
        for e in entries {
            by_key.entry(key_of(e)).or_default().push(e);
        }
        let mut b = Sliced::new(&self.tree);
        for ((g, bucket), es) in by_key {
            let k = keys::chunk_key(g, bucket);
            let mut slots = match self.tree.get(k)? {
                Some(v) => decode_value(&v, g, bucket)?,
                None => vec![Vec::new(); GROUP],
            };
            for e in es {
                let slot = &mut slots[slot_of(e.series)];
                match slot.binary_search_by_key(&e.first_ts, |x| x.first_ts) {
                    Ok(i) => slot[i] = *e,
                    Err(i) => slot.insert(i, *e),
                }
            }
            b.insert(&k, encode_value(bucket, &slots))?;
        }
        b.finish()?;
        Ok(())
    }

    /// The entries of `series` whose chunks can hold samples in `[start, end]`, by first
    /// timestamp.
    pub fn series(&self, series: u64, start: i64, end: i64) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        if end < start {
            return Ok(out);
        }
        let g = series >> GROUP_BITS;
        let span = self.span.load(Ordering::Relaxed);
        let lo = keys::chunk_key(g, bucket_of(start));
        let hi = keys::chunk_key(g, bucket_of(end.saturating_add(span)));
        for item in self.tree.range(lo..=hi) {
            let (k, v) = item?;
            let bucket = keys::decode_chunk_key(&k)?.1;
            let (a, b) = slot_ranges(&v)?[slot_of(series)];
            decode_slot(&v[a..b], bucket, series, &mut out)?;
        }
        out.retain(|e| e.r.last_ts >= start && e.first_ts <= end);
        out.sort_unstable_by_key(|e| e.first_ts);
        Ok(out)
    }

    /// Removes the entries of `groups` (series id >> [`GROUP_BITS`]) whose last sample is
    /// before `cut`, releasing their payloads. Returns how many.
    pub fn expire(&self, groups: &[u64], cut: i64, blocks: &Blocks) -> Result<u64, StoreError> {
        let mut n = 0;
        for &g in groups {
            let _w = lock(&self.write);
            let values: Vec<(sled::IVec, sled::IVec)> = self
                .tree
                .range(keys::chunk_key(g, i64::MIN)..=keys::chunk_key(g, bucket_of(cut)))
                .collect::<Result<_, _>>()?;
            let mut b = Sliced::new(&self.tree);
            for (k, v) in values {
                let bucket = keys::decode_chunk_key(&k)?.1;
                let mut slots = decode_value(&v, g, bucket)?;
                let mut left = 0;
                for slot in &mut slots {
                    slot.retain(|e| {
                        let keep = e.r.last_ts >= cut;
                        if !keep {
                            blocks.release(&e.r.loc());
                            n += 1;
                        }
                        keep
                    });
                    left += slot.len();
                }
                if left == 0 {
                    b.remove(&k)?;
                } else {
                    b.insert(&k, encode_value(bucket, &slots))?;
                }
            }
            b.finish()?;
        }
        Ok(n)
    }

    /// At open: drops the entries that point past `end` (written after the last checkpoint,
    /// whose bytes the open cuts), and for the rest counts each block file's live payloads and
    /// each series' newest persisted sample.
    pub fn load(
        &self,
        end: Option<(u32, u64)>,
        live: &mut HashMap<u32, u64>,
        persisted: &mut FxMap<u64, i64>,
    ) -> Result<(), StoreError> {
        let _w = lock(&self.write);
        let mut changed = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            let (g, bucket) = keys::decode_chunk_key(&k)?;
            let mut slots = decode_value(&v, g, bucket)?;
            let mut dropped = false;
            for slot in &mut slots {
                slot.retain(|e| {
                    let keep = !end.is_some_and(|end| Blocks::is_after(&e.r.loc(), end));
                    if keep {
                        *live.entry(e.r.file).or_default() += 1;
                        let p = persisted.entry(e.series).or_insert(i64::MIN);
                        *p = (*p).max(e.r.last_ts);
                    }
                    dropped |= !keep;
                    keep
                });
            }
            if dropped {
                changed.push((k, bucket, slots));
            }
        }
        let mut b = Sliced::new(&self.tree);
        for (k, bucket, slots) in changed {
            if slots.iter().all(Vec::is_empty) {
                b.remove(&k)?;
            } else {
                b.insert(&k, encode_value(bucket, &slots))?;
            }
        }
        b.finish()?;
        Ok(())
    }

    /// Moves an older folder's `chunks` tree (one sled entry per chunk: key
    /// [`keys::chunk_key`], value [`keys::encode_chunk_ref`] or a bare block reference) into
    /// the index, a batch at a time: each batch's entries are written before its keys are
    /// removed, and sled applies in order, so a crash leaves at worst entries in both, which
    /// the next open moves again (the same entries, replaced). Returns how many moved.
    pub fn migrate(&self, legacy: &sled::Tree) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut entries = Vec::with_capacity(MIGRATE_BATCH);
        let mut moved = Vec::with_capacity(MIGRATE_BATCH);
        let mut it = legacy.iter();
        loop {
            let item = it.next().transpose()?;
            if let Some((k, v)) = &item {
                let (series, first_ts) = keys::decode_chunk_key(k)?;
                let r = keys::decode_block_ref(v)?;
                entries.push(Entry { series, first_ts, r, summary: keys::decode_summary(v) });
                moved.push(k.clone());
            }
            if entries.len() == MIGRATE_BATCH || (item.is_none() && !entries.is_empty()) {
                self.insert(&entries)?;
                let mut b = Sliced::new(legacy);
                for k in &moved {
                    b.remove(k)?;
                }
                b.finish()?;
                n += entries.len() as u64;
                entries.clear();
                moved.clear();
            }
            if item.is_none() {
                return Ok(n);
            }
        }
    }

    /// Every entry, by key (for tests and checks).
    #[cfg(test)]
    pub fn all(&self) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            let (g, bucket) = keys::decode_chunk_key(&k)?;
            out.extend(decode_value(&v, g, bucket)?.into_iter().flatten());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(series: u64, first_ts: i64, last_ts: i64, summary: Option<Summary>) -> Entry {
        Entry { series, first_ts, r: BlockRef { file: 3, offset: 1 << 30, len: 4000, count: 720, last_ts }, summary }
    }

    fn same(a: &Entry, b: &Entry) -> bool {
        let s = |s: &Option<Summary>| s.map(|s| (s.min.to_bits(), s.max.to_bits(), s.count));
        a.series == b.series && a.first_ts == b.first_ts && a.r == b.r && s(&a.summary) == s(&b.summary)
    }

    proptest! {
        #[test]
        fn values_round_trip(
            raw in proptest::collection::vec(
                (0..GROUP as u64, -1i64 << 40..1i64 << 40, 0..MAX_SPAN_MS, any::<u32>(), any::<u64>(),
                 any::<u32>(), any::<u32>(), proptest::option::of((any::<f64>(), any::<f64>(), -1000i64..1000, any::<u32>()))),
                0..80)
        ) {
            let g = 7u64;
            let bucket = 123 * BUCKET_MS;
            let mut slots = vec![Vec::new(); GROUP];
            for (slot, first, span, file, offset, len, count, s) in raw {
                let summary = s.map(|(a, b, i, c)| {
                    // Integers, floats and mixes of both.
                    let min = if c % 3 == 0 { i as f64 } else { a };
                    let max = if c % 2 == 0 { (i + 5) as f64 } else { b };
                    Summary { min, max, count: if c % 5 == 0 { count } else { c } }
                });
                let e = Entry { series: g << GROUP_BITS | slot, first_ts: bucket + first, r: BlockRef { file, offset, len, count, last_ts: bucket + first + span }, summary };
                slots[slot as usize].push(e);
            }
            for s in &mut slots {
                s.sort_by_key(|e| e.first_ts);
            }
            let v = encode_value(bucket, &slots);
            let back = decode_value(&v, g, bucket).unwrap();
            for (a, b) in slots.iter().zip(&back) {
                prop_assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(b) {
                    prop_assert!(same(x, y), "{:?} != {:?}", x, y);
                }
            }
        }

        #[test]
        fn damaged_values_are_errors_not_panics(v in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_value(&v, 1, 0);
        }
    }

    #[test]
    fn minus_zero_and_nan_summaries_keep_their_bits() {
        let s = Summary { min: -0.0, max: f64::NAN, count: 3 };
        let slots: Vec<Vec<Entry>> =
            (0..GROUP).map(|i| if i == 4 { vec![entry(4, 10, 20, Some(s))] } else { Vec::new() }).collect();
        let back = decode_value(&encode_value(0, &slots), 0, 0).unwrap();
        let got = back[4][0].summary.unwrap();
        assert_eq!(got.min.to_bits(), (-0.0f64).to_bits());
        assert!(got.max.is_nan());
    }

    fn index() -> (tempfile::TempDir, ChunkIndex) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let ix = ChunkIndex::new(db.open_tree("chunk_index").unwrap(), db.open_tree("meta").unwrap()).unwrap();
        (dir, ix)
    }

    #[test]
    fn a_series_finds_its_chunks_in_range_across_buckets() {
        let (_d, ix) = index();
        let h = 3600 * 1000;
        // Series 33 (group 1), chunks of 90 minutes back to back; series 34 beside it.
        let mut es = Vec::new();
        for i in 0..10 {
            es.push(entry(33, i * 90 * 60_000, i * 90 * 60_000 + 89 * 60_000, None));
            es.push(entry(34, i * 90 * 60_000 + 1, i * 90 * 60_000 + 2, None));
        }
        ix.insert(&es).unwrap();
        let got = ix.series(33, 4 * h, 5 * h).unwrap();
        let firsts: Vec<i64> = got.iter().map(|e| e.first_ts).collect();
        assert_eq!(firsts, vec![180 * 60_000, 270 * 60_000]);
        assert!(got.iter().all(|e| e.series == 33));
        assert_eq!(ix.series(33, 0, i64::MAX).unwrap().len(), 10);
        assert!(ix.series(32, 0, i64::MAX).unwrap().is_empty());
        // Inserting the same chunk again replaces it.
        ix.insert(&es[..2]).unwrap();
        assert_eq!(ix.all().unwrap().len(), 20);
    }

    #[test]
    fn a_wide_chunk_from_an_older_folder_is_still_found() {
        let (_d, ix) = index();
        let day = 24 * 3600 * 1000;
        ix.insert(&[entry(1, 0, 3 * day, None)]).unwrap();
        assert_eq!(ix.series(1, day, day + 1).unwrap().len(), 1);
        // The span outlives the index in memory.
        let span = ix.span.load(Ordering::Relaxed);
        let again = ChunkIndex::new(ix.tree.clone(), ix.meta.clone()).unwrap();
        assert_eq!(again.span.load(Ordering::Relaxed), span);
    }
}
