//! Raw logs and inference events, stored in groups: the records one WAL record brought for one
//! 10-second bucket form one group, appended to the block files; sled keeps one index entry
//! per group (`(bucket, lsn) → location`) and the request-id index. One sled insert per record
//! capped event ingest near 75k events/s (sled copies a node and faults in pages per insert);
//! per group, the rest of the pipeline runs near 1M/s.
//!
//! A record's identity stays its time key `(ts, lsn, index in batch)`: page tokens use it, and
//! it finds the group `(slot(ts), lsn)` (the request-id index keeps the slot, lsn and index).
//! Writes are idempotent per WAL record: a replay rewrites the same group keys (releasing the
//! old block space).
//!
//! Group layouts, told apart by their first bytes:
//! - inference events and log records, by column behind `0` and the layout's number
//!   ([`super::columns`]: `0 1` since 2026-12-05, `0 2` since 2026-12-06);
//! - groups written before 2026-12-05, row by row: `count`, then per record `index | length | bytes`
//!   (LEB128 integers, the record's protobuf bytes); stored zstd-compressed behind the bytes
//!   `0 0` and the plain length when that is smaller, else as is (`count` is never 0, so its
//!   first byte tells the two apart). Groups stored Snappy-compressed behind a single `0`
//!   (before zstd), and plain ones (before compression), read as before.
use super::blocks::Blocks;
use super::columns::{self, Columnar};
use super::keys::{self, BlockRef, DecodeError, Reader};
use super::rid_block;
use super::rid_index::RidIndex;
use super::StoreError;
use prost::Message;
use std::collections::{BTreeMap, HashMap};

pub const SLOT_MS: i64 = 10_000;

pub fn slot(ts: i64) -> i64 {
    ts.div_euclid(SLOT_MS) * SLOT_MS
}

/// One WAL record's raw records grouped by bucket and encoded as stored, with their
/// request-id entries: everything that does not depend on the record's lsn, so that the
/// handlers make it in parallel ([`super::Batch::prepare_raw`]) and the committer only writes.
pub struct Grouped {
    /// (bucket, record count, newest ts, the group as stored).
    groups: Vec<(i64, u32, i64, Vec<u8>)>,
    /// (request-id hash, ts, index in the WAL record) of the records that carry one.
    ids: Vec<(u64, i64, u32)>,
    /// Records in all.
    pub count: usize,
}

/// A kind of raw record: both are stored by column ([`super::columns`]). On the benchmark's
/// data (`cargo bench --bench events_disk`, with `--logs` for log records), an event took 68
/// bytes by row and takes 31 by column (half of it its random request id); a log record 38
/// by row and 23 by column.
pub trait Raw: Message + Default + Columnar {}

impl<T: Message + Default + Columnar> Raw for T {}

/// Groups a WAL record's raw records by bucket, in their stored form, for [`write`].
pub fn group<M: Raw>(records: &[M]) -> Grouped {
    let mut by_slot: BTreeMap<i64, Vec<(u32, &M)>> = BTreeMap::new();
    let mut ids = Vec::new();
    for (i, r) in records.iter().enumerate() {
        by_slot.entry(slot(r.ts())).or_default().push((i as u32, r));
        if !r.rid().is_empty() {
            ids.push((super::rid_index::hash(r.rid()), r.ts(), i as u32));
        }
    }
    let groups = by_slot
        .into_iter()
        .map(|(b, rs)| {
            let max_ts = rs.iter().map(|(_, r)| r.ts()).max().unwrap_or(i64::MIN);
            let mut stored = vec![0, columns::LAYOUT];
            columns::encode(&rs, &mut stored);
            (b, rs.len() as u32, max_ts, stored)
        })
        .collect();
    Grouped { groups, ids, count: records.len() }
}

/// Writes one WAL record's raw records, grouped by [`group`].
pub fn write(blocks: &Blocks, main: &sled::Tree, index: &RidIndex, lsn: u64, g: &Grouped) -> Result<(), StoreError> {
    for (b, count, max_ts, stored) in &g.groups {
        let l = blocks.append(stored)?;
        let r = BlockRef { file: l.file, offset: l.offset, len: l.len, count: *count, last_ts: *max_ts };
        if let Some(prev) = main.insert(keys::raw_group_key(*b, lsn), &keys::encode_block_ref(&r)[..])? {
            // A replayed record rewrote its group: the old copy is dead space.
            blocks.release(&keys::decode_block_ref(&prev)?.loc());
        }
    }
    let ids: Vec<_> = g.ids.iter().map(|&(h, ts, i)| (h, keys::time_key(ts, lsn, i), ts)).collect();
    index.add(&ids);
    Ok(())
}

