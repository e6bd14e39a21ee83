//! An endpoint's persisted cursor: for each series, the timestamp of the last sample the
//! receiver acknowledged (and one entry, [`DERIVED`], for the derived series' horizon).
//!
//! Two files in `export/`: `<name>.cursor`, a snapshot (written to a temporary file, synced
//! and renamed), and `<name>.cursor.log`, where every acknowledged request appends its
//! series' new positions (one 20-byte record each: id, timestamp, CRC). A `kill -9` loses
//! nothing written to the log (it is in the page cache); the log is synced every second, so
//! a power cut loses at most that second, and those samples are sent again. Loading reads the
//! snapshot, then the log up to its first damaged record; the log is folded into a new
//! snapshot once it passes [`COMPACT_RECORDS`].
use crate::store::index::FxMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The cursor entry of the derived series (inference and log counters): their horizon.
pub const DERIVED: u64 = u64::MAX;
const MAGIC: &[u8; 8] = b"MWRWCUR1";
const RECORD: usize = 20;
/// Log records folded into the snapshot when the log holds this many.
pub const COMPACT_RECORDS: usize = 1 << 18;

pub struct Cursors {
    snapshot: PathBuf,
    log_path: PathBuf,
    log: File,
    log_records: usize,
    map: FxMap<u64, i64>,
    /// Where a series without an entry starts (after this timestamp): fixed when the endpoint
    /// is first opened, from its `backfill`.
    epoch: i64,
    unsynced: bool,
}

impl Cursors {
    /// Opens (or creates, with `epoch`) the cursor of endpoint `name` in `dir`.
    pub fn open(dir: &Path, name: &str, epoch: i64) -> std::io::Result<Cursors> {
        std::fs::create_dir_all(dir)?;
        let snapshot = dir.join(format!("{name}.cursor"));
        let log_path = dir.join(format!("{name}.cursor.log"));
        let mut map: FxMap<u64, i64> = Default::default();
        let epoch = match std::fs::read(&snapshot) {
            Ok(bytes) => read_snapshot(&bytes, &mut map).map_err(|m| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {m}", snapshot.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_snapshot(&snapshot, epoch, &map)?;
                epoch
            }
            Err(e) => return Err(e),
        };
        let mut log_records = 0;
        let mut valid = 0u64;
        if let Ok(mut f) = File::open(&log_path) {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            for rec in bytes.chunks_exact(RECORD) {
                let (body, crc) = rec.split_at(16);
                if crc32fast::hash(body).to_le_bytes() != crc {
                    tracing::warn!(file = %log_path.display(), at = valid, "remote-write cursor log: damaged record; the rest is ignored and those samples will be sent again");
                    break;
                }
                let id = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
                let ts = i64::from_le_bytes(body[8..].try_into().unwrap_or_default());
                let e = map.entry(id).or_insert(ts);
                *e = (*e).max(ts);
                log_records += 1;
                valid += RECORD as u64;
            }
        }
        let log = OpenOptions::new().create(true).append(true).open(&log_path)?;
        // Drop a torn or damaged tail so that new records follow valid ones.
        log.set_len(valid)?;
        Ok(Cursors { snapshot, log_path, log, log_records, map, epoch, unsynced: false })
    }

    /// The last acknowledged timestamp of `id` (the epoch when it has none).
    pub fn get(&self, id: u64) -> i64 {
        self.map.get(&id).copied().unwrap_or(self.epoch)
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Records acknowledged positions: appended to the log (one write), then kept in memory.
    pub fn advance(&mut self, updates: &[(u64, i64)]) -> std::io::Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(updates.len() * RECORD);
        for &(id, ts) in updates {
            let start = buf.len();
            buf.extend_from_slice(&id.to_le_bytes());
            buf.extend_from_slice(&ts.to_le_bytes());
            let crc = crc32fast::hash(&buf[start..]);
            buf.extend_from_slice(&crc.to_le_bytes());
        }
        self.log.write_all(&buf)?;
        self.log_records += updates.len();
        self.unsynced = true;
        for &(id, ts) in updates {
            let e = self.map.entry(id).or_insert(ts);
            *e = (*e).max(ts);
        }
        if self.log_records >= COMPACT_RECORDS {
            self.compact()?;
        }
        Ok(())
    }

