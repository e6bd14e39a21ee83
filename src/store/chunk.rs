//! Chunk encoding: a run of one series' samples, as one payload in the block files (a chunk)
//! or one sled value (a head part saved by a checkpoint).
//!
//! Layout (all integers LEB128, signed ones zigzagged):
//! `version | count | first_ts | last_ts | timestamps | values`
//! - timestamps: the first delta, then the deltas-of-deltas as an integer stream; a regular
//!   scrape interval costs a few bytes a chunk.
//! - values: mode `DECIMAL` when every value is `m / 10^e` for an integer `m` below 2^53 that
//!   round-trips bit for bit (counters, integer gauges, values printed with a few decimals):
//!   `e`, then the integers as raw, delta or delta-of-delta (whichever packs smallest), as an
//!   integer stream. Otherwise mode `RAW`: the 8-byte IEEE values.
//! - integer streams: frames of 128 integers, each in whichever form is smallest:
//!   - bit-packed: `bit width (0 to 64) | minimum | packed (v - minimum)`; a frame of equal
//!     values is two or three bytes;
//!   - radix (`0x80`): `minimum | r | the values v - minimum as base-r digits`, as many to a
//!     group as fit in 64 bits, each group in the bits of `r^n - 1`: a frame whose range is
//!     not a power of two takes about log2(r) bits a value (a counter growing by 0 to 40:
//!     5.4 bits instead of 6);
//!   - sparse (`0x81`): `base | count | per exception: index gap, v - base`, for a frame that
//!     is one value but for at most an eighth (a constant with rare steps);
//!   - a run (`0x82`): `frames | value`, two or more frames of one value (regular timestamps,
//!     constants).
//!
//!   Versions before these three kinds read bit-packed frames only: a folder written since is
//!   not for them.
use super::keys::{put_varint, unzigzag, zigzag, DecodeError, Reader};

const VERSION: u8 = 1;
const MODE_DECIMAL: u8 = 0;
const MODE_RAW: u8 = 1;
const FRAME: usize = 128;
/// Frame kinds past the bit widths (0 to 64).
const FRAME_RADIX: u8 = 0x80;
const FRAME_SPARSE: u8 = 0x81;
const FRAME_RUN: u8 = 0x82;
/// A radix frame's values span less than this.
const RADIX_MAX: u64 = 1 << 32;
/// Largest integer that f64 holds exactly.
const MAX_EXACT: i64 = 1 << 53;
const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// Count and time span of an encoded chunk, read without decoding the samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    pub count: usize,
    pub first_ts: i64,
    pub last_ts: i64,
}

pub fn encode(ts: &[i64], vals: &[f64]) -> Vec<u8> {
    assert_eq!(ts.len(), vals.len(), "chunk columns differ in length");
    let mut out = Vec::with_capacity(16 + ts.len());
    out.push(VERSION);
    put_varint(&mut out, ts.len() as u64);
    if ts.is_empty() {
        return out;
    }
    put_varint(&mut out, zigzag(ts[0]));
    put_varint(&mut out, zigzag(ts[ts.len() - 1]));
    encode_ints(&mut out, ts, 2);
    encode_values(&mut out, vals);
    out
}

pub fn header(buf: &[u8]) -> Result<Header, DecodeError> {
    let mut r = Reader::new(buf, "chunk");
    read_header(&mut r)
}

fn read_header(r: &mut Reader) -> Result<Header, DecodeError> {
    if r.byte()? != VERSION {
        return Err(r.err("unknown chunk version"));
    }
    let count = r.varint()? as usize;
    if count == 0 {
        return Ok(Header { count, first_ts: 0, last_ts: 0 });
    }
    if count > (1 << 28) {
        return Err(r.err("sample count"));
    }
    Ok(Header { count, first_ts: unzigzag(r.varint()?), last_ts: unzigzag(r.varint()?) })
}

