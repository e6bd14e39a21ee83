//! Raw inference events and log records as the block files store a group of them: column by
//! column. Stored row by row (each record's protobuf bytes, the group through zstd) an event
//! took 68 bytes, against 70 for the same event as a JSON line through `zstd -3`; by column,
//! each field's values sit together and each of their bytes compresses on its own.
//!
//! - **Numbers** are columns of u64: the column's minimum (varint), its width in bytes, then
//!   one *plane* per byte, lowest first (byte `p` of every `value - min`), each plane stored
//!   as is, through zstd or as one repeated byte, whichever is smallest. A latency's random low
//!   byte stays 8 bits while its high byte, nearly constant, costs almost nothing, and small
//!   enumerations (GPU, batch size) cost their entropy through zstd's Huffman stage.
//! - **Strings** (service, model, version, endpoint, logger, error type, label and field keys
//!   and values) go through one dictionary per group. The descriptive strings and the status or
//!   level form a *tuple*: the group keeps its distinct tuples, and each record one tuple
//!   number ([`Columnar::tuple`]).
//! - **Request ids** shaped as 32 hex digits or a UUID (either case) are kept as their 16
//!   bytes, with a form number per record; other ids (nearly always distinct) as a column of
//!   lengths and one plane of their bytes, outside the dictionary.
//! - **Labels and fields** by position in the record's pairs sorted by key: a column of counts,
//!   then per position a column of key numbers and one of value numbers.
//! - Each kind's own columns sit between the request ids and the pairs: for events the
//!   latency, the stages (`inference_us` as its difference from what the latency leaves once
//!   queue, preprocess and postprocess are taken: zero when a service splits its latency into
//!   those stages), sizes and counts; for logs the messages, as templates and the values in
//!   them ([`super::messages`], layout 3; one plane before).
//! - **Byte counts** of events (layout 2): input and output bytes as their differences from the
//!   prompt and completion tokens times the group's slope of bytes over tokens, when that
//!   narrows their column ([`put_predicted`]). Text runs at a nearly fixed number of bytes
//!   per token, and what is left is the framing around it (in `cargo bench --bench
//!   events_disk`, 29.5 bytes an event of block files against 31.0).
//! - Timestamps and indexes as differences from the previous record's.
//!
//! Every record reads back field for field as it was written (the protobuf fields modelwatch
//! knows; prost drops unknown ones on decode already). Layout, after the group's `0` and layout
//! number (see [`super::raw`]): `n`, then the columns in the order [`encode`] writes them.
use super::index::FxMap;
use super::keys::{put_varint, same, unzigzag, zigzag, DecodeError, Reader};
use super::messages::{self, Messages};
use crate::pb;
use std::cell::RefCell;
use std::collections::HashMap;

const WHAT: &str = "event columns";

/// Layouts of a group, the byte after its `0` in the block files ([`super::raw`]): the first
/// one, the one whose events' byte counts may be differences from a ratio to their token
/// counts ([`put_predicted`]), and the one whose log messages may be templates and values
/// ([`super::messages`]; its events are as in layout 2).
pub const LAYOUT_PLAIN: u8 = 1;
pub const LAYOUT_PREDICTED: u8 = 2;
pub const LAYOUT_TEMPLATES: u8 = 3;
/// The layout [`encode`] writes.
pub const LAYOUT: u8 = LAYOUT_TEMPLATES;

/// zstd's level for planes, compressed on the ingest handlers: level 3 made the 1 M events of
/// `cargo bench --bench events_disk` 0.2 byte an event larger than level 1, and slower.
const LEVEL: i32 = 1;

/// zstd's shortest match for planes, its largest (the default at level 1 is 6): a plane of a
/// few symbols in random order (timestamps' steps, tuples, GPUs, tenants) holds many short
/// chance repeats, which cost more as matches than as Huffman-coded literals. In `cargo bench
/// --bench events_disk`, 29.38 bytes an event of block files against 29.53, and 22.89 a log
/// record against 23.07 (levels 2 and 3 gave the same as 1). Frames stay standard zstd frames.
const MIN_MATCH: u32 = 7;

/// Planes shorter than this are stored as is (zstd's frame costs more than it saves).
const MIN_COMPRESS: usize = 32;

pub(super) fn bad(detail: impl Into<String>) -> DecodeError {
    DecodeError { what: WHAT, detail: detail.into() }
}

/// A plane whose length the reader knows: `0` + the bytes, `1` + zstd length + zstd form, or
/// `2` + the one byte every position holds.
pub(super) fn put_plane(out: &mut Vec<u8>, bytes: &[u8]) {
    if let Some(&b) = bytes.first() {
        if bytes.len() > 2 && bytes.iter().all(|&x| x == b) {
            out.push(2);
            out.push(b);
            return;
        }
    }
    if bytes.len() >= MIN_COMPRESS {
        // One zstd context per thread: a context per plane cost more than the compression.
        thread_local!(static ZSTD: RefCell<(zstd::zstd_safe::CCtx<'static>, Vec<u8>)> = RefCell::new({
            use zstd::zstd_safe::{CCtx, CParameter};
            let mut c = CCtx::create();
            // Neither can be refused (both within zstd's bounds); a refusal would only leave
            // zstd's default in place.
            let _ = c.set_parameter(CParameter::CompressionLevel(LEVEL));
            let _ = c.set_parameter(CParameter::MinMatch(MIN_MATCH));
            (c, Vec::new())
        }));
        let done = ZSTD.with_borrow_mut(|(c, z)| {
            z.clear();
            z.reserve(zstd::zstd_safe::compress_bound(bytes.len()));
            match c.compress2(z, bytes) {
                Ok(n) if n + 4 < bytes.len() => {
                    out.push(1);
                    put_varint(out, n as u64);
                    out.extend_from_slice(&z[..n]);
                    true
                }
                _ => false,
            }
        });
        if done {
            return;
        }
    }
    out.push(0);
    out.extend_from_slice(bytes);
}

pub(super) fn plane(r: &mut Reader, n: usize) -> Result<Vec<u8>, DecodeError> {
    match r.byte()? {
        0 => Ok(r.bytes(n)?.to_vec()),
        1 => {
            let len = r.varint()? as usize;
            let z = r.bytes(len)?;
            // One context per thread: a context per plane was a tenth of a look-up's time.
            super::zctx::decompress(z, n).map_err(|e| r.err(&format!("a plane: {e}")))
        }
        2 => Ok(vec![r.byte()?; n]),
        f => Err(r.err(&format!("unknown plane form {f}"))),
    }
}

