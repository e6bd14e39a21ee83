//! The packed layouts of request-id runs ([`super::rid_index`]): a run's sorted entries in
//! blocks of [`BLOCK`], each field bit-packed at the width its block needs. The fixed layout
//! before them took 28 bytes an entry (a 64-bit hash, a 20-byte time key); packed, an entry of
//! a run of a million takes about 6.5 bytes in [`Form::Records`] and about 4 in
//! [`Form::Groups`].
//!
//! - **Hash**: its top [`Form::bits`] bits, as the difference from the entry before (sorted,
//!   so the differences are small). A look-up compares those bits only; a match was always
//!   just a candidate that the reader checks against the record's request id. With 36 bits, a
//!   look-up at 100 M stored events meets one false candidate in about 700.
//! - **Where the record is**: its 10-second slot (the time key's `ts` reads back as the slot's
//!   start: the group key `(slot, lsn)` needs no more, and the reader takes the time from the
//!   record), the WAL record's lsn and, in [`Form::Records`] only, the index in it, each as its
//!   difference from the block's smallest. [`Form::Groups`] writes [`ANY`] as every index (its
//!   width is then 0 bits): the reader finds the record in its group by its request id.
//!
//! Block: `crc32 (LE, over the rest) | n: u16 LE | widths: 4 × u8 (hash difference, ts, lsn,
//! index) | first hash: u64 LE | smallest slot: i64 LE | lsn: u64 LE | index: u32 LE | the bits`.
//! File: the blocks, then the table (per block: first hash, offset; u64 LE each), `count: u64 LE |
//! blocks: u64 LE | crc32 (LE) over the table and both counts | magic` ([`Form::magic`]).
use super::chunk::BitWriter;
use super::keys::{self, DecodeError};
use super::raw::SLOT_MS;

/// Entries per block: a look-up reads and decodes one (about 2 KB).
pub const BLOCK: usize = 256;
/// The index of entries that locate a group, not a record.
pub const ANY: u32 = u32::MAX;
/// What follows the table: both counts, its checksum, the magic.
pub const TAIL: usize = 8 + 8 + 4 + 8;
const HEAD: usize = 4 + 2 + 4 + 8 + 8 + 8 + 4;

/// What a packed run's entries hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    /// Written on 2026-12-05: 40 bits of hash and the record's index in its WAL record.
    Records,
    /// Since 2026-12-06: 36 bits of hash and the group only (index [`ANY`]). The index took a
    /// third of an entry; the reader's scan of one group's request ids costs less than the
    /// group's read.
    Groups,
}

impl Form {
    /// Bits of the request id's hash that the entries keep, the top ones.
    pub fn bits(self) -> u32 {
        match self {
            Form::Records => 40,
            Form::Groups => 36,
        }
    }

    fn drop(self) -> u32 {
        64 - self.bits()
    }

    /// The hash as this form keeps it.
    pub fn mask(self, h: u64) -> u64 {
        h >> self.drop() << self.drop()
    }

    /// An index entry as this form keeps it: the hash masked, the time key's slot, and for
    /// [`Form::Groups`] the index [`ANY`].
    pub fn entry(self, e: Entry) -> Entry {
        let mut tk = in_slot(&e.1);
        if self == Form::Groups {
            tk[16..].copy_from_slice(&ANY.to_be_bytes());
        }
        (self.mask(e.0), tk)
    }

    /// The last 8 bytes of a run file of this form.
    pub fn magic(self) -> &'static [u8; 8] {
        match self {
            Form::Records => b"MWRIDPK1",
            Form::Groups => b"MWRIDPK2",
        }
    }
}

/// (hash, time key), as the index holds its entries.
pub type Entry = (u64, [u8; 20]);

fn bad(detail: impl Into<String>) -> DecodeError {
    DecodeError { what: "request-id run block", detail: detail.into() }
}

fn bits(v: u64) -> u8 {
    (64 - v.leading_zeros()) as u8
}

struct BitReader<'a> {
    buf: &'a [u8],
    at: usize,
    acc: u128,
    n: u32,
}

impl BitReader<'_> {
    /// The caller checked that the bits are there; past the end reads zeros.
    fn get(&mut self, w: u8) -> u64 {
        let w = u32::from(w);
        while self.n < w {
            self.acc |= u128::from(self.buf.get(self.at).copied().unwrap_or(0)) << self.n;
            self.at += 1;
            self.n += 8;
        }
        let v = if w == 64 { self.acc as u64 } else { (self.acc as u64) & ((1u64 << w) - 1) };
        self.acc >>= w;
        self.n -= w;
        v
    }
}

