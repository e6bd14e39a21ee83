//! Aggregate packs: one group's hour of aggregate rows (360 buckets of the default 10 s),
//! merged by bucket into a few sled values, so that a query over a day reads about a hundred
//! values instead of 8,640 rows per group.
//!
//! Checkpoints write rows (`aggs`: group, bucket, epoch). A later checkpoint packs an hour that
//! has rows once the group has rows in a newer hour and the checkpoint writes none into this
//! one itself: the rows whose epoch lies below the epoch of the rows it writes (their
//! checkpoints completed, so no open can drop them as torn) are merged, with the hour's pack if
//! it has one, into a new pack, and then deleted. A late event for a packed hour makes a row
//! again, and a later checkpoint packs the hour again. Each group's newest hour stays rows.
//!
//! Every part of a pack carries `below`: the hour's rows with an epoch below it are in the
//! pack. Readers skip such rows, so a pack and the rows it took never count twice (a crash
//! between the pack's write and the rows' deletion leaves both; the next packing deletes the
//! rows). Readers hold `Store::pack_lock` for reading while they take their memory snapshot
//! and scan, and a pack is written under it for writing: a reader's snapshot holds buckets
//! that a checkpoint may write as rows meanwhile (readers skip rows of the snapshot's epoch and
//! later), and those rows must not reach a pack before the reader is done.
//!
//! **Packed from memory.** A checkpoint that holds buckets of an hour with nothing stored yet
//! (no rows, no pack), of a group that has buckets in a later hour too, writes that hour's
//! pack at once instead of rows to be packed later: a backfilled week of sparse events wrote,
//! packed and deleted a row per event, and sled's file grew to 305 MB for about 19 MB of live
//! data (49 MB now).
//! Such a pack's `below` is the epoch its rows would have had, so later rows of the hour read
//! beside it and pack into it as any. Its checkpoint first writes a meta entry naming the
//! hours ([`keys::direct_key`]); an open whose checkpoint record is older than the entry
//! deletes those packs, since the replay rebuilds what they hold, and drops the entry
//! otherwise. They are written under the pack lock, and the buckets leave memory in the same
//! hold, so a reader sees each bucket once.
//!
//! A part: `1 | below (u64 LE) | rows (varint) | per row: bucket's index in the hour
//! (varint, ascending), length (varint) | the rows' bytes` (each row an [`Agg`] encoding).
//! Parts of one pack hold consecutive buckets and are about [`PART_BYTES`] each (sled keeps
//! values past a quarter of its segment in files of their own). Since 2026-12-07 a part is
//! stored as `2 | its length (varint) | its zstd frame` ([`super::zctx`], level [`LEVEL`]):
//! sled's log is no longer compressed, and a week of sparse aggregates took 52.8 MB of parts
//! plain against 16.3 MB through zstd. Parts stored plain (`1 ...`) are read as they are.
use super::aggs::{self, RowAt};
use super::keys::{self, put_varint, DecodeError, Reader};
use super::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[cfg(test)]
thread_local! {
    /// Whether checkpoints on this thread pack from memory (tests of the row path turn it off).
    pub(super) static FROM_MEMORY: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Buckets per pack.
pub(super) const PACK_BUCKETS: i64 = 360;
/// Hours one checkpoint takes to pack at most...
pub(super) const PACK_HOURS: usize = 4096;
/// ...and how long it packs them for, giving back the hours it did not get to. A backfilled
/// month of 40 groups leaves 27,840 hours of rows; at 128 hours a checkpoint (before
/// 2026-12-07) they took 36 minutes to pack, while queries read the rows and an open walked
/// them. An hour of sparse rows packs in about 6 ms.
const PACK_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// What a part aims at, in bytes.
pub const PART_BYTES: usize = 32 << 10;
const PART_VERSION: u8 = 1;
/// The first byte of a part stored through zstd.
const PART_ZSTD: u8 = 2;
/// zstd's level for parts: they are written off the ingest path, by checkpoints.
const LEVEL: i32 = 3;
/// The largest plain part a stored one may claim: 360 rows far past their usual size.
pub(super) const MAX_PART: usize = 64 << 20;

/// A decoded part: `below`, and its rows as (bucket start, offset, length) in its bytes.
pub(super) struct Part {
    pub below: u64,
    pub rows: Vec<(i64, usize, usize)>,
}

pub(super) fn decode_part(buf: &[u8], start: i64, bucket_ms: i64) -> Result<Part, DecodeError> {
    let mut r = Reader::new(buf, "aggregate pack");
    if r.byte()? != PART_VERSION {
        return Err(r.err("unknown version"));
    }
    let below = u64::from_le_bytes(r.bytes(8)?.try_into().expect("8 bytes"));
    let n = r.varint()? as usize;
    if n as i64 > PACK_BUCKETS {
        return Err(r.err(&format!("{n} rows in a pack of {PACK_BUCKETS} buckets")));
    }
    let mut heads = Vec::with_capacity(n);
    let mut prev = None;
    for _ in 0..n {
        let i = r.varint()? as i64;
        let len = r.varint()? as usize;
        if i >= PACK_BUCKETS || prev.is_some_and(|p| i <= p) {
            return Err(r.err(&format!("bucket index {i} after {prev:?}")));
        }
        prev = Some(i);
        heads.push((i, len));
    }
    let mut at = r.pos;
    let mut rows = Vec::with_capacity(n);
    for (i, len) in heads {
        if len > buf.len() - at {
            return Err(r.err(&format!("row of {len} bytes past the part's end")));
        }
        rows.push((start + i * bucket_ms, at, len));
        at += len;
    }
    if at != buf.len() {
        return Err(r.err(&format!("{} bytes after the last row", buf.len() - at)));
    }
    Ok(Part { below, rows })
}

/// A part as stored: through zstd where that is smaller.
fn store_part(plain: Vec<u8>) -> Vec<u8> {
    super::zctx::wrap(PART_ZSTD, &plain, LEVEL).unwrap_or(plain)
}

/// A stored part's plain form ([`store_part`]), for [`decode_part`].
pub(super) fn plain_part(stored: sled::IVec) -> Result<sled::IVec, DecodeError> {
    if stored.first() != Some(&PART_ZSTD) {
        return Ok(stored);
    }
    super::zctx::plain(&stored, MAX_PART, "aggregate pack")
}

/// The parts of a pack of `rows` (bucket start, encoded aggregate; ascending buckets).
fn encode_parts(below: u64, start: i64, bucket_ms: i64, rows: &[(i64, sled::IVec)]) -> Vec<Vec<u8>> {
    // At most 256 parts (the key's last byte): past 200, parts take more rows.
    let least = rows.len().div_ceil(200);
    let mut parts = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let mut size = 0;
        let by_size = rest
            .iter()
            .take_while(|r| {
                let fits = size == 0 || size + r.1.len() <= PART_BYTES;
                size += r.1.len();
                fits
            })
            .count();
        let n = by_size.max(least).min(rest.len());
        let (these, more) = rest.split_at(n);
        rest = more;
        let mut out = vec![PART_VERSION];
        out.extend_from_slice(&below.to_le_bytes());
        put_varint(&mut out, these.len() as u64);
        for (b, v) in these {
            put_varint(&mut out, ((b - start) / bucket_ms) as u64);
            put_varint(&mut out, v.len() as u64);
        }
        for (_, v) in these {
            out.extend_from_slice(v);
        }
        parts.push(store_part(out));
    }
    parts
}