/// The minimum of `vals` and the bytes each takes above it.
fn min_width(vals: &[u64]) -> (u64, u32) {
    let min = vals.iter().copied().min().unwrap_or(0);
    let span = vals.iter().map(|v| v - min).max().unwrap_or(0);
    (min, (64 - span.leading_zeros()).div_ceil(8))
}

/// A column of numbers: `min`, width, planes ([`put_plane`]).
pub(super) fn put_col(out: &mut Vec<u8>, vals: &[u64]) {
    let (min, width) = min_width(vals);
    put_varint(out, min);
    out.push(width as u8);
    let mut p = Vec::with_capacity(vals.len());
    for shift in (0..width).map(|b| 8 * b) {
        p.clear();
        p.extend(vals.iter().map(|v| ((v - min) >> shift) as u8));
        put_plane(out, &p);
    }
}

pub(super) fn col(r: &mut Reader, n: usize) -> Result<Vec<u64>, DecodeError> {
    let min = r.varint()?;
    let width = r.byte()?;
    if width > 8 {
        return Err(r.err(&format!("a column {width} bytes wide")));
    }
    let mut vals = vec![0u64; n];
    for shift in (0..u32::from(width)).map(|b| 8 * b) {
        for (v, b) in vals.iter_mut().zip(plane(r, n)?) {
            *v |= u64::from(b) << shift;
        }
    }
    for v in &mut vals {
        *v = v.wrapping_add(min);
    }
    Ok(vals)
}

/// A column read but not yet summed up: [`Lazy::get`] makes the values asked for (a look-up
/// wants one event of thousands).
struct Lazy {
    min: u64,
    planes: Vec<Vec<u8>>,
}

impl Lazy {
    fn read(r: &mut Reader, n: usize) -> Result<Lazy, DecodeError> {
        let min = r.varint()?;
        let width = r.byte()?;
        if width > 8 {
            return Err(r.err(&format!("a column {width} bytes wide")));
        }
        Ok(Lazy { min, planes: (0..width).map(|_| plane(r, n)).collect::<Result<_, _>>()? })
    }

    fn get(&self, i: usize) -> u64 {
        let v = self.planes.iter().enumerate().fold(0u64, |v, (p, b)| v | u64::from(b[i]) << (8 * p));
        v.wrapping_add(self.min)
    }

    fn get32(&self, i: usize) -> Result<u32, DecodeError> {
        u32::try_from(self.get(i)).map_err(|_| bad(format!("a count of {} past u32", self.get(i))))
    }
}

/// Numbers that must be below `limit` (dictionary and tuple numbers).
pub(super) fn col_below(r: &mut Reader, n: usize, limit: usize, what: &str) -> Result<Vec<usize>, DecodeError> {
    col(r, n)?
        .into_iter()
        .map(|v| usize::try_from(v).ok().filter(|&v| v < limit).ok_or_else(|| r.err(&format!("{what} {v} of {limit}"))))
        .collect()
}

/// A dictionary key compared with [`same`].
#[derive(Clone, Copy)]
struct Key<'a>(&'a str);

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        same(self.0, other.0)
    }
}

impl Eq for Key<'_> {}

impl std::hash::Hash for Key<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.hash(h)
    }
}

/// The group's strings, numbered in order of first use.
#[derive(Default)]
struct Dict<'a> {
    ids: FxMap<Key<'a>, u64>,
    strings: Vec<&'a str>,
}

impl<'a> Dict<'a> {
    fn id(&mut self, s: &'a str) -> u64 {
        let next = self.strings.len() as u64;
        *self.ids.entry(Key(s)).or_insert_with(|| {
            self.strings.push(s);
            next
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_strings(out, &self.strings);
    }
}

/// Strings: their count, a column of lengths, their bytes as one plane.
pub(super) fn put_strings<S: AsRef<[u8]>>(out: &mut Vec<u8>, strings: &[S]) {
    put_varint(out, strings.len() as u64);
    put_col(out, &strings.iter().map(|s| s.as_ref().len() as u64).collect::<Vec<_>>());
    let mut bytes = Vec::with_capacity(strings.iter().map(|s| s.as_ref().len()).sum());
    for s in strings {
        bytes.extend_from_slice(s.as_ref());
    }
    put_plane(out, &bytes);
}

/// How a request id is kept: empty, 16 bytes written back as 32 hex digits or a UUID (lower or
/// upper case), or a dictionary string.
const RID_EMPTY: u64 = 0;
const RID_HEX: u64 = 1;
const RID_HEX_UPPER: u64 = 2;
const RID_UUID: u64 = 3;
const RID_UUID_UPPER: u64 = 4;
const RID_OTHER: u64 = 5;

const UUID_DASHES: [usize; 4] = [8, 13, 18, 23];

/// Per byte: its value as a hex digit, with 0x10 for a lower-case letter and 0x20 for an
/// upper-case one; 0xff for anything else.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 0x10 | (10 + i as u8);
        t[b'A' as usize + i] = 0x20 | (10 + i as u8);
        i += 1;
    }
    t
};

/// The id's form and, for the 16-byte forms, its bytes.
fn rid_form(s: &str) -> (u64, [u8; 16]) {
    let b = s.as_bytes();
    let uuid = match b.len() {
        0 => return (RID_EMPTY, [0; 16]),
        32 => false,
        36 if UUID_DASHES.iter().all(|&i| b[i] == b'-') => true,
        _ => return (RID_OTHER, [0; 16]),
    };
    let mut out = [0u8; 16];
    let mut seen = 0u8;
    let mut j = 0;
    for (i, &c) in b.iter().enumerate() {
        if uuid && UUID_DASHES.contains(&i) {
            continue;
        }
        let v = HEX_VALUE[usize::from(c)];
        seen |= v;
        out[j / 2] |= (v & 15) << (4 * (1 - j % 2));
        j += 1;
    }
    // 0x40 comes only from 0xff: a byte that is no hex digit.
    match (seen & 0x40 != 0, seen & 0x10 != 0, seen & 0x20 != 0, uuid) {
        (true, ..) | (_, true, true, _) => (RID_OTHER, [0; 16]),
        (_, false, true, false) => (RID_HEX_UPPER, out),
        (_, false, true, true) => (RID_UUID_UPPER, out),
        (_, _, false, false) => (RID_HEX, out),
        (_, _, false, true) => (RID_UUID, out),
    }
}