/// Decodes a chunk, appending its samples to `ts` and `vals`.
pub fn decode_into(buf: &[u8], ts: &mut Vec<i64>, vals: &mut Vec<f64>) -> Result<Header, DecodeError> {
    let mut r = Reader::new(buf, "chunk");
    let h = read_header(&mut r)?;
    if h.count == 0 {
        return Ok(h);
    }
    let t0 = ts.len();
    decode_ints(&mut r, h.count, 2, ts)?;
    if ts.get(t0) != Some(&h.first_ts) {
        return Err(r.err("first timestamp disagrees with header"));
    }
    match r.byte()? {
        MODE_DECIMAL => {
            let e = r.byte()? as usize;
            let p = *POW10.get(e).ok_or_else(|| r.err("decimal exponent"))?;
            let order = r.byte()?;
            if order > 2 {
                return Err(r.err("transform order"));
            }
            let mut ints = Vec::with_capacity(h.count.min(buf.len().saturating_mul(64) + FRAME));
            decode_ints(&mut r, h.count, order, &mut ints)?;
            vals.extend(ints.into_iter().map(|m| m as f64 / p));
        }
        MODE_RAW => {
            let b = r.bytes(h.count * 8)?;
            vals.extend(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))));
        }
        _ => return Err(r.err("unknown value mode")),
    }
    Ok(h)
}

