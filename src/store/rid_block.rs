//! The packed layouts of request-id runs ([`super::rid_index`]): a run's sorted entries in
//! blocks of [`BLOCK`], each field bit-packed at the width its block needs. The fixed layout
//! before them took 28 bytes an entry (a 64-bit hash, a 20-byte time key); packed, an entry of
//! a run of a million takes about 6.5 bytes in [`Form::Records`], about 4.3 in
//! [`Form::Groups`] and about 3.2 in [`Form::Numbered`].
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
//! Block (records, groups): `crc32 (LE, over the rest) | n: u16 LE | widths: 4 × u8 (hash
//! difference, ts, lsn, index) | first hash: u64 LE | smallest slot: i64 LE | lsn: u64 LE |
//! index: u32 LE | the bits`. File: the blocks, then the table (per block: first hash, offset;
//! u64 LE each), `count: u64 LE | blocks: u64 LE | crc32 (LE) over the table and both counts |
//! magic` ([`Form::magic`]).
//!
//! [`Form::Numbered`] (since 7d40854, 2026-12-06) names each entry's group by its number in
//! the run's table of groups instead: a block's entries are spread over the whole run's
//! groups, so their slots and lsns took the bits of the run's whole span (about 14 an entry in
//! `cargo bench --bench events_disk`), where the number takes log2 of the groups (about 8). The hash
//! differences, geometric around 2^36 / entries, are Rice-coded with the parameter that suits
//! the block (about 1.5 bits an entry less than the width of the block's largest). Block:
//! `crc32 (LE, over the rest) | n: u16 LE | rice k: u8 | group width: u8 | first hash: u64 LE
//! | for each entry after the first, its hash difference (the quotient by 2^k in unary, ones
//! ended by a zero, then k bits) | for each entry, its group's number`. File: the blocks, the
//! groups (ascending; per group its slot's and its lsn's differences from the group before,
//! in slots and zig-zagged, LEB128 each: about 2 bytes), the block table, then `count |
//! blocks | groups | groups' bytes` (u64 LE each), `crc32 (LE)` over groups, table and counts,
//! and the magic. Where a run's groups are nearly as many as its entries (a service that sends
//! one event a WAL record), numbers and table would cost more than slot and lsn, and such a
//! run is written in [`Form::Groups`] ([`Form::numbering_pays`]).
use super::chunk::BitWriter;
use super::keys::{self, put_varint, unzigzag, zigzag, DecodeError, Reader};
use super::raw::SLOT_MS;

/// Entries per block: a look-up reads and decodes one (about 2 KB).
pub const BLOCK: usize = 256;
/// The index of entries that locate a group, not a record.
pub const ANY: u32 = u32::MAX;
/// What follows the table in runs of the first two forms: both counts, its checksum, the magic.
const TAIL: usize = 8 + 8 + 4 + 8;
/// ... and in [`Form::Numbered`]: four counts.
const TAIL_NUMBERED: usize = 8 + 8 + 8 + 8 + 4 + 8;
const HEAD: usize = 4 + 2 + 4 + 8 + 8 + 8 + 4;
const HEAD_NUMBERED: usize = 4 + 2 + 1 + 1 + 8;

/// A group of records: its 10-second slot's start (ms) and its WAL record's lsn.
pub type Group = (i64, u64);

/// What a packed run's entries hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    /// Written on 2026-12-05: 40 bits of hash and the record's index in its WAL record.
    Records,
    /// Written by 424d295 to 3e0e13f (2026-12-06): 36 bits of hash and the group only (index
    /// [`ANY`]). The index took a third of an entry; the reader's scan of one group's request
    /// ids costs less than the group's read.
    Groups,
    /// Since 7d40854 (2026-12-06): as [`Form::Groups`], the group as its number in the run's
    /// table and the hash differences Rice-coded.
    Numbered,
}

impl Form {
    /// Bits of the request id's hash that the entries keep, the top ones.
    pub fn bits(self) -> u32 {
        match self {
            Form::Records => 40,
            Form::Groups | Form::Numbered => 36,
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
        if self != Form::Records {
            tk[16..].copy_from_slice(&ANY.to_be_bytes());
        }
        (self.mask(e.0), tk)
    }

    /// The last 8 bytes of a run file of this form.
    pub fn magic(self) -> &'static [u8; 8] {
        match self {
            Form::Records => b"MWRIDPK1",
            Form::Groups => b"MWRIDPK2",
            Form::Numbered => b"MWRIDPK3",
        }
    }

    /// Bytes after a run file's table.
    pub fn tail_len(self) -> usize {
        match self {
            Form::Numbered => TAIL_NUMBERED,
            _ => TAIL,
        }
    }

