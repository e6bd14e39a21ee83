//! Block files: where chunk payloads live. sled holds only each chunk's location
//! ([`Loc`], grouped by [`super::chunk_index`]), because sled rewrites whole leaf nodes and keeps its log's high-water
//! mark: measured here, 4.4 MB of chunks took a 16.8 MB sled file (3.8×), while an append-only
//! file costs the payload plus 4 bytes.
//!
//! `DATA/blocks/NNNNNNNNNN.blk`: records `crc32(payload): u32 LE | payload`, appended to the
//! newest file until it passes `storage.block_file_bytes`.
//!
//! Ordering, which every writer keeps:
//! - between checkpoints, chunks and raw groups are appended and indexed in sled without a sync:
//!   all of it lies past the end the last checkpoint recorded, and after a crash it is cut and
//!   rebuilt from the WAL ([`Blocks::cut_after`]), so an entry pointing at lost bytes never
//!   survives an open;
//! - a checkpoint syncs the block files ([`Blocks::sync_to_end`]) before its record, so everything the
//!   record vouches for is on disk;
//! - a file whose payloads were all released is deleted only after the next checkpoint's sled
//!   flush ([`Blocks::take_doomed`], [`Blocks::delete`]): until then a crash could bring back
//!   the sled entries that point into it;
//! - each checkpoint records [`Blocks::end`]; at open, bytes past the last checkpoint's end are
//!   leftovers of writes the WAL replays anyway, so they are cut ([`Blocks::cut_after`]) and
//!   repeated crashes do not grow the folder.
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("block file {path} is damaged at byte {offset}: {detail}")]
    Corrupt { path: PathBuf, offset: u64, detail: String },
}

/// Where a chunk's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub file: u32,
    pub offset: u64,
    pub len: u32,
}

struct BlockFile {
    /// Shared so that reads run outside the lock (the committer appends under it).
    file: std::sync::Arc<File>,
    path: PathBuf,
    len: u64,
    /// Chunks the index still points at.
    live: u64,
}

struct Inner {
    files: BTreeMap<u32, BlockFile>,
    current: u32,
    unsynced: bool,
    /// Files with nothing left in them, deleted after the next sled flush.
    doomed: Vec<u32>,
}

pub struct Blocks {
    dir: PathBuf,
    max_file_bytes: u64,
    inner: Mutex<Inner>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlockError + '_ {
    move |source| BlockError::Io { path: path.to_owned(), source }
}