/// zstd's level for row groups (written before groups were stored by column).
#[cfg(test)]
const ZSTD_LEVEL: i32 = 1;

/// A group as stored row by row: `0 0`, its plain length and its zstd form when that is
/// smaller, else itself. (`0` and a Snappy form: groups written before zstd; Snappy's form
/// begins with the plain length, never below 3, so the second byte tells it from `0 0` and
/// from `0 1` and `0 2`, groups stored by column.)
#[cfg(test)]
fn compress(plain: Vec<u8>) -> Vec<u8> {
    let mut out = vec![0u8, 0];
    keys::put_varint(&mut out, plain.len() as u64);
    match zstd::block::compress(&plain, ZSTD_LEVEL) {
        Ok(z) if out.len() + z.len() < plain.len() => {
            out.extend_from_slice(&z);
            out
        }
        _ => plain,
    }
}

/// A group's plain bytes from what the block files hold ([`compress`]).
fn inflate(stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    if stored.first() != Some(&0) {
        return Ok(stored);
    }
    let bad = |detail: String| StoreError::Decode(DecodeError { what: "raw record group", detail });
    let too_big = |len: usize| bad(format!("claims {len} bytes, more than one WAL record brings"));
    if stored.get(1) == Some(&0) {
        let mut r = Reader::new(&stored[2..], "raw record group");
        let len = r.varint().map_err(|e| bad(e.detail))? as usize;
        if len > super::wal::MAX_RECORD {
            return Err(too_big(len));
        }
        let plain = zstd::block::decompress(&stored[2 + r.pos..], len).map_err(|e| bad(format!("zstd: {e}")))?;
        if plain.len() != len {
            return Err(bad(format!("{} bytes where its header says {len}", plain.len())));
        }
        return Ok(plain);
    }
    let len = snap::raw::decompress_len(&stored[1..]).map_err(|e| bad(e.to_string()))?;
    if len > super::wal::MAX_RECORD {
        return Err(too_big(len));
    }
    snap::raw::Decoder::new().decompress_vec(&stored[1..]).map_err(|e| bad(e.to_string()))
}

fn decode<M: Message + Default>(b: &[u8]) -> Result<M, StoreError> {
    M::decode(b).map_err(|e| StoreError::Decode(DecodeError { what: "stored record", detail: e.to_string() }))
}

/// A group's records whose index `keep` accepts and, with `rid`, whose request id is that
/// one: (index in the WAL record, record). Only those are decoded (a request-id look-up wants
/// one of a group's thousands).
fn read_group<M: Raw>(
    blocks: &Blocks,
    r: &BlockRef,
    keep: &dyn Fn(u32) -> bool,
    rid: Option<&str>,
) -> Result<Vec<(u32, M)>, StoreError> {
    decode_group(blocks.read(&r.loc())?, r, keep, rid)
}

/// The layout of a group stored by column: its second byte, after a `0` (see [`compress`] for
/// the others).
fn column_layout(stored: &[u8]) -> Option<u8> {
    match *stored {
        [0, layout @ (columns::LAYOUT_PLAIN | columns::LAYOUT_PREDICTED | columns::LAYOUT_TEMPLATES), ..] => {
            Some(layout)
        }
        _ => None,
    }
}

/// [`read_group`] of a group's bytes as the block files hold them.
fn decode_group<M: Raw>(
    stored: Vec<u8>,
    r: &BlockRef,
    keep: &dyn Fn(u32) -> bool,
    rid: Option<&str>,
) -> Result<Vec<(u32, M)>, StoreError> {
    if let Some(layout) = column_layout(&stored) {
        return Ok(columns::decode(&stored[2..], layout, r.count, keep, rid)?);
    }
    let data = inflate(stored)?;
    let mut rd = Reader::new(&data, "raw record group");
    let n = rd.varint()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let idx = u32::try_from(rd.varint()?).map_err(|_| rd.err("record index"))?;
        let len = rd.varint()? as usize;
        let b = rd.bytes(len)?;
        if keep(idx) {
            let m: M = decode(b)?;
            if rid.is_none_or(|r| m.rid() == r) {
                out.push((idx, m));
            }
        }
    }
    Ok(out)
}

