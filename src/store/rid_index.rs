//! Request-id index, LSM-style: one sled insert per indexed record capped ingest of events that
//! carry a request id near 200k/s, so entries are kept in memory (rebuilt by WAL replay) and
//! written at each checkpoint as one sorted run of `(hash64(request id), time key)` pairs, with
//! one sled catalog entry per run. Lookups binary-search each run with a few `pread`s; runs of
//! a similar size are merged (size-tiered) so their count stays logarithmic; retention drops
//! runs whose newest entry has expired. A hash match is only a candidate: the reader compares
//! the record's request id.
//!
//! Each run is a file of its own (`DATA/rid/<events|logs>/NNNNNNNNNNNNNNNNNNNN.run`): merges
//! and expiry delete whole files, so the space of merged-away runs is returned at once (in the
//! shared block files it stayed until the whole file expired: the index took several times its
//! size). A run file is synced before its catalog entry is written; files the catalog no longer
//! names are deleted only after the next sled flush ([`RidIndex::take_doomed`]), and at open
//! any file the catalog does not name (a checkpoint that did not finish) is deleted.
//!
//! Run layout: `count: u64 BE`, then `count` entries of `hash: u64 BE | time key: 20 bytes`,
//! sorted, then `crc32` of all that (checked when a merge reads the run whole). Catalog entry:
//! run id (u64 BE) → `count: u64 | oldest ts | newest ts` (i64 BE).
use super::blocks::Blocks;
use super::keys;
use super::StoreError;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

#[derive(Clone)]
struct Run {
    id: u64,
    count: u64,
    min_ts: i64,
    max_ts: i64,
    file: Arc<File>,
}

/// Entries since the last checkpoint, unsorted: one push per record on the ingest path (a map
/// of vectors cost an allocation per request id); sorted once when written as a run. Full
/// chunks of [`SEAL`] entries are sealed (shared, immutable): a lookup copies their handles and
/// scans only the open chunk under the lock, so a GetRequest never holds the committer up for
/// longer than that.
/// (hash64 of a request id, time key of its record).
type Entry = (u64, [u8; 20]);

struct Mem {
    sealed: Vec<Arc<Vec<Entry>>>,
    entries: Vec<Entry>,
    min_ts: i64,
    max_ts: i64,
}

const SEAL: usize = 1 << 16;

impl Default for Mem {
    fn default() -> Mem {
        Mem { sealed: Vec::new(), entries: Vec::new(), min_ts: i64::MAX, max_ts: i64::MIN }
    }
}

impl Mem {
    fn all(self) -> Vec<(u64, [u8; 20])> {
        let mut out = Vec::with_capacity(self.sealed.iter().map(|c| c.len()).sum::<usize>() + self.entries.len());
        for c in &self.sealed {
            out.extend_from_slice(c);
        }
        out.extend_from_slice(&self.entries);
        out
    }
}

pub struct RidIndex {
    dir: PathBuf,
    catalog: sled::Tree,
    mem: Mutex<Mem>,
    runs: Mutex<Vec<Run>>,
    /// Run files no longer in the catalog, deleted after the next sled flush.
    doomed: Mutex<Vec<PathBuf>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

fn run_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.run"))
}

fn catalog_value(count: u64, min_ts: i64, max_ts: i64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&count.to_be_bytes());
    v[8..16].copy_from_slice(&min_ts.to_be_bytes());
    v[16..].copy_from_slice(&max_ts.to_be_bytes());
    v
}

fn entry(c: &[u8]) -> (u64, [u8; 20]) {
    (u64::from_be_bytes(c[..8].try_into().expect("8 bytes")), c[8..ENTRY].try_into().expect("20 bytes"))
}

