//! Block files: where chunk payloads live. sled holds only each chunk's location
//! ([`Loc`], 28 bytes), because sled rewrites whole leaf nodes and keeps its log's high-water
//! mark: measured here, 4.4 MB of chunks took a 16.8 MB sled file (3.8×), while an append-only
//! file costs the payload plus 4 bytes.
//!
//! `DATA/blocks/NNNNNNNNNN.blk`: records `crc32(payload): u32 LE | payload`, appended to the
//! newest file until it passes `storage.block_file_bytes`. A file is deleted once retention has
//! released every chunk in it. Appends are synced before their index entries are written, so
//! the index never points at bytes a crash could lose; an unsynced tail after a crash is dead
//! space nothing points at.
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
    file: File,
    path: PathBuf,
    len: u64,
    /// Chunks the index still points at.
    live: u64,
}

struct Inner {
    files: BTreeMap<u32, BlockFile>,
    current: u32,
    unsynced: bool,
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
            files.insert(id, BlockFile { file, path, len, live: 0 });
        }
        let current = files.keys().next_back().copied().unwrap_or(0);
        let blocks = Blocks {
            dir: dir.to_owned(),
            max_file_bytes,
            inner: Mutex::new(Inner { files, current, unsynced: false }),
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
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.dir))?;
        inner.files.insert(id, BlockFile { file, path, len: 0, live: 0 });
        inner.current = id;
        Ok(())
    }

    /// Counts a chunk the index points at (used while loading the index).
    pub fn note_live(&self, loc: &Loc) {
        if let Some(f) = self.lock().files.get_mut(&loc.file) {
            f.live += 1;
        }
    }

    /// Appends a payload; it is durable after the next [`Blocks::sync`].
    pub fn append(&self, payload: &[u8]) -> Result<Loc, BlockError> {
        let mut inner = self.lock();
        let cur = inner.current;
        if inner.files.get(&cur).is_some_and(|f| f.len >= self.max_file_bytes) {
            // Sync the full file before moving on: sync() only syncs the current one.
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

    pub fn sync(&self) -> Result<(), BlockError> {
        let mut inner = self.lock();
        if inner.unsynced {
            let f = &inner.files[&inner.current];
            f.file.sync_data().map_err(io_err(&f.path))?;
            inner.unsynced = false;
        }
        Ok(())
    }

    fn file_of<'a>(&self, inner: &'a Inner, loc: &Loc) -> Result<&'a BlockFile, BlockError> {
        inner.files.get(&loc.file).ok_or_else(|| BlockError::Corrupt {
            path: self.dir.join(format!("{:010}.blk", loc.file)),
            offset: loc.offset,
            detail: "the index points into a block file that is missing".into(),
        })
    }

    pub fn read(&self, loc: &Loc) -> Result<Vec<u8>, BlockError> {
        let inner = self.lock();
        let f = self.file_of(&inner, loc)?;
        let mut buf = vec![0u8; 4 + loc.len as usize];
        f.file.read_exact_at(&mut buf, loc.offset).map_err(io_err(&f.path))?;
        let crc = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
        if crc32fast::hash(&buf[4..]) != crc {
            return Err(BlockError::Corrupt {
                path: f.path.clone(),
                offset: loc.offset,
                detail: "checksum mismatch".into(),
            });
        }
        buf.drain(..4);
        Ok(buf)
    }

    /// `len` bytes at `at` within a payload, without the checksum (which covers the whole
    /// payload): for binary searches that read a few entries of a large one.
    pub fn read_at(&self, loc: &Loc, at: u64, len: usize) -> Result<Vec<u8>, BlockError> {
        let inner = self.lock();
        let f = self.file_of(&inner, loc)?;
        if at + len as u64 > u64::from(loc.len) {
            return Err(BlockError::Corrupt {
                path: f.path.clone(),
                offset: loc.offset,
                detail: format!("read of {len} at {at} past a payload of {}", loc.len),
            });
        }
        let mut buf = vec![0u8; len];
        f.file.read_exact_at(&mut buf, loc.offset + 4 + at).map_err(io_err(&f.path))?;
        Ok(buf)
    }

    /// The index no longer points at this chunk; a file with nothing left is deleted.
    pub fn release(&self, loc: &Loc) -> Result<(), BlockError> {
        let mut inner = self.lock();
        let cur = inner.current;
        let Some(f) = inner.files.get_mut(&loc.file) else { return Ok(()) };
        f.live = f.live.saturating_sub(1);
        if f.live == 0 && loc.file != cur {
            let f = inner.files.remove(&loc.file).expect("present");
            fs::remove_file(&f.path).map_err(io_err(&f.path))?;
        }
        Ok(())
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
        b.sync().unwrap();
        assert_eq!((l1.file, l2.file, l3.file), (0, 0, 1), "rotates past the size");
        assert_eq!(b.read(&l2).unwrap(), vec![2u8; 60]);
        drop(b);
        let b = Blocks::open(dir.path(), 100).unwrap();
        for l in [&l1, &l2, &l3] {
            b.note_live(l);
        }
        assert_eq!(b.read(&l3).unwrap(), vec![3u8; 10]);
        b.release(&l1).unwrap();
        assert!(dir.path().join("0000000000.blk").exists());
        b.release(&l2).unwrap();
        assert!(!dir.path().join("0000000000.blk").exists(), "an empty old file is deleted");
        // damage is reported, not returned as data
        let l4 = b.append(&[4u8; 8]).unwrap();
        b.sync().unwrap();
        let path = dir.path().join("0000000001.blk");
        let mut data = fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        fs::write(&path, data).unwrap();
        let err = b.read(&l4).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