    /// Whether the run keeps a table of groups.
    pub fn numbered(self) -> bool {
        self == Form::Numbered
    }

    /// Whether [`Form::Numbered`] is the smaller form for a run of `entries` in `groups`
    /// (sorted): not when the groups' numbers and table cost more bits than each entry's slot
    /// and lsn would in [`Form::Groups`].
    pub fn numbering_pays(entries: u64, groups: &[Group]) -> bool {
        let (Some(first), Some(last)) = (groups.first(), groups.last()) else { return true };
        let slots = last.0.abs_diff(first.0) / SLOT_MS as u64;
        let (lo, hi) = groups.iter().fold((u64::MAX, 0), |(lo, hi), g| (lo.min(g.1), hi.max(g.1)));
        let mut table = Vec::new();
        put_groups(groups, &mut table);
        // Both code the hash alike but for Rice's saving of about 1.5 bits an entry.
        let numbered = entries * u64::from(bits(groups.len() as u64 - 1)) + 8 * table.len() as u64;
        let spans = entries * (u64::from(bits(slots) + bits(hi - lo)) + 1);
        numbered <= spans
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

    /// A unary number: the ones before the next zero; `None` past `max` ones.
    fn unary(&mut self, max: u64) -> Option<u64> {
        let mut q = 0;
        loop {
            if self.n == 0 {
                self.acc = u128::from(self.buf.get(self.at).copied().unwrap_or(0));
                self.at += 1;
                self.n = 8;
            }
            // The bits above the `n` held are zeros: the ones end at `n` at the latest.
            let ones = u64::from((!self.acc).trailing_zeros().min(self.n));
            q += ones;
            if q > max {
                return None;
            }
            if ones < u64::from(self.n) {
                self.acc >>= ones + 1;
                self.n -= ones as u32 + 1;
                return Some(q);
            }
            self.acc = 0;
            self.n = 0;
        }
    }

    /// Bytes the bits read so far take.
    fn used(&self) -> usize {
        self.at - (self.n / 8) as usize
    }
}

/// The group a time key's record is in.
pub fn group_of(tk: &[u8; 20]) -> Result<Group, DecodeError> {
    let (ts, lsn, _) = keys::decode_time_key(tk)?;
    Ok((ts.div_euclid(SLOT_MS) * SLOT_MS, lsn))
}

/// The time key as a packed run gives it back: the slot's start for the ts.
pub fn in_slot(tk: &[u8; 20]) -> [u8; 20] {
    let mut k = *tk;
    let ts = keys::ts_from_bytes(tk[..8].try_into().expect("8 bytes"));
    k[..8].copy_from_slice(&keys::ts_to_bytes(ts.div_euclid(SLOT_MS) * SLOT_MS));
    k
}

/// The run's table of groups as a writer of [`Form::Numbered`] blocks needs it: each group's
/// number. A binary search of the table per entry took 70% of the writer's time in a merge at
/// 100 M events (5,000 groups: a branch missed at every level).
pub struct Numbers {
    of: super::index::FxMap<Group, u32>,
}

impl Numbers {
    /// `groups`: the run's table, sorted.
    pub fn new(groups: &[Group]) -> Numbers {
        Numbers { of: groups.iter().enumerate().map(|(i, &g)| (g, i as u32)).collect() }
    }

