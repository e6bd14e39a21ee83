//! Every key and small-value layout of the sled trees. Nothing else in the crate builds keys by
//! hand. Integers are big-endian so that sled's byte order is numeric order; signed timestamps
//! have their sign bit flipped for the same reason.
//!
//! | tree         | key                                   | value                          |
//! |--------------|---------------------------------------|--------------------------------|
//! | `series`     | series id (u64)                       | kind, name, labels (folders from before [`super::catalog`]; emptied by their first checkpoint) |
//! | `chunk_index` | series id >> 5, bucket of last ts    | [`super::chunk_index`]: where 32 series' chunks are in the block files |
//! | `chunks`     | series id, first ts                   | [`BlockRef`] (folders from before [`super::chunk_index`]; moved at open) |
//! | `head_parts` | `0xFF`, series id >> 5, lsn ([`part_group_key`]); older folders: series id, first ts, lsn ([`part_key`]) | folders from before part files ([`super::part_files`]): the samples of open heads that one checkpoint saved, for 32 series ([`super::parts`]) |
//! | `agg_groups` | group id (u32)                        | service, model, version, endpoint |
//! | `aggs`       | group id, bucket start, epoch (lsn)   | [`super::aggs::Agg`]         |
//! | `agg_packs`  | group id, pack start, part            | a part of a [`super::packs`] pack: one group's hour of aggregates |
//! | `events`     | 10 s slot, lsn                        | [`BlockRef`] of a group of raw events ([`super::raw`]) |
//! | `event_rid_runs` | run id                            | request-id index run ([`super::rid_index`]) |
//! | `logs`       | 10 s slot, lsn                        | [`BlockRef`] of a group of log records |
//! | `log_rid_runs` | run id                              | request-id index run           |
//! | `meta`       | name                                  | see [`Meta`]; `direct` + lsn: hours a checkpoint packed from memory ([`direct_key`]) |

pub const TREE_SERIES: &str = "series";
pub const TREE_CHUNKS: &str = "chunks";
pub const TREE_CHUNK_INDEX: &str = "chunk_index";
pub const TREE_HEAD_PARTS: &str = "head_parts";
pub const TREE_AGG_GROUPS: &str = "agg_groups";
pub const TREE_AGGS: &str = "aggs";
pub const TREE_AGG_PACKS: &str = "agg_packs";
pub const TREE_EVENTS: &str = "events";
pub const TREE_EVENT_RID_RUNS: &str = "event_rid_runs";
pub const TREE_LOGS: &str = "logs";
pub const TREE_LOG_RID_RUNS: &str = "log_rid_runs";
pub const TREE_META: &str = "meta";

/// The one meta record, rewritten at every checkpoint.
pub const META_KEY: &[u8] = b"checkpoint";

/// Meta entries `direct` + lsn (u64) name the hours that the checkpoint of that lsn packed
/// straight from memory ([`super::packs`]): per hour its group (u32) and pack start
/// ([`ts_to_bytes`]).
pub const DIRECT_PREFIX: &[u8] = b"direct";

pub fn direct_key(lsn: u64) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..6].copy_from_slice(DIRECT_PREFIX);
    k[6..].copy_from_slice(&lsn.to_be_bytes());
    k
}

pub fn decode_direct_key(k: &[u8]) -> Result<u64, DecodeError> {
    match k.strip_prefix(DIRECT_PREFIX) {
        Some(rest) if rest.len() == 8 => Ok(u64::from_be_bytes(arr8(rest))),
        _ => Err(derr("direct pack entry key", format!("{k:?}"))),
    }
}

pub fn encode_hours(hours: &[(u32, i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 * hours.len());
    for (g, start) in hours {
        out.extend_from_slice(&g.to_be_bytes());
        out.extend_from_slice(&ts_to_bytes(*start));
    }
    out
}

pub fn decode_hours(v: &[u8]) -> Result<Vec<(u32, i64)>, DecodeError> {
    if !v.len().is_multiple_of(12) {
        return Err(derr("direct pack entry", format!("{} bytes", v.len())));
    }
    Ok(v.chunks(12).map(|c| (u32::from_be_bytes([c[0], c[1], c[2], c[3]]), ts_from_bytes(arr8(&c[4..])))).collect())
}

#[derive(Debug, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct DecodeError {
    pub what: &'static str,
    pub detail: String,
}

fn derr(what: &'static str, detail: impl Into<String>) -> DecodeError {
    DecodeError { what, detail: detail.into() }
}