/// Every record with this request id, in time-key order.
pub fn by_request<M: Raw>(
    blocks: &Blocks,
    main: &sled::Tree,
    index: &RidIndex,
    request_id: &str,
) -> Result<Vec<M>, StoreError> {
    // The index's candidates by group: (lsn, indexes in the WAL record, or none for every
    // record of the group: runs of groups keep no index). Runs keep the slot, not the time:
    // the time key is made again from the record.
    let mut wanted: HashMap<[u8; 16], (u64, Option<Vec<u32>>)> = HashMap::new();
    for tk in index.lookup(request_id)? {
        let (ts, lsn, idx) = keys::decode_time_key(&tk)?;
        let w = wanted.entry(keys::raw_group_key(slot(ts), lsn)).or_insert_with(|| (lsn, Some(Vec::new())));
        if idx == rid_block::ANY {
            w.1 = None;
        } else if let Some(v) = &mut w.1 {
            v.push(idx);
        }
    }
    let mut out = Vec::new();
    for (gk, (lsn, want)) in wanted {
        // An entry whose group retention removed is skipped.
        let Some(v) = main.get(gk)? else { continue };
        let keep = |i| want.as_ref().is_none_or(|w| w.contains(&i));
        // The index matches hashes: keep only the records with this very id.
        for (idx, m) in read_group::<M>(blocks, &keys::decode_block_ref(&v)?, &keep, Some(request_id))? {
            out.push((keys::time_key(m.ts(), lsn, idx), m));
        }
    }
    out.sort_by_key(|p| p.0);
    Ok(out.into_iter().map(|p| p.1).collect())
}

/// Records with `start <= ts <= end`, newest first, strictly before the time key `before`
/// when given; `f` returns false to stop. Records are sorted within each 10-second bucket, so
/// memory holds one bucket at a time.
pub fn scan<M: Raw>(
    blocks: &Blocks,
    main: &sled::Tree,
    start: i64,
    end: i64,
    before: Option<[u8; 20]>,
    mut f: impl FnMut(&[u8; 20], M) -> bool,
) -> Result<(), StoreError> {
    scan_where(blocks, main, start, end, before, None, |s| match s {
        Scanned::Record(k, m) => f(&k, m),
        Scanned::Passed(_) => true,
    })
}

/// A record's tuple ([`columns::Columnar::tuple`]): its descriptive strings and its status or
/// level.
pub type TupleFilter<'a> = &'a dyn Fn(&[&str; 5], i32) -> bool;

/// What [`scan_where`] hands over.
pub enum Scanned<M> {
    /// A record whose tuple the filter accepts, with its time key.
    Record([u8; 20], M),
    /// This many records of a group whose tuples the filter refused: read no further than
    /// their tuples, not decoded.
    Passed(usize),
}

/// [`scan`], handing over only the records whose tuple `want` accepts. A group stored by
/// column is read as far as its tuples first ([`columns::tally`]), and decoded only when one
/// of its records is wanted, and then only that record is built.
pub fn scan_where<M: Raw>(
    blocks: &Blocks,
    main: &sled::Tree,
    start: i64,
    end: i64,
    before: Option<[u8; 20]>,
    want: Option<TupleFilter>,
    mut f: impl FnMut(Scanned<M>) -> bool,
) -> Result<(), StoreError> {
    let mut end = end;
    if let Some(b) = before {
        end = end.min(keys::decode_time_key(&b)?.0);
    }
    if end < start {
        return Ok(());
    }
    let lo = keys::raw_group_key(slot(start), 0);
    let hi = keys::raw_group_key(slot(end), u64::MAX);
    let mut pending: Vec<([u8; 20], M)> = Vec::new();
    let mut current: Option<i64> = None;
    let flush = |pending: &mut Vec<([u8; 20], M)>, f: &mut dyn FnMut(Scanned<M>) -> bool| -> bool {
        pending.sort_by_key(|p| std::cmp::Reverse(p.0));
        for (k, m) in pending.drain(..) {
            if !f(Scanned::Record(k, m)) {
                return false;
            }
        }
        true
    };
    for item in main.range(lo..=hi).rev() {
        let (k, v) = item?;
        let (b, lsn) = keys::decode_raw_group_key(&k)?;
        if current != Some(b) {
            if !flush(&mut pending, &mut f) {
                return Ok(());
            }
            current = Some(b);
        }
        let r = keys::decode_block_ref(&v)?;
        let stored = blocks.read(&r.loc())?;
        let records = match want {
            None => decode_group::<M>(stored, &r, &|_| true, None)?,
            Some(want) => {
                let (records, passed) = decode_wanted::<M>(stored, &r, want)?;
                if passed > 0 && !f(Scanned::Passed(passed)) {
                    return Ok(());
                }
                records
            }
        };
        for (idx, m) in records {
            let ts = m.ts();
            let tk = keys::time_key(ts, lsn, idx);
            if ts >= start && ts <= end && before.is_none_or(|b| tk < b) {
                pending.push((tk, m));
            }
        }
    }
    flush(&mut pending, &mut f);
    Ok(())
}