    fn len(&self) -> usize {
        self.of.len()
    }
}

/// Appends one block of `entries` (sorted by hash, hashes already masked by `form`, 1 to
/// [`BLOCK`]); `numbers`: the run's table ([`Form::Numbered`] only: every entry's group must be
/// in it).
pub fn encode(entries: &[Entry], form: Form, numbers: &Numbers, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    debug_assert!(!entries.is_empty() && entries.len() <= BLOCK);
    if form.numbered() {
        return encode_numbered(entries, numbers, out);
    }
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

/// One block's entries, its checksum checked (`groups`: the run's table, for
/// [`Form::Numbered`]).
pub fn decode(b: &[u8], form: Form, groups: &[Group]) -> Result<Vec<Entry>, DecodeError> {
    if form.numbered() {
        return decode_numbered(b, groups);
    }
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

/// The Rice parameter that codes `diffs` in the fewest bits (near log2 of their mean).
fn rice_k(diffs: &[u64]) -> u8 {
    let cost = |k: u32| diffs.iter().map(|&d| (d >> k) + 1 + u64::from(k)).sum::<u64>();
    let mean = diffs.iter().sum::<u64>() / diffs.len().max(1) as u64;
    let guess = 63u32.saturating_sub(mean.max(1).leading_zeros());
    (guess.saturating_sub(2)..=(guess + 1).min(63)).min_by_key(|&k| cost(k)).unwrap_or(0) as u8
}

fn encode_numbered(entries: &[Entry], table: &Numbers, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let form = Form::Numbered;
    let mut numbers = Vec::with_capacity(entries.len());
    for e in entries {
        let g = group_of(&e.1)?;
        let i = table.of.get(&g).ok_or_else(|| bad(format!("group {g:?} is not in the run's table")))?;
        numbers.push(u64::from(*i));
    }
    let mut diffs = Vec::with_capacity(entries.len());
    for w in entries.windows(2) {
        if w[1].0 < w[0].0 || form.mask(w[1].0) != w[1].0 {
            return Err(bad("entries out of order or with unmasked hashes"));
        }
        diffs.push((w[1].0 - w[0].0) >> form.drop());
    }
    if form.mask(entries[0].0) != entries[0].0 {
        return Err(bad("an unmasked hash"));
    }
    let k = rice_k(&diffs);
    let gw = bits(table.len().saturating_sub(1) as u64);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&[k, gw]);
    out.extend_from_slice(&entries[0].0.to_le_bytes());
    let mut bw = BitWriter::new(out);
    for &d in &diffs {
        let mut q = d >> k;
        while q >= 32 {
            bw.put(u64::from(u32::MAX), 32);
            q -= 32;
        }
        // q ones, then the zero that ends them.
        bw.put((1u64 << q) - 1, q as u32 + 1);
        bw.put(d & ((1u64 << k) - 1), k.into());
    }
    for &g in &numbers {
        bw.put(g, gw.into());
    }
    bw.finish();
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn decode_numbered(b: &[u8], groups: &[Group]) -> Result<Vec<Entry>, DecodeError> {
    let form = Form::Numbered;
    if b.len() < HEAD_NUMBERED {
        return Err(bad(format!("{} bytes, shorter than a block's head", b.len())));
    }
    if crc32fast::hash(&b[4..]) != u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) {
        return Err(bad("checksum mismatch"));
    }
    let n = usize::from(u16::from_le_bytes([b[4], b[5]]));
    let (k, gw) = (b[6], b[7]);
    let first = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
    if n == 0 || n > BLOCK || u32::from(k) > form.bits() || u32::from(gw) > 32 || form.mask(first) != first {
        return Err(bad(format!("{n} entries, rice parameter {k}, group width {gw}")));
    }
    let mut r = BitReader { buf: &b[HEAD_NUMBERED..], at: 0, acc: 0, n: 0 };
    let mut hashes = Vec::with_capacity(n);
    hashes.push(first);
    let mut h = first;
    // No difference reaches past the kept bits.
    let max_q = (1u64 << form.bits()) >> k;
    for _ in 1..n {
        let q = r.unary(max_q).ok_or_else(|| bad("a hash difference past the hash's bits"))?;
        let d = (q << k | r.get(k)) << form.drop();
        h = h.checked_add(d).ok_or_else(|| bad("hashes past 2^64"))?;
        hashes.push(h);
    }
    let mut out = Vec::with_capacity(n);
    for h in hashes {
        let i = r.get(gw) as usize;
        let &(ts, lsn) = groups.get(i).ok_or_else(|| bad(format!("group {i} of a table of {}", groups.len())))?;
        out.push((h, keys::time_key(ts, lsn, ANY)));
    }
    if r.used() != b.len() - HEAD_NUMBERED {
        return Err(bad(format!("{} bytes of entries where {n} take {}", b.len() - HEAD_NUMBERED, r.used())));
    }
    Ok(out)
}

/// Appends `groups` (sorted) in the table's form: differences from the group before.
fn put_groups(groups: &[Group], out: &mut Vec<u8>) {
    let mut prev = (0i64, 0u64);
    for &(ts, lsn) in groups {
        put_varint(out, zigzag(ts.div_euclid(SLOT_MS).wrapping_sub(prev.0.div_euclid(SLOT_MS))));
        put_varint(out, zigzag(lsn.wrapping_sub(prev.1) as i64));
        prev = (ts, lsn);
    }
}

/// Appends what follows the blocks: the groups ([`Form::Numbered`]; empty for the others), the
/// table for blocks `(first hash, offset)`, and the tail (the form's magic last).
pub fn encode_table(table: &[(u64, u64)], groups: &[Group], count: u64, form: Form, out: &mut Vec<u8>) {
    debug_assert!(form.numbered() || groups.is_empty());
    let start = out.len();
    put_groups(groups, out);
    let group_bytes = out.len() - start;
    for (h, off) in table {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
    }
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(table.len() as u64).to_le_bytes());
    if form.numbered() {
        out.extend_from_slice(&(groups.len() as u64).to_le_bytes());
        out.extend_from_slice(&(group_bytes as u64).to_le_bytes());
    }
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(form.magic());
}

/// What a run file's tail says.
#[derive(Debug, PartialEq, Eq)]
pub struct Tail {
    pub count: u64,
    pub blocks: u64,
    pub groups: u64,
    pub group_bytes: u64,
}

impl Tail {
    /// Bytes of the groups and the block table before the tail.
    pub fn table_bytes(&self) -> Option<u64> {
        self.blocks.checked_mul(16)?.checked_add(self.group_bytes)
    }
}

/// From a file's last [`Form::tail_len`] bytes.
pub fn decode_tail(t: &[u8], form: Form) -> Result<Tail, DecodeError> {
    if t.len() != form.tail_len() || &t[t.len() - 8..] != form.magic() {
        return Err(bad("no packed run tail at the end of the file"));
    }
    let at = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().expect("8"));
    let (groups, group_bytes) = if form.numbered() { (at(16), at(24)) } else { (0, 0) };
    Ok(Tail { count: at(0), blocks: at(8), groups, group_bytes })
}

