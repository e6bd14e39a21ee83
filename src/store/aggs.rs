//! Inference aggregates: per (service, model, version, endpoint) group and time bucket, HDR
//! histograms of total and stage latencies (microseconds, 2 significant digits, so quantiles are
//! within 1%) plus counts by status and error type and token and byte sums. Aggregates of
//! different buckets, or of the same bucket written by different checkpoints, merge by addition.
use super::keys::{put_string, put_varint, DecodeError, Reader};
use crate::pb;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

pub const STAGES: [&str; 6] =
    ["queue", "preprocess", "inference", "postprocess", "time_to_first_token", "time_per_output_token"];

/// Status names indexed by the proto enum value (unspecified is counted as ok).
pub const STATUS_NAMES: [&str; 5] = ["ok", "ok", "error", "timeout", "rejected"];

const SIGFIG: u8 = 2;

#[derive(Clone)]
pub struct Agg {
    pub figures: Figures,
    pub latency: Histogram<u64>,
    pub stages: [Option<Histogram<u64>>; 6],
}

/// Records `v`, growing the histogram as needed (`saturating_record` would clamp instead).
pub(super) fn record(h: &mut Histogram<u64>, v: u64) {
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

pub(super) fn histogram() -> Histogram<u64> {
    // Auto-resizing: memory follows the largest value seen, not a preset ceiling.
    Histogram::new(SIGFIG).expect("2 significant digits is a valid precision")
}

impl Default for Agg {
    fn default() -> Self {
        Agg { figures: Figures::default(), latency: histogram(), stages: Default::default() }
    }
}

pub fn stage_values(s: &pb::Stages) -> [u64; 6] {
    [
        s.queue_us,
        s.preprocess_us,
        s.inference_us,
        s.postprocess_us,
        s.time_to_first_token_us,
        s.time_per_output_token_us,
    ]
}

impl Agg {
    pub fn record(&mut self, e: &pb::InferenceEvent) {
        self.figures.record(e);
        record(&mut self.latency, e.latency_us);
        if let Some(stages) = &e.stages {
            for (slot, v) in self.stages.iter_mut().zip(stage_values(stages)) {
                if v > 0 {
                    record(slot.get_or_insert_with(histogram), v);
                }
            }
        }
    }

    pub fn merge(&mut self, o: &Agg) {
        self.figures.merge(&o.figures);
        // Auto-resizing histograms of the same precision always merge.
        self.latency.add(&o.latency).expect("auto-resizing histograms merge");
        for (a, b) in self.stages.iter_mut().zip(&o.stages) {
            if let Some(b) = b {
                a.get_or_insert_with(histogram).add(b).expect("auto-resizing histograms merge");
            }
        }
    }

    /// In the layout of [`encode_parts`].
    pub fn encode(&self) -> Vec<u8> {
        encode_parts(&self.figures, &self.latency, &self.stages.each_ref().map(Option::as_ref), encode_blocked)
    }

    pub fn decode(buf: &[u8]) -> Result<Agg, DecodeError> {
        let mut de = Deserializer::new();
        let p = Agg::decode_parts(buf, |hr| match hr {
            HistRef::V2(mut bytes) => {
                let mut h: Histogram<u64> = de.deserialize(&mut bytes).map_err(|e| format!("{e:?}"))?;
                // Decoded histograms have a fixed range; merging assumes they grow as needed.
                h.auto(true);
                Ok(h)
            }
            HistRef::Blocked(_) => {
                let mut h = histogram();
                hr.for_each_slot(|k, n| {
                    if h.record_n(slot_value(k), n).is_err() {
                        h.saturating_record_n(slot_value(k), n);
                    }
                })?;
                Ok(h)
            }
        })?;
        Ok(Agg { figures: p.figures, latency: p.latency, stages: p.stages })
    }

    /// The encoding of version 1 (histograms in HdrHistogram's V2 form), for the tests that
    /// check that aggregates written before version 2 still read.
    #[cfg(test)]
    pub fn encode_v1(&self) -> Vec<u8> {
        use hdrhistogram::serialization::{Serializer, V2Serializer};
        let mut out = vec![1u8];
        self.figures.encode(&mut out);
        let mut ser = V2Serializer::new();
        encode_histograms(&mut out, &self.latency, &self.stages.each_ref().map(Option::as_ref), |h, buf| {
            ser.serialize(h, buf).unwrap();
        });
        out
    }

    /// The aggregate with its histograms as (lowest, highest equivalent value, count) runs,
    /// read straight from the stored encoding: what a query that only counts or walks the
    /// histograms needs, without building HDR's dense arrays.
    pub fn decode_sparse(buf: &[u8]) -> Result<Parts<Sparse>, DecodeError> {
        Agg::decode_parts(buf, |hr| match hr {
            HistRef::V2(bytes) => sparse_from_v2(bytes),
            HistRef::Blocked(_) => {
                let mut out = Vec::new();
                hr.for_each_slot(|k, n| {
                    let (lo, hi) = slot_range(k);
                    out.push((lo, hi, n));
                })?;
                Ok(out)
            }
        })
    }

    /// This aggregate with sparse histograms (for the in-memory ones).
    fn decode_parts<H>(
        buf: &[u8],
        mut hist: impl FnMut(HistRef) -> Result<H, String>,
    ) -> Result<Parts<H>, DecodeError> {
        let mut r = Reader::new(buf, "inference aggregate");
        let version = r.byte()?;
        if version != 1 && version != VERSION {
            return Err(r.err("unknown version"));
        }
        let mut figures = None;
        if version == 1 {
            figures = Some(Figures::decode(&mut r)?);
        }
        let mut one = |r: &mut Reader| -> Result<H, DecodeError> {
            let n = r.varint()? as usize;
            let bytes = r.bytes(n)?;
            let hr = if version == 1 { HistRef::V2(bytes) } else { HistRef::Blocked(bytes) };
            hist(hr).map_err(|e| r.err(&format!("histogram: {e}")))
        };
        let latency = one(&mut r)?;
        let mask = r.byte()?;
        let mut stages: [Option<H>; 6] = Default::default();
        for (i, slot) in stages.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *slot = Some(one(&mut r)?);
            }
        }
        let a = match figures {
            Some(a) => a,
            None => Figures::decode(&mut r)?,
        };
        Ok(Parts { figures: a, latency, stages })
    }
}

