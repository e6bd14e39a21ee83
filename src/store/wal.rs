//! Write-ahead log: the durability point of ingest. An ack goes out only after the records it
//! covers are written here and `fdatasync`ed (one sync covers a whole group of batches).
//!
//! Why a log of our own beside sled: sled rewrites whole leaf nodes, so small appends cost
//! several times their size on disk, and the space of deleted keys is reused but never given
//! back to the file system. The WAL is a run of segment files that are deleted outright once a
//! checkpoint has put everything they hold into sled.
//!
//! Segment `NNNNNNNNNNNNNNNNNNNN.wal` (the first lsn, zero-padded) holds records
//! `len: u32 LE | crc32(lsn, payload): u32 LE | lsn: u64 LE | payload`. A torn or corrupt record
//! at the end of the last segment is a crash mid-write: it was never acked, so it is cut off. The
//! same damage anywhere else is reported as a damaged data folder.
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 16;
const MAX_RECORD: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("write-ahead log {path} is damaged at byte {offset}: {detail}")]
    Corrupt { path: PathBuf, offset: u64, detail: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.to_owned(), source }
}

pub struct Wal {
    dir: PathBuf,
    /// (first lsn, path) of every segment, oldest first; the last is open for appends.
    segments: Vec<(u64, PathBuf)>,
    /// The open segment; `None` only while `open` builds the log.
    out: Option<BufWriter<File>>,
    written: u64,
    segment_bytes: u64,
    next_lsn: u64,
}

impl Wal {
    /// Opens the log in `dir`, calling `replay(lsn, payload)` for every record with
    /// `lsn >= from`, in order. Returns the log, ready to append after the last record.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        from: u64,
        mut replay: impl FnMut(u64, &[u8]) -> Result<(), String>,
    ) -> Result<Wal, WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
                continue;
            };
            let Ok(first) = stem.parse::<u64>() else {
                continue;
            };
            segments.push((first, entry.path()));
        }
        segments.sort();
        let mut next_lsn = segments.first().map_or(from, |s| s.0);
        let count = segments.len();
        for (i, (first, path)) in segments.iter().enumerate() {
            if (i == 0 && *first > from) || (i > 0 && *first != next_lsn) {
                return Err(WalError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    detail: format!("segment starts at lsn {first}, expected {}", if i == 0 { from } else { next_lsn }),
                });
            }
            next_lsn = *first;
            let last = i + 1 == count;
            next_lsn = read_segment(
                path,
                next_lsn,
                last,
                |lsn, payload| {
                    if lsn >= from {
                        replay(lsn, payload)
                    } else {
                        Ok(())
                    }
                },
            )?;
        }
        let next_lsn = next_lsn.max(from);
        let mut wal = Wal { dir: dir.to_owned(), segments, out: None, written: 0, segment_bytes, next_lsn };
        wal.start_segment()?;
        Ok(wal)
    }

    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Buffers one record; it is durable after the next [`Wal::sync`].
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        let lsn = self.next_lsn;
        let path = &self.segments.last().expect("open segment").1;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&lsn.to_le_bytes());
        crc.update(payload);
        let mut head = [0u8; HEADER];
        head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        head[8..].copy_from_slice(&lsn.to_le_bytes());
        let out = self.out.as_mut().expect("a segment is open after Wal::open");
        out.write_all(&head).map_err(io_err(path))?;
        out.write_all(payload).map_err(io_err(path))?;
        self.written += (HEADER + payload.len()) as u64;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Writes buffered records and waits until they are on disk.
    pub fn sync(&mut self) -> Result<(), WalError> {
        let path = self.segments.last().expect("open segment").1.clone();
        let out = self.out.as_mut().expect("a segment is open after Wal::open");
        out.flush().map_err(io_err(&path))?;
        out.get_ref().sync_data().map_err(io_err(&path))?;
        if self.written >= self.segment_bytes {
            self.start_segment()?;
        }
        Ok(())
    }

    /// Starts a new segment if the current one holds anything; returns the first lsn of the
    /// segment now open (every earlier record is in a closed segment).
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        if self.written > 0 {
            self.sync()?;
            if self.written > 0 {
                self.start_segment()?;
            }
        }
        Ok(self.next_lsn)
    }

    /// Deletes closed segments whose records all have lsn < `keep_from`.
    pub fn truncate_before(&mut self, keep_from: u64) -> Result<(), WalError> {
        while self.segments.len() > 1 && self.segments[1].0 <= keep_from {
            let (_, path) = self.segments.remove(0);
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        Ok(())
    }

    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().filter_map(|(_, p)| fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    fn start_segment(&mut self) -> Result<(), WalError> {
        if let Some((first, path)) = self.segments.last() {
            // An empty open segment is reused rather than left behind.
            if *first == self.next_lsn
                && self.written == 0
                && path.exists()
                && fs::metadata(path).map(|m| m.len() == 0).unwrap_or(false)
            {
                let file = OpenOptions::new().append(true).open(path).map_err(io_err(path))?;
                self.out = Some(BufWriter::with_capacity(1 << 20, file));
                return Ok(());
            }
        }
        let path = self.dir.join(format!("{:020}.wal", self.next_lsn));
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        // The new file's directory entry must survive a crash too.
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.dir))?;
        self.out = Some(BufWriter::with_capacity(1 << 20, file));
        self.written = 0;
        self.segments.push((self.next_lsn, path));
        Ok(())
    }
}