/// The hours of `loose` (group, start; with aggregate rows) that a checkpoint may pack: each
/// group's but its newest, which stays open for the rows that keep coming (and costs a reader
/// at most an hour of rows).
pub(super) fn packable(loose: &BTreeSet<(u32, i64)>) -> impl Iterator<Item = (u32, i64)> + '_ {
    loose.iter().zip(loose.iter().skip(1)).filter(|(a, b)| a.0 == b.0).map(|(a, _)| *a)
}

/// The start of the next pack `packs` holds (`i64::MIN` for an error, which the next read
/// returns).
fn next_start(packs: &mut std::iter::Peekable<sled::Iter>) -> Result<Option<i64>, StoreError> {
    Ok(match packs.peek() {
        None => None,
        Some(Ok((k, _))) => Some(keys::decode_pack_key(k)?.1),
        Some(Err(_)) => Some(i64::MIN),
    })
}

impl Store {
    /// Whether some hour waits to be packed: the committer checkpoints for it even when no
    /// batch came.
    pub fn wants_packing(&self) -> bool {
        packable(&lock(&self.events).loose).next().is_some()
    }

    fn pack_span(&self) -> i64 {
        self.bucket_ms * PACK_BUCKETS
    }

    /// The start of the pack that holds `bucket`.
    pub(super) fn pack_start(&self, bucket: i64) -> i64 {
        bucket.div_euclid(self.pack_span()) * self.pack_span()
    }