fn rid_text(form: u64, bytes: &[u8]) -> String {
    let upper = form == RID_HEX_UPPER || form == RID_UUID_UPPER;
    let uuid = form == RID_UUID || form == RID_UUID_UPPER;
    let digits = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
    let mut s = String::with_capacity(36);
    for (i, &b) in bytes.iter().enumerate() {
        if uuid && matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(digits[usize::from(b >> 4)] as char);
        s.push(digits[usize::from(b & 15)] as char);
    }
    s
}

/// A record's descriptive strings and one enumeration, as dictionary numbers (the number
/// zigzagged last).
type Tuple = [u64; 6];

/// Strings read as one plane, made into `String`s only when asked for ([`LazyStrings::get`]).
pub struct LazyStrings {
    /// Where each string starts, then where the last ends.
    at: Vec<usize>,
    bytes: Vec<u8>,
}

impl LazyStrings {
    pub(super) fn read(r: &mut Reader, max_bytes: usize) -> Result<LazyStrings, DecodeError> {
        let count = r.varint()? as usize;
        // Block files are checksummed: this bounds what a bug could ask for, not damage.
        if count > max_bytes {
            return Err(r.err(&format!("{count} strings")));
        }
        let mut at = Vec::with_capacity(count + 1);
        at.push(0usize);
        for l in col(r, count)? {
            let end = at[at.len() - 1].checked_add(l as usize).filter(|&e| e <= max_bytes);
            at.push(end.ok_or_else(|| r.err("strings longer than the group may hold"))?);
        }
        let bytes = plane(r, at[count])?;
        Ok(LazyStrings { at, bytes })
    }

    pub(super) fn len(&self) -> usize {
        self.at.len() - 1
    }

    /// Whether string `i` is `s`.
    fn is(&self, i: usize, s: &str) -> bool {
        self.bytes[self.at[i]..self.at[i + 1]] == *s.as_bytes()
    }

    /// String `i`'s bytes.
    pub(super) fn bytes(&self, i: usize) -> &[u8] {
        &self.bytes[self.at[i]..self.at[i + 1]]
    }

    pub(super) fn get(&self, i: usize) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes[self.at[i]..self.at[i + 1]].to_vec())
            .map_err(|_| bad("a string that is not UTF-8"))
    }
}

/// What the columns of both kinds share: a record's time, request id, descriptive strings and
/// key-value pairs. Each kind adds its own columns between the request ids and the pairs.
pub trait Columnar: Sized {
    /// Events: service, model, version, endpoint, error type and status; logs: service,
    /// logger, error type, two empty strings and level.
    fn tuple(&self) -> ([&str; 5], i32);
    fn ts(&self) -> i64;
    fn rid(&self) -> &str;
    /// Labels or fields.
    fn pairs(&self) -> &HashMap<String, String>;
    /// The kind's own columns, read.
    type Own;
    fn put_own(records: &[(u32, &Self)], out: &mut Vec<u8>, layout: u8);
    /// `layout`: the group's ([`LAYOUT_PLAIN`], [`LAYOUT_PREDICTED`]).
    fn read_own(r: &mut Reader, n: usize, layout: u8) -> Result<Self::Own, DecodeError>;
    /// Record `k` from its shared fields and the kind's columns; every record passes, kept or
    /// not (`common` is `None` for those not kept), so that cursors move.
    fn build(own: &mut Self::Own, k: usize, common: Option<Common>) -> Result<Option<Self>, DecodeError>;
}

/// The shared fields of one record, read back.
pub struct Common {
    pub ts: i64,
    pub strs: [String; 5],
    pub num: i32,
    pub rid: String,
    pub pairs: HashMap<String, String>,
}

/// `records` (index in their WAL record, record; indexes increasing) in the layout of the
/// module documentation, appended to `out`.
pub fn encode<R: Columnar>(records: &[(u32, &R)], out: &mut Vec<u8>) {
    encode_as(records, out, LAYOUT);
}

/// [`encode`] in an older layout too (tests read the groups earlier builds wrote).
fn encode_as<R: Columnar>(records: &[(u32, &R)], out: &mut Vec<u8>, layout: u8) {
    let n = records.len();
    put_varint(out, n as u64);
    let mut dict = Dict::default();
    let mut tuples: FxMap<Tuple, u64> = FxMap::default();
    let mut tuple_list: Vec<Tuple> = Vec::new();
    let mut tuple_of = Vec::with_capacity(n);
    let mut rid_forms = Vec::with_capacity(n);
    let mut rid_bytes = Vec::new();
    let mut rid_other = Vec::new();
    let mut pair_counts = Vec::with_capacity(n);
    // Pairs by position in the record's pairs sorted by key: (key, value) numbers.
    let mut pair_pos: Vec<(Vec<u64>, Vec<u64>)> = Vec::new();
    let mut pairs = Vec::new();
    // The descriptive strings repeat from one record to the next: a recent record's tuple is
    // reused when its strings match, without hashing them (a service's events rotate among a
    // few models and endpoints).
    const RECENT: usize = 8;
    let mut recent: Vec<([&str; 5], i32, u64)> = Vec::with_capacity(RECENT);
    for (k, (_, e)) in records.iter().enumerate() {
        let (strs, num) = e.tuple();
        let hit = recent.iter().find(|(p, pn, _)| *pn == num && p.iter().zip(&strs).all(|(a, b)| same(a, b)));
        let tuple = match hit {
            Some(&(_, _, t)) => t,
            None => {
                let mut t = [0u64; 6];
                for (x, s) in t.iter_mut().zip(strs) {
                    *x = dict.id(s);
                }
                t[5] = zigzag(i64::from(num));
                let next = tuple_list.len() as u64;
                let t = *tuples.entry(t).or_insert_with(|| {
                    tuple_list.push(t);
                    next
                });
                if recent.len() < RECENT {
                    recent.push((strs, num, t));
                } else {
                    recent[k % RECENT] = (strs, num, t);
                }
                t
            }
        };
        tuple_of.push(tuple);
        let (form, bytes) = rid_form(e.rid());
        rid_forms.push(form);
        match form {
            RID_EMPTY => {}
            RID_OTHER => rid_other.push(e.rid()),
            _ => rid_bytes.extend_from_slice(&bytes),
        }
        pairs.clear();
        pairs.extend(e.pairs().iter());
        pairs.sort_unstable();
        pair_counts.push(pairs.len() as u64);
        for (j, &(k, v)) in pairs.iter().enumerate() {
            if pair_pos.len() <= j {
                pair_pos.push(Default::default());
            }
            pair_pos[j].0.push(dict.id(k));
            pair_pos[j].1.push(dict.id(v));
        }
    }
    let mut prev = 0u32;
    let index: Vec<u64> = records
        .iter()
        .enumerate()
        .map(|(k, &(i, _))| {
            let d = if k == 0 { i } else { i.wrapping_sub(prev).wrapping_sub(1) };
            prev = i;
            u64::from(d)
        })
        .collect();
    put_col(out, &index);
    let first_ts = records.first().map_or(0, |(_, e)| e.ts());
    put_varint(out, zigzag(first_ts));
    let mut prev_ts = first_ts;
    let ts: Vec<u64> = records
        .iter()
        .map(|(_, e)| {
            let d = zigzag(e.ts().wrapping_sub(prev_ts));
            prev_ts = e.ts();
            d
        })
        .collect();
    put_col(out, &ts);
    dict.write(out);
    put_varint(out, tuple_list.len() as u64);
    for f in 0..6 {
        put_col(out, &tuple_list.iter().map(|t| t[f]).collect::<Vec<_>>());
    }
    put_col(out, &tuple_of);
    put_col(out, &rid_forms);
    put_plane(out, &rid_bytes);
    put_strings(out, &rid_other);
    R::put_own(records, out, layout);
    put_col(out, &pair_counts);
    for (keys, values) in &pair_pos {
        put_col(out, keys);
        put_col(out, values);
    }
}