/// A group's records whose tuple `want` accepts, and how many it refused.
fn decode_wanted<M: Raw>(
    stored: Vec<u8>,
    r: &BlockRef,
    want: TupleFilter,
) -> Result<(Vec<(u32, M)>, usize), StoreError> {
    let t = match column_layout(&stored) {
        Some(_) => columns::tally(&stored[2..], r.count)?,
        None => {
            let all = decode_group::<M>(stored, r, &|_| true, None)?;
            let n = all.len();
            let kept: Vec<(u32, M)> = all
                .into_iter()
                .filter(|(_, m)| {
                    let (strs, num) = m.tuple();
                    want(&strs, num)
                })
                .collect();
            let passed = n - kept.len();
            return Ok((kept, passed));
        }
    };
    let ok: Vec<bool> = t.tuples.iter().map(|(s, num)| want(&s.each_ref().map(String::as_str), *num)).collect();
    // Ascending, as the group's indexes are.
    let wanted: Vec<u32> = t.index.iter().zip(&t.tuple_of).filter(|(_, &k)| ok[k]).map(|(&i, _)| i).collect();
    let passed = t.index.len() - wanted.len();
    if wanted.is_empty() {
        return Ok((Vec::new(), passed));
    }
    let keep = |i: u32| wanted.binary_search(&i).is_ok();
    Ok((decode_group::<M>(stored, r, &keep, None)?, passed))
}

/// Each group's records with `start <= ts <= end` as times and tuples ([`columns::Tally`]),
/// groups in no particular order; `f` returns false to stop. Groups stored by column are read
/// no further than their tuples; older groups, row by row, are decoded whole.
pub fn tally<M: Raw>(
    blocks: &Blocks,
    main: &sled::Tree,
    start: i64,
    end: i64,
    mut f: impl FnMut(&columns::Tally) -> bool,
) -> Result<(), StoreError> {
    if end < start {
        return Ok(());
    }
    let lo = keys::raw_group_key(slot(start), 0);
    let hi = keys::raw_group_key(slot(end), u64::MAX);
    for item in main.range(lo..=hi) {
        let (_, v) = item?;
        let r = keys::decode_block_ref(&v)?;
        let stored = blocks.read(&r.loc())?;
        let mut t = match column_layout(&stored) {
            Some(_) => columns::tally(&stored[2..], r.count)?,
            None => {
                let records: Vec<M> = decode_group(stored, &r, &|_| true, None)?.into_iter().map(|p| p.1).collect();
                columns::Tally::of(&records)
            }
        };
        t.retain_ts(|ts| ts >= start && ts <= end);
        if !t.ts.is_empty() && !f(&t) {
            break;
        }
    }
    Ok(())
}