    /// Packs each of `hours` with its rows of epochs below `below`. An hour whose pack or rows
    /// do not decode is left as it is and logged (its readers report the damage).
    pub(super) fn pack_hours(&self, hours: &[(u32, i64)], below: u64) -> Result<(), StoreError> {
        self.pack_hours_within(hours, below, PACK_TIME)
    }

    /// [`Store::pack_hours`] for `time` at most (the first hour is always packed).
    pub(super) fn pack_hours_within(
        &self,
        hours: &[(u32, i64)],
        below: u64,
        time: std::time::Duration,
    ) -> Result<(), StoreError> {
        let until = std::time::Instant::now() + time;
        for (i, &(g, start)) in hours.iter().enumerate() {
            if i > 0 && std::time::Instant::now() >= until {
                // Still loose: a later checkpoint packs them (with its own, later `below`).
                lock(&self.events).loose.extend(&hours[i..]);
                break;
            }
            if let Err(e) = self.pack_hour(g, start, below)? {
                tracing::warn!(group = g, start, "aggregates of this hour stay unpacked: {e}");
            }
        }
        Ok(())
    }

    fn pack_hour(&self, g: u32, start: i64, below: u64) -> Result<Result<(), DecodeError>, StoreError> {
        let mut old = Vec::new();
        let mut old_below = 0;
        let mut by_bucket: BTreeMap<i64, Vec<sled::IVec>> = BTreeMap::new();
        for item in self.t.agg_packs.range(keys::pack_key(g, start, 0)..=keys::pack_key(g, start, u8::MAX)) {
            let (k, stored) = item?;
            let decoded = plain_part(stored).and_then(|v| Ok((decode_part(&v, start, self.bucket_ms)?, v)));
            let (part, v) = match decoded {
                Ok(d) => d,
                Err(e) => return Ok(Err(e)),
            };
            old_below = part.below;
            for (b, at, len) in part.rows {
                by_bucket.entry(b).or_default().push(v.subslice(at, len));
            }
            old.push(k);
        }
        let mut taken = Vec::new();
        let mut fresh = 0;
        for item in self.t.aggs.range(keys::agg_key(g, start, 0)..keys::agg_key(g, start + self.pack_span(), 0)) {
            let (k, v) = item?;
            let (_, b, epoch) = keys::decode_agg_key(&k)?;
            if epoch >= below {
                continue;
            }
            taken.push(k);
            // Below the pack's own mark: in it already (its deletion did not happen).
            if epoch >= old_below {
                let v = match aggs::plain_row(v) {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                };
                by_bucket.entry(b).or_default().push(v);
                fresh += 1;
            }
        }
        if fresh > 0 {
            let mut rows = Vec::with_capacity(by_bucket.len());
            for (b, mut vs) in by_bucket {
                let v = if vs.len() == 1 {
                    vs.pop().expect("one row")
                } else {
                    let mut acc = Agg::default();
                    for v in &vs {
                        match Agg::decode(v) {
                            Ok(a) => acc.merge(&a),
                            Err(e) => return Ok(Err(e)),
                        }
                    }
                    acc.encode().into()
                };
                rows.push((b, v));
            }
            let mut batch = sled::Batch::default();
            for k in &old {
                batch.remove(k);
            }
            for (i, p) in encode_parts(below, start, self.bucket_ms, &rows).into_iter().enumerate() {
                batch.insert(&keys::pack_key(g, start, i as u8)[..], p);
            }
            let _packing = write(&self.pack_lock);
            self.t.agg_packs.apply_batch(batch)?;
        }
        // After the pack (sled applies in order; and readers skip these rows by its mark).
        let mut batch = sled::Batch::default();
        for k in taken {
            batch.remove(k);
        }
        self.t.aggs.apply_batch(batch)?;
        Ok(Ok(()))
    }