fn encode_values(out: &mut Vec<u8>, vals: &[f64]) {
    if let Some((e, ints)) = as_decimal(vals) {
        // Pick the transform that packs smallest; each try is cheap next to the ingest cost.
        let mut best: Option<Vec<u8>> = None;
        for order in 0..=2u8 {
            let mut buf = vec![MODE_DECIMAL, e as u8, order];
            encode_ints(&mut buf, &ints, order);
            if best.as_ref().is_none_or(|b| buf.len() < b.len()) {
                best = Some(buf);
            }
        }
        out.extend_from_slice(&best.expect("three candidates"));
    } else {
        out.push(MODE_RAW);
        for v in vals {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Smallest decimal exponent `e` that represents every value exactly, with the mantissas:
/// the exponent is raised, value by value, until it fits each, then every value is checked
/// at the last one. While the first value's exponent fits them all (the rule), one pass.
fn as_decimal(vals: &[f64]) -> Option<(usize, Vec<i64>)> {
    let mut e = 0usize;
    let mut ints = Vec::with_capacity(vals.len());
    let mut raised = false;
    for &v in vals {
        if !v.is_finite() {
            return None;
        }
        loop {
            if let Some(m) = mantissa(v, e) {
                ints.push(m);
                break;
            }
            e += 1;
            if e >= POW10.len() {
                return None;
            }
            raised |= !ints.is_empty();
        }
    }
    if raised {
        ints.clear();
        for &v in vals {
            ints.push(mantissa(v, e)?);
        }
    }
    Some((e, ints))
}

/// The integer `m` with `m / 10^e == v` bit for bit, if there is one below 2^53.
#[inline]
fn mantissa(v: f64, e: usize) -> Option<i64> {
    let p = POW10[e];
    let m = round(v * p);
    if m.abs() >= MAX_EXACT as f64 {
        return None;
    }
    let m = m as i64;
    // A division by 1 is exact: skipped for whole numbers, the commonest values.
    let back = if e == 0 { m as f64 } else { m as f64 / p };
    (back.to_bits() == v.to_bits()).then_some(m)
}

/// `f64::round`, without the call into libm that it is where the CPU has no rounding
/// instruction (x86-64 before SSE4.1, the baseline a release is built for): a third of
/// [`as_decimal`]'s time, which runs on every value of every chunk cut.
#[inline]
fn round(x: f64) -> f64 {
    // From 2^52 on every f64 is an integer (NaN and the infinities fail the test too).
    if x.abs() < 4_503_599_627_370_496.0 {
        let t = (x as i64) as f64;
        // Exact: x and its integer part are within 2^52 of each other's binade.
        let frac = x - t;
        if frac >= 0.5 {
            t + 1.0
        } else if frac <= -0.5 {
            t - 1.0
        } else if t == 0.0 {
            // Keeps the sign of -0.4 → -0.0, as `f64::round` does.
            0.0f64.copysign(x)
        } else {
            t
        }
    } else {
        x
    }
}

/// Writes `vals` as: the first `order` leading terms (value, first delta) as zigzag varints,
/// then the `order`-th differences as packed frames.
fn encode_ints(out: &mut Vec<u8>, vals: &[i64], order: u8) {
    let mut diffs: Vec<i64> = vals.to_vec();
    let mut leading = Vec::new();
    for _ in 0..order {
        if diffs.is_empty() {
            break;
        }
        leading.push(diffs[0]);
        diffs = diffs.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    }
    for l in leading {
        put_varint(out, zigzag(l));
    }
    let mut at = 0;
    while at < diffs.len() {
        // A run of whole frames of one value (a regular interval's timestamps, a constant) is
        // one run frame.
        let v = diffs[at];
        let same = diffs[at..].iter().take_while(|&&d| d == v).count();
        let frames = if at + same == diffs.len() { same.div_ceil(FRAME) } else { same / FRAME };
        if frames >= 2 {
            out.push(FRAME_RUN);
            put_varint(out, frames as u64);
            put_varint(out, zigzag(v));
            at = (at + frames * FRAME).min(diffs.len());
            continue;
        }
        let end = (at + FRAME).min(diffs.len());
        encode_frame(out, &diffs[at..end]);
        at = end;
    }
}

/// Writes one frame, in whichever of the three forms is smallest.
fn encode_frame(out: &mut Vec<u8>, frame: &[i64]) {
    let min = *frame.iter().min().expect("non-empty frame");
    let span = frame.iter().map(|&v| v.wrapping_sub(min) as u64).max().expect("non-empty frame");
    let width = 64 - span.leading_zeros();
    let packed = 1 + varint_len(zigzag(min)) + (frame.len() * width as usize).div_ceil(8);
    let radix = (width >= 2 && span < RADIX_MAX && !(span + 1).is_power_of_two()).then(|| {
        let r = span + 1;
        (r, 1 + varint_len(zigzag(min)) + varint_len(r) + radix_bits(frame.len(), r).div_ceil(8))
    });
    let sparse = if width >= 4 { sparse_body(frame) } else { None };
    if let Some(body) = sparse.filter(|b| 1 + b.len() < packed.min(radix.map_or(usize::MAX, |r| r.1))) {
        out.push(FRAME_SPARSE);
        out.extend_from_slice(&body);
        return;
    }
    if let Some((r, _)) = radix.filter(|r| r.1 < packed) {
        out.push(FRAME_RADIX);
        put_varint(out, zigzag(min));
        put_varint(out, r);
        let (g, bits) = radix_group(r);
        let mut w = BitWriter::new(out);
        for group in frame.chunks(g) {
            let x = group.iter().rev().fold(0u64, |x, &v| x * r + v.wrapping_sub(min) as u64);
            w.put(x, if group.len() == g { bits } else { radix_group_bits(r, group.len()) });
        }
        w.finish();
        return;
    }
    out.push(width as u8);
    put_varint(out, zigzag(min));
    if width > 0 {
        let mut w = BitWriter::new(out);
        for &v in frame {
            w.put(v.wrapping_sub(min) as u64, width);
        }
        w.finish();
    }
}

/// A frame that is one value but for a few: `base | count | per exception: gap from the
/// previous one's index (the first's from -1), value − base (zigzag)`, when that is at most an
/// eighth of the frame. The base is the median (the most common value whenever the exceptions
/// are that few).
fn sparse_body(frame: &[i64]) -> Option<Vec<u8>> {
    // Most neighbours equal, or no common value to speak of.
    let same = frame.windows(2).filter(|w| w[0] == w[1]).count();
    if same * 4 < frame.len() * 3 {
        return None;
    }
    let mut sorted = frame.to_vec();
    let mid = sorted.len() / 2;
    let base = *sorted.select_nth_unstable(mid).1;
    let k = frame.iter().filter(|&&v| v != base).count();
    if k * 8 > frame.len() {
        return None;
    }
    let mut body = Vec::with_capacity(4 + k * 4);
    put_varint(&mut body, zigzag(base));
    put_varint(&mut body, k as u64);
    let mut prev = -1i64;
    for (i, &v) in frame.iter().enumerate() {
        if v != base {
            put_varint(&mut body, (i as i64 - prev - 1) as u64);
            put_varint(&mut body, zigzag(v.wrapping_sub(base)));
            prev = i as i64;
        }
    }
    Some(body)
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros()).div_ceil(7) as usize
}

/// Values per radix group (as many as fit in 64 bits together) and the bits a full group
/// takes.
fn radix_group(r: u64) -> (usize, u32) {
    let mut pow: u128 = 1;
    let mut g = 0;
    while pow * u128::from(r) <= 1u128 << 64 {
        pow *= u128::from(r);
        g += 1;
    }
    (g, 128 - (pow - 1).leading_zeros())
}

/// Bits a group of `k` values takes: those of `r^k - 1`.
fn radix_group_bits(r: u64, k: usize) -> u32 {
    let pow = (0..k).fold(1u128, |p, _| p * u128::from(r));
    128 - (pow - 1).leading_zeros()
}

/// Bits of a radix frame of `n` values.
fn radix_bits(n: usize, r: u64) -> usize {
    let (g, bits) = radix_group(r);
    let rest = n % g;
    (n / g) * bits as usize + if rest > 0 { radix_group_bits(r, rest) as usize } else { 0 }
}

/// Appends values of up to 64 bits each, least significant bit first.
pub(super) struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u128,
    nbits: u32,
}

impl<'a> BitWriter<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter { out, acc: 0, nbits: 0 }
    }

    pub(super) fn put(&mut self, v: u64, bits: u32) {
        self.acc |= u128::from(v) << self.nbits;
        self.nbits += bits;
        while self.nbits >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.nbits -= 8;
        }
    }

    pub(super) fn finish(self) {
        if self.nbits > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

/// Appends `n` integers of `width` bits (1 to 56), packed least significant bit first, each
/// plus `min`: one unaligned 8-byte load per integer, the last few bytes from a padded copy.
fn unpack(bytes: &[u8], n: usize, width: u32, min: i64, out: &mut Vec<i64>) {
    let mask = (1u64 << width) - 1;
    let width = width as usize;
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let mut bit = 0usize;
    let mut k = 0;
    while k < n && (bit >> 3) + 8 <= bytes.len() {
        out.push(min.wrapping_add(((word(bytes, bit >> 3) >> (bit & 7)) & mask) as i64));
        bit += width;
        k += 1;
    }
    if k < n {
        let mut pad = [0u8; 16];
        let rest = &bytes[bit >> 3..];
        pad[..rest.len()].copy_from_slice(rest);
        let mut bit = bit & 7;
        for _ in k..n {
            out.push(min.wrapping_add(((word(&pad, bit >> 3) >> (bit & 7)) & mask) as i64));
            bit += width;
        }
    }
}

fn decode_sparse(r: &mut Reader, n: usize, out: &mut Vec<i64>) -> Result<(), DecodeError> {
    let base = unzigzag(r.varint()?);
    let k = r.varint()?;
    if k > n as u64 {
        return Err(r.err("exceptions in a frame"));
    }
    let at = out.len();
    out.extend(std::iter::repeat_n(base, n));
    let mut i = -1i64;
    for _ in 0..k {
        let gap = r.varint()?;
        if gap >= n as u64 {
            return Err(r.err("exception index"));
        }
        i += gap as i64 + 1;
        if i >= n as i64 {
            return Err(r.err("exception index"));
        }
        out[at + i as usize] = base.wrapping_add(unzigzag(r.varint()?));
    }
    Ok(())
}

fn decode_radix(r: &mut Reader, n: usize, out: &mut Vec<i64>) -> Result<(), DecodeError> {
    let min = unzigzag(r.varint()?);
    let radix = r.varint()?;
    if !(3..=RADIX_MAX).contains(&radix) {
        return Err(r.err("radix"));
    }
    let (g, bits) = radix_group(radix);
    let bytes = r.bytes(radix_bits(n, radix).div_ceil(8))?;
    let div = Divider::new(radix);
    let mut split = Divider::new(split_for(radix, g));
    let mut it = bytes.iter();
    let (mut acc, mut nbits) = (0u128, 0u32);
    let mut left = n;
    while left > 0 {
        let k = left.min(g);
        let b = if k == g { bits } else { radix_group_bits(radix, k) };
        while nbits < b {
            acc |= u128::from(*it.next().expect("length checked")) << nbits;
            nbits += 8;
        }
        let x = (acc & ((1u128 << b) - 1)) as u64;
        acc >>= b;
        nbits -= b;
        if k != g && k / 2 != g / 2 {
            split = Divider::new(split_for(radix, k));
        }
        push_digits(x, k, &div, &split, min, out);
        left -= k;
    }
    Ok(())
}

/// Division by one divisor `d` (2 to 2^32) by multiplications (Lemire, Kaser and Kurz,
/// "Faster remainder by direct computation", 2019): with `m = ceil(2^(2N) / d)`,
/// `floor(m * x / 2^(2N)) = floor(x / d)` for every `x < 2^N` (the error
/// `(m - 2^(2N)/d) * x / 2^(2N)` stays below `2^-N <= 1/d`, the least distance from `x / d`
/// up to the next integer). N = 64 ([`Divider::divmod`]) and N = 32 ([`Divider::divmod32`],
/// one multiplication). A 64-bit `div` took half of a radix frame's decoding. Garbage input
/// (`x` past the bound) gives wrong digits, never a panic.
struct Divider {
    d: u64,
    m: u128,
    m32: u64,
}

impl Divider {
    fn new(d: u64) -> Divider {
        debug_assert!((2..=1 << 32).contains(&d));
        Divider { d, m: u128::MAX / u128::from(d) + 1, m32: u64::MAX / d + 1 }
    }

    #[inline]
    fn divmod(&self, x: u64) -> (u64, u64) {
        let lo = u128::from(self.m as u64) * u128::from(x);
        let hi = (self.m >> 64) * u128::from(x);
        let q = (((lo >> 64) + hi) >> 64) as u64;
        (q, x.wrapping_sub(q.wrapping_mul(self.d)))
    }

    /// For `x < 2^32`.
    #[inline]
    fn divmod32(&self, x: u64) -> (u64, u64) {
        let q = ((u128::from(self.m32) * u128::from(x)) >> 64) as u64;
        (q, x.wrapping_sub(q.wrapping_mul(self.d)))
    }
}

/// The divisor that splits a group of `k` digits in base `radix` in two: `radix^(k/2)`.
fn split_for(radix: u64, k: usize) -> u64 {
    (0..k / 2).fold(1u64, |p, _| p.saturating_mul(radix)).clamp(2, 1 << 32)
}

/// Appends the `k` base-`div.d` digits of `x`, least significant first. `x < d^k <= 2^64`, so
/// one division by `d^(k/2)` (below 2^32; `split`, [`split_for`]) splits it into two numbers below 2^32, whose digits
/// come out in two independent chains of one multiplication each.
fn push_digits(x: u64, k: usize, div: &Divider, split: &Divider, min: i64, out: &mut Vec<i64>) {
    let h = k / 2;
    if h < 2 {
        let mut x = x;
        for _ in 0..k {
            let (q, digit) = div.divmod(x);
            out.push(min.wrapping_add(digit as i64));
            x = q;
        }
        return;
    }
    let (mut b, mut a) = split.divmod(x);
    let base = out.len();
    out.resize(base + k, min);
    for i in 0..h {
        let (qa, da) = div.divmod32(a);
        let (qb, db) = div.divmod32(b);
        out[base + i] = min.wrapping_add(da as i64);
        out[base + h + i] = min.wrapping_add(db as i64);
        a = qa;
        b = qb;
    }
    if k > 2 * h {
        out[base + 2 * h] = min.wrapping_add(div.divmod32(b).1 as i64);
    }
}

fn decode_ints(r: &mut Reader, count: usize, order: u8, out: &mut Vec<i64>) -> Result<(), DecodeError> {
    let lead = (order as usize).min(count);
    let mut leading = [0i64; 2];
    for l in leading.iter_mut().take(lead) {
        *l = unzigzag(r.varint()?);
    }
    let base = out.len();
    // Capacity from the input's size, not the header's claim, so garbage cannot ask for gigabytes.
    out.reserve(count.min(r.buf.len().saturating_mul(64) + FRAME));
    // The transform's leading values, then the stored integers, undone in place below.
    out.extend_from_slice(&leading[..lead]);
    let mut remaining = count - lead;
    while remaining > 0 {
        let n = remaining.min(FRAME);
        let kind = r.byte()?;
        if kind == FRAME_SPARSE {
            decode_sparse(r, n, out)?;
            remaining -= n;
            continue;
        }
        if kind == FRAME_RUN {
            let frames = r.varint()?;
            // The last frame of a run may be the stream's short last one.
            if frames < 2 || frames > remaining.div_ceil(FRAME) as u64 {
                return Err(r.err("run length"));
            }
            let v = unzigzag(r.varint()?);
            let n = (frames as usize * FRAME).min(remaining);
            out.extend(std::iter::repeat_n(v, n));
            remaining -= n;
            continue;
        }
        if kind == FRAME_RADIX {
            decode_radix(r, n, out)?;
            remaining -= n;
            continue;
        }
        let width = u32::from(kind);
        if width > 64 {
            return Err(r.err("bit width"));
        }
        let min = unzigzag(r.varint()?);
        if width == 0 {
            out.extend(std::iter::repeat_n(min, n));
        } else if width <= 56 {
            let bytes = r.bytes((n * width as usize).div_ceil(8))?;
            unpack(bytes, n, width, min, out);
        } else {
            let bytes = r.bytes((n * width as usize).div_ceil(8))?;
            let mask: u128 = (1u128 << width) - 1;
            let mut acc: u128 = 0;
            let mut nbits = 0u32;
            let mut it = bytes.iter();
            for _ in 0..n {
                while nbits < width {
                    acc |= u128::from(*it.next().expect("length checked")) << nbits;
                    nbits += 8;
                }
                out.push(min.wrapping_add((acc & mask) as u64 as i64));
                acc >>= width;
                nbits -= width;
            }
        }
        remaining -= n;
    }
    let vals = &mut out[base..];
    match order {
        0 => {}
        // The running sums stay in registers: reading `vals[k - 1]` back from memory made each
        // step wait for the store before it (45% of a counter query's chunk decoding).
        1 => {
            // v[k] = v[k-1] + delta[k].
            if let Some((first, rest)) = vals.split_first_mut() {
                let mut v = *first;
                for x in rest {
                    v = v.wrapping_add(*x);
                    *x = v;
                }
            }
        }
        _ => {
            // v[1] = v[0] + d, then d += dd[k] and v[k] = v[k-1] + d.
            if let [first, second, rest @ ..] = vals {
                let mut d = *second;
                let mut v = first.wrapping_add(d);
                *second = v;
                for x in rest {
                    d = d.wrapping_add(*x);
                    v = v.wrapping_add(d);
                    *x = v;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass search finds what the two-pass one (raise the exponent value by value,
    /// then check every value at the last) found: the same exponent and mantissas, or none.
    #[test]
    fn decimal_mantissas_match_the_two_pass_search() {
        fn reference(vals: &[f64]) -> Option<(usize, Vec<i64>)> {
            let exact_at = |v: f64, e: usize| {
                let m = (v * POW10[e]).round();
                m.abs() < MAX_EXACT as f64 && ((m as i64) as f64 / POW10[e]).to_bits() == v.to_bits()
            };
            let mut e = 0usize;
            for &v in vals {
                if !v.is_finite() {
                    return None;
                }
                while !exact_at(v, e) {
                    e += 1;
                    if e >= POW10.len() {
                        return None;
                    }
                }
            }
            let mut ints = Vec::new();
            for &v in vals {
                if !exact_at(v, e) {
                    return None;
                }
                ints.push((v * POW10[e]).round() as i64);
            }
            Some((e, ints))
        }
        let mut x: u64 = 0x1319_8a2e_0370_7344;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut found = [0usize; 2];
        for case in 0..20_000 {
            let n = 1 + (next() % 12) as usize;
            let vals: Vec<f64> = (0..n)
                .map(|_| {
                    let r = next();
                    match r % 7 {
                        0 => f64::from_bits(next()),
                        1 => (r >> 8) as f64,
                        2 => ((r >> 8) % 100_000) as f64 / 10f64.powi((r % 5) as i32),
                        3 => ((r >> 8) % 1000) as f64 * 0.1,
                        4 => -(((r >> 8) % 1_000_000) as f64) / 1e3,
                        5 => ((r >> 8) as f64) * 1e-9,
                        _ => 4_503_599_627_370_496.0 + ((r >> 8) % 64) as f64,
                    }
                })
                .collect();
            let want = reference(&vals);
            found[usize::from(want.is_some())] += 1;
            assert_eq!(as_decimal(&vals), want, "case {case}: {vals:?}");
        }
        assert!(found[0] > 1000 && found[1] > 1000, "both outcomes come up: {found:?}");
    }

    /// The rounding that picks decimal mantissas is `f64::round`, bit for bit: halves, signed
    /// zeros, the edges of the integers, and any bit pattern (NaN stays NaN).
    #[test]
    fn round_is_the_standard_one() {
        let edges = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            0.49999999999999994,
            -0.49999999999999994,
            1.5,
            -2.5,
            -0.3,
            4_503_599_627_370_495.5,
            -4_503_599_627_370_495.5,
            4_503_599_627_370_496.0,
            9_007_199_254_740_993.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        let mut x: u64 = 0x243f_6a88_85a3_08d3;
        let random = (0..1_000_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f64::from_bits(x)
        });
        let scaled = (-200_000..200_000).map(|k| f64::from(k) / 8.0 + 1e-3 * f64::from(k % 7));
        for v in edges.into_iter().chain(random).chain(scaled) {
            if v.is_nan() {
                assert!(round(v).is_nan());
            } else {
                assert_eq!(round(v).to_bits(), v.round().to_bits(), "{v:e}");
            }
        }
    }

    /// The word-at-a-time unpacking against a bit-at-a-time reference, every width and count.
    #[test]
    fn unpack_matches_bit_by_bit() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for width in 1..=56u32 {
            for n in [1usize, 2, 7, 8, 9, 63, 127, 128] {
                let bytes: Vec<u8> = (0..(n * width as usize).div_ceil(8))
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                let want: Vec<i64> = (0..n)
                    .map(|k| {
                        (0..width as usize).fold(0i64, |v, b| {
                            let bit = k * width as usize + b;
                            v | (((bytes[bit / 8] >> (bit % 8)) & 1) as i64) << b
                        }) - 5
                    })
                    .collect();
                let mut got = Vec::new();
                unpack(&bytes, n, width, -5, &mut got);
                assert_eq!(got, want, "width {width}, n {n}");
            }
        }
    }
    use proptest::prelude::*;

    fn round_trip(ts: &[i64], vals: &[f64]) -> Vec<u8> {
        let enc = encode(ts, vals);
        let (mut t2, mut v2) = (Vec::new(), Vec::new());
        let h = decode_into(&enc, &mut t2, &mut v2).unwrap();
        assert_eq!(h.count, ts.len());
        assert_eq!(t2, ts);
        assert_eq!(v2.len(), vals.len());
        for (a, b) in vals.iter().zip(&v2) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a} != {b}");
        }
        if !ts.is_empty() {
            assert_eq!(header(&enc).unwrap(), Header { count: ts.len(), first_ts: ts[0], last_ts: ts[ts.len() - 1] });
        }
        enc
    }

    #[test]
    fn regular_integer_series_is_tiny() {
        let ts: Vec<i64> = (0..4096).map(|i| 1_700_000_000_000 + i * 10_000).collect();
        let vals: Vec<f64> = (0..4096).map(|i| (i % 7) as f64).collect();
        let enc = round_trip(&ts, &vals);
        // timestamps ~2 B per frame, values 3 bits each
        assert!(enc.len() < 4096 * 3 / 8 + 200, "{} bytes", enc.len());
    }

    #[test]
    fn constant_series_is_a_few_bytes() {
        let ts: Vec<i64> = (0..1000).map(|i| i * 1000).collect();
        let enc = round_trip(&ts, &vec![85899345920.0; 1000]);
        assert!(enc.len() < 60, "{} bytes", enc.len());
    }

    #[test]
    fn decimals_and_edge_values() {
        round_trip(&[1, 2, 3, 4], &[0.001, 33.125, -7.5, 1e-9]);
        round_trip(&[1, 2, 3], &[-0.0, 0.0, f64::MIN_POSITIVE]);
        round_trip(&[1, 2], &[f64::NAN, f64::INFINITY]);
        round_trip(&[i64::MIN, i64::MAX], &[f64::MAX, f64::MIN]);
        round_trip(&[5], &[0.1]);
        round_trip(&[], &[]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let enc = encode(&[1, 2, 3], &[1.0, 2.0, 3.5]);
        for cut in 0..enc.len() {
            let _ = decode_into(&enc[..cut], &mut Vec::new(), &mut Vec::new());
        }
        assert!(decode_into(&[9, 9], &mut Vec::new(), &mut Vec::new()).is_err());
    }

    /// A gauge that is one value but for rare steps (total GPU memory): sparse frames.
    #[test]
    fn a_constant_with_rare_steps_is_a_few_bytes_a_step() {
        let ts: Vec<i64> = (0..4096).map(|i| i * 10_000).collect();
        let vals: Vec<f64> = (0..4096i64).map(|i| (85_899_345_920 - (i / 1000) * 1_048_576) as f64).collect();
        let enc = round_trip(&ts, &vals);
        // Bit-packed, each frame with a step would take 128 × 21 bits.
        assert!(enc.len() < 100, "{} bytes", enc.len());
    }

    /// Counters that grow by 0 to 40 a sample: radix frames, about log2(41) = 5.36 bits a
    /// sample and 3 bytes a frame, where bit packing takes 6 bits.
    #[test]
    fn uneven_ranges_pack_in_radix_frames() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v = 0u64;
        let ts: Vec<i64> = (0..4096).map(|i| i * 10_000).collect();
        let vals: Vec<f64> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v += x % 41;
                v as f64
            })
            .collect();
        let enc = round_trip(&ts, &vals);
        assert!(enc.len() * 8 < 4096 * 575 / 100, "{} bytes", enc.len());
    }

    #[test]
    fn division_by_multiplication_is_exact() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ds = [2u64, 3, 5, 7, 10, 41, 1000, 65_535, 65_537, (1 << 31) - 1, (1 << 32) - 1, 1 << 32];
        let random: Vec<u64> = (0..200).map(|_| 2 + next() % ((1 << 32) - 1)).collect();
        for d in ds.into_iter().chain(random) {
            let div = Divider::new(d);
            for x in [0, 1, d - 1, d, d + 1, u64::MAX, u64::MAX - 1, (u64::MAX / d) * d, (u64::MAX / d) * d - 1]
                .into_iter()
                .chain((0..200).map(|_| next()))
            {
                assert_eq!(div.divmod(x), (x / d, x % d), "{x} / {d}");
                let y = x >> 32;
                assert_eq!(div.divmod32(y), (y / d, y % d), "{y} / {d}");
            }
        }
    }

    /// Chunks made of every frame kind, damaged byte by byte: errors or other values, never a
    /// panic.
    #[test]
    fn damaged_frames_of_every_kind_never_panic() {
        let ts: Vec<i64> = (0..600).map(|i| i * 10_000 + if i % 97 == 0 { 3 } else { 0 }).collect();
        let vals: Vec<f64> = (0..600).map(|i| if i < 300 { (i * 37 % 41) as f64 } else { 7.0 }).collect();
        let enc = round_trip(&ts, &vals);
        for i in 0..enc.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = enc.clone();
                bad[i] ^= flip;
                let _ = decode_into(&bad, &mut Vec::new(), &mut Vec::new());
            }
        }
    }

    proptest! {
        #[test]
        fn sparse_and_run_frames_round_trip(base in -1_000_000i64..1_000_000, steps in proptest::collection::vec((0usize..700, -1i64 << 40..1i64 << 40), 0..12), n in 1usize..700) {
            let ts: Vec<i64> = (0..n as i64).map(|i| 1_700_000_000_000 + i * 15_000).collect();
            let mut vals: Vec<f64> = vec![base as f64; n];
            for (at, v) in steps {
                if at < n {
                    vals[at] = v as f64;
                }
            }
            round_trip(&ts, &vals);
        }

        #[test]
        fn any_samples_round_trip(samples in proptest::collection::vec((any::<i64>(), any::<f64>()), 0..600)) {
            let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
            let vals: Vec<f64> = samples.iter().map(|s| s.1).collect();
            round_trip(&ts, &vals);
        }

        #[test]
        fn decimal_walks_round_trip(start in -1_000_000i64..1_000_000, steps in proptest::collection::vec(-5000i64..5000, 1..700), e in 0u32..6, jitter in proptest::collection::vec(0i64..50, 1..700)) {
            let mut m = start;
            let mut t = 1_700_000_000_000i64;
            let (mut ts, mut vals) = (Vec::new(), Vec::new());
            for (i, s) in steps.iter().enumerate() {
                m += s;
                t += 10_000 + jitter[i % jitter.len()];
                ts.push(t);
                vals.push(m as f64 / 10f64.powi(e as i32));
            }
            round_trip(&ts, &vals);
        }

        #[test]
        fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_into(&buf, &mut Vec::new(), &mut Vec::new());
            let _ = header(&buf);
        }
    }
}