/// Reads one segment, calling `f` per record; returns the lsn after its last record. A bad
/// tail of the last segment is truncated away.
fn read_segment(
    path: &Path,
    first: u64,
    last: bool,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<u64, WalError> {
    let mut data = Vec::new();
    File::open(path).and_then(|mut fh| fh.read_to_end(&mut data)).map_err(io_err(path))?;
    let mut pos = 0usize;
    let mut lsn = first;
    let corrupt =
        |offset: usize, detail: String| WalError::Corrupt { path: path.to_owned(), offset: offset as u64, detail };
    while pos < data.len() {
        let problem = if data.len() - pos < HEADER {
            Some("truncated record header".to_string())
        } else {
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
            let rec_lsn = u64::from_le_bytes(data[pos + 8..pos + 16].try_into().expect("8 bytes"));
            if len > MAX_RECORD || data.len() - pos - HEADER < len {
                Some(format!("record of {len} bytes runs past the end"))
            } else {
                let payload = &data[pos + HEADER..pos + HEADER + len];
                let mut h = crc32fast::Hasher::new();
                h.update(&rec_lsn.to_le_bytes());
                h.update(payload);
                if h.finalize() != crc {
                    Some("checksum mismatch".to_string())
                } else if rec_lsn != lsn {
                    Some(format!("record lsn {rec_lsn}, expected {lsn}"))
                } else {
                    f(lsn, payload).map_err(|e| corrupt(pos, format!("record {lsn}: {e}")))?;
                    pos += HEADER + len;
                    lsn += 1;
                    None
                }
            }
        };
        if let Some(detail) = problem {
            if !last {
                return Err(corrupt(pos, detail));
            }
            tracing::warn!(path = %path.display(), offset = pos, %detail, "cutting off a torn write-ahead-log tail (a write that was never acknowledged)");
            let fh = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
            fh.set_len(pos as u64).map_err(io_err(path))?;
            fh.sync_all().map_err(io_err(path))?;
            break;
        }
    }
    Ok(lsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(dir: &Path, from: u64) -> (Wal, Vec<(u64, Vec<u8>)>) {
        let mut got = Vec::new();
        let wal = Wal::open(dir, 1 << 20, from, |lsn, p| {
            got.push((lsn, p.to_vec()));
            Ok(())
        })
        .unwrap();
        (wal, got)
    }

    #[test]
    fn append_sync_reopen_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, got) = collect(dir.path(), 0);
        assert!(got.is_empty());
        for i in 0..10u8 {
            assert_eq!(wal.append(&[i; 3]).unwrap(), u64::from(i));
        }
        wal.sync().unwrap();
        drop(wal);
        let (wal, got) = collect(dir.path(), 4);
        assert_eq!(got.len(), 6);
        assert_eq!(got[0], (4, vec![4; 3]));
        assert_eq!(wal.next_lsn(), 10);
    }

    #[test]
    fn torn_tail_is_cut_and_rotation_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = collect(dir.path(), 0);
        wal.append(b"a").unwrap();
        wal.append(b"b").unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.rotate().unwrap(), 2);
        wal.append(b"c").unwrap();
        wal.sync().unwrap();
        let last = wal.segments.last().unwrap().1.clone();
        drop(wal);
        // a half-written record at the end of the last segment
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut wal, got) = collect(dir.path(), 0);
        assert_eq!(
            got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(wal.append(b"d").unwrap(), 3);
        wal.sync().unwrap();
        wal.truncate_before(2).unwrap();
        drop(wal);
        let (_, got) = collect(dir.path(), 2);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn damage_before_the_tail_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = collect(dir.path(), 0);
        wal.append(b"hello").unwrap();
        wal.rotate().unwrap();
        wal.append(b"world").unwrap();
        wal.sync().unwrap();
        let first = wal.segments[0].1.clone();
        drop(wal);
        let mut data = fs::read(&first).unwrap();
        data[HEADER] ^= 0xff;
        fs::write(&first, data).unwrap();
        let err = Wal::open(dir.path(), 1 << 20, 0, |_, _| Ok(())).err().unwrap();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