/// The first byte of a row that the aggregate rows' tree holds through zstd
/// ([`super::zctx::wrap`]); an encoding's own first byte is its version, 1 or 2.
pub(super) const ROW_ZSTD: u8 = 0x5a;
/// Rows shorter than this are stored as encoded: a sparse bucket's row of a few events
/// (under 200 bytes) gains little, and checkpoints write rows under the events lock.
const ROW_SQUEEZE: usize = 512;

/// A row as a checkpoint stores it: through zstd (level 1) where it is long and that is
/// shorter. sled's log is plain since 2026-12-07 ([`super::recover`]); a busy bucket's row,
/// histograms of latency and stages, is 1-3 KB and about half that through zstd.
pub(super) fn store_row(enc: sled::IVec) -> sled::IVec {
    if enc.len() < ROW_SQUEEZE {
        return enc;
    }
    super::zctx::wrap(ROW_ZSTD, &enc, 1).map_or(enc, Into::into)
}

/// A stored row's encoding ([`store_row`]).
pub(super) fn plain_row(stored: sled::IVec) -> Result<sled::IVec, DecodeError> {
    if stored.first() != Some(&ROW_ZSTD) {
        return Ok(stored);
    }
    super::zctx::plain(&stored, super::packs::MAX_PART, "aggregate row")
}

/// An aggregate's encoding (version [`VERSION`]: `2 | latency histogram | stage mask | stage
/// histograms | count | counts by status | errors by type | latency sum, token and byte sums`,
/// each histogram length-prefixed, first so that a quantile reads it without going through the
/// rest; version 1 had the figures first and V2 histograms), each histogram written in the
/// blocked form by `enc`: [`encode_blocked`] for HDR histograms, [`super::tally::Tally`]'s own
/// for ingest's tallies.
pub fn encode_parts<H>(
    figures: &Figures,
    latency: &H,
    stages: &[Option<&H>; 6],
    enc: impl FnMut(&H, &mut Vec<u8>),
) -> Vec<u8> {
    let mut out = vec![VERSION];
    encode_histograms(&mut out, latency, stages, enc);
    figures.encode(&mut out);
    out
}