pub fn ts_to_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn ts_from_bytes(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

fn arr8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

pub fn series_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub fn decode_series_key(k: &[u8]) -> Result<u64, DecodeError> {
    if k.len() != 8 {
        return Err(derr("series key", format!("{} bytes", k.len())));
    }
    Ok(u64::from_be_bytes(arr8(k)))
}

pub fn chunk_key(series: u64, first_ts: i64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&series.to_be_bytes());
    k[8..].copy_from_slice(&ts_to_bytes(first_ts));
    k
}

/// Key of a head part: (series, first ts), then the lsn of the checkpoint that wrote it (parts
/// written before merging came have none), so that a part that holds a whole head never
/// overwrites the parts it replaces before its checkpoint is complete.
pub fn part_key(series: u64, first_ts: i64, lsn: u64) -> Vec<u8> {
    let mut k = chunk_key(series, first_ts).to_vec();
    if lsn != 0 {
        k.extend_from_slice(&lsn.to_be_bytes());
    }
    k
}

/// Key of the parts one checkpoint (`lsn`) saved for the 32 series of a group (series id >> 5):
/// a marker byte that no [`part_key`] starts with (series ids stay far below 2^56), so both
/// kinds share the tree and the grouped ones sort after every single part.
pub fn part_group_key(group: u64, lsn: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = PART_GROUP_MARK;
    k[1..9].copy_from_slice(&group.to_be_bytes());
    k[9..].copy_from_slice(&lsn.to_be_bytes());
    k
}

const PART_GROUP_MARK: u8 = 0xFF;

/// A key of the `head_parts` tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKey {
    /// One series' part (folders from before grouped parts): series, first ts, lsn or 0.
    Single(u64, i64, u64),
    /// A group's parts: group, lsn.
    Group(u64, u64),
}

pub fn decode_part_key(k: &[u8]) -> Result<PartKey, DecodeError> {
    match k.len() {
        16 => decode_chunk_key(k).map(|(s, t)| PartKey::Single(s, t, 0)),
        24 => decode_chunk_key(&k[..16]).map(|(s, t)| PartKey::Single(s, t, u64::from_be_bytes(arr8(&k[16..])))),
        17 if k[0] == PART_GROUP_MARK => {
            Ok(PartKey::Group(u64::from_be_bytes(arr8(&k[1..9])), u64::from_be_bytes(arr8(&k[9..]))))
        }
        n => Err(derr("head part key", format!("{n} bytes"))),
    }
}

pub fn decode_chunk_key(k: &[u8]) -> Result<(u64, i64), DecodeError> {
    if k.len() != 16 {
        return Err(derr("chunk key", format!("{} bytes", k.len())));
    }
    Ok((u64::from_be_bytes(arr8(k)), ts_from_bytes(arr8(&k[8..]))))
}

pub fn group_key(id: u32) -> [u8; 4] {
    id.to_be_bytes()
}

pub fn agg_key(group: u32, bucket_start: i64, epoch: u64) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4..12].copy_from_slice(&ts_to_bytes(bucket_start));
    k[12..].copy_from_slice(&epoch.to_be_bytes());
    k
}

pub fn decode_agg_key(k: &[u8]) -> Result<(u32, i64, u64), DecodeError> {
    if k.len() != 20 {
        return Err(derr("aggregate key", format!("{} bytes", k.len())));
    }
    let g = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
    Ok((g, ts_from_bytes(arr8(&k[4..])), u64::from_be_bytes(arr8(&k[12..]))))
}

pub fn pack_key(group: u32, start: i64, part: u8) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4..12].copy_from_slice(&ts_to_bytes(start));
    k[12] = part;
    k
}

pub fn decode_pack_key(k: &[u8]) -> Result<(u32, i64, u8), DecodeError> {
    if k.len() != 13 {
        return Err(derr("aggregate pack key", format!("{} bytes", k.len())));
    }
    Ok((u32::from_be_bytes([k[0], k[1], k[2], k[3]]), ts_from_bytes(arr8(&k[4..])), k[12]))
}

/// Key of a log record or raw event: time first so ranges are scans, then the WAL record's lsn
/// and the item's index in its batch, so a replayed record rewrites the same keys.
pub fn time_key(ts: i64, lsn: u64, index: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..8].copy_from_slice(&ts_to_bytes(ts));
    k[8..16].copy_from_slice(&lsn.to_be_bytes());
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

pub fn decode_time_key(k: &[u8]) -> Result<(i64, u64, u32), DecodeError> {
    if k.len() != 20 {
        return Err(derr("time key", format!("{} bytes", k.len())));
    }
    Ok((ts_from_bytes(arr8(k)), u64::from_be_bytes(arr8(&k[8..])), u32::from_be_bytes([k[16], k[17], k[18], k[19]])))
}