/// The groups and the block table ((first hash, offset) per block), from their bytes and the
/// tail's, checked against its checksum.
#[allow(clippy::type_complexity)]
pub fn decode_table(table: &[u8], tail: &[u8], t: &Tail) -> Result<(Vec<Group>, Vec<(u64, u64)>), DecodeError> {
    let counts = tail.len() - 12;
    let mut h = crc32fast::Hasher::new();
    h.update(table);
    h.update(&tail[..counts]);
    if h.finalize() != u32::from_le_bytes(tail[counts..counts + 4].try_into().expect("4")) {
        return Err(bad("table checksum mismatch"));
    }
    let (g, blocks) = table.split_at(t.group_bytes as usize);
    // Each group takes two bytes at least.
    if t.groups > t.group_bytes / 2 {
        return Err(bad(format!("{} groups in {} bytes", t.groups, t.group_bytes)));
    }
    let mut groups = Vec::with_capacity(t.groups as usize);
    let mut r = Reader::new(g, "request-id run groups");
    let (mut slot, mut lsn) = (0i64, 0u64);
    for _ in 0..t.groups {
        slot = slot.wrapping_add(unzigzag(r.varint()?));
        lsn = lsn.wrapping_add(unzigzag(r.varint()?) as u64);
        let ts = slot.checked_mul(SLOT_MS).ok_or_else(|| bad("a slot past 2^63 ms"))?;
        groups.push((ts, lsn));
    }
    if !r.done() || groups.windows(2).any(|w| w[1] <= w[0]) {
        return Err(bad("groups out of order or bytes left after them"));
    }
    let blocks = blocks
        .chunks_exact(16)
        .map(|c| (u64::from_le_bytes(c[..8].try_into().expect("8")), u64::from_le_bytes(c[8..].try_into().expect("8"))))
        .collect();
    Ok((groups, blocks))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distinct groups of `entries`, sorted: the table a run of them keeps.
    fn table(entries: &[Entry]) -> Vec<Group> {
        let mut g: Vec<Group> = entries.iter().map(|e| group_of(&e.1).unwrap()).collect();
        g.sort_unstable();
        g.dedup();
        g
    }

    #[test]
    fn blocks_read_back_and_damage_is_found() {
        let mut sizes = Vec::new();
        for form in [Form::Records, Form::Groups, Form::Numbered] {
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
            let groups = if form.numbered() { table(&entries) } else { Vec::new() };
            let mut out = Vec::new();
            encode(&entries, form, &Numbers::new(&groups), &mut out).unwrap();
            assert_eq!(decode(&out, form, &groups).unwrap(), entries);
            let per_entry = out.len() as f64 / BLOCK as f64;
            sizes.push(per_entry);
            // Hash differences of about 2^64 / 256 (34 and 30 bits kept), 1 bit of slot, 3 of
            // lsn, 13 of index in Records only; 14 groups (4 bits) when numbered.
            match form {
                Form::Records => assert!(per_entry <= 6.7, "{per_entry} bytes an entry"),
                Form::Groups | Form::Numbered => {
                    assert!(per_entry <= 4.6, "{per_entry} bytes an entry");
                    assert!(entries.iter().all(|e| e.1[16..] == ANY.to_be_bytes()));
                }
            }
            // Extremes: every width at its largest, and a difference of the hash's whole span.
            let (lo, hi) = (i64::MIN / SLOT_MS * SLOT_MS, i64::MAX / SLOT_MS * SLOT_MS);
            let wide =
                vec![(0, keys::time_key(lo, 0, 0)), (form.mask(u64::MAX), keys::time_key(hi, u64::MAX, u32::MAX))];
            let wide: Vec<Entry> =
                if form.numbered() { wide.into_iter().map(|e| form.entry(e)).collect() } else { wide };
            let wide_groups = if form.numbered() { table(&wide) } else { Vec::new() };
            let mut w = Vec::new();
            encode(&wide, form, &Numbers::new(&wide_groups), &mut w).unwrap();
            assert_eq!(decode(&w, form, &wide_groups).unwrap(), wide);
            for at in [0, 5, 12, 40, out.len() - 1] {
                let mut d = out.clone();
                d[at] ^= 0x10;
                assert!(decode(&d, form, &groups).is_err(), "byte {at}");
            }
            assert!(decode(&out[..out.len() - 1], form, &groups).is_err());
            assert!(
                encode(&[(1, keys::time_key(0, 0, 0))], form, &Numbers::new(&[(0, 0)]), &mut Vec::new()).is_err(),
                "unmasked"
            );
        }
        assert!(sizes[2] < sizes[1], "numbered entries are the smallest: {sizes:?}");
        // Numbered blocks refuse a group missing from the table, and a table too short for a
        // block's numbers.
        let e = Form::Numbered.entry((0, keys::time_key(10_000, 3, 0)));
        assert!(encode(&[e], Form::Numbered, &Numbers::new(&[(0, 3)]), &mut Vec::new()).is_err());
        let mut out = Vec::new();
        let groups = [(0, 1), (0, 2), (10_000, 3)];
        encode(&[e], Form::Numbered, &Numbers::new(&groups), &mut out).unwrap();
        assert!(decode(&out, Form::Numbered, &groups[..2]).is_err());
    }

    #[test]
    fn numbered_runs_of_a_million_take_about_three_bytes_an_entry() {
        // A million random hashes over 250 groups, as a run of `cargo bench --bench
        // events_disk` holds them: about 17.5 bits of Rice-coded difference and 8 of group.
        let form = Form::Numbered;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut entries: Vec<Entry> = (0..1_000_000)
            .map(|_| {
                let g = next() % 250;
                form.entry((next(), keys::time_key(1_790_000_000_000 + g as i64 * 2_000, 100 + g, 0)))
            })
            .collect();
        entries.sort_unstable();
        let groups = table(&entries);
        let numbers = Numbers::new(&groups);
        let mut out = Vec::new();
        let mut back = Vec::new();
        for block in entries.chunks(BLOCK) {
            let at = out.len();
            encode(block, form, &numbers, &mut out).unwrap();
            back.extend(decode(&out[at..], form, &groups).unwrap());
        }
        assert_eq!(back, entries);
        let per_entry = out.len() as f64 / entries.len() as f64;
        assert!(per_entry < 3.4, "{per_entry} bytes an entry");
    }

    #[test]
    fn a_tail_of_one_form_is_refused_as_another() {
        let mut t = Vec::new();
        encode_table(&[(0, 0)], &[], 3, Form::Groups, &mut t);
        let tail = &t[t.len() - Form::Groups.tail_len()..];
        let want = Tail { count: 3, blocks: 1, groups: 0, group_bytes: 0 };
        assert_eq!(decode_tail(tail, Form::Groups).unwrap(), want);
        assert!(decode_tail(tail, Form::Records).is_err());
        assert_eq!(decode_table(&t[..16], tail, &want).unwrap(), (vec![], vec![(0, 0)]));
        let mut t = Vec::new();
        encode_table(&[(0, 0), (7, 90)], &[(10_000, 4), (10_000, 5), (20_000, 1)], 300, Form::Numbered, &mut t);
        let tail = &t[t.len() - Form::Numbered.tail_len()..];
        let want = Tail { count: 300, blocks: 2, groups: 3, group_bytes: 6 };
        assert_eq!(decode_tail(tail, Form::Numbered).unwrap(), want);
        assert!(decode_tail(&t[t.len() - Form::Groups.tail_len()..], Form::Groups).is_err());
        let body = &t[..t.len() - tail.len()];
        assert_eq!(want.table_bytes(), Some(body.len() as u64));
        assert_eq!(
            decode_table(body, tail, &want).unwrap(),
            (vec![(10_000, 4), (10_000, 5), (20_000, 1)], vec![(0, 0), (7, 90)])
        );
        let mut bad = body.to_vec();
        bad[3] ^= 1;
        assert!(decode_table(&bad, tail, &want).unwrap_err().to_string().contains("checksum"));
    }
}
