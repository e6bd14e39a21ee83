//! The samples of an open head, compressed as they arrive: a bit stream in the manner of
//! Facebook's Gorilla paper (and Prometheus' XOR chunks), so that a series' unsealed samples
//! cost one or two bytes each in memory instead of sixteen.
//!
//! - Timestamps: the first in 64 bits, then each delta-of-delta in the smallest of five
//!   classes: `0` (the same interval), `10` + 8 bits, `110` + 14, `1110` + 20, `1111` + 64.
//!   Arithmetic wraps, so any i64 sequence round-trips.
//! - Values: the first as its 64 IEEE bits, then each XORed with the one before: `0` when
//!   equal; `10` + the meaningful bits when they fit the previous value's window of leading
//!   and trailing zeros; else `11` + 5 bits of leading zeros + 6 bits of length - 1 + the bits.
//!
//! Samples are only appended ([`Samples::push`]); a cut decodes the head, encodes what it keeps
//! in the block files' [`super::chunk`] format, and rebuilds the head from the rest.

/// Tenths of a second since the process first asked: a head's start in four bytes (13 years).
pub(super) fn ticks() -> u32 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let t = EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() / u128::from(TICK_MS);
    u32::try_from(t).unwrap_or(u32::MAX)
}

pub(super) const TICK_MS: u64 = 100;

/// 72 bytes: a head is most of what an idle series costs (100,000 of them in the heads map),
/// so the first timestamp is read from the stream's first 64 bits, `buf` is a boxed slice (it
/// is always used to its capacity), and the summary keeps its count as a flag: the count is
/// `n` unless a staleness marker came, which is rare (then [`Samples::summary`] decodes).
#[derive(Debug, Clone)]
pub(super) struct Samples {
    /// The bit stream, then at least [`SLACK`] zero bytes.
    buf: Box<[u8]>,
    /// Bits written into `buf`.
    bits: u64,
    n: u32,
    last_ts: i64,
    /// Min and max of the values (staleness markers aside), with `n` and `stale` a chunk's
    /// summary: a query over a window that holds the whole head reads it instead of the
    /// samples.
    min: f64,
    max: f64,
    /// Whether a staleness marker is among the samples (they do not count in the summary).
    stale: bool,
    last_delta: i64,
    last_val: u64,
    /// Leading and trailing zeros of the last value window written (`lead == NONE`: none yet).
    lead: u8,
    trail: u8,
}

const NONE: u8 = u8::MAX;

/// Zeroed bytes kept in `buf` past the last bit written, for [`Samples::put`]'s window.
const SLACK: usize = 16;

/// Bytes by which [`Samples::room`] grows a buffer at least: a dozen samples or so.
const GROW_MIN: usize = 24;

impl Samples {
    pub(super) fn new() -> Samples {
        Samples {
            buf: Box::default(),
            bits: 0,
            n: 0,
            last_ts: 0,
            last_delta: 0,
            last_val: 0,
            lead: NONE,
            trail: 0,
            min: f64::NAN,
            max: f64::NAN,
            stale: false,
        }
    }

    pub(super) fn from_slices(ts: &[i64], vals: &[f64]) -> Samples {
        let mut s = Samples::new();
        s.extend(ts, vals);
        s
    }

    pub(super) fn len(&self) -> usize {
        self.n as usize
    }

    pub(super) fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub(super) fn last_ts(&self) -> Option<i64> {
        (self.n > 0).then_some(self.last_ts)
    }

    pub(super) fn first_ts(&self) -> Option<i64> {
        // The first sample's timestamp is the stream's first 64 bits.
        (self.n > 0).then(|| i64::from_be_bytes(self.buf[..8].try_into().expect("8 bytes")))
    }

    /// The values' summary, kept as they arrive ([`super::memtable::summarize`]'s rules).
    pub(super) fn summary(&self) -> super::keys::Summary {
        let count = if self.stale {
            let (mut ts, mut vals) = (Vec::new(), Vec::new());
            self.decode_into(&mut ts, &mut vals);
            vals.iter().filter(|v| v.to_bits() != super::STALE_NAN).count() as u32
        } else {
            self.n
        };
        super::keys::Summary { min: self.min, max: self.max, count }
    }