/// The latency histogram, the stage mask and the stage histograms, each length-prefixed in the
/// form `enc` writes.
fn encode_histograms<H>(
    out: &mut Vec<u8>,
    latency: &H,
    stages: &[Option<&H>; 6],
    mut enc: impl FnMut(&H, &mut Vec<u8>),
) {
    let mut buf = Vec::new();
    let mut hist = |out: &mut Vec<u8>, h: &H| {
        buf.clear();
        enc(h, &mut buf);
        put_varint(out, buf.len() as u64);
        out.extend_from_slice(&buf);
    };
    hist(out, latency);
    let mask = stages.iter().enumerate().fold(0u8, |m, (i, s)| if s.is_some() { m | 1 << i } else { m });
    out.push(mask);
    for h in stages.iter().flatten() {
        hist(out, h);
    }
}

/// An aggregate's figures: all of it but its histograms. Kept apart so that reading a row's
/// figures allocates no histogram: an empty HDR histogram is 2 KB, and a month of one
/// group's buckets is 260,000 rows.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub count: u64,
    pub by_status: [u64; 5],
    pub by_error: BTreeMap<String, u64>,
    pub latency_sum_us: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

impl Figures {
    pub fn record(&mut self, e: &pb::InferenceEvent) {
        self.count += 1;
        let st = usize::try_from(e.status).ok().filter(|&s| s < 5).unwrap_or(0);
        self.by_status[st] += 1;
        if !e.error_type.is_empty() {
            *self.by_error.entry(e.error_type.clone()).or_default() += 1;
        }
        self.latency_sum_us = self.latency_sum_us.saturating_add(e.latency_us);
        self.prompt_tokens += u64::from(e.prompt_tokens);
        self.completion_tokens += u64::from(e.completion_tokens);
        self.input_bytes = self.input_bytes.saturating_add(e.input_bytes);
        self.output_bytes = self.output_bytes.saturating_add(e.output_bytes);
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.count);
        for s in self.by_status {
            put_varint(out, s);
        }
        put_varint(out, self.by_error.len() as u64);
        for (k, v) in &self.by_error {
            put_string(out, k);
            put_varint(out, *v);
        }
        for v in [self.latency_sum_us, self.prompt_tokens, self.completion_tokens, self.input_bytes, self.output_bytes]
        {
            put_varint(out, v);
        }
    }

    fn decode(r: &mut Reader) -> Result<Figures, DecodeError> {
        let mut a = Figures { count: r.varint()?, ..Figures::default() };
        for s in a.by_status.iter_mut() {
            *s = r.varint()?;
        }
        let n = r.varint()?;
        for _ in 0..n {
            let k = r.string()?;
            a.by_error.insert(k, r.varint()?);
        }
        a.latency_sum_us = r.varint()?;
        a.prompt_tokens = r.varint()?;
        a.completion_tokens = r.varint()?;
        a.input_bytes = r.varint()?;
        a.output_bytes = r.varint()?;
        Ok(a)
    }

    /// Adds the figures of another aggregate.
    pub fn merge(&mut self, o: &Figures) {
        self.count += o.count;
        for (a, b) in self.by_status.iter_mut().zip(o.by_status) {
            *a += b;
        }
        for (k, v) in &o.by_error {
            *self.by_error.entry(k.clone()).or_default() += v;
        }
        self.latency_sum_us = self.latency_sum_us.saturating_add(o.latency_sum_us);
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.input_bytes = self.input_bytes.saturating_add(o.input_bytes);
        self.output_bytes = self.output_bytes.saturating_add(o.output_bytes);
    }
}

/// An aggregate's figures with its histograms in another form.
pub struct Parts<H> {
    pub figures: Figures,
    pub latency: H,
    pub stages: [Option<H>; 6],
}

/// A histogram as (lowest, highest equivalent value, count) in value order, zero counts left
/// out.
pub type Sparse = Vec<(u64, u64, u64)>;

impl Parts<Sparse> {
    /// Adds another aggregate of the same bucket.
    pub fn merge(&mut self, o: &Parts<Sparse>) {
        self.figures.merge(&o.figures);
        merge_sparse(&mut self.latency, &o.latency);
        for (a, b) in self.stages.iter_mut().zip(&o.stages) {
            if let Some(b) = b {
                merge_sparse(a.get_or_insert_with(Vec::new), b);
            }
        }
    }
}