/// Where a payload (a chunk, a group of raw records, a request-id run) lies in the block
/// files, with what a reader needs before fetching it: how many items it holds and the newest
/// timestamp among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub file: u32,
    pub offset: u64,
    pub len: u32,
    pub count: u32,
    pub last_ts: i64,
}

impl BlockRef {
    pub fn loc(&self) -> super::blocks::Loc {
        super::blocks::Loc { file: self.file, offset: self.offset, len: self.len }
    }
}

pub fn encode_block_ref(r: &BlockRef) -> [u8; 28] {
    let mut v = [0u8; 28];
    v[..4].copy_from_slice(&r.file.to_be_bytes());
    v[4..12].copy_from_slice(&r.offset.to_be_bytes());
    v[12..16].copy_from_slice(&r.len.to_be_bytes());
    v[16..20].copy_from_slice(&r.count.to_be_bytes());
    v[20..].copy_from_slice(&r.last_ts.to_be_bytes());
    v
}

/// What a metric chunk's values come to, kept beside its reference so that `min_over_time`,
/// `max_over_time` and `count_over_time` over a window that holds the whole chunk need not read
/// it. Staleness markers are left out; `min`/`max` skip NaN values unless every value is NaN
/// (PromQL's rule), and are NaN when `count` is 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub min: f64,
    pub max: f64,
    pub count: u32,
}

/// A metric chunk's sled value: its reference, then (chunks cut since summaries exist) its
/// [`Summary`].
pub fn encode_chunk_ref(r: &BlockRef, s: &Summary) -> [u8; 48] {
    let mut v = [0u8; 48];
    v[..28].copy_from_slice(&encode_block_ref(r));
    v[28..36].copy_from_slice(&s.min.to_bits().to_be_bytes());
    v[36..44].copy_from_slice(&s.max.to_bits().to_be_bytes());
    v[44..].copy_from_slice(&s.count.to_be_bytes());
    v
}

/// The summary of a metric chunk's sled value, when it has one.
pub fn decode_summary(v: &[u8]) -> Option<Summary> {
    (v.len() == 48).then(|| Summary {
        min: f64::from_bits(u64::from_be_bytes(arr8(&v[28..]))),
        max: f64::from_bits(u64::from_be_bytes(arr8(&v[36..]))),
        count: u32::from_be_bytes([v[44], v[45], v[46], v[47]]),
    })
}

/// A block reference, alone or followed by a chunk's [`Summary`].
pub fn decode_block_ref(v: &[u8]) -> Result<BlockRef, DecodeError> {
    if v.len() != 28 && v.len() != 48 {
        return Err(derr("block reference", format!("{} bytes", v.len())));
    }
    let u32_at = |i: usize| u32::from_be_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
    Ok(BlockRef {
        file: u32_at(0),
        offset: u64::from_be_bytes(arr8(&v[4..])),
        len: u32_at(12),
        count: u32_at(16),
        last_ts: i64::from_be_bytes(arr8(&v[20..])),
    })
}

/// Key of a group of raw records: their 10-second slot, then the WAL record's lsn.
pub fn raw_group_key(slot: i64, lsn: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ts_to_bytes(slot));
    k[8..].copy_from_slice(&lsn.to_be_bytes());
    k
}

pub fn decode_raw_group_key(k: &[u8]) -> Result<(i64, u64), DecodeError> {
    if k.len() != 16 {
        return Err(derr("raw group key", format!("{} bytes", k.len())));
    }
    Ok((ts_from_bytes(arr8(k)), u64::from_be_bytes(arr8(&k[8..]))))
}

// ---- small value encodings ------------------------------------------------------------------

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// String equality without a call to `memcmp`: for the few bytes of these names the call cost
/// more than the comparison (`perf`, 2026-12-05: a third of the ingest handlers' time went to `__memcmp_evex_movbe`,
/// mostly on strings of under 16 bytes).
#[inline]
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        if u64::from_ne_bytes(x.try_into().expect("8 bytes")) != u64::from_ne_bytes(y.try_into().expect("8 bytes")) {
            return false;
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut wa = [0u8; 8];
    let mut wb = [0u8; 8];
    wa[..ra.len()].copy_from_slice(ra);
    wb[..rb.len()].copy_from_slice(rb);
    wa == wb
}