    pub(super) fn extend(&mut self, ts: &[i64], vals: &[f64]) {
        debug_assert_eq!(ts.len(), vals.len());
        if ts.is_empty() {
            // A head cut whole is rebuilt from no samples: no buffer until its next one.
            return;
        }
        // About two bytes a sample for irregular data; growth beyond is amortized.
        self.room(self.bits as usize / 8 + SLACK + ts.len() * 2);
        for (&t, &v) in ts.iter().zip(vals) {
            self.push(t, v);
        }
    }

    pub(super) fn push(&mut self, t: i64, v: f64) {
        let bits = v.to_bits();
        if bits == super::STALE_NAN {
            self.stale = true;
        } else {
            // min and max are NaN until a value counts: the rule with a count above 0.
            let mut summary = super::keys::Summary { min: self.min, max: self.max, count: 1 };
            super::memtable::summary_add(&mut summary, v);
            (self.min, self.max) = (summary.min, summary.max);
        }
        if self.n == 0 {
            self.put(t as u64, 64);
            self.put(bits, 64);
            self.last_delta = 0;
        } else {
            let delta = t.wrapping_sub(self.last_ts);
            let dod = delta.wrapping_sub(self.last_delta);
            if dod == 0 {
                self.put(0, 1);
            } else if fits(dod, 8) {
                self.put_tagged(0b10, 2, dod as u64, 8);
            } else if fits(dod, 14) {
                self.put_tagged(0b110, 3, dod as u64, 14);
            } else if fits(dod, 20) {
                self.put_tagged(0b1110, 4, dod as u64, 20);
            } else {
                self.put_tagged(0b1111, 4, dod as u64, 64);
            }
            self.last_delta = delta;
            let x = bits ^ self.last_val;
            if x == 0 {
                self.put(0, 1);
            } else {
                let lead = (x.leading_zeros() as u8).min(31);
                let trail = x.trailing_zeros() as u8;
                if self.lead != NONE && lead >= self.lead && trail >= self.trail {
                    self.put_tagged(0b10, 2, x >> self.trail, 64 - u32::from(self.lead) - u32::from(self.trail));
                } else {
                    let sig = 64 - lead - trail;
                    let head = (0b11 << 11) | (u64::from(lead) << 6) | u64::from(sig - 1);
                    self.put_tagged(head, 13, x >> trail, u32::from(sig));
                    self.lead = lead;
                    self.trail = trail;
                }
            }
        }
        self.last_ts = t;
        self.last_val = bits;
        self.n += 1;
    }

    /// Asks the CPU to fetch the cache lines that storing the next samples reads: the one
    /// where they go, and the first, which holds [`Samples::first_ts`] (hints: they read
    /// nothing and cannot fault).
    #[inline]
    pub(super) fn prefetch(&self) {
        for at in [0, self.bits as usize / 8] {
            if let Some(b) = self.buf.get(at) {
                prefetch(std::ptr::from_ref(b));
            }
        }
    }

    /// Appends every sample to `ts` and `vals`, in order.
    pub(super) fn decode_into(&self, ts: &mut Vec<i64>, vals: &mut Vec<f64>) {
        self.decode_while(ts, vals, |_| true);
    }

    /// The samples with `start <= t <= end` (decoding stops at the first past `end`).
    pub(super) fn window(&self, start: i64, end: i64) -> (Vec<i64>, Vec<f64>) {
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        self.decode_while(&mut ts, &mut vals, |t| t <= end);
        let a = ts.partition_point(|&t| t < start);
        if a > 0 {
            ts.drain(..a);
            vals.drain(..a);
        }
        (ts, vals)
    }

    fn decode_while(&self, ts: &mut Vec<i64>, vals: &mut Vec<f64>, keep: impl Fn(i64) -> bool) {
        decode_stream(&self.buf, self.n, ts, vals, keep);
    }