fn merge_sparse(a: &mut Sparse, b: &Sparse) {
    a.extend_from_slice(b);
    a.sort_unstable_by_key(|x| x.1);
    a.dedup_by(|x, y| {
        if x.1 == y.1 {
            y.2 += x.2;
            true
        } else {
            false
        }
    });
}

/// An encoded aggregate's stored bytes, kept without decoding (a reference to sled's copy, or an
/// in-memory aggregate encoded): what a query that walks many buckets' histograms keeps.
#[derive(Clone)]
pub struct Encoded(pub(super) sled::IVec);

impl Encoded {
    /// No bytes: what a moved-out value leaves behind.
    pub fn empty() -> Self {
        Encoded(sled::IVec::from(&[][..]))
    }
}

impl From<Vec<u8>> for Encoded {
    fn from(v: Vec<u8>) -> Self {
        Encoded(v.into())
    }
}

impl std::ops::Deref for Encoded {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// An encoded aggregate where it lies: bytes `at..at + len` of a stored value (a pack part
/// holds many rows), so that a reader keeps rows as ranges of a few shared values instead of
/// one reference-counted value per row.
#[derive(Clone, Copy)]
pub struct RowAt<'a> {
    pub(super) value: &'a sled::IVec,
    pub at: usize,
    pub len: usize,
}

impl<'a> RowAt<'a> {
    pub(super) fn whole(value: &'a sled::IVec) -> Self {
        RowAt { value, at: 0, len: value.len() }
    }

    pub fn bytes(&self) -> &'a [u8] {
        &self.value[self.at..self.at + self.len]
    }

    /// The whole value the row lies in, shared (not copied).
    pub fn value(&self) -> Encoded {
        Encoded(self.value.clone())
    }

    /// Whether the row lies in `v`, a value [`RowAt::value`] gave.
    pub fn lies_in(&self, v: &Encoded) -> bool {
        std::ptr::eq(self.value.as_ptr(), v.as_ptr()) && self.value.len() == v.len()
    }
}

/// An encoded aggregate's latency histogram (`stage` None) or stage `i`'s (None when it has
/// none), found by skipping the fields before it without decoding them.
pub fn encoded_histogram(buf: &[u8], stage: Option<usize>) -> Result<Option<HistRef<'_>>, DecodeError> {
    let mut r = Reader::new(buf, "inference aggregate");
    let version = r.byte()?;
    if version != 1 && version != VERSION {
        return Err(r.err("unknown version"));
    }
    let wrap = |b| if version == 1 { HistRef::V2(b) } else { HistRef::Blocked(b) };
    if version == 1 {
        for _ in 0..6 {
            r.varint()?;
        }
        for _ in 0..r.varint()? {
            let n = r.varint()? as usize;
            r.bytes(n)?;
            r.varint()?;
        }
        for _ in 0..5 {
            r.varint()?;
        }
    }
    let n = r.varint()? as usize;
    let latency = r.bytes(n)?;
    let Some(want) = stage else { return Ok(Some(wrap(latency))) };
    let mask = r.byte()?;
    for i in 0..STAGES.len() {
        if mask & (1 << i) == 0 {
            continue;
        }
        let n = r.varint()? as usize;
        let h = r.bytes(n)?;
        if i == want {
            return Ok(Some(wrap(h)));
        }
    }
    Ok(None)
}