/// Deletes groups whose newest record is older than `cutoff`, and the index runs that only
/// point before it.
pub fn expire(blocks: &Blocks, main: &sled::Tree, index: &RidIndex, cutoff: i64) -> Result<u64, StoreError> {
    let mut n = 0;
    for item in main.range(..keys::raw_group_key(slot(cutoff), 0)) {
        let (k, v) = item?;
        let r = keys::decode_block_ref(&v)?;
        if r.last_ts >= cutoff {
            continue;
        }
        n += u64::from(r.count);
        main.remove(&k)?;
        blocks.release(&r.loc());
    }
    index.expire(cutoff)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keys::put_varint;

    fn group(records: &[&[u8]]) -> Vec<u8> {
        let mut g = Vec::new();
        put_varint(&mut g, records.len() as u64);
        for (i, r) in records.iter().enumerate() {
            put_varint(&mut g, i as u64);
            put_varint(&mut g, r.len() as u64);
            g.extend_from_slice(r);
        }
        g
    }

    #[test]
    fn groups_compress_when_it_pays_and_read_back_either_way() {
        let rec = b"service=ocr model=resnet50 version=3 endpoint=/v1/predict status=ok".as_slice();
        let plain = group(&[rec; 40]);
        let stored = compress(plain.clone());
        assert_eq!(stored[0], 0);
        assert!(stored.len() * 4 < plain.len(), "{} of {}", stored.len(), plain.len());
        assert_eq!(inflate(stored).unwrap(), plain);
        // Incompressible, or stored before compression existed: kept and read as is.
        let small = group(&[b"x".as_slice()]);
        assert_eq!(compress(small.clone()), small);
        assert_eq!(inflate(small.clone()).unwrap(), small);
        // Groups written with Snappy, before zstd, still read.
        let mut snappy = vec![0u8];
        snappy.extend_from_slice(&snap::raw::Encoder::new().compress_vec(&plain).unwrap());
        assert_eq!(inflate(snappy).unwrap(), plain);
    }

    #[test]
    fn row_groups_of_older_builds_and_column_groups_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = Blocks::open(dir.path(), 1 << 20).unwrap();
        let ev = |i: u32| crate::pb::InferenceEvent {
            timestamp_ms: 1_790_000_000_000 + i64::from(i),
            model: format!("m{i}"),
            request_id: format!("{i:032x}"),
            latency_us: 100 * u64::from(i),
            ..Default::default()
        };
        let events: Vec<_> = (0..50).map(ev).collect();
        let bytes: Vec<Vec<u8>> = events.iter().map(|e| e.encode_to_vec()).collect();
        let row = compress(group(&bytes.iter().map(|b| b.as_slice()).collect::<Vec<_>>()));
        let mut col = vec![0, columns::LAYOUT];
        columns::encode(&events.iter().enumerate().map(|(i, e)| (i as u32, e)).collect::<Vec<_>>(), &mut col);
        for stored in [row, col] {
            let l = blocks.append(&stored).unwrap();
            let r = BlockRef { file: l.file, offset: l.offset, len: l.len, count: 50, last_ts: 0 };
            let all = read_group::<crate::pb::InferenceEvent>(&blocks, &r, &|_| true, None).unwrap();
            assert_eq!(all.into_iter().map(|p| p.1).collect::<Vec<_>>(), events);
            let one = read_group::<crate::pb::InferenceEvent>(&blocks, &r, &|i| i == 7, None).unwrap();
            assert_eq!(one, vec![(7, ev(7))]);
        }
    }

    /// A tally gives each record in the window once, with its time and tuple, from groups
    /// stored by column and row by row alike: what a scan of the same window gives.
    #[test]
    fn tallies_count_what_scans_read_in_either_layout() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = Blocks::open(&dir.path().join("blocks"), 1 << 20).unwrap();
        let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        let main = db.open_tree("logs").unwrap();
        let index = RidIndex::open(db.open_tree("rids").unwrap(), &dir.path().join("rid"), &blocks).unwrap();
        let t0 = 1_790_000_000_000i64;
        let log = |i: i64| crate::pb::LogRecord {
            timestamp_ms: t0 + i * 1_700,
            service: format!("s{}", i % 3),
            logger: format!("l{}", i % 2),
            error_type: if i % 5 == 0 { "Timeout".into() } else { String::new() },
            level: (i % 6) as i32,
            message: format!("request {i} took {} ms", i * 7),
            request_id: format!("{i:032x}"),
            ..Default::default()
        };
        // Three WAL records by column, spanning several 10-second groups each.
        for lsn in 1..=3u64 {
            let logs: Vec<_> = (0..40).map(|i| log(i + 40 * lsn as i64)).collect();
            write(&blocks, &main, &index, lsn, &super::group(&logs)).unwrap();
        }
        // And one group of an older build, row by row.
        let old: Vec<_> = (0..5).map(|i| log(i * 2)).collect();
        let bytes: Vec<Vec<u8>> = old.iter().map(|r| r.encode_to_vec()).collect();
        let stored = compress(group(&bytes.iter().map(|b| b.as_slice()).collect::<Vec<_>>()));
        let l = blocks.append(&stored).unwrap();
        let r = BlockRef { file: l.file, offset: l.offset, len: l.len, count: 5, last_ts: t0 + 8 * 1_700 };
        main.insert(keys::raw_group_key(slot(t0), 9), &keys::encode_block_ref(&r)[..]).unwrap();
        for (start, end) in [(t0, t0 + 1_000_000), (t0 + 12_345, t0 + 150_000), (t0 + 3_400, t0 + 3_400)] {
            let mut scanned = Vec::new();
            scan::<crate::pb::LogRecord>(&blocks, &main, start, end, None, |_, r| {
                scanned.push((
                    r.timestamp_ms,
                    [r.service, r.logger, r.error_type, String::new(), String::new()],
                    r.level,
                ));
                true
            })
            .unwrap();
            let mut tallied = Vec::new();
            tally::<crate::pb::LogRecord>(&blocks, &main, start, end, |t| {
                for (&ts, &k) in t.ts.iter().zip(&t.tuple_of) {
                    tallied.push((ts, t.tuples[k].0.clone(), t.tuples[k].1));
                }
                true
            })
            .unwrap();
            scanned.sort();
            tallied.sort();
            assert!(!scanned.is_empty());
            assert_eq!(tallied, scanned, "{start}..={end}");
        }
        // A filtered scan hands over what the whole scan gives and the filter accepts, in the
        // same order, and says how many it passed over; with and without a page token.
        let want = |t: &[&str; 5], level: i32| t[0] == "s1" && level >= 2;
        let all_keys = |before| {
            let mut v = Vec::new();
            scan::<crate::pb::LogRecord>(&blocks, &main, t0, t0 + 1_000_000, before, |k, r| {
                v.push((*k, r));
                true
            })
            .unwrap();
            v
        };
        let every = all_keys(None);
        for before in [None, Some(every[every.len() / 3].0)] {
            let whole = all_keys(before);
            let (mut got, mut passed) = (Vec::new(), 0);
            scan_where::<crate::pb::LogRecord>(&blocks, &main, t0, t0 + 1_000_000, before, Some(&want), |s| {
                match s {
                    Scanned::Record(k, r) => got.push((k, r)),
                    Scanned::Passed(n) => passed += n,
                }
                true
            })
            .unwrap();
            let expect: Vec<_> =
                whole.into_iter().filter(|(_, r)| want(&[&r.service, "", "", "", ""], r.level)).collect();
            assert!(!expect.is_empty());
            assert_eq!(got, expect);
            // Every record of a group with none wanted is passed over, those of other groups
            // that the filter refuses too: all 125 that are not wanted, without a page token.
            if before.is_none() {
                assert_eq!(passed, 125 - got.len());
            }
        }
    }

    #[test]
    fn damaged_compressed_groups_are_errors() {
        let plain = group(&[b"abcabcabcabcabcabcabcabcabcabcabc".as_slice(); 8]);
        let mut stored = compress(plain);
        let n = stored.len();
        stored.truncate(n - 3);
        assert!(inflate(stored).is_err());
        assert!(inflate(vec![0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        // A zstd group that claims more than a WAL record can bring, or other than it holds.
        assert!(inflate(vec![0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]).is_err());
        let mut lying = compress(group(&[b"abcabcabcabcabcabcabcabcabcabcabc".as_slice(); 8]));
        lying[2] += 1;
        assert!(inflate(lying).is_err());
        let mut flipped = compress(group(&[b"abcabcabcabcabcabcabcabcabcabcabc".as_slice(); 8]));
        let n = flipped.len();
        flipped[n - 2] ^= 0x55;
        assert!(inflate(flipped)
            .map(|p| p != group(&[b"abcabcabcabcabcabcabcabcabcabcabc".as_slice(); 8]))
            .unwrap_or(true));
    }
}