    /// Appends the bit stream to `buf` (which holds the copies of many heads), for
    /// [`decode_copied`] to read back its first `n` samples (all of them, at most). The stream
    /// is copied whole: where a sample ends is known only by decoding, and samples come in
    /// ones and twos between a checkpoint's plan and its copy.
    pub(super) fn copy_first(&self, n: u32, buf: &mut Vec<u8>) -> Copied {
        let len = (self.bits as usize).div_ceil(8);
        let at = buf.len();
        buf.extend_from_slice(&self.buf[..len]);
        Copied { at, len: len as u32, n: n.min(self.n) }
    }

    /// Writes the low `n` bits of `v` (n <= 64), most significant first, after the bits
    /// written: one OR of a 128-bit window into the zeroed tail of `buf`, which always holds
    /// [`SLACK`] bytes past the last bit ([`Samples::room`]).
    #[inline]
    fn put(&mut self, v: u64, n: u32) {
        if n == 0 {
            return;
        }
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        let (at, used) = (self.bits as usize / 8, (self.bits % 8) as u32);
        self.room(at + SLACK);
        let window = (v as u128) << (128 - used - n);
        let dst: &mut [u8; SLACK] = (&mut self.buf[at..at + SLACK]).try_into().expect("SLACK bytes");
        *dst = (u128::from_be_bytes(*dst) | window).to_be_bytes();
        self.bits += u64::from(n);
    }

    /// Grows `buf` (zeroed) to at least `len` bytes, by a quarter at least (and [`GROW_MIN`]
    /// bytes), and to all of its capacity. Doubling left up to half of a buffer unused, and
    /// heads fed at one rate double together: 100,000 series fed every 10 s stepped from 87-89
    /// to 100 MiB of RSS at minute 16 as their buffers doubled (28.8 MB of buffers at the
    /// heap's peak fed every second, heaptrack). A head that grows one sample at a time now
    /// reallocates a dozen times over its 120 samples instead of five, tens of nanoseconds
    /// each.
    #[inline]
    fn room(&mut self, len: usize) {
        if self.buf.len() < len {
            let have = self.buf.len();
            let want = len.max(have + (have / 4).max(GROW_MIN));
            let mut v = std::mem::take(&mut self.buf).into_vec();
            v.reserve_exact(want - have);
            v.resize(v.capacity(), 0);
            // Its length is its capacity: no reallocation.
            self.buf = v.into_boxed_slice();
        }
    }

    /// A `len`-bit prefix, then the low `n` bits of `v`: one [`Samples::put`] when they fit.
    #[inline]
    fn put_tagged(&mut self, prefix: u64, len: u32, v: u64, n: u32) {
        if len + n <= 64 {
            let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
            self.put((prefix << n) | v, len + n);
        } else {
            self.put(prefix, len);
            self.put(v, n);
        }
    }
}

/// Asks the CPU to fetch every cache line of `v` (a hint).
#[inline]
pub(super) fn prefetch_lines<T>(v: &T) {
    let p = std::ptr::from_ref(v).cast::<u8>();
    let size = std::mem::size_of::<T>();
    let mut at = 0;
    while at < size {
        prefetch(p.wrapping_add(at));
        at += 64;
    }
    prefetch(p.wrapping_add(size.saturating_sub(1)));
}

#[inline]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch hint neither reads nor writes the memory it names, and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Where [`Samples::copy_first`] put a head's samples. A checkpoint copies the heads it saves
/// as parts, a slice of them at a time under the metrics lock, into one buffer: one
/// allocation instead of one per head, and the bytes written instead of each buffer's
/// capacity.
#[derive(Clone, Copy, Debug)]
pub(super) struct Copied {
    at: usize,
    /// A head's stream is far below 4 GiB (its samples are counted in a `u32`, two bytes
    /// each or so); 16 bytes a plan instead of 24 at 100,000 heads a checkpoint.
    len: u32,
    n: u32,
}

/// The samples [`Samples::copy_first`] put at `c` in `buf`.
pub(super) fn decode_copied(buf: &[u8], c: Copied, ts: &mut Vec<i64>, vals: &mut Vec<f64>) {
    decode_stream(&buf[c.at..c.at + c.len as usize], c.n, ts, vals, |_| true);
}