/// Calls `f(slot, count)` for every non-empty slot of a V2 histogram in the store's layout (2
/// significant digits, lowest value 1, as [`slot_value`] maps slots to values), in slot order.
fn for_each_slot_v2(buf: &[u8], mut f: impl FnMut(usize, u64)) -> Result<(), String> {
    if buf.len() < 40 {
        return Err("histogram shorter than its header".into());
    }
    let be32 = |i: usize| u32::from_be_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let be64 = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    if be32(0) != 0x1c84_9313 || be32(8) != 0 || be32(12) != u32::from(SIGFIG) || be64(16) > 1 {
        return Err("not a histogram of the store's layout".into());
    }
    let len = be32(4) as usize;
    let payload = buf.get(40..40 + len).ok_or("histogram payload cut short")?;
    let (mut pos, mut index) = (0usize, 0usize);
    while pos < payload.len() {
        // Most entries are one byte (a count of 1 is 0x02, a short run of empty slots 0x01..).
        let b = payload[pos];
        let v = if b < 0x80 {
            pos += 1;
            u64::from(b)
        } else {
            let mut v: u64 = 0;
            let mut k = 0;
            loop {
                let b = *payload.get(pos).ok_or("histogram varint cut short")?;
                pos += 1;
                if k == 8 {
                    v |= u64::from(b) << 56;
                    break;
                }
                v |= u64::from(b & 0x7f) << (7 * k);
                if b & 0x80 == 0 {
                    break;
                }
                k += 1;
            }
            v
        };
        if v & 1 == 1 {
            // Zig-zag negative: a run of -n empty slots.
            index = index.saturating_add(((v >> 1) + 1) as usize);
            continue;
        }
        let n = v >> 1;
        if n > 0 {
            if index >= MAX_SLOTS {
                return Err("histogram slot beyond 64-bit values".into());
            }
            f(index, n);
        }
        index += 1;
    }
    Ok(())
}

/// The aggregate encoding's version: 2 keeps histograms in the blocked form below; 1 (still
/// read) kept HdrHistogram's V2 encoding.
const VERSION: u8 = 2;

/// Slots per block of the blocked histogram form.
pub const BLOCK: usize = 64;
/// In a block's count width byte: its slots are a 64-bit map (little-endian) instead of one
/// offset byte per entry. Written since 2026-12-06 for blocks of [`MAP_FROM`] entries or more:
/// the offsets of a dense block are distinct bytes that sled's zstd could not shrink, and the
/// 1 M events of `cargo bench --bench events_disk` took 2.2 bytes an event of aggregate rows
/// in sled.
const BITMAP: u8 = 0x80;
const MAP_FROM: usize = 8;
/// Blocks of the store's layout.
pub const BLOCKS: usize = MAX_SLOTS.div_ceil(BLOCK);

/// A stored histogram, as an aggregate keeps it.
#[derive(Clone, Copy)]
pub enum HistRef<'a> {
    /// HdrHistogram's V2 encoding (aggregates of version 1).
    V2(&'a [u8]),
    /// The blocked form: the non-empty 64-slot blocks, each with its count, so that a reader
    /// looking for a quantile finds its block from the sums and reads the slots of that block
    /// only. `blocks | per block: index delta, entries - 1, count width (1, 2, 4 or 8 bytes;
    /// [`BITMAP`] added when the slots are a map), sum | per block: entries' slot offsets (one
    /// byte each, ascending) or the slot map (8 bytes), then their counts` (integers LEB128;
    /// counts and maps little-endian).
    Blocked(&'a [u8]),
}

/// One block of a blocked histogram, from [`block_heads`].
#[derive(Clone, Copy, Debug)]
pub struct BlockHead {
    pub block: usize,
    pub sum: u64,
    entries: usize,
    width: usize,
    /// The slots as a 64-bit map rather than one offset byte per entry.
    bitmap: bool,
    at: usize,
}

impl HistRef<'_> {
    /// Calls `f(slot, count)` for every non-empty slot, in slot order.
    pub fn for_each_slot(&self, mut f: impl FnMut(usize, u64)) -> Result<(), String> {
        match *self {
            HistRef::V2(b) => for_each_slot_v2(b, f),
            HistRef::Blocked(b) => {
                let mut heads = Vec::new();
                block_heads(b, &mut heads)?;
                for h in &heads {
                    block_entries(b, h, &mut f);
                }
                Ok(())
            }
        }
    }
}