/// The records of a group written by [`encode`] whose index `keep` accepts and, with `rid`,
/// whose request id is that one (compared in the stored form: a look-up scans the group's ids
/// without making strings of them). `count` is the number of records the group's index entry
/// records; the group must hold that many.
pub fn decode<R: Columnar>(
    data: &[u8],
    layout: u8,
    count: u32,
    keep: &dyn Fn(u32) -> bool,
    rid: Option<&str>,
) -> Result<Vec<(u32, R)>, DecodeError> {
    let r = &mut Reader::new(data, WHAT);
    let Head { index, ts, dict, tuple_fields, nums, tuple_of } = read_head(r, count)?;
    let n = index.len();
    let dict = (0..dict.len()).map(|i| dict.get(i)).collect::<Result<Vec<_>, _>>()?;
    let forms = col(r, n)?;
    let n16 = forms.iter().filter(|&&f| (RID_HEX..=RID_UUID_UPPER).contains(&f)).count();
    let rid_bytes = plane(r, n16 * 16)?;
    let n_other = forms.iter().filter(|&&f| f == RID_OTHER).count();
    let rid_other = LazyStrings::read(r, super::wal::MAX_RECORD)?;
    if rid_other.len() != n_other {
        return Err(r.err(&format!("{} other request ids where the forms say {n_other}", rid_other.len())));
    }
    let mut own = R::read_own(r, n, layout)?;
    let pair_counts = col(r, n)?;
    let mut pair_pos = Vec::new();
    let mut with = pair_counts.iter().filter(|&&c| c > 0).count();
    while with > 0 {
        let j = pair_pos.len() as u64;
        pair_pos.push((col_below(r, with, dict.len(), "string")?, col_below(r, with, dict.len(), "string")?, 0usize));
        with = pair_counts.iter().filter(|&&c| c > j + 1).count();
    }
    if !r.done() {
        return Err(r.err("bytes past the last column"));
    }

    // Every record moves the cursors of the columns it has values in; only the kept ones are
    // built (a request-id look-up keeps one of thousands).
    let mut out = Vec::new();
    let (mut at16, mut at_other) = (0, 0);
    let wanted = rid.map(|r| (r, rid_form(r)));
    for k in 0..n {
        let form = forms[k];
        match form {
            RID_EMPTY => {}
            RID_OTHER => at_other += 1,
            RID_HEX..=RID_UUID_UPPER => at16 += 16,
            f => return Err(bad(format!("request id form {f}"))),
        }
        let kept = keep(index[k])
            && wanted.is_none_or(|(text, (f, bytes))| {
                f == form
                    && match form {
                        RID_EMPTY => true,
                        RID_OTHER => rid_other.is(at_other - 1, text),
                        _ => rid_bytes[at16 - 16..at16] == bytes,
                    }
            });
        let rid = match form {
            RID_EMPTY => None,
            RID_OTHER => kept.then(|| rid_other.get(at_other - 1)).transpose()?,
            _ => kept.then(|| rid_text(form, &rid_bytes[at16 - 16..at16])),
        };
        // Pairs sit by position: every record with more than `j` has one in column `j`.
        let mut pairs = HashMap::new();
        for (keys, values, at) in pair_pos.iter_mut().take(pair_counts[k] as usize) {
            if kept {
                pairs.insert(dict[keys[*at]].clone(), dict[values[*at]].clone());
            }
            *at += 1;
        }
        let common = if kept {
            let t = tuple_of[k];
            let num = i32::try_from(unzigzag(nums[t])).map_err(|_| bad("an enumeration past i32"))?;
            Some(Common {
                ts: ts[k],
                strs: [0, 1, 2, 3, 4].map(|f| dict[tuple_fields[f][t]].clone()),
                num,
                rid: rid.unwrap_or_default(),
                pairs,
            })
        } else {
            None
        };
        if let Some(rec) = R::build(&mut own, k, common)? {
            out.push((index[k], rec));
        }
    }
    Ok(out)
}

/// What a group holds before its request ids: each record's index in its WAL record, time
/// and tuple.
struct Head {
    index: Vec<u32>,
    ts: Vec<i64>,
    dict: LazyStrings,
    /// Per field of the tuple, each tuple's string number.
    tuple_fields: Vec<Vec<usize>>,
    /// Each tuple's number (zigzagged).
    nums: Vec<u64>,
    tuple_of: Vec<usize>,
}

fn read_head(r: &mut Reader, count: u32) -> Result<Head, DecodeError> {
    let n = r.varint()?;
    if n != u64::from(count) {
        return Err(bad(format!("{n} records where the group's index entry says {count}")));
    }
    let n = n as usize;
    let mut index = Vec::with_capacity(n);
    let mut prev = 0u32;
    for (k, d) in col(r, n)?.into_iter().enumerate() {
        let d = u32::try_from(d).map_err(|_| r.err("an index past u32"))?;
        prev = if k == 0 { d } else { prev.wrapping_add(d).wrapping_add(1) };
        index.push(prev);
    }
    let mut ts = unzigzag(r.varint()?);
    let ts: Vec<i64> = col(r, n)?
        .into_iter()
        .map(|d| {
            ts = ts.wrapping_add(unzigzag(d));
            ts
        })
        .collect();
    let dict = LazyStrings::read(r, super::wal::MAX_RECORD)?;
    let nt = r.varint()? as usize;
    if nt > n {
        return Err(r.err(&format!("{nt} tuples for {n} records")));
    }
    let tuple_fields = (0..5).map(|_| col_below(r, nt, dict.len(), "string")).collect::<Result<Vec<_>, _>>()?;
    let nums = col(r, nt)?;
    let tuple_of = col_below(r, n, nt, "tuple")?;
    Ok(Head { index, ts, dict, tuple_fields, nums, tuple_of })
}