    /// Syncs the log if anything was appended since the last sync.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced {
            self.log.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Folds the log into a new snapshot and empties it.
    pub fn compact(&mut self) -> std::io::Result<()> {
        write_snapshot(&self.snapshot, self.epoch, &self.map)?;
        self.log.set_len(0)?;
        self.log.sync_all()?;
        self.log_records = 0;
        self.unsynced = false;
        Ok(())
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

fn write_snapshot(path: &Path, epoch: i64, map: &FxMap<u64, i64>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(24 + map.len() * 16);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&epoch.to_le_bytes());
    buf.extend_from_slice(&(map.len() as u64).to_le_bytes());
    let mut entries: Vec<(u64, i64)> = map.iter().map(|(&k, &v)| (k, v)).collect();
    entries.sort_unstable();
    for (id, ts) in entries {
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&ts.to_le_bytes());
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let tmp = path.with_extension("cursor.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_snapshot(bytes: &[u8], map: &mut FxMap<u64, i64>) -> Result<i64, String> {
    if bytes.len() < 28 || &bytes[..8] != MAGIC {
        return Err("not a remote-write cursor (bad header)".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("the cursor's checksum does not match: the file is damaged; move it away to send everything within backfill again".into());
    }
    let epoch = i64::from_le_bytes(body[8..16].try_into().unwrap_or_default());
    let n = u64::from_le_bytes(body[16..24].try_into().unwrap_or_default()) as usize;
    let entries = &body[24..];
    if entries.len() != n.saturating_mul(16) {
        return Err(format!("{n} entries announced, {} bytes of entries found", entries.len()));
    }
    for e in entries.chunks_exact(16) {
        let id = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
        let ts = i64::from_le_bytes(e[8..].try_into().unwrap_or_default());
        map.insert(id, ts);
    }
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_reopen_compaction_and_a_torn_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cursors::open(dir.path(), "vm", -5).unwrap();
        assert_eq!(c.get(1), -5);
        c.advance(&[(1, 10), (2, 20)]).unwrap();
        c.advance(&[(1, 15), (DERIVED, 99)]).unwrap();
        drop(c);
        let mut c = Cursors::open(dir.path(), "vm", 0).unwrap();
        assert_eq!((c.get(1), c.get(2), c.get(DERIVED), c.get(3)), (15, 20, 99, -5), "epoch kept from the first open");
        c.compact().unwrap();
        c.advance(&[(2, 30)]).unwrap();
        let log = c.log_path().to_path_buf();
        drop(c);
        // A torn record at the end is ignored and cut off.
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[1, 2, 3, 4, 5, 6, 7]).unwrap();
        drop(f);
        let mut c = Cursors::open(dir.path(), "vm", 0).unwrap();
        assert_eq!((c.get(1), c.get(2)), (15, 30));
        assert_eq!(std::fs::metadata(&log).unwrap().len(), RECORD as u64);
        c.advance(&[(3, 1)]).unwrap();
        drop(c);
        let c = Cursors::open(dir.path(), "vm", 0).unwrap();
        assert_eq!(c.get(3), 1);
    }

    #[test]
    fn a_damaged_snapshot_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cursors::open(dir.path(), "p", 0).unwrap();
        c.advance(&[(1, 10)]).unwrap();
        c.compact().unwrap();
        drop(c);
        let p = dir.path().join("p.cursor");
        let mut b = std::fs::read(&p).unwrap();
        b[26] ^= 0xff;
        std::fs::write(&p, b).unwrap();
        let e = Cursors::open(dir.path(), "p", 0).err().unwrap().to_string();
        assert!(e.contains("damaged"), "{e}");
    }
}