impl RidIndex {
    /// Loads the catalog, opens the run files, and deletes run files it does not name. Runs of
    /// the older layout (inside the block files) are read back into memory and written anew
    /// by the next checkpoint.
    pub fn open(catalog: sled::Tree, dir: &Path, blocks: &Blocks) -> Result<RidIndex, StoreError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut runs = Vec::new();
        let mut mem = Mem::default();
        let mut old = Vec::new();
        for item in catalog.iter() {
            let (k, v) = item?;
            let id = keys::decode_series_key(&k)?;
            match v.len() {
                24 => {
                    let count = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                    let min_ts = i64::from_be_bytes(v[8..16].try_into().expect("8 bytes"));
                    let max_ts = i64::from_be_bytes(v[16..].try_into().expect("8 bytes"));
                    let path = run_path(dir, id);
                    let file = File::open(&path).map_err(|e| StoreError::Open {
                        path: path.clone(),
                        detail: format!("request-id run named by the catalog: {e}"),
                    })?;
                    runs.push(Run { id, count, min_ts, max_ts, file: Arc::new(file) });
                }
                36 => {
                    // modelwatch 0.1 kept runs in the block files.
                    let r = keys::decode_block_ref(&v[..28])?;
                    let data = blocks.read(&r.loc())?;
                    for c in data.get(8..).unwrap_or(&[]).chunks_exact(ENTRY) {
                        let (h, tk) = entry(c);
                        let ts = keys::decode_time_key(&tk)?.0;
                        mem.entries.push((h, tk));
                        mem.min_ts = mem.min_ts.min(ts);
                        mem.max_ts = mem.max_ts.max(ts);
                    }
                    blocks.note_live(&r.loc());
                    blocks.release(&r.loc());
                    old.push(k);
                }
                n => {
                    return Err(keys::DecodeError { what: "request-id run entry", detail: format!("{n} bytes") }.into())
                }
            }
        }
        for k in old {
            catalog.remove(k)?;
        }
        let named: BTreeSet<u64> = runs.iter().map(|r| r.id).collect();
        for e in fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let id = e.file_name().to_str().and_then(|n| n.strip_suffix(".run")).and_then(|n| n.parse::<u64>().ok());
            if id.is_none_or(|id| !named.contains(&id)) {
                fs::remove_file(e.path()).map_err(io(&e.path()))?;
            }
        }
        Ok(RidIndex {
            dir: dir.to_owned(),
            catalog,
            mem: Mutex::new(mem),
            runs: Mutex::new(runs),
            doomed: Mutex::new(Vec::new()),
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
            if m.entries.len() >= SEAL {
                let full = std::mem::take(&mut m.entries);
                m.sealed.push(Arc::new(full));
            }
        }
    }

    /// Writes what memory holds as a run (checkpoints call this before sled's flush). On
    /// failure the entries stay in memory for the next checkpoint.
    pub fn flush(&self) -> Result<(), StoreError> {
        let m = std::mem::take(&mut *lock(&self.mem));
        if m.entries.is_empty() && m.sealed.is_empty() {
            return Ok(());
        }
        let (min_ts, max_ts) = (m.min_ts, m.max_ts);
        let mut entries = m.all();
        entries.sort_unstable();
        entries.dedup();
        if let Err(e) = self.write_run(&entries, min_ts, max_ts) {
            let mut cur = lock(&self.mem);
            cur.sealed.push(Arc::new(entries));
            cur.min_ts = cur.min_ts.min(min_ts);
            cur.max_ts = cur.max_ts.max(max_ts);
            return Err(e);
        }
        self.maybe_merge()
    }

    fn write_run(&self, entries: &[(u64, [u8; 20])], min_ts: i64, max_ts: i64) -> Result<(), StoreError> {
        let mut buf = Vec::with_capacity(12 + entries.len() * ENTRY);
        buf.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for (h, tk) in entries {
            buf.extend_from_slice(&h.to_be_bytes());
            buf.extend_from_slice(tk);
        }
        buf.extend_from_slice(&crc32fast::hash(&buf).to_be_bytes());
        let id = lock(&self.runs).iter().map(|r| r.id + 1).max().unwrap_or(1);
        let path = run_path(&self.dir, id);
        let mut f =
            OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).map_err(io(&path))?;
        f.write_all(&buf).map_err(io(&path))?;
        // On disk, with its directory entry, before the catalog names it.
        f.sync_all().map_err(io(&path))?;
        super::wal::sync_dir(&self.dir).map_err(io(&self.dir))?;
        self.catalog.insert(keys::series_key(id), &catalog_value(entries.len() as u64, min_ts, max_ts)[..])?;
        lock(&self.runs).push(Run { id, count: entries.len() as u64, min_ts, max_ts, file: Arc::new(f) });
        Ok(())
    }

    /// Size-tiered merge: when `MERGE_FAN_IN` runs share a size tier, they become one.
    fn maybe_merge(&self) -> Result<(), StoreError> {
        loop {
            let group: Vec<Run> = {
                let runs = lock(&self.runs);
                let tier = |r: &Run| (64 - r.count.leading_zeros()) / 3;
                let mut by_tier: HashMap<u32, Vec<Run>> = HashMap::new();
                for r in runs.iter() {
                    by_tier.entry(tier(r)).or_default().push(r.clone());
                }
                match by_tier.into_values().find(|v| v.len() >= MERGE_FAN_IN) {
                    Some(v) => v,
                    None => return Ok(()),
                }
            };
            let mut all: Vec<(u64, [u8; 20])> = Vec::new();
            for r in &group {
                let len = 8 + r.count as usize * ENTRY;
                let mut data = vec![0u8; len + 4];
                let path = run_path(&self.dir, r.id);
                r.file.read_exact_at(&mut data, 0).map_err(io(&path))?;
                let crc = u32::from_be_bytes(data[len..].try_into().expect("4 bytes"));
                if crc32fast::hash(&data[..len]) != crc {
                    return Err(StoreError::Open { path, detail: "request-id run: checksum mismatch".into() });
                }
                all.extend(data[8..len].chunks_exact(ENTRY).map(entry));
            }
            all.sort_unstable();
            all.dedup();
            let min_ts = group.iter().map(|r| r.min_ts).min().unwrap_or(i64::MIN);
            let max_ts = group.iter().map(|r| r.max_ts).max().unwrap_or(i64::MAX);
            self.write_run(&all, min_ts, max_ts)?;
            self.remove(&group.iter().map(|r| r.id).collect::<Vec<_>>())?;
        }
    }

    fn remove(&self, ids: &[u64]) -> Result<(), StoreError> {
        let mut runs = lock(&self.runs);
        for id in ids {
            if let Some(pos) = runs.iter().position(|r| r.id == *id) {
                let r = runs.remove(pos);
                self.catalog.remove(keys::series_key(r.id))?;
                lock(&self.doomed).push(run_path(&self.dir, r.id));
            }
        }
        Ok(())
    }

    /// Run files dropped so far (called before a sled flush; delete them after it with
    /// [`RidIndex::delete`]).
    pub fn take_doomed(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *lock(&self.doomed))
    }

    pub fn delete(&self, paths: &[PathBuf]) -> Result<(), StoreError> {
        for p in paths {
            match fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(p)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Time keys of records whose request id hashes like `request_id` (candidates).
    pub fn lookup(&self, request_id: &str) -> Result<BTreeSet<[u8; 20]>, StoreError> {
        let h = hash(request_id);
        let (mut out, sealed): (BTreeSet<[u8; 20]>, Vec<_>) = {
            let m = lock(&self.mem);
            (m.entries.iter().filter(|e| e.0 == h).map(|e| e.1).collect(), m.sealed.clone())
        };
        for chunk in sealed {
            out.extend(chunk.iter().filter(|e| e.0 == h).map(|e| e.1));
        }
        let runs: Vec<Run> = lock(&self.runs).clone();
        for run in runs {
            let n = run.count;
            let mut e = [0u8; ENTRY];
            let mut at = |i: u64| -> Result<(u64, [u8; 20]), StoreError> {
                run.file.read_exact_at(&mut e, 8 + i * ENTRY as u64).map_err(io(&run_path(&self.dir, run.id)))?;
                Ok(entry(&e))
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
    pub fn expire(&self, cutoff: i64) -> Result<(), StoreError> {
        let old: Vec<u64> = lock(&self.runs).iter().filter(|r| r.max_ts < cutoff).map(|r| r.id).collect();
        self.remove(&old)
    }

    /// Bytes the run files take.
    pub fn disk_bytes(&self) -> u64 {
        lock(&self.runs).iter().map(|r| 12 + r.count * ENTRY as u64).sum()
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
        let rid = dir.path().join("rid");
        let ix = RidIndex::open(db.open_tree("runs").unwrap(), &rid, &blocks).unwrap();
        // 20 flushes of 50 ids each: the size-tiered merge runs on the way
        for round in 0..20i64 {
            let batch: Vec<(u64, [u8; 20], i64)> = (0..50i64)
                .map(|i| {
                    let ts = round * 1000 + i;
                    (hash(&format!("r{}", i % 10)), keys::time_key(ts, round as u64, i as u32), ts)
                })
                .collect();
            ix.add(&batch);
            ix.flush().unwrap();
        }
        let runs = lock(&ix.runs).len();
        assert!(runs < 20, "runs were merged: {runs}");
        let doomed = ix.take_doomed();
        assert_eq!(doomed.len() + runs, 20 + 20 / MERGE_FAN_IN, "merged-away runs are doomed");
        ix.delete(&doomed).unwrap();
        assert_eq!(fs::read_dir(&rid).unwrap().count(), runs, "their files are gone");
        ix.add(&[(hash("r3"), keys::time_key(99_999, 99, 0), 99_999)]);
        let got = ix.lookup("r3").unwrap();
        assert_eq!(got.len(), 20 * 5 + 1, "every round's 5 entries plus the one in memory");
        assert!(ix.lookup("nope").unwrap().is_empty());
        drop(ix);
        // A run file the catalog does not name (an unfinished checkpoint) is removed at open.
        fs::write(rid.join(format!("{:020}.run", 777)), b"junk").unwrap();
        let ix = RidIndex::open(db.open_tree("runs").unwrap(), &rid, &blocks).unwrap();
        assert!(!rid.join(format!("{:020}.run", 777)).exists());
        assert_eq!(ix.lookup("r3").unwrap().len(), 100, "runs are durable; memory is the WAL's to replay");
        ix.expire(1_000_000).unwrap();
        assert!(ix.lookup("r3").unwrap().is_empty());
    }
}