/// A cursor over an encoded value.
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub fn err(&self, detail: &str) -> DecodeError {
        derr(self.what, format!("{detail} at byte {}", self.pos))
    }

    #[inline]
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        // Most varints of the hot paths (histogram block heads) are one byte.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_long()
    }

    #[cold]
    fn varint_long(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.err("varint overflow"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(self.err("varint overflow"));
            }
        }
    }

    pub fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.err("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| self.err("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.varint()? as usize;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("invalid utf-8"))
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

pub fn put_string(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Value of a `series` entry: kind, name, then sorted labels.
pub fn encode_series(kind: i32, name: &str, labels: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + name.len() + labels.len() * 16);
    out.push(kind as u8);
    put_string(&mut out, name);
    put_varint(&mut out, labels.len() as u64);
    for (k, v) in labels {
        put_string(&mut out, k);
        put_string(&mut out, v);
    }
    out
}

pub type SeriesValue = (i32, String, Vec<(String, String)>);

pub fn decode_series(buf: &[u8]) -> Result<SeriesValue, DecodeError> {
    let mut r = Reader::new(buf, "series entry");
    let kind = i32::from(r.byte()?);
    let name = r.string()?;
    let n = r.varint()? as usize;
    if n > 4096 {
        return Err(r.err("label count"));
    }
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        labels.push((r.string()?, r.string()?));
    }
    Ok((kind, name, labels))
}

/// Value of an `agg_groups` entry.
pub fn encode_group(parts: &[String; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        put_string(&mut out, p);
    }
    out
}

pub fn decode_group(buf: &[u8]) -> Result<[String; 4], DecodeError> {
    let mut r = Reader::new(buf, "aggregate group");
    Ok([r.string()?, r.string()?, r.string()?, r.string()?])
}

/// What a checkpoint leaves in sled so that a restart knows where WAL replay starts, which
/// block-file bytes that checkpoint vouches for, and which replayed records were already counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    /// Records with lsn >= this were not in any checkpoint: replay applies them in full.
    pub checkpoint_lsn: u64,
    /// Where replay starts; older records rebuild metric heads only. Equal to
    /// `checkpoint_lsn` since checkpoints save open heads; older data folders may say less.
    pub replay_from: u64,
    /// End of the block files when the checkpoint was taken (file, length): nothing in sled as
    /// of that checkpoint points past it, so bytes past it are a crash's leftovers.
    pub blocks_end: Option<(u32, u64)>,
    pub samples: u64,
    pub events: u64,
    pub logs: u64,
    /// Highest sequence stored per (client id, kind), with when it was last written (ms).
    pub dedup: Vec<(String, u8, u64, i64)>,
    /// End of the series catalog file ([`super::catalog`]) when the checkpoint was taken;
    /// `None` in folders whose catalog is still sled's `series` tree.
    pub catalog_end: Option<u64>,
}

pub fn encode_meta(m: &Meta) -> Vec<u8> {
    let mut out = vec![3u8];
    for v in [m.checkpoint_lsn, m.replay_from, m.samples, m.events, m.logs] {
        put_varint(&mut out, v);
    }
    match m.blocks_end {
        Some((file, len)) => {
            out.push(1);
            put_varint(&mut out, u64::from(file));
            put_varint(&mut out, len);
        }
        None => out.push(0),
    }
    put_varint(&mut out, m.dedup.len() as u64);
    for (client, kind, seq, seen) in &m.dedup {
        put_string(&mut out, client);
        out.push(*kind);
        put_varint(&mut out, *seq);
        put_varint(&mut out, zigzag(*seen));
    }
    match m.catalog_end {
        Some(end) => {
            out.push(1);
            put_varint(&mut out, end);
        }
        None => out.push(0),
    }
    out
}