/// The blocks of a blocked histogram, checked against its length (so that
/// [`block_entries`] reads within it).
pub fn block_heads(buf: &[u8], out: &mut Vec<BlockHead>) -> Result<(), String> {
    let mut r = Reader::new(buf, "histogram");
    let e = |e: DecodeError| e.detail;
    let n = r.varint().map_err(e)? as usize;
    if n > BLOCKS {
        return Err(format!("{n} blocks"));
    }
    out.clear();
    let mut block = 0usize;
    let mut data = 0usize;
    for i in 0..n {
        let d = r.varint().map_err(e)? as usize;
        block = if i == 0 { d } else { block.saturating_add(d).saturating_add(1) };
        let entries = r.varint().map_err(e)? as usize + 1;
        let form = r.byte().map_err(e)?;
        let (bitmap, width) = (form & BITMAP != 0, usize::from(form & !BITMAP));
        let sum = r.varint().map_err(e)?;
        if block >= BLOCKS || entries > BLOCK || ![1, 2, 4, 8].contains(&width) {
            return Err(format!("block {block}: {entries} entries of {width} bytes"));
        }
        out.push(BlockHead { block, sum, entries, width, bitmap, at: data });
        data += if bitmap { 8 } else { entries } + entries * width;
    }
    let base = r.pos;
    if buf.len() - base != data {
        return Err(format!("{} bytes of entries where the blocks say {data}", buf.len() - base));
    }
    for h in out.iter_mut() {
        h.at += base;
        if h.bitmap && bitmap_at(buf, h.at).count_ones() as usize != h.entries {
            return Err(format!("block {}: a slot map for other than {} entries", h.block, h.entries));
        }
    }
    Ok(())
}

fn bitmap_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// The slot offsets of a block (ascending), from its offset bytes or its slot map.
enum Offsets<'a> {
    Bytes(std::slice::Iter<'a, u8>),
    Map(u64),
}

impl Iterator for Offsets<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Offsets::Bytes(b) => b.next().map(|&o| usize::from(o) & (BLOCK - 1)),
            Offsets::Map(m) => {
                if *m == 0 {
                    return None;
                }
                let o = m.trailing_zeros() as usize;
                *m &= *m - 1;
                Some(o)
            }
        }
    }
}