impl Blocks {
    pub fn open(dir: &Path, max_file_bytes: u64) -> Result<Blocks, BlockError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".blk")).and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let file = OpenOptions::new().read(true).append(true).open(&path).map_err(io_err(&path))?;
            let len = file.metadata().map_err(io_err(&path))?.len();
            files.insert(id, BlockFile { file: std::sync::Arc::new(file), path, len, live: 0 });
        }
        let current = files.keys().next_back().copied().unwrap_or(0);
        let blocks = Blocks {
            dir: dir.to_owned(),
            max_file_bytes,
            inner: Mutex::new(Inner { files, current, unsynced: false, doomed: Vec::new() }),
        };
        {
            let mut inner = blocks.lock();
            if !inner.files.contains_key(&current) {
                blocks.create(&mut inner, current)?;
            }
        }
        Ok(blocks)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn create(&self, inner: &mut Inner, id: u32) -> Result<(), BlockError> {
        let path = self.dir.join(format!("{id:010}.blk"));
        let file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io_err(&path))?;
        super::wal::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        inner.files.insert(id, BlockFile { file: std::sync::Arc::new(file), path, len: 0, live: 0 });
        inner.current = id;
        Ok(())
    }

    /// Counts a payload the index points at (used while loading the index).
    pub fn note_live(&self, loc: &Loc) {
        self.add_live(loc.file, 1);
    }

    /// Counts `n` payloads in `file` that the index points at.
    pub fn add_live(&self, file: u32, n: u64) {
        if let Some(f) = self.lock().files.get_mut(&file) {
            f.live += n;
        }
    }

    /// Appends a payload; it is durable after the next [`Blocks::sync_to_end`].
    pub fn append(&self, payload: &[u8]) -> Result<Loc, BlockError> {
        let mut inner = self.lock();
        let cur = inner.current;
        if inner.files.get(&cur).is_some_and(|f| f.len >= self.max_file_bytes) {
            // Sync the full file before moving on: sync_to_end() only syncs the current one.
            if inner.unsynced {
                let f = &inner.files[&cur];
                f.file.sync_data().map_err(io_err(&f.path))?;
                inner.unsynced = false;
            }
            self.create(&mut inner, cur + 1)?;
        }
        let cur = inner.current;
        let f = inner.files.get_mut(&cur).expect("current block file is open");
        let mut rec = Vec::with_capacity(4 + payload.len());
        rec.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        rec.extend_from_slice(payload);
        f.file.write_all(&rec).map_err(io_err(&f.path))?;
        let loc = Loc { file: cur, offset: f.len, len: payload.len() as u32 };
        f.len += rec.len() as u64;
        f.live += 1;
        inner.unsynced = true;
        Ok(loc)
    }

    /// Makes everything up to the current end durable and returns that end. The `fdatasync`
    /// runs outside the lock, so appends go on meanwhile (a full file was synced when the next
    /// one began, so the end's file is the only one that may need it).
    pub fn sync_to_end(&self) -> Result<(u32, u64), BlockError> {
        let (end, file) = {
            let mut inner = self.lock();
            let f = inner.files.get(&inner.current);
            let end = (inner.current, f.map_or(0, |f| f.len));
            let file = f.filter(|_| inner.unsynced).map(|f| (f.file.clone(), f.path.clone()));
            inner.unsynced = false;
            (end, file)
        };
        if let Some((file, path)) = file {
            if let Err(e) = file.sync_data() {
                self.lock().unsynced = true;
                return Err(io_err(&path)(e));
            }
        }
        Ok(end)
    }

    fn file_of<'a>(&self, inner: &'a Inner, loc: &Loc) -> Result<&'a BlockFile, BlockError> {
        inner.files.get(&loc.file).ok_or_else(|| BlockError::Corrupt {
            path: self.dir.join(format!("{:010}.blk", loc.file)),
            offset: loc.offset,
            detail: "the index points into a block file that is missing".into(),
        })
    }

    pub fn read(&self, loc: &Loc) -> Result<Vec<u8>, BlockError> {
        let (file, path) = {
            let inner = self.lock();
            let f = self.file_of(&inner, loc)?;
            (f.file.clone(), f.path.clone())
        };
        let mut buf = vec![0u8; 4 + loc.len as usize];
        file.read_exact_at(&mut buf, loc.offset).map_err(io_err(&path))?;
        let crc = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
        if crc32fast::hash(&buf[4..]) != crc {
            return Err(BlockError::Corrupt { path, offset: loc.offset, detail: "checksum mismatch".into() });
        }
        buf.drain(..4);
        Ok(buf)
    }

    /// The index no longer points at this payload. A file with nothing left is doomed: deleted
    /// by [`Blocks::delete`] once the sled removals are durable.
    pub fn release(&self, loc: &Loc) {
        let mut inner = self.lock();
        let cur = inner.current;
        let Some(f) = inner.files.get_mut(&loc.file) else { return };
        f.live = f.live.saturating_sub(1);
        if f.live == 0 && loc.file != cur && !inner.doomed.contains(&loc.file) {
            inner.doomed.push(loc.file);
        }
    }

    /// Files doomed so far (called before a sled flush; [`Blocks::delete`] them after it).
    pub fn take_doomed(&self) -> Vec<u32> {
        std::mem::take(&mut self.lock().doomed)
    }

    /// Deletes doomed files that are still empty (a replay may have filled one again).
    pub fn delete(&self, ids: &[u32]) -> Result<(), BlockError> {
        let mut inner = self.lock();
        let mut any = false;
        for id in ids {
            if inner.files.get(id).is_some_and(|f| f.live == 0) && *id != inner.current {
                let f = inner.files.remove(id).expect("present");
                fs::remove_file(&f.path).map_err(io_err(&f.path))?;
                any = true;
            }
        }
        if any {
            super::wal::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(())
    }

    /// The end of the data: the newest file and its length.
    pub fn end(&self) -> (u32, u64) {
        let inner = self.lock();
        (inner.current, inner.files.get(&inner.current).map_or(0, |f| f.len))
    }

    /// Whether a payload lies at or past `end` (written after the checkpoint that recorded it).
    pub fn is_after(loc: &Loc, end: (u32, u64)) -> bool {
        (loc.file, loc.offset) >= end
    }

    /// Cuts everything past `end` (files after it deleted, its file truncated), returning the
    /// bytes freed. Only at open, before anything is appended.
    pub fn cut_after(&self, end: (u32, u64)) -> Result<u64, BlockError> {
        let mut inner = self.lock();
        let mut freed = 0;
        let later: Vec<u32> = inner.files.range(end.0 + 1..).map(|(id, _)| *id).collect();
        for id in later {
            let f = inner.files.remove(&id).expect("present");
            freed += f.len;
            fs::remove_file(&f.path).map_err(io_err(&f.path))?;
        }
        if let Some(f) = inner.files.get_mut(&end.0) {
            if f.len > end.1 {
                freed += f.len - end.1;
                f.file.set_len(end.1).map_err(io_err(&f.path))?;
                f.file.sync_all().map_err(io_err(&f.path))?;
                f.len = end.1;
            }
        }
        if !inner.files.contains_key(&end.0) {
            self.create(&mut inner, end.0)?;
        } else {
            inner.current = end.0;
        }
        super::wal::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(freed)
    }

    /// Bytes in the block files.
    pub fn disk_bytes(&self) -> u64 {
        self.lock().files.values().map(|f| f.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_rotate_release() {
        let dir = tempfile::tempdir().unwrap();
        let b = Blocks::open(dir.path(), 100).unwrap();
        let l1 = b.append(&[1u8; 60]).unwrap();
        let l2 = b.append(&[2u8; 60]).unwrap();
        let l3 = b.append(&[3u8; 10]).unwrap();
        b.sync_to_end().unwrap();
        assert_eq!((l1.file, l2.file, l3.file), (0, 0, 1), "rotates past the size");
        assert_eq!(b.read(&l2).unwrap(), vec![2u8; 60]);
        drop(b);
        let b = Blocks::open(dir.path(), 100).unwrap();
        for l in [&l1, &l2, &l3] {
            b.note_live(l);
        }
        assert_eq!(b.read(&l3).unwrap(), vec![3u8; 10]);
        b.release(&l1);
        assert!(dir.path().join("0000000000.blk").exists());
        b.release(&l2);
        assert!(dir.path().join("0000000000.blk").exists(), "kept until the sled flush");
        let doomed = b.take_doomed();
        assert_eq!(doomed, vec![0]);
        b.delete(&doomed).unwrap();
        assert!(!dir.path().join("0000000000.blk").exists(), "an empty old file is deleted");
        // damage is reported, not returned as data
        let l4 = b.append(&[4u8; 8]).unwrap();
        b.sync_to_end().unwrap();
        let path = dir.path().join("0000000001.blk");
        let mut data = fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        fs::write(&path, data).unwrap();
        let err = b.read(&l4).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn cut_after_frees_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let b = Blocks::open(dir.path(), 100).unwrap();
        b.append(&[1u8; 40]).unwrap();
        let end = b.end();
        b.append(&[2u8; 70]).unwrap();
        b.append(&[3u8; 70]).unwrap();
        b.sync_to_end().unwrap();
        drop(b);
        let b = Blocks::open(dir.path(), 100).unwrap();
        assert_eq!(b.cut_after(end).unwrap(), 74 + 74);
        assert_eq!(b.end(), end);
        assert_eq!(b.disk_bytes(), 44);
        let l = b.append(&[4u8; 5]).unwrap();
        assert_eq!((l.file, l.offset), end);
    }
}