/// A group's records as times and tuples only: what counting them by service, level or status
/// needs. Nothing past the tuples is read (request ids, messages, pairs), which makes it many
/// times faster than [`decode`] (`modelwatch_log_records_total` is counted this way).
pub struct Tally {
    /// Each record's index in its WAL record (ascending).
    pub index: Vec<u32>,
    pub ts: Vec<i64>,
    /// Each tuple's strings and number, as [`Columnar::tuple`] gives them.
    pub tuples: Vec<([String; 5], i32)>,
    /// Each record's tuple.
    pub tuple_of: Vec<usize>,
}

impl Tally {
    /// The tally of records at hand (groups stored row by row, before columns), indexed
    /// from 0.
    pub fn of<R: Columnar>(records: &[R]) -> Tally {
        let mut t = Tally {
            index: Vec::new(),
            ts: Vec::with_capacity(records.len()),
            tuples: Vec::new(),
            tuple_of: Vec::new(),
        };
        let mut seen: HashMap<([String; 5], i32), usize> = HashMap::new();
        for rec in records {
            let (strs, num) = rec.tuple();
            let key = (strs.map(str::to_string), num);
            let next = seen.len();
            let k = *seen.entry(key.clone()).or_insert_with(|| {
                t.tuples.push(key);
                next
            });
            t.index.push(t.ts.len() as u32);
            t.ts.push(rec.ts());
            t.tuple_of.push(k);
        }
        t
    }

    /// Keeps the records that `keep` accepts by time.
    pub fn retain_ts(&mut self, keep: impl Fn(i64) -> bool) {
        if self.ts.iter().all(|&ts| keep(ts)) {
            return;
        }
        let kept: Vec<usize> = (0..self.ts.len()).filter(|&k| keep(self.ts[k])).collect();
        self.index = kept.iter().map(|&k| self.index[k]).collect();
        self.tuple_of = kept.iter().map(|&k| self.tuple_of[k]).collect();
        self.ts = kept.iter().map(|&k| self.ts[k]).collect();
    }
}