/// Calls `f(slot, count)` for the entries of one block from [`block_heads`] of `buf`.
pub fn block_entries(buf: &[u8], h: &BlockHead, mut f: impl FnMut(usize, u64)) {
    let (offsets, counts_at) = if h.bitmap {
        (Offsets::Map(bitmap_at(buf, h.at)), h.at + 8)
    } else {
        (Offsets::Bytes(buf[h.at..h.at + h.entries].iter()), h.at + h.entries)
    };
    let counts = &buf[counts_at..counts_at + h.entries * h.width];
    let base = h.block * BLOCK;
    // One loop per width: most blocks have one-byte counts.
    match h.width {
        1 => offsets.zip(counts).for_each(|(o, &c)| f(base + o, u64::from(c))),
        2 => offsets
            .zip(counts.chunks_exact(2))
            .for_each(|(o, c)| f(base + o, u64::from(u16::from_le_bytes([c[0], c[1]])))),
        4 => offsets
            .zip(counts.chunks_exact(4))
            .for_each(|(o, c)| f(base + o, u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes"))))),
        _ => offsets
            .zip(counts.chunks_exact(8))
            .for_each(|(o, c)| f(base + o, u64::from_le_bytes(c.try_into().expect("8 bytes")))),
    }
}

/// Writes `h` in the blocked form.
pub fn encode_blocked(h: &Histogram<u64>, out: &mut Vec<u8>) {
    let entries: Vec<(usize, u64)> =
        h.iter_recorded().map(|v| (slot_of(v.value_iterated_to()), v.count_at_value())).collect();
    encode_slots(&entries, out);
}

/// Writes (slot, count) entries, in slot order and counts above zero, in the blocked form.
pub fn encode_slots(entries: &[(usize, u64)], out: &mut Vec<u8>) {
    encode_slots_mapping(entries, out, MAP_FROM);
}

/// [`encode_slots`], with slot maps for blocks of `map_from` entries or more (the tests write
/// the form before maps with `usize::MAX`).
fn encode_slots_mapping(entries: &[(usize, u64)], out: &mut Vec<u8>, map_from: usize) {
    let blocks: Vec<&[(usize, u64)]> = entries.chunk_by(|a, b| a.0 / BLOCK == b.0 / BLOCK).collect();
    put_varint(out, blocks.len() as u64);
    let width = |b: &[(usize, u64)]| match b.iter().map(|e| e.1).max().unwrap_or(0) {
        0..=0xff => 1u8,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    };
    let mut prev = None;
    for b in &blocks {
        let block = b[0].0 / BLOCK;
        put_varint(
            out,
            match prev {
                None => block as u64,
                Some(p) => (block - p - 1) as u64,
            },
        );
        prev = Some(block);
        put_varint(out, b.len() as u64 - 1);
        out.push(width(b) | if b.len() >= map_from { BITMAP } else { 0 });
        put_varint(out, b.iter().map(|e| e.1).sum());
    }
    for b in &blocks {
        if b.len() >= map_from {
            let map = b.iter().fold(0u64, |m, e| m | 1 << (e.0 % BLOCK));
            out.extend_from_slice(&map.to_le_bytes());
        } else {
            out.extend(b.iter().map(|e| (e.0 % BLOCK) as u8));
        }
        let w = width(b) as usize;
        for e in b.iter() {
            out.extend_from_slice(&e.1.to_le_bytes()[..w]);
        }
    }
}

/// The slot of value `v` in the store's layout.
pub fn slot_of(v: u64) -> usize {
    if v < 256 {
        return v as usize;
    }
    let bucket = (63 - v.leading_zeros()) as usize - 7;
    bucket * 128 + (v >> bucket) as usize
}

/// The lowest and highest value slot `k` stands for.
pub fn slot_range(k: usize) -> (u64, u64) {
    if k < 256 {
        return (k as u64, k as u64);
    }
    let bucket = (k >> 7) - 1;
    let sub = (k as u64 & 127) + 128;
    (sub << bucket, (sub << bucket) + ((1u64 << bucket) - 1))
}

/// Slots of the store's histogram layout: 256 single-unit slots, then 128 per doubling up to
/// 2^64.
pub const MAX_SLOTS: usize = 256 + 56 * 128;

/// The highest value slot `k` of the store's layout stands for (HDR's highest equivalent value).
pub fn slot_value(k: usize) -> u64 {
    if k < 256 {
        return k as u64;
    }
    let bucket = (k >> 7) - 1;
    let sub = (k as u64 & 127) + 128;
    (sub << bucket) + ((1u64 << bucket) - 1)
}

/// Observations at or below `us` (as HDR's `count_between(0, us)`: a run counts when its
/// range reaches down to `us`).
pub fn sparse_count_le(h: &Sparse, us: u64) -> u64 {
    h.iter().take_while(|x| x.0 <= us).map(|x| x.2).sum()
}

/// Reads HdrHistogram's V2 encoding (a 40-byte header: cookie, payload length, normalizing
/// offset, significant digits, lowest and highest trackable values, conversion ratio; then the
/// counts as zig-zag LEB128, a negative number being a run of that many empty slots) into
/// sparse runs. Only the store's layout (2 significant digits, lowest value 1) is accepted:
/// every histogram it wrote has it.
pub fn sparse_from_v2(buf: &[u8]) -> Result<Sparse, String> {
    let mut out = Vec::new();
    for_each_slot_v2(buf, |k, n| {
        let (lo, hi) = slot_range(k);
        out.push((lo, hi, n));
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2Serializer};

    #[test]
    fn sparse_decoding_matches_hdr() {
        let mut x: u64 = 7;
        for round in 0..20 {
            let mut h = histogram();
            for _ in 0..(round * 50 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                record(&mut h, x % (1 + (10u64 << (round % 40))));
            }
            let mut buf = Vec::new();
            V2Serializer::new().serialize(&h, &mut buf).unwrap();
            let sparse = sparse_from_v2(&buf).unwrap();
            let want: Sparse = h
                .iter_recorded()
                .map(|v| (h.lowest_equivalent(v.value_iterated_to()), v.value_iterated_to(), v.count_at_value()))
                .collect();
            assert_eq!(sparse, want, "round {round}");
            let mut slots = Vec::new();
            HistRef::V2(&buf).for_each_slot(|k, n| slots.push((slot_value(k), n))).unwrap();
            assert_eq!(slots, want.iter().map(|x| (x.1, x.2)).collect::<Vec<_>>(), "round {round}");
            let mut blocked = Vec::new();
            encode_blocked(&h, &mut blocked);
            let mut runs = Vec::new();
            HistRef::Blocked(&blocked).for_each_slot(|k, n| runs.push((slot_range(k).0, slot_range(k).1, n))).unwrap();
            assert_eq!(runs, want, "round {round}");
            let mut heads = Vec::new();
            block_heads(&blocked, &mut heads).unwrap();
            assert_eq!(heads.iter().map(|b| b.sum).sum::<u64>(), h.len(), "round {round}");
            assert!(block_heads(&blocked[..blocked.len() - 1], &mut heads).is_err());
            for us in [0, 1, 100, 1000, 12_345, 1 << 30] {
                assert_eq!(
                    sparse_count_le(&sparse, us),
                    if us == 0 { h.count_between(0, 0) } else { h.count_between(0, us) },
                    "{us}"
                );
            }
        }
    }

    #[test]
    fn slot_maps_and_offset_bytes_read_alike_and_a_damaged_map_is_refused() {
        // Dense blocks (a map), sparse ones (offset bytes), counts of every width.
        let mut entries: Vec<(usize, u64)> = (300..420).map(|k| (k, 1 + (k as u64 % 7))).collect();
        entries.extend([(500, 300), (503, 70_000), (640, 1 << 40)]);
        entries.extend((700..764).step_by(2).map(|k| (k, 2)));
        let read = |b: &[u8]| {
            let mut v = Vec::new();
            HistRef::Blocked(b).for_each_slot(|k, n| v.push((k, n))).unwrap();
            v
        };
        let (mut new, mut old) = (Vec::new(), Vec::new());
        encode_slots(&entries, &mut new);
        encode_slots_mapping(&entries, &mut old, usize::MAX);
        assert_eq!(read(&new), entries);
        assert_eq!(read(&old), entries);
        assert!(new.len() < old.len() - 100, "{} bytes against {}", new.len(), old.len());
        let mut heads = Vec::new();
        block_heads(&new, &mut heads).unwrap();
        assert!(heads.iter().any(|h| h.bitmap) && heads.iter().any(|h| !h.bitmap));
        // A map whose bits disagree with the block's entry count.
        let first_map = heads.iter().find(|h| h.bitmap).unwrap().at;
        let mut bad = new.clone();
        bad[first_map] ^= 0x80;
        assert!(block_heads(&bad, &mut heads).unwrap_err().contains("slot map"));
    }

    fn ev(latency_us: u64, status: i32, err: &str, queue: u64) -> pb::InferenceEvent {
        pb::InferenceEvent {
            latency_us,
            status,
            error_type: err.into(),
            stages: Some(pb::Stages { queue_us: queue, ..Default::default() }),
            prompt_tokens: 3,
            ..Default::default()
        }
    }

    #[test]
    fn record_merge_encode_round_trip() {
        let mut a = Agg::default();
        let mut b = Agg::default();
        for i in 1..=1000u64 {
            a.record(&ev(i * 100, 1, "", 0));
            b.record(&ev(i * 100, if i % 10 == 0 { 2 } else { 1 }, if i % 10 == 0 { "oom" } else { "" }, i));
        }
        a.merge(&b);
        let back = Agg::decode(&a.encode()).unwrap();
        assert_eq!(back.figures.count, 2000);
        assert_eq!(back.figures.by_status[2], 100);
        assert_eq!(back.figures.by_error.get("oom"), Some(&100));
        assert_eq!(back.figures.prompt_tokens, 6000);
        assert_eq!(back.latency.len(), 2000);
        let p95 = back.latency.value_at_quantile(0.95) as f64;
        assert!((p95 - 95_000.0).abs() / 95_000.0 < 0.01, "p95 {p95}");
        assert!(back.stages[0].as_ref().unwrap().len() == 1000);
        assert!(back.stages[1].is_none());
        let enc = a.encode();
        let count = |h: HistRef| {
            let mut n = 0;
            h.for_each_slot(|_, c| n += c).unwrap();
            n
        };
        assert_eq!(count(encoded_histogram(&enc, None).unwrap().unwrap()), 2000);
        assert_eq!(count(encoded_histogram(&enc, Some(0)).unwrap().unwrap()), 1000);
        assert!(encoded_histogram(&enc, Some(1)).unwrap().is_none());
        assert!(Agg::decode(&[1, 2, 3]).is_err());
        let old = Agg::decode(&a.encode_v1()).unwrap();
        assert_eq!(
            (old.figures.count, old.latency.len(), old.latency.value_at_quantile(0.95)),
            (2000, 2000, p95 as u64)
        );
        assert_eq!(Agg::decode_sparse(&a.encode_v1()).unwrap().latency, Agg::decode_sparse(&enc).unwrap().latency);
    }
}
