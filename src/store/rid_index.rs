//! Request-id index, LSM-style: one sled insert per indexed record capped ingest of events that
//! carry a request id near 200k/s, so entries are kept in memory (rebuilt by WAL replay) and
//! written at each checkpoint as one sorted run of `(hash64(request id), time key)` pairs in the
//! block files, with one sled catalog entry per run. Lookups binary-search each run with a few
//! `pread`s; runs of a similar size are merged (size-tiered) so their count stays logarithmic;
//! retention drops runs whose newest entry has expired. A hash match is only a candidate: the
//! reader compares the record's request id.
//!
//! Run layout: `count: u64 BE`, then `count` entries of `hash: u64 BE | time key: 20 bytes`,
//! sorted. Catalog entry: run id (u64 BE) → [`BlockRef`] (location, count, newest ts) + oldest ts.
use super::blocks::Blocks;
use super::keys::{self, BlockRef};
use super::StoreError;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

const ENTRY: usize = 28;
/// Runs are merged once this many have a similar size.
const MERGE_FAN_IN: usize = 8;

/// The request id's 64-bit hash as stored in runs: FNV-1a over its UTF-8 bytes, then the
/// 64-bit finalizer of MurmurHash3 (FNV alone mixes the last bytes weakly into the high bits).
/// Both are fixed by their published definitions, so runs written by one build are read by
/// every other; a golden test pins the values.
pub fn hash(request_id: &str) -> u64 {
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in request_id.as_bytes() {
        x ^= u64::from(b);
        x = x.wrapping_mul(0x0000_0100_0000_01b3);
    }
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[derive(Debug, Clone, Copy)]
struct Run {
    id: u64,
    r: BlockRef,
    min_ts: i64,
}

/// Entries since the last checkpoint, unsorted: one push per record on the ingest path (a map
/// of vectors cost an allocation per request id); sorted once when written as a run. A lookup
/// scans it (tens of milliseconds at millions of entries, once per GetRequest).
#[derive(Default)]
struct Mem {
    entries: Vec<(u64, [u8; 20])>,
    min_ts: i64,
    max_ts: i64,
}

pub struct RidIndex {
    catalog: sled::Tree,
    mem: Mutex<Mem>,
    runs: Mutex<Vec<Run>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn catalog_value(run: &Run) -> Vec<u8> {
    let mut v = keys::encode_block_ref(&run.r).to_vec();
    v.extend_from_slice(&run.min_ts.to_be_bytes());
    v
}

fn decode_catalog(v: &[u8]) -> Result<(BlockRef, i64), StoreError> {
    if v.len() != 36 {
        return Err(keys::DecodeError { what: "request-id run entry", detail: format!("{} bytes", v.len()) }.into());
    }
    Ok((keys::decode_block_ref(&v[..28])?, i64::from_be_bytes(v[28..36].try_into().expect("8 bytes"))))
}

impl RidIndex {
    /// Loads the catalog and counts the runs' block space as live.
    pub fn open(catalog: sled::Tree, blocks: &Blocks) -> Result<RidIndex, StoreError> {
        let mut runs = Vec::new();
        for item in catalog.iter() {
            let (k, v) = item?;
            let (r, min_ts) = decode_catalog(&v)?;
            runs.push(Run { id: keys::decode_series_key(&k)?, r, min_ts });
            blocks.note_live(&r.loc());
        }
        Ok(RidIndex {
            catalog,
            mem: Mutex::new(Mem { min_ts: i64::MAX, max_ts: i64::MIN, ..Mem::default() }),
            runs: Mutex::new(runs),
        })
    }

    /// Adds one batch's `(request id hash, time key, ts)` entries.
    pub fn add(&self, entries: &[(u64, [u8; 20], i64)]) {
        if entries.is_empty() {
            return;
        }
        let mut m = lock(&self.mem);
        for (h, tk, ts) in entries {
            m.entries.push((*h, *tk));
            m.min_ts = m.min_ts.min(*ts);
            m.max_ts = m.max_ts.max(*ts);
        }
    }

    /// Writes what memory holds as a run (checkpoints call this before sled's flush). On
    /// failure the entries stay in memory for the next checkpoint.
    pub fn flush(&self, blocks: &Blocks) -> Result<(), StoreError> {
        let m = std::mem::replace(&mut *lock(&self.mem), Mem { min_ts: i64::MAX, max_ts: i64::MIN, ..Mem::default() });
        if m.entries.is_empty() {
            return Ok(());
        }
        let mut entries = m.entries;
        entries.sort_unstable();
        if let Err(e) = self.write_run(blocks, &entries, m.min_ts, m.max_ts) {
            let mut cur = lock(&self.mem);
            cur.entries.extend_from_slice(&entries);
            cur.min_ts = cur.min_ts.min(m.min_ts);
            cur.max_ts = cur.max_ts.max(m.max_ts);
            return Err(e);
        }
        self.maybe_merge(blocks)
    }

    /// Removes, at open, the runs written past `end` (by a checkpoint that did not finish) and
    /// returns their entries, to be added back to memory: the next checkpoint writes them again.
    pub fn take_runs_after(
        catalog: &sled::Tree,
        blocks: &Blocks,
        end: (u32, u64),
    ) -> Result<Vec<(u64, [u8; 20], i64)>, StoreError> {
        let mut out = Vec::new();
        let mut doomed = Vec::new();
        for item in catalog.iter() {
            let (k, v) = item?;
            let r = decode_catalog(&v)?;
            if !Blocks::is_after(&r.0.loc(), end) {
                continue;
            }
            let data = blocks.read(&r.0.loc())?;
            for c in data.get(8..).unwrap_or(&[]).chunks_exact(ENTRY) {
                let tk: [u8; 20] = c[8..].try_into().expect("20");
                let ts = keys::decode_time_key(&tk)?.0;
                out.push((u64::from_be_bytes(c[..8].try_into().expect("8")), tk, ts));
            }
            doomed.push(k);
        }
        for k in doomed {
            catalog.remove(k)?;
        }
        Ok(out)
    }

    fn write_run(
        &self,
        blocks: &Blocks,
        entries: &[(u64, [u8; 20])],
        min_ts: i64,
        max_ts: i64,
    ) -> Result<Run, StoreError> {
        let mut buf = Vec::with_capacity(8 + entries.len() * ENTRY);
        buf.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for (h, tk) in entries {
            buf.extend_from_slice(&h.to_be_bytes());
            buf.extend_from_slice(tk);
        }
        let l = blocks.append(&buf)?;
        // Synced before the catalog points at it: a crash may keep the catalog entry of an
        // unfinished checkpoint, whose entries are then read back at open.
        blocks.sync()?;
        let mut runs = lock(&self.runs);
        let id = runs.iter().map(|r| r.id + 1).max().unwrap_or(1);
        let run = Run {
            id,
            r: BlockRef { file: l.file, offset: l.offset, len: l.len, count: entries.len() as u32, last_ts: max_ts },
            min_ts,
        };
        self.catalog.insert(keys::series_key(id), catalog_value(&run))?;
        runs.push(run);
        Ok(run)
    }

    /// Size-tiered merge: when `MERGE_FAN_IN` runs share a size tier, they become one.
    fn maybe_merge(&self, blocks: &Blocks) -> Result<(), StoreError> {
        loop {
            let group: Vec<Run> = {
                let runs = lock(&self.runs);
                let tier = |r: &Run| (64 - u64::from(r.r.count).leading_zeros()) / 3;
                let mut by_tier: HashMap<u32, Vec<Run>> = HashMap::new();
                for r in runs.iter() {
                    by_tier.entry(tier(r)).or_default().push(*r);
                }
                match by_tier.into_values().find(|v| v.len() >= MERGE_FAN_IN) {
                    Some(v) => v,
                    None => return Ok(()),
                }
            };
            let mut all: Vec<(u64, [u8; 20])> = Vec::new();
            for r in &group {
                let data = blocks.read(&r.r.loc())?;
                all.extend(
                    data[8..]
                        .chunks_exact(ENTRY)
                        .map(|c| (u64::from_be_bytes(c[..8].try_into().expect("8")), c[8..].try_into().expect("20"))),
                );
            }
            all.sort_unstable();
            all.dedup();
            let min_ts = group.iter().map(|r| r.min_ts).min().unwrap_or(i64::MIN);
            let max_ts = group.iter().map(|r| r.r.last_ts).max().unwrap_or(i64::MAX);
            self.write_run(blocks, &all, min_ts, max_ts)?;
            self.remove(blocks, &group.iter().map(|r| r.id).collect::<Vec<_>>())?;
        }
    }

    fn remove(&self, blocks: &Blocks, ids: &[u64]) -> Result<(), StoreError> {
        let mut runs = lock(&self.runs);
        for id in ids {
            if let Some(pos) = runs.iter().position(|r| r.id == *id) {
                let r = runs.remove(pos);
                self.catalog.remove(keys::series_key(r.id))?;
                blocks.release(&r.r.loc());
            }
        }
        Ok(())
    }

    /// Time keys of records whose request id hashes like `request_id` (candidates).
    pub fn lookup(&self, blocks: &Blocks, request_id: &str) -> Result<BTreeSet<[u8; 20]>, StoreError> {
        let h = hash(request_id);
        let mut out: BTreeSet<[u8; 20]> = lock(&self.mem).entries.iter().filter(|e| e.0 == h).map(|e| e.1).collect();
        let runs: Vec<Run> = lock(&self.runs).clone();
        for run in runs {
            let n = u64::from(run.r.count);
            let at = |i: u64| -> Result<(u64, [u8; 20]), StoreError> {
                let e = blocks.read_at(&run.r.loc(), 8 + i * ENTRY as u64, ENTRY)?;
                Ok((u64::from_be_bytes(e[..8].try_into().expect("8")), e[8..].try_into().expect("20")))
            };
            // first entry with hash >= h
            let (mut lo, mut hi) = (0u64, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if at(mid)?.0 < h {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            while lo < n {
                let (eh, tk) = at(lo)?;
                if eh != h {
                    break;
                }
                out.insert(tk);
                lo += 1;
            }
        }
        Ok(out)
    }

    /// Drops runs whose newest entry is older than `cutoff`.
    pub fn expire(&self, blocks: &Blocks, cutoff: i64) -> Result<(), StoreError> {
        let old: Vec<u64> = lock(&self.runs).iter().filter(|r| r.r.last_ts < cutoff).map(|r| r.id).collect();
        self.remove(blocks, &old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_hash_is_pinned() {
        // Runs on disk hold these values: a change here makes stored runs unreadable.
        assert_eq!(hash(""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash("r1"), 0xcaa9_b886_43b8_ab18);
        assert_eq!(hash("req-2026-11-23-000017"), 0xacba_ec4a_193c_bedd);
    }

    #[test]
    fn entries_survive_flushes_merges_and_reopen_then_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        let blocks = Blocks::open(&dir.path().join("blocks"), 1 << 20).unwrap();
        let ix = RidIndex::open(db.open_tree("runs").unwrap(), &blocks).unwrap();
        // 20 flushes of 50 ids each: the size-tiered merge runs on the way
        for round in 0..20i64 {
            let batch: Vec<(u64, [u8; 20], i64)> = (0..50i64)
                .map(|i| {
                    let ts = round * 1000 + i;
                    (hash(&format!("r{}", i % 10)), keys::time_key(ts, round as u64, i as u32), ts)
                })
                .collect();
            ix.add(&batch);
            ix.flush(&blocks).unwrap();
        }
        assert!(lock(&ix.runs).len() < 20, "runs were merged: {}", lock(&ix.runs).len());
        ix.add(&[(hash("r3"), keys::time_key(99_999, 99, 0), 99_999)]);
        let got = ix.lookup(&blocks, "r3").unwrap();
        assert_eq!(got.len(), 20 * 5 + 1, "every round's 5 entries plus the one in memory");
        assert!(ix.lookup(&blocks, "nope").unwrap().is_empty());
        drop(ix);
        let ix = RidIndex::open(db.open_tree("runs").unwrap(), &blocks).unwrap();
        assert_eq!(ix.lookup(&blocks, "r3").unwrap().len(), 100, "runs are durable; memory is the WAL's to replay");
        ix.expire(&blocks, 1_000_000).unwrap();
        assert!(ix.lookup(&blocks, "r3").unwrap().is_empty());
    }
}