    /// Hours of memory's aggregates that may be packed straight from it (see the module
    /// docs): of a group with buckets in a later hour, in memory or in rows, and without rows
    /// of their own. Whether a pack holds them already is for [`Store::pack_from_memory`].
    pub(super) fn hours_to_pack_from_memory(&self, st: &apply::EventsState) -> BTreeSet<(u32, i64)> {
        #[cfg(test)]
        if !FROM_MEMORY.get() {
            return BTreeSet::new();
        }
        let mut hours: BTreeSet<(u32, i64)> = BTreeSet::new();
        for &(g, b) in st.aggs.keys() {
            hours.insert((g, self.pack_start(b)));
        }
        let mut out = BTreeSet::new();
        let mut newest: Option<(u32, i64)> = None;
        for &(g, h) in hours.iter().rev() {
            if newest.is_none_or(|n| n.0 != g) {
                let in_rows = st.loose.range((g, i64::MIN)..=(g, i64::MAX)).next_back().map(|r| r.1);
                newest = Some((g, in_rows.map_or(h, |r| r.max(h))));
            }
            if h < newest.expect("set above").1 && !st.loose.contains(&(g, h)) {
                out.insert((g, h));
            }
        }
        out
    }

    /// Packs `hours` of memory's aggregates (from [`Store::hours_to_pack_from_memory`]), those
    /// without a pack, with `below` = `epoch`, and takes their buckets out of memory. The
    /// caller holds the pack lock for writing and then the events lock. The meta entry of
    /// `cp_lsn` that names them comes first; each hour's buckets leave memory once its pack is
    /// written, so a failure part way leaves every bucket either packed or in memory.
    pub(super) fn pack_from_memory(
        &self,
        st: &mut apply::EventsState,
        hours: BTreeSet<(u32, i64)>,
        epoch: u64,
        cp_lsn: u64,
    ) -> Result<usize, StoreError> {
        let mut fresh = Vec::with_capacity(hours.len());
        for (g, h) in hours {
            // (Rows cannot have come since the candidates were chosen: batches wait for the
            // checkpoint's first step. Checked all the same: a pack over rows below its mark
            // would hide them.)
            if !st.loose.contains(&(g, h))
                && self.t.agg_packs.range(keys::pack_key(g, h, 0)..=keys::pack_key(g, h, u8::MAX)).next().is_none()
            {
                fresh.push((g, h));
            }
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        let mut buckets: BTreeMap<(u32, i64), Vec<i64>> = BTreeMap::new();
        for &(g, b) in st.aggs.keys() {
            let h = (g, self.pack_start(b));
            if fresh.binary_search(&h).is_ok() {
                buckets.entry(h).or_default().push(b);
            }
        }
        self.t.meta.insert(keys::direct_key(cp_lsn), keys::encode_hours(&fresh))?;
        for ((g, h), mut bs) in buckets {
            bs.sort_unstable();
            let rows: Vec<(i64, sled::IVec)> =
                bs.iter().map(|&b| (b, st.aggs.get_mut(&(g, b)).expect("a bucket just listed").encoded())).collect();
            let mut batch = sled::Batch::default();
            for (i, p) in encode_parts(epoch, h, self.bucket_ms, &rows).into_iter().enumerate() {
                batch.insert(&keys::pack_key(g, h, i as u8)[..], p);
            }
            self.t.agg_packs.apply_batch(batch)?;
            for b in bs {
                st.aggs.remove(&(g, b));
            }
        }
        Ok(fresh.len())
    }

    /// At the open: deletes the packs that checkpoints after the record of lsn `record` packed
    /// from memory (the replay rebuilt their buckets), and every meta entry naming such packs.
    pub(super) fn drop_torn_memory_packs(&self, record: u64) -> Result<(), StoreError> {
        for item in self.t.meta.scan_prefix(keys::DIRECT_PREFIX) {
            let (k, v) = item?;
            if keys::decode_direct_key(&k)? > record {
                let mut batch = sled::Batch::default();
                for (g, h) in keys::decode_hours(&v)? {
                    for part in self.t.agg_packs.range(keys::pack_key(g, h, 0)..=keys::pack_key(g, h, u8::MAX)) {
                        batch.remove(part?.0);
                    }
                }
                self.t.agg_packs.apply_batch(batch)?;
            }
            self.t.meta.remove(k)?;
        }
        Ok(())
    }

    /// After the record of lsn `record` is durable: the entries of checkpoints up to it.
    pub(super) fn forget_memory_packs(&self, record: u64) -> Result<(), StoreError> {
        for item in self.t.meta.range(keys::direct_key(0)..=keys::direct_key(record)) {
            self.t.meta.remove(item?.0)?;
        }
        Ok(())
    }

    /// Deletes packs whose every bucket is before `cut`; returns how many parts went.
    pub(super) fn expire_packs(&self, groups: &[u32], cut: i64) -> Result<u64, StoreError> {
        let mut n = 0;
        let end = self.pack_start(cut) - self.pack_span();
        for &g in groups {
            for item in self.t.agg_packs.range(keys::pack_key(g, i64::MIN, 0)..=keys::pack_key(g, end, u8::MAX)) {
                self.t.agg_packs.remove(item?.0)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Calls `f(bucket, row)` for group `g`'s stored rows with `b0 <= bucket <= b1` in bucket
    /// order (a bucket can have several), packed and not: rows of epoch `epoch` or later are
    /// left out (the caller's memory snapshot holds them), and so are rows that a pack holds.
    /// Stops when `f` returns false (returns Ok(false) then).
    pub(super) fn scan_group_aggs(
        &self,
        g: u32,
        b0: i64,
        b1: i64,
        epoch: u64,
        mut f: impl FnMut(i64, RowAt<'_>) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let mut packs = self
            .t
            .agg_packs
            .range(keys::pack_key(g, self.pack_start(b0), 0)..=keys::pack_key(g, self.pack_start(b1), u8::MAX))
            .peekable();
        // Rows of the parts read so far not yet passed on (bucket, part, range in it: no
        // reference count per row), the parts they lie in, and the mark of the latest pack.
        let mut queue: VecDeque<(i64, usize, usize, usize)> = VecDeque::new();
        let mut parts: Vec<sled::IVec> = Vec::new();
        let mut mark = (i64::MIN, 0u64);
        for item in self.t.aggs.range(keys::agg_key(g, b0, 0)..=keys::agg_key(g, b1, u64::MAX)) {
            let (k, v) = item?;
            let (_, bucket, row_epoch) = keys::decode_agg_key(&k)?;
            let start = self.pack_start(bucket);
            // Packs up to this row's hour, one at a time (so that at most one hour's rows wait
            // in the queue), their rows passed on up to this row's bucket.
            loop {
                while queue.front().is_some_and(|r| r.0 <= bucket) {
                    let (b, part, at, len) = queue.pop_front().expect("a queued row");
                    if !f(b, RowAt { value: &parts[part], at, len })? {
                        return Ok(false);
                    }
                }
                match next_start(&mut packs)? {
                    Some(s) if s <= start => {
                        self.load_parts(&mut packs, s, (b0, b1), &mut queue, &mut parts, &mut mark)?
                    }
                    _ => break,
                }
            }
            let packed = mark.0 == start && row_epoch < mark.1;
            if row_epoch < epoch && !packed && !f(bucket, RowAt::whole(&aggs::plain_row(v)?))? {
                return Ok(false);
            }
        }
        loop {
            while let Some((b, part, at, len)) = queue.pop_front() {
                if !f(b, RowAt { value: &parts[part], at, len })? {
                    return Ok(false);
                }
            }
            let Some(next) = next_start(&mut packs)? else { return Ok(true) };
            self.load_parts(&mut packs, next, (b0, b1), &mut queue, &mut parts, &mut mark)?;
        }
    }

    /// Reads the parts of the packs that start at or before `upto` (the next one, as callers
    /// use it), queueing their rows within
    /// `range` and noting the last pack's (start, below).
    fn load_parts(
        &self,
        packs: &mut std::iter::Peekable<sled::Iter>,
        upto: i64,
        range: (i64, i64),
        queue: &mut VecDeque<(i64, usize, usize, usize)>,
        parts: &mut Vec<sled::IVec>,
        mark: &mut (i64, u64),
    ) -> Result<(), StoreError> {
        // Parts whose rows have all been passed on are let go.
        if queue.is_empty() {
            parts.clear();
        }
        let limit = keys::ts_to_bytes(upto);
        while let Some(item) =
            packs.next_if(|it| it.as_ref().map_or(true, |(k, _)| k.len() < 12 || k[4..12] <= limit[..]))
        {
            let (k, v) = item?;
            let (_, start, _) = keys::decode_pack_key(&k)?;
            let v = plain_part(v)?;
            let part = decode_part(&v, start, self.bucket_ms)?;
            *mark = (start, part.below);
            for (b, at, len) in part.rows {
                if b >= range.0 && b <= range.1 {
                    queue.push_back((b, parts.len(), at, len));
                }
            }
            parts.push(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_split_near_their_size() {
        let bucket = 10_000;
        let start = 36_000_000;
        let rows: Vec<(i64, sled::IVec)> =
            (0..PACK_BUCKETS).step_by(2).map(|i| (start + i * bucket, vec![i as u8; 700].into())).collect();
        let parts = encode_parts(7, start, bucket, &rows);
        assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= PART_BYTES + 64), "{}", parts.len());
        let mut back = Vec::new();
        assert!(parts.iter().all(|p| p[0] == PART_ZSTD), "rows of one repeated byte compress");
        for p in &parts {
            let p = plain_part(p.clone().into()).unwrap();
            let d = decode_part(&p, start, bucket).unwrap();
            assert_eq!(d.below, 7);
            back.extend(d.rows.iter().map(|&(b, at, len)| (b, sled::IVec::from(&p[at..at + len]))));
        }
        assert_eq!(back, rows);
        let mut cut = parts[0].clone();
        cut.pop();
        assert!(plain_part(cut.into()).is_err());
        let mut cut = plain_part(parts[0].clone().into()).unwrap().to_vec();
        cut.pop();
        assert!(decode_part(&cut, start, bucket).is_err());
        // A part stored plain (before 2026-12-07) reads as it is.
        let plain = plain_part(parts[0].clone().into()).unwrap();
        assert_eq!(plain[0], PART_VERSION);
        assert_eq!(plain_part(plain.clone()).unwrap(), plain);
        // A damaged length is refused before anything is allocated for it.
        let mut huge = vec![PART_ZSTD];
        put_varint(&mut huge, 1 << 40);
        assert!(plain_part(huge.into()).is_err());
        // Rows too big for 256 parts of the usual size get bigger parts.
        let big: Vec<(i64, sled::IVec)> =
            (0..PACK_BUCKETS).map(|i| (start + i * bucket, vec![1u8; PART_BYTES].into())).collect();
        assert!(encode_parts(1, start, bucket, &big).len() <= 256);
    }
}