/// The [`Tally`] of a group written by [`encode`] (any layout: they share what it reads).
pub fn tally(data: &[u8], count: u32) -> Result<Tally, DecodeError> {
    let r = &mut Reader::new(data, WHAT);
    let Head { index, ts, dict, tuple_fields, nums, tuple_of } = read_head(r, count)?;
    let tuples = nums
        .iter()
        .enumerate()
        .map(|(t, &num)| {
            let num = i32::try_from(unzigzag(num)).map_err(|_| bad("an enumeration past i32"))?;
            let strs = [0, 1, 2, 3, 4].map(|f| dict.get(tuple_fields[f][t]));
            let [a, b, c, d, e] = strs;
            Ok(([a?, b?, c?, d?, e?], num))
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok(Tally { index, ts, tuples, tuple_of })
}

/// `from` × `ratio` / 256, rounded (wrapping: it only has to be the same on both sides).
fn predict(from: u64, ratio: u64) -> u64 {
    ((u128::from(from) * u128::from(ratio) + 128) >> 8) as u64
}

/// A signed difference as a u64 that keeps its order, so that [`put_col`]'s minimum takes a
/// range around zero whole (the inverse is itself).
fn ordered(d: u64) -> u64 {
    d ^ (1 << 63)
}

/// `vals` as a column ([`put_col`]) after a varint ratio: `0`, the values themselves; else
/// their differences from `from` × `ratio` / 256 ([`predict`], [`ordered`]), when those take
/// fewer bytes a value. The ratio is the group's own least-squares slope of `vals` over
/// `from` (the column's minimum takes the intercept): byte counts of text run at a nearly
/// fixed number per token, so that what is left of them is the noise around it.
fn put_predicted(out: &mut Vec<u8>, vals: &[u64], from: &[u64]) {
    let n = vals.len().max(1) as f64;
    let mean = |c: &[u64]| c.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mv, mf) = (mean(vals), mean(from));
    let (cov, var) = vals.iter().zip(from).fold((0.0, 0.0), |(c, v), (&y, &x)| {
        let dx = x as f64 - mf;
        (c + dx * (y as f64 - mv), v + dx * dx)
    });
    let slope = if var > 0.0 { cov / var } else { 0.0 };
    // Not finite, negative or past u32: no prediction (`as` saturates; NaN gives 0).
    let ratio = (slope * 256.0).round().min(f64::from(u32::MAX)) as u64;
    if ratio > 0 {
        let rest: Vec<u64> = vals.iter().zip(from).map(|(&v, &f)| ordered(v.wrapping_sub(predict(f, ratio)))).collect();
        if min_width(&rest).1 < min_width(vals).1 {
            put_varint(out, ratio);
            put_col(out, &rest);
            return;
        }
    }
    put_varint(out, 0);
    put_col(out, vals);
}

/// What the latency leaves for inference once the other stages are taken (wrapping: any
/// values read back exactly).
fn rest_of_latency(latency: u64, s: &pb::Stages) -> u64 {
    latency.wrapping_sub(s.queue_us).wrapping_sub(s.preprocess_us).wrapping_sub(s.postprocess_us)
}

/// An event's own columns: latency, stages (for those that have them), sizes and counts.
pub struct EventColumns {
    latency: Lazy,
    has_stages: Vec<u64>,
    at_stage: usize,
    stages: [Lazy; 6],
    numbers: [Lazy; 6],
    /// Input and output bytes: the ratio to prompt and completion tokens their columns are
    /// the differences from ([`put_predicted`]; 0: the values themselves).
    ratios: [u64; 2],
}

impl Columnar for pb::InferenceEvent {
    fn tuple(&self) -> ([&str; 5], i32) {
        ([&self.service, &self.model, &self.model_version, &self.endpoint, &self.error_type], self.status)
    }

    fn ts(&self) -> i64 {
        self.timestamp_ms
    }

    fn rid(&self) -> &str {
        &self.request_id
    }

    fn pairs(&self) -> &HashMap<String, String> {
        &self.labels
    }

    type Own = EventColumns;

    fn put_own(events: &[(u32, &Self)], out: &mut Vec<u8>, layout: u8) {
        let num = |f: &dyn Fn(&pb::InferenceEvent) -> u64| events.iter().map(|(_, e)| f(e)).collect::<Vec<_>>();
        put_col(out, &num(&|e| e.latency_us));
        put_col(out, &num(&|e| u64::from(e.stages.is_some())));
        let stages: Vec<(u64, &pb::Stages)> =
            events.iter().filter_map(|(_, e)| e.stages.as_ref().map(|s| (e.latency_us, s))).collect();
        let stage = |f: &dyn Fn(u64, &pb::Stages) -> u64| stages.iter().map(|&(l, s)| f(l, s)).collect::<Vec<_>>();
        put_col(out, &stage(&|_, s| s.queue_us));
        put_col(out, &stage(&|_, s| s.preprocess_us));
        put_col(out, &stage(&|_, s| s.postprocess_us));
        put_col(out, &stage(&|l, s| zigzag(s.inference_us.wrapping_sub(rest_of_latency(l, s)) as i64)));
        put_col(out, &stage(&|_, s| s.time_to_first_token_us));
        put_col(out, &stage(&|_, s| s.time_per_output_token_us));
        let (prompt, completion) = (num(&|e| u64::from(e.prompt_tokens)), num(&|e| u64::from(e.completion_tokens)));
        if layout >= LAYOUT_PREDICTED {
            put_predicted(out, &num(&|e| e.input_bytes), &prompt);
            put_predicted(out, &num(&|e| e.output_bytes), &completion);
        } else {
            put_col(out, &num(&|e| e.input_bytes));
            put_col(out, &num(&|e| e.output_bytes));
        }
        put_col(out, &prompt);
        put_col(out, &completion);
        put_col(out, &num(&|e| u64::from(e.batch_size)));
        put_col(out, &num(&|e| u64::from(e.gpu)));
    }

    fn read_own(r: &mut Reader, n: usize, layout: u8) -> Result<EventColumns, DecodeError> {
        let latency = Lazy::read(r, n)?;
        let has_stages = col(r, n)?;
        let ns = has_stages.iter().filter(|&&h| h != 0).count();
        let mut stage = || Lazy::read(r, ns);
        let stages = [stage()?, stage()?, stage()?, stage()?, stage()?, stage()?];
        let mut ratios = [0u64; 2];
        let predicted = |r: &mut Reader, ratio: &mut u64| {
            if layout >= LAYOUT_PREDICTED {
                *ratio = r.varint()?;
            }
            Lazy::read(r, n)
        };
        let [ri, ro] = &mut ratios;
        let input_bytes = predicted(r, ri)?;
        let output_bytes = predicted(r, ro)?;
        let mut number = || Lazy::read(r, n);
        let numbers = [input_bytes, output_bytes, number()?, number()?, number()?, number()?];
        Ok(EventColumns { latency, has_stages, at_stage: 0, stages, numbers, ratios })
    }

    fn build(c: &mut EventColumns, k: usize, common: Option<Common>) -> Result<Option<Self>, DecodeError> {
        let stage = (c.has_stages[k] != 0).then(|| {
            c.at_stage += 1;
            c.at_stage - 1
        });
        let Some(m) = common else { return Ok(None) };
        let latency = c.latency.get(k);
        let stages = stage.map(|s| {
            let [queue, pre, post, inference, ttft, tpot] = &c.stages;
            let mut st = pb::Stages {
                queue_us: queue.get(s),
                preprocess_us: pre.get(s),
                inference_us: 0,
                postprocess_us: post.get(s),
                time_to_first_token_us: ttft.get(s),
                time_per_output_token_us: tpot.get(s),
            };
            st.inference_us = rest_of_latency(latency, &st).wrapping_add(unzigzag(inference.get(s)) as u64);
            st
        });
        let [input_bytes, output_bytes, prompt, completion, batch, gpu] = &c.numbers;
        let bytes = |col: &Lazy, ratio: u64, from: u64| match ratio {
            0 => col.get(k),
            r => predict(from, r).wrapping_add(ordered(col.get(k))),
        };
        let (prompt, completion) = (prompt.get32(k)?, completion.get32(k)?);
        let [service, model, model_version, endpoint, error_type] = m.strs;
        Ok(Some(pb::InferenceEvent {
            timestamp_ms: m.ts,
            service,
            model,
            model_version,
            endpoint,
            request_id: m.rid,
            status: m.num,
            error_type,
            latency_us: latency,
            stages,
            input_bytes: bytes(input_bytes, c.ratios[0], u64::from(prompt)),
            output_bytes: bytes(output_bytes, c.ratios[1], u64::from(completion)),
            prompt_tokens: prompt,
            completion_tokens: completion,
            batch_size: batch.get32(k)?,
            gpu: gpu.get32(k)?,
            labels: m.pairs,
        }))
    }
}

/// A log record's own column: its message; from layout 3 as templates and the values in them
/// ([`super::messages`]), before as one plane of all of a group's messages.
impl Columnar for pb::LogRecord {
    fn tuple(&self) -> ([&str; 5], i32) {
        ([&self.service, &self.logger, &self.error_type, "", ""], self.level)
    }

    fn ts(&self) -> i64 {
        self.timestamp_ms
    }

    fn rid(&self) -> &str {
        &self.request_id
    }

    fn pairs(&self) -> &HashMap<String, String> {
        &self.fields
    }

    type Own = Messages;

    fn put_own(records: &[(u32, &Self)], out: &mut Vec<u8>, layout: u8) {
        let messages: Vec<&str> = records.iter().map(|(_, r)| r.message.as_str()).collect();
        if layout >= LAYOUT_TEMPLATES {
            messages::put(out, &messages);
        } else {
            put_strings(out, &messages);
        }
    }

    fn read_own(r: &mut Reader, n: usize, layout: u8) -> Result<Messages, DecodeError> {
        if layout >= LAYOUT_TEMPLATES {
            return Messages::read(r, n);
        }
        let m = LazyStrings::read(r, super::wal::MAX_RECORD)?;
        if m.len() != n {
            return Err(r.err(&format!("{} messages for {n} records", m.len())));
        }
        Ok(Messages::Plain(m))
    }

    fn build(messages: &mut Messages, k: usize, common: Option<Common>) -> Result<Option<Self>, DecodeError> {
        let message = messages.next(k, common.is_some())?;
        let Some(m) = common else { return Ok(None) };
        let [service, logger, error_type, ..] = m.strs;
        Ok(Some(pb::LogRecord {
            timestamp_ms: m.ts,
            level: m.num,
            message: message.unwrap_or_default(),
            service,
            request_id: m.rid,
            error_type,
            fields: m.pairs,
            logger,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(events: &[pb::InferenceEvent]) -> Vec<u8> {
        let indexed: Vec<(u32, &pb::InferenceEvent)> =
            events.iter().enumerate().map(|(i, e)| (2 * i as u32 + 1, e)).collect();
        // Groups written before byte counts were predicted still read.
        let mut plain = Vec::new();
        encode_as(&indexed, &mut plain, LAYOUT_PLAIN);
        let back = decode::<pb::InferenceEvent>(&plain, LAYOUT_PLAIN, events.len() as u32, &|_| true, None).unwrap();
        assert!(back.iter().map(|(_, e)| e).eq(events.iter()));
        let mut out = Vec::new();
        encode(&indexed, &mut out);
        let back = decode::<pb::InferenceEvent>(&out, LAYOUT, events.len() as u32, &|_| true, None).unwrap();
        assert_eq!(back.len(), events.len());
        for ((i, e), (j, b)) in indexed.iter().zip(&back) {
            assert_eq!(i, j);
            assert_eq!(*e, b);
        }
        // Chosen by index: only those are built.
        let some = decode::<pb::InferenceEvent>(&out, LAYOUT, events.len() as u32, &|i| i % 4 == 1, None).unwrap();
        assert_eq!(some.len(), events.len().div_ceil(2));
        // Chosen by request id, in whichever form it is stored, and by both.
        for e in [&events[0], &events[events.len() / 2]] {
            let rid = Some(e.request_id.as_str());
            let by_rid = decode::<pb::InferenceEvent>(&out, LAYOUT, events.len() as u32, &|_| true, rid).unwrap();
            let want: Vec<_> = indexed.iter().filter(|(_, x)| x.request_id == e.request_id).collect();
            assert_eq!(by_rid.len(), want.len());
            assert!(by_rid.iter().zip(&want).all(|((i, b), (j, w))| i == j && b == *w));
            let both = decode::<pb::InferenceEvent>(&out, LAYOUT, events.len() as u32, &|i| i % 4 == 1, rid).unwrap();
            assert_eq!(both.len(), want.iter().filter(|(i, _)| i % 4 == 1).count());
        }
        for other in ["", "nope", "0123456789abcdef0123456789abcdee", "0123456789ABCDEF0123456789ABCDEF"] {
            let found =
                decode::<pb::InferenceEvent>(&out, LAYOUT, events.len() as u32, &|_| true, Some(other)).unwrap();
            assert_eq!(found.len(), events.iter().filter(|e| e.request_id == other).count(), "{other:?}");
        }
        out
    }

    fn event(i: u64) -> pb::InferenceEvent {
        pb::InferenceEvent {
            timestamp_ms: 1_790_000_000_000 + i as i64 * 3,
            service: "ocr".into(),
            model: ["det", "rec"][i as usize % 2].into(),
            model_version: "v2".into(),
            endpoint: "/v1/predict".into(),
            request_id: format!("{:016x}{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i ^ 0xdead_beef),
            status: if i.is_multiple_of(50) { 2 } else { 1 },
            error_type: if i.is_multiple_of(50) { "timeout".into() } else { String::new() },
            latency_us: 10_000 + (i * 7919) % 50_000,
            stages: Some(pb::Stages {
                queue_us: 100 + i % 300,
                preprocess_us: 200,
                inference_us: 10_000 + (i * 7919) % 50_000 - 100 - i % 300 - 200 - 50,
                postprocess_us: 50,
                ..Default::default()
            }),
            input_bytes: 4_000 + i % 1000,
            output_bytes: 100,
            prompt_tokens: 1000 + (i % 1000) as u32,
            completion_tokens: 0,
            batch_size: 1 + (i % 8) as u32,
            gpu: 1 + (i % 4) as u32,
            labels: [("region".to_string(), ["us", "eu"][i as usize % 2].to_string())].into_iter().collect(),
        }
    }

    #[test]
    fn a_service_like_group_reads_back_and_takes_a_fraction_of_its_protobuf_bytes() {
        use prost::Message;
        let events: Vec<_> = (0..5000).map(event).collect();
        let stored = roundtrip(&events);
        let pb_bytes: usize = events.iter().map(|e| e.encoded_len()).sum();
        // The request ids alone are 16 bytes an event.
        assert!(
            stored.len() < events.len() * 28,
            "{} bytes for {} events ({pb_bytes} as protobuf)",
            stored.len(),
            events.len()
        );
    }

    #[test]
    fn byte_counts_that_follow_token_counts_are_kept_as_the_difference() {
        // About 4 bytes a token, as text runs, plus up to 63 bytes of framing; embedding calls
        // have no completion and a few output bytes.
        let events: Vec<pb::InferenceEvent> = (0..2000u64)
            .map(|i| {
                let mut e = event(i);
                let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
                e.prompt_tokens = 50 + (h % 2000) as u32;
                e.completion_tokens = if i % 2 == 0 { 10 + (h % 487) as u32 } else { 0 };
                e.input_bytes = u64::from(e.prompt_tokens) * 4 + (h >> 11) % 64;
                e.output_bytes = u64::from(e.completion_tokens) * 4 + (h >> 17) % 64;
                e
            })
            .collect();
        let out = roundtrip(&events);
        let indexed: Vec<(u32, &pb::InferenceEvent)> =
            events.iter().enumerate().map(|(i, e)| (2 * i as u32 + 1, e)).collect();
        let mut plain = Vec::new();
        encode_as(&indexed, &mut plain, LAYOUT_PLAIN);
        // Two columns of two bytes a value become one byte each.
        assert!(out.len() + 2000 < plain.len(), "{} bytes against {} without predictions", out.len(), plain.len());
        // Counts that do not follow are kept as they are, at the cost of a byte a column.
        let events: Vec<pb::InferenceEvent> = events
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e.input_bytes = (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
                e
            })
            .collect();
        let out = roundtrip(&events);
        let mut plain = Vec::new();
        encode_as(
            &events.iter().enumerate().map(|(i, e)| (2 * i as u32 + 1, e)).collect::<Vec<_>>(),
            &mut plain,
            LAYOUT_PLAIN,
        );
        assert!(out.len() <= plain.len() + 2, "{} bytes against {}", out.len(), plain.len());
    }

    #[test]
    fn request_id_forms_read_back_exactly() {
        for rid in [
            "",
            "0123456789abcdef0123456789abcdef",
            "0123456789ABCDEF0123456789ABCDEF",
            "01234567890123456789012345678901",
            "0123456789abcdef0123456789ABCDEF",
            "123e4567-e89b-12d3-a456-426614174000",
            "123E4567-E89B-12D3-A456-426614174000",
            "123e4567-e89b-12d3-a456-42661417400g",
            "123e4567e-89b-12d3-a456-42661417400",
            "req-1",
            "é0123456789abcdef0123456789abcde",
        ] {
            let e = pb::InferenceEvent { request_id: rid.into(), ..Default::default() };
            roundtrip(&[e.clone(), e]);
        }
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let events: Vec<_> = (0..300).map(event).collect();
        let mut out = Vec::new();
        let indexed: Vec<_> = events.iter().enumerate().map(|(i, e)| (i as u32, e)).collect();
        encode(&indexed, &mut out);
        assert!(decode::<pb::InferenceEvent>(&out, LAYOUT, 299, &|_| true, None).is_err());
        for cut in [1, 7, out.len() / 2, out.len() - 1] {
            assert!(decode::<pb::InferenceEvent>(&out[..cut], LAYOUT, 300, &|_| true, None).is_err());
        }
        for at in (0..out.len()).step_by(7) {
            let mut d = out.clone();
            d[at] ^= 0x5a;
            // Damage is found or reads back as other values; it never panics.
            let _ = decode::<pb::InferenceEvent>(&d, LAYOUT, 300, &|_| true, None);
        }
    }

    fn any_event() -> impl Strategy<Value = pb::InferenceEvent> {
        let text = prop_oneof![Just(String::new()), "[a-c]{1,3}", "\\PC{0,5}", "[0-9a-fA-F]{32}"];
        (
            (any::<i64>(), text.clone(), text.clone(), text.clone(), text.clone(), any::<i32>(), text.clone()),
            (any::<u64>(), proptest::option::of(any::<[u64; 6]>()), any::<[u64; 2]>(), any::<[u32; 4]>()),
            // Byte counts as a multiple of the token counts plus noise (what the layout with
            // predictions shrinks), or any.
            (proptest::option::of((0u64..1000, 0u64..100)), proptest::collection::hash_map(text.clone(), text, 0..4)),
        )
            .prop_map(
                |(
                    (ts, service, model, version, rid, status, error),
                    (latency, stages, bytes, counts),
                    (per, labels),
                )| {
                    let bytes = match per {
                        Some((k, noise)) => [0, 1].map(|i| u64::from(counts[i]) * k + bytes[i] % (noise + 1)),
                        None => bytes,
                    };
                    pb::InferenceEvent {
                        timestamp_ms: ts,
                        service,
                        model,
                        model_version: version,
                        endpoint: "/x".into(),
                        request_id: rid,
                        status,
                        error_type: error,
                        latency_us: latency,
                        stages: stages.map(|s| pb::Stages {
                            queue_us: s[0],
                            preprocess_us: s[1],
                            inference_us: s[2],
                            postprocess_us: s[3],
                            time_to_first_token_us: s[4],
                            time_per_output_token_us: s[5],
                        }),
                        input_bytes: bytes[0],
                        output_bytes: bytes[1],
                        prompt_tokens: counts[0],
                        completion_tokens: counts[1],
                        batch_size: counts[2],
                        gpu: counts[3],
                        labels,
                    }
                },
            )
    }

    fn any_log() -> impl Strategy<Value = pb::LogRecord> {
        let text = prop_oneof![Just(String::new()), "[a-c]{1,3}", "\\PC{0,12}", "[0-9a-f]{32}"];
        // Messages from a few templates, so that groups keep templates ([`messages`]).
        let message = prop_oneof![text.clone(), "(gpu|wait) [0-9]{1,4} ms( 0?[0-9a-f]{7})?"];
        (
            any::<i64>(),
            any::<i32>(),
            message,
            text.clone(),
            text.clone(),
            text.clone(),
            text.clone(),
            proptest::collection::hash_map(text.clone(), text, 0..4),
        )
            .prop_map(|(ts, level, message, service, rid, error, logger, fields)| pb::LogRecord {
                timestamp_ms: ts,
                level,
                message,
                service,
                request_id: rid,
                error_type: error,
                fields,
                logger,
            })
    }

    proptest! {
        #[test]
        fn any_events_read_back_exactly(events in proptest::collection::vec(any_event(), 1..60)) {
            roundtrip(&events);
        }

        #[test]
        fn any_log_records_read_back_exactly(logs in proptest::collection::vec(any_log(), 1..60)) {
            let indexed: Vec<(u32, &pb::LogRecord)> = logs.iter().enumerate().map(|(i, l)| (3 * i as u32, l)).collect();
            // Groups of layout 2 (messages as one plane) still read.
            for layout in [LAYOUT_PREDICTED, LAYOUT] {
                let mut out = Vec::new();
                encode_as(&indexed, &mut out, layout);
                let back = decode::<pb::LogRecord>(&out, layout, logs.len() as u32, &|_| true, None).unwrap();
                prop_assert_eq!(back.len(), logs.len());
                for ((i, l), (j, b)) in indexed.iter().zip(&back) {
                    prop_assert_eq!(i, j);
                    prop_assert_eq!(*l, b);
                }
                let one = decode::<pb::LogRecord>(&out, layout, logs.len() as u32, &|i| i == 3, None).unwrap();
                prop_assert_eq!(one.len(), usize::from(logs.len() > 1));
                prop_assert!(one.iter().all(|(_, l)| *l == logs[1]));
                // A tally reads each record's time and tuple as the records give them.
                let t = tally(&out, logs.len() as u32).unwrap();
                let want = Tally::of(&logs);
                prop_assert_eq!(&t.ts, &want.ts);
                let tuples = |t: &Tally| t.tuple_of.iter().map(|&k| t.tuples[k].clone()).collect::<Vec<_>>();
                prop_assert_eq!(tuples(&t), tuples(&want));
            }
            let mut out = Vec::new();
            encode(&indexed, &mut out);
            let rid = logs[logs.len() / 2].request_id.as_str();
            let by_rid = decode::<pb::LogRecord>(&out, LAYOUT, logs.len() as u32, &|_| true, Some(rid)).unwrap();
            prop_assert_eq!(by_rid.len(), logs.iter().filter(|l| l.request_id == rid).count());
            prop_assert!(by_rid.iter().all(|(_, l)| l.request_id == rid));
        }
    }
}
