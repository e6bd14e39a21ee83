//! Chunk encoding: a run of one series' samples, as one payload in the block files (a chunk)
//! or one sled value (a head part saved by a checkpoint).
//!
//! Layout (all integers LEB128, signed ones zigzagged):
//! `version | count | first_ts | last_ts | timestamps | values`
//! - timestamps: the first delta, then the deltas-of-deltas as an [`IntStream`]; a regular
//!   scrape interval costs about two bytes per 128 samples.
//! - values: mode `DECIMAL` when every value is `m / 10^e` for an integer `m` below 2^53 that
//!   round-trips bit for bit (counters, integer gauges, values printed with a few decimals):
//!   `e`, then the integers as raw, delta or delta-of-delta (whichever packs smallest), as an
//!   [`IntStream`]. Otherwise mode `RAW`: the 8-byte IEEE values.
//! - [`IntStream`]: frames of 128 integers, each `bit width | minimum | packed (v - minimum)`;
//!   a frame of equal values is two or three bytes.
use super::keys::{put_varint, unzigzag, zigzag, DecodeError, Reader};

const VERSION: u8 = 1;
const MODE_DECIMAL: u8 = 0;
const MODE_RAW: u8 = 1;
const FRAME: usize = 128;
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

/// Smallest decimal exponent `e` that represents every value exactly, with the mantissas.
fn as_decimal(vals: &[f64]) -> Option<(usize, Vec<i64>)> {
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
    let p = POW10[e];
    let mut ints = Vec::with_capacity(vals.len());
    for &v in vals {
        if !exact_at(v, e) {
            return None;
        }
        ints.push((v * p).round() as i64);
    }
    Some((e, ints))
}

fn exact_at(v: f64, e: usize) -> bool {
    let p = POW10[e];
    let m = (v * p).round();
    m.abs() < MAX_EXACT as f64 && ((m as i64) as f64 / p).to_bits() == v.to_bits()
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
    for frame in diffs.chunks(FRAME) {
        let min = *frame.iter().min().expect("non-empty frame");
        let span = frame.iter().map(|&v| v.wrapping_sub(min) as u64).max().expect("non-empty frame");
        let width = 64 - span.leading_zeros();
        out.push(width as u8);
        put_varint(out, zigzag(min));
        if width > 0 {
            let mut acc: u128 = 0;
            let mut nbits = 0u32;
            for &v in frame {
                acc |= u128::from(v.wrapping_sub(min) as u64) << nbits;
                nbits += width;
                while nbits >= 8 {
                    out.push(acc as u8);
                    acc >>= 8;
                    nbits -= 8;
                }
            }
            if nbits > 0 {
                out.push(acc as u8);
            }
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
        let width = u32::from(r.byte()?);
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
        1 => {
            // v[k] = v[k-1] + delta[k].
            for k in 1..vals.len() {
                vals[k] = vals[k - 1].wrapping_add(vals[k]);
            }
        }
        _ => {
            // v[1] = v[0] + d, then d += dd[k] and v[k] = v[k-1] + d.
            if vals.len() > 1 {
                let mut d = vals[1];
                vals[1] = vals[0].wrapping_add(d);
                for k in 2..vals.len() {
                    d = d.wrapping_add(vals[k]);
                    vals[k] = vals[k - 1].wrapping_add(d);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    proptest! {
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