/// Decodes versions 3, 2 (before the series catalog file) and 1 (data folders of modelwatch 0.1
/// before head checkpoints).
pub fn decode_meta(buf: &[u8]) -> Result<Meta, DecodeError> {
    let mut r = Reader::new(buf, "checkpoint record");
    let version = r.byte()?;
    if !(1..=3).contains(&version) {
        return Err(r.err(&format!("unknown version {version}")));
    }
    let checkpoint_lsn = r.varint()?;
    let replay_from = r.varint()?.min(checkpoint_lsn);
    let mut m = Meta {
        checkpoint_lsn,
        replay_from,
        samples: r.varint()?,
        events: r.varint()?,
        logs: r.varint()?,
        ..Meta::default()
    };
    if version >= 2 && r.byte()? == 1 {
        let file = u32::try_from(r.varint()?).map_err(|_| r.err("block file number"))?;
        m.blocks_end = Some((file, r.varint()?));
    }
    let n = r.varint()?;
    for _ in 0..n {
        let client = r.string()?;
        let kind = r.byte()?;
        let seq = r.varint()?;
        let seen = if version >= 2 { unzigzag(r.varint()?) } else { 0 };
        m.dedup.push((client, kind, seq, seen));
    }
    if version >= 3 && r.byte()? == 1 {
        m.catalog_end = Some(r.varint()?);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ts_order_is_byte_order(a in any::<i64>(), b in any::<i64>()) {
            prop_assert_eq!(a.cmp(&b), ts_to_bytes(a).cmp(&ts_to_bytes(b)));
            prop_assert_eq!(ts_from_bytes(ts_to_bytes(a)), a);
        }

        #[test]
        fn chunk_keys_round_trip_and_sort(s in any::<u64>(), t in any::<i64>(), t2 in any::<i64>()) {
            prop_assert_eq!(decode_chunk_key(&chunk_key(s, t)).unwrap(), (s, t));
            prop_assert_eq!(chunk_key(s, t).cmp(&chunk_key(s, t2)), t.cmp(&t2));
        }

        #[test]
        fn agg_and_time_keys_round_trip(g in any::<u32>(), b in any::<i64>(), e in any::<u64>(), i in any::<u32>()) {
            prop_assert_eq!(decode_agg_key(&agg_key(g, b, e)).unwrap(), (g, b, e));
            prop_assert_eq!(decode_pack_key(&pack_key(g, b, e as u8)).unwrap(), (g, b, e as u8));
            prop_assert_eq!(decode_time_key(&time_key(b, e, i)).unwrap(), (b, e, i));
        }

        #[test]
        fn raw_group_keys_round_trip_and_sort(b in any::<i64>(), l in any::<u64>(), b2 in any::<i64>()) {
            prop_assert_eq!(decode_raw_group_key(&raw_group_key(b, l)).unwrap(), (b, l));
            prop_assert_eq!(raw_group_key(b, l).cmp(&raw_group_key(b2, l)), b.cmp(&b2));
        }

        #[test]
        fn chunk_refs_round_trip(file in any::<u32>(), offset in any::<u64>(), len in any::<u32>(), count in any::<u32>(), last_ts in any::<i64>()) {
            let r = BlockRef { file, offset, len, count, last_ts };
            prop_assert_eq!(decode_block_ref(&encode_block_ref(&r)).unwrap(), r);
            let sum = Summary { min: offset as f64, max: f64::NAN, count };
            let v = encode_chunk_ref(&r, &sum);
            prop_assert_eq!(decode_block_ref(&v).unwrap(), r);
            let back = decode_summary(&v).unwrap();
            prop_assert_eq!((back.min, back.max.is_nan(), back.count), (sum.min, true, count));
            prop_assert!(decode_summary(&encode_block_ref(&r)).is_none());
        }

        #[test]
        fn varints_and_zigzag(v in any::<i64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, zigzag(v));
            let mut r = Reader::new(&out, "t");
            prop_assert_eq!(unzigzag(r.varint().unwrap()), v);
            prop_assert!(r.done());
        }

        #[test]
        fn series_values_round_trip(kind in 0i32..3, name in ".{0,30}", labels in proptest::collection::vec((".{0,10}", ".{0,10}"), 0..8)) {
            let enc = encode_series(kind, &name, &labels);
            prop_assert_eq!(decode_series(&enc).unwrap(), (kind, name, labels));
        }

        #[test]
        fn meta_round_trips(a in any::<u64>(), b in any::<u64>(), e in proptest::option::of((any::<u32>(), any::<u64>())), d in proptest::collection::vec((".{0,10}", 0u8..3, any::<u64>(), any::<i64>()), 0..5), c in proptest::option::of(any::<u64>())) {
            let m = Meta { checkpoint_lsn: a, replay_from: a.min(b), blocks_end: e, samples: a ^ b, events: 3, logs: 4, dedup: d, catalog_end: c };
            prop_assert_eq!(decode_meta(&encode_meta(&m)).unwrap(), m.clone());
            // The same record as version 2 wrote it (no catalog end): the catalog is in sled.
            let mut v2 = encode_meta(&Meta { catalog_end: None, ..m.clone() });
            v2[0] = 2;
            v2.pop();
            prop_assert_eq!(decode_meta(&v2).unwrap(), Meta { catalog_end: None, ..m });
        }

        #[test]
        fn decoders_never_panic_on_garbage(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_series(&buf);
            let _ = decode_meta(&buf);
            let _ = decode_group(&buf);
        }
    }
}