/// Decodes `n` samples from the bit stream `buf` (reads past its end are zeros), up to the
/// first whose timestamp `keep` refuses.
fn decode_stream(buf: &[u8], n: u32, ts: &mut Vec<i64>, vals: &mut Vec<f64>, keep: impl Fn(i64) -> bool) {
    if n == 0 {
        return;
    }
    ts.reserve(n as usize);
    vals.reserve(n as usize);
    let mut r = BitReader { buf, pos: 0 };
    let mut t = r.get(64) as i64;
    let mut bits = r.get(64);
    let (mut delta, mut lead, mut trail) = (0i64, 0u32, 0u32);
    for i in 0..n {
        if i > 0 {
            // The prefixes are read four and two bits at a time, then skipped as far as they go.
            let dod = match r.peek4() {
                0b0000..=0b0111 => {
                    r.skip(1);
                    0
                }
                0b1000..=0b1011 => {
                    r.skip(2);
                    signed(r.get(8), 8)
                }
                0b1100..=0b1101 => {
                    r.skip(3);
                    signed(r.get(14), 14)
                }
                0b1110 => {
                    r.skip(4);
                    signed(r.get(20), 20)
                }
                _ => {
                    r.skip(4);
                    r.get(64) as i64
                }
            };
            delta = delta.wrapping_add(dod);
            t = t.wrapping_add(delta);
            match r.peek4() >> 2 {
                0b00 | 0b01 => r.skip(1),
                0b10 => {
                    r.skip(2);
                    bits ^= r.get(64 - lead - trail) << trail;
                }
                _ => {
                    r.skip(2);
                    let head = r.get(11) as u32;
                    lead = head >> 6;
                    let sig = (head & 0x3f) + 1;
                    trail = 64 - lead - sig;
                    bits ^= r.get(sig) << trail;
                }
            }
        }
        if !keep(t) {
            return;
        }
        ts.push(t);
        vals.push(f64::from_bits(bits));
    }
}

fn fits(v: i64, bits: u32) -> bool {
    let half = 1i64 << (bits - 1);
    (-half..half).contains(&v)
}

/// Sign-extends the low `bits` bits of `v`.
fn signed(v: u64, bits: u32) -> i64 {
    ((v << (64 - bits)) as i64) >> (64 - bits)
}

struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    /// Reads `n` bits (n <= 64); past the end reads zeros (the writer never leaves it short).
    #[inline]
    fn get(&mut self, n: u32) -> u64 {
        if n == 0 {
            return 0;
        }
        let at = self.pos / 8;
        // A head's own buffer always holds 16 bytes past its last bit ([`SLACK`]): one load.
        // Near the end of a copy, the bytes there are padded with zeros.
        let w: [u8; 16] = match self.buf.get(at..at + 16) {
            Some(w) => w.try_into().expect("16 bytes"),
            None => {
                let mut w = [0u8; 16];
                let end = (at + 16).min(self.buf.len());
                if at < end {
                    w[..end - at].copy_from_slice(&self.buf[at..end]);
                }
                w
            }
        };
        let x = u128::from_be_bytes(w) << (self.pos % 8);
        self.pos += n as usize;
        (x >> (128 - n)) as u64
    }

    /// The next four bits, without reading past them.
    #[inline]
    fn peek4(&self) -> u32 {
        let at = self.pos / 8;
        let pair = [self.buf.get(at).copied().unwrap_or(0), self.buf.get(at + 1).copied().unwrap_or(0)];
        (u32::from(u16::from_be_bytes(pair) << (self.pos % 8)) >> 12) & 0xf
    }

    #[inline]
    fn skip(&mut self, n: u32) {
        self.pos += n as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(ts: &[i64], vals: &[f64]) -> Samples {
        let s = Samples::from_slices(ts, vals);
        let (mut t2, mut v2) = (Vec::new(), Vec::new());
        s.decode_into(&mut t2, &mut v2);
        assert_eq!(t2, ts);
        assert_eq!(
            v2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            vals.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // Copied among other heads' samples (the bytes after it are another head's, not
        // zeros), it reads back the same.
        let mut buf = vec![0xa5u8; 3];
        let c = s.copy_first(u32::MAX, &mut buf);
        // And a copy that reads back only the first half (more samples came after the plan).
        let half = ts.len() / 2;
        let c_half = s.copy_first(half as u32, &mut buf);
        buf.extend_from_slice(&[0xffu8; 24]);
        let (mut t3, mut v3) = (Vec::new(), Vec::new());
        decode_copied(&buf, c, &mut t3, &mut v3);
        assert_eq!(t3, ts);
        assert!(v3.iter().map(|v| v.to_bits()).eq(vals.iter().map(|v| v.to_bits())));
        let (mut t4, mut v4) = (Vec::new(), Vec::new());
        decode_copied(&buf, c_half, &mut t4, &mut v4);
        assert_eq!(t4, &ts[..half]);
        assert!(v4.iter().map(|v| v.to_bits()).eq(vals[..half].iter().map(|v| v.to_bits())));
        assert_eq!(s.len(), ts.len());
        assert_eq!(s.last_ts(), ts.last().copied());
        assert_eq!(s.first_ts(), ts.first().copied());
        let (want, got) = (super::super::memtable::summarize(vals), s.summary());
        assert_eq!(
            (want.count, want.min.to_bits(), want.max.to_bits()),
            (got.count, got.min.to_bits(), got.max.to_bits())
        );
        s
    }

    #[test]
    fn a_regular_gauge_costs_about_a_byte_and_a_half_a_sample() {
        let ts: Vec<i64> = (0..4096).map(|i| 1_700_000_000_000 + i * 10_000).collect();
        let vals: Vec<f64> = (0..4096).map(|i| (50 + (i * 7919 % 13) - 6) as f64).collect();
        let s = round_trip(&ts, &vals);
        assert!(s.bits / 8 < 4096 * 2, "{} bytes", s.bits / 8);
        let counter: Vec<f64> = (0..4096).map(|i| (i * 3) as f64).collect();
        let s = round_trip(&ts, &counter);
        assert!(s.bits / 8 < 4096 * 2, "{} bytes", s.bits / 8);
    }

    #[test]
    fn extremes_round_trip() {
        round_trip(&[i64::MIN, -1, 0, 1, i64::MAX], &[f64::NAN, f64::INFINITY, -0.0, f64::MIN_POSITIVE, f64::MAX]);
        round_trip(&[5], &[1.5]);
        round_trip(&[1, 2, 3, 4], &[f64::NAN, f64::from_bits(crate::store::STALE_NAN), 2.0, -1.0]);
        // Staleness markers do not count in the summary, wherever they are.
        let stale = f64::from_bits(crate::store::STALE_NAN);
        round_trip(&[1, 2], &[stale, stale]);
        round_trip(&[1, 2, 3], &[stale, 3.0, stale]);
        round_trip(&[], &[]);
        let w = Samples::new().window(0, 10);
        assert!(w.0.is_empty() && w.1.is_empty());
    }

    #[test]
    fn window_keeps_the_range_only() {
        let ts: Vec<i64> = (0..100).map(|i| i * 10).collect();
        let vals: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let s = Samples::from_slices(&ts, &vals);
        let (t, v) = s.window(95, 200);
        assert_eq!(t, (10..=20).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(v, (10..=20).map(|i| i as f64).collect::<Vec<_>>());
    }

    proptest! {
        #[test]
        fn any_increasing_samples_round_trip(
            start in any::<i64>(),
            steps in proptest::collection::vec(prop_oneof![Just(10_000i64), 1i64..20, 1i64..2_000_000, 1i64..i64::MAX / 4096], 0..300),
            vals in proptest::collection::vec(prop_oneof![any::<f64>(), (0i64..1000).prop_map(|v| v as f64), Just(1.0)], 300),
        ) {
            let mut ts = Vec::new();
            let mut t = start;
            for s in &steps {
                ts.push(t);
                t = t.wrapping_add(*s);
            }
            round_trip(&ts, &vals[..ts.len()]);
        }
    }
}