/// The time key as a packed run gives it back: the slot's start for the ts.
pub fn in_slot(tk: &[u8; 20]) -> [u8; 20] {
    let mut k = *tk;
    let ts = keys::ts_from_bytes(tk[..8].try_into().expect("8 bytes"));
    k[..8].copy_from_slice(&keys::ts_to_bytes(ts.div_euclid(SLOT_MS) * SLOT_MS));
    k
}

/// Appends one block of `entries` (sorted by hash, hashes already masked by `form`, 1 to
/// [`BLOCK`]).
pub fn encode(entries: &[Entry], form: Form, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    debug_assert!(!entries.is_empty() && entries.len() <= BLOCK);
    let mut parts = Vec::with_capacity(entries.len());
    for e in entries {
        let (ts, lsn, idx) = keys::decode_time_key(&e.1)?;
        parts.push((ts.div_euclid(SLOT_MS), lsn, idx));
    }
    let ts_min = parts.iter().map(|p| p.0).min().unwrap_or(0);
    let lsn_min = parts.iter().map(|p| p.1).min().unwrap_or(0);
    let idx_min = parts.iter().map(|p| p.2).min().unwrap_or(0);
    let mut prev = entries[0].0;
    let mut diffs = Vec::with_capacity(entries.len());
    for e in entries {
        if e.0 < prev || form.mask(e.0) != e.0 {
            return Err(bad("entries out of order or with unmasked hashes"));
        }
        diffs.push((e.0 - prev) >> form.drop());
        prev = e.0;
    }
    let w = [
        bits(diffs.iter().copied().max().unwrap_or(0)),
        bits(parts.iter().map(|p| p.0.wrapping_sub(ts_min) as u64).max().unwrap_or(0)),
        bits(parts.iter().map(|p| p.1 - lsn_min).max().unwrap_or(0)),
        bits(u64::from(parts.iter().map(|p| p.2 - idx_min).max().unwrap_or(0))),
    ];
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&w);
    out.extend_from_slice(&entries[0].0.to_le_bytes());
    out.extend_from_slice(&ts_min.to_le_bytes());
    out.extend_from_slice(&lsn_min.to_le_bytes());
    out.extend_from_slice(&idx_min.to_le_bytes());
    let mut bw = BitWriter::new(out);
    for (d, p) in diffs.iter().zip(&parts) {
        bw.put(*d, w[0].into());
        bw.put(p.0.wrapping_sub(ts_min) as u64, w[1].into());
        bw.put(p.1 - lsn_min, w[2].into());
        bw.put(u64::from(p.2 - idx_min), w[3].into());
    }
    bw.finish();
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// One block's entries, its checksum checked.
pub fn decode(b: &[u8], form: Form) -> Result<Vec<Entry>, DecodeError> {
    if b.len() < HEAD {
        return Err(bad(format!("{} bytes, shorter than a block's head", b.len())));
    }
    if crc32fast::hash(&b[4..]) != u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) {
        return Err(bad("checksum mismatch"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let n = usize::from(u16::from_le_bytes([b[4], b[5]]));
    let w = [b[6], b[7], b[8], b[9]];
    let first = u64_at(10);
    let ts_min = u64_at(18) as i64;
    let lsn_min = u64_at(26);
    let idx_min = u32::from_le_bytes(b[34..38].try_into().expect("4 bytes"));
    if n == 0 || n > BLOCK || u32::from(w[0]) > form.bits() || w[1] > 64 || w[2] > 64 || w[3] > 32 {
        return Err(bad(format!("{n} entries, widths {w:?}")));
    }
    let need = (n * w.iter().map(|&x| usize::from(x)).sum::<usize>()).div_ceil(8);
    if b.len() - HEAD != need {
        return Err(bad(format!("{} bytes of entries where {n} need {need}", b.len() - HEAD)));
    }
    let mut r = BitReader { buf: &b[HEAD..], at: 0, acc: 0, n: 0 };
    let mut h = first;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        h = h.wrapping_add(r.get(w[0]) << form.drop());
        let ts = ts_min.wrapping_add(r.get(w[1]) as i64).wrapping_mul(SLOT_MS);
        let lsn = lsn_min.wrapping_add(r.get(w[2]));
        let idx = idx_min.wrapping_add(r.get(w[3]) as u32);
        out.push((h, keys::time_key(ts, lsn, idx)));
    }
    Ok(out)
}

/// Appends the table and the tail (the form's magic last) for blocks `(first hash, offset)`.
pub fn encode_table(table: &[(u64, u64)], count: u64, form: Form, out: &mut Vec<u8>) {
    let start = out.len();
    for (h, off) in table {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
    }
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(table.len() as u64).to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(form.magic());
}

/// From a file's tail ([`TAIL`] bytes): (entries, blocks).
pub fn decode_tail(t: &[u8], form: Form) -> Result<(u64, u64), DecodeError> {
    if t.len() != TAIL || &t[20..] != form.magic() {
        return Err(bad("no packed run tail at the end of the file"));
    }
    Ok((u64::from_le_bytes(t[..8].try_into().expect("8")), u64::from_le_bytes(t[8..16].try_into().expect("8"))))
}

/// The table, from its bytes and the tail's: (first hash, offset) per block.
pub fn decode_table(table: &[u8], tail: &[u8]) -> Result<Vec<(u64, u64)>, DecodeError> {
    let mut h = crc32fast::Hasher::new();
    h.update(table);
    h.update(&tail[..16]);
    if h.finalize() != u32::from_le_bytes(tail[16..20].try_into().expect("4")) {
        return Err(bad("table checksum mismatch"));
    }
    Ok(table
        .chunks_exact(16)
        .map(|c| (u64::from_le_bytes(c[..8].try_into().expect("8")), u64::from_le_bytes(c[8..].try_into().expect("8"))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_back_and_damage_is_found() {
        for form in [Form::Records, Form::Groups] {
            let mut entries: Vec<Entry> = (0..BLOCK as u64)
                .map(|i| {
                    let h = form.mask(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    (
                        h,
                        keys::time_key(
                            1_790_000_000_000 + (i as i64 * 37) % 5000 - 2500,
                            40 + i % 7,
                            (i * 13 % 5000) as u32,
                        ),
                    )
                })
                .collect();
            entries.sort();
            entries[3].0 = entries[2].0; // equal hashes
            let entries: Vec<Entry> = entries.into_iter().map(|e| form.entry(e)).collect();
            let mut out = Vec::new();
            encode(&entries, form, &mut out).unwrap();
            assert_eq!(decode(&out, form).unwrap(), entries);
            let per_entry = (out.len() - HEAD) as f64 / BLOCK as f64;
            // Hash differences of about 2^64 / 256 (34 and 30 bits kept), 1 bit of slot, 3 of
            // lsn, 13 of index in Records only.
            match form {
                Form::Records => assert!(per_entry <= 6.5, "{per_entry} bytes an entry"),
                Form::Groups => {
                    assert!(per_entry <= 4.5, "{per_entry} bytes an entry");
                    assert!(entries.iter().all(|e| e.1[16..] == ANY.to_be_bytes()));
                }
            }
            // Extremes: every width at its largest.
            let (lo, hi) = (i64::MIN / SLOT_MS * SLOT_MS, i64::MAX / SLOT_MS * SLOT_MS);
            let wide =
                vec![(0, keys::time_key(lo, 0, 0)), (form.mask(u64::MAX), keys::time_key(hi, u64::MAX, u32::MAX))];
            let mut w = Vec::new();
            encode(&wide, form, &mut w).unwrap();
            assert_eq!(decode(&w, form).unwrap(), wide);
            for at in [0, 5, 12, 40, out.len() - 1] {
                let mut d = out.clone();
                d[at] ^= 0x10;
                assert!(decode(&d, form).is_err(), "byte {at}");
            }
            assert!(decode(&out[..out.len() - 1], form).is_err());
            assert!(encode(&[(1, keys::time_key(0, 0, 0))], form, &mut Vec::new()).is_err(), "unmasked");
        }
    }

    #[test]
    fn a_tail_of_one_form_is_refused_as_the_other() {
        let mut t = Vec::new();
        encode_table(&[(0, 0)], 3, Form::Groups, &mut t);
        let tail = &t[t.len() - TAIL..];
        assert_eq!(decode_tail(tail, Form::Groups).unwrap(), (3, 1));
        assert!(decode_tail(tail, Form::Records).is_err());
    }
}
