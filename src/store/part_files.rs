//! Head part files: `DATA/parts/<lsn>.parts`, the parts one checkpoint saved
//! ([`super::parts`] says what they are and when they die). A file is written whole and
//! renamed into place before the checkpoint record that vouches for it, never changed, and
//! deleted once none of its parts is live, after a later record. Until 2026-12-06 parts were
//! sled values: sled kept the parts it had just written in its cache (13 MB at 100,000 series
//! fed every second), its page table grew with them, and it made a zstd context for every
//! page it compressed (2.4% of the daemon's CPU).
//!
//! Layout: a header of [`HEADER`] bytes, `MAGIC | lsn: u64 LE | parts: u64 LE | body length:
//! u64 LE | crc32 of those 32 bytes: u32 LE`, then the body: frames of `length: u32 LE |
//! crc32 of the payload: u32 LE | payload`, each payload a run of parts `series id: varint |
//! length: varint | samples` ([`super::chunk`] encoding, compressed already). Frames are about
//! [`FRAME_BYTES`], so damage costs the parts of one frame, which `modelwatch recover` names.
use super::keys::{put_varint, Reader};
use super::StoreError;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The folder, under the data folder.
pub const DIR: &str = "parts";
const MAGIC: &[u8; 8] = b"mwparts1";
const HEADER: usize = 36;
const FRAME_HEADER: usize = 8;
/// A frame is closed once its payload reaches this.
const FRAME_BYTES: usize = 64 << 10;

pub(super) fn path(dir: &Path, lsn: u64) -> PathBuf {
    dir.join(format!("{lsn:020}.parts"))
}

/// A part file being written: a temporary file that takes one frame at a time, then its
/// header, and is renamed into place by [`Writer::finish`]. Memory holds one frame.
pub(super) struct Writer {
    dir: PathBuf,
    lsn: u64,
    /// Created with the first frame.
    file: Option<File>,
    frame: Vec<u8>,
    body: u64,
    parts: u64,
}

impl Writer {
    pub(super) fn new(dir: &Path, lsn: u64) -> Writer {
        Writer { dir: dir.to_owned(), lsn, file: None, frame: Vec::new(), body: 0, parts: 0 }
    }

    fn tmp(&self) -> PathBuf {
        self.dir.join(format!("{:020}.tmp", self.lsn))
    }

    pub(super) fn add(&mut self, id: u64, samples: &[u8]) -> Result<(), StoreError> {
        if self.frame.is_empty() {
            self.frame.extend_from_slice(&[0; FRAME_HEADER]);
        }
        put_varint(&mut self.frame, id);
        put_varint(&mut self.frame, samples.len() as u64);
        self.frame.extend_from_slice(samples);
        self.parts += 1;
        if self.frame.len() - FRAME_HEADER >= FRAME_BYTES {
            self.flush_frame()?;
        }
        Ok(())
    }

    fn flush_frame(&mut self) -> Result<(), StoreError> {
        if self.frame.is_empty() {
            return Ok(());
        }
        let payload = &self.frame[FRAME_HEADER..];
        let (n, crc) = (payload.len() as u32, crc32fast::hash(payload));
        self.frame[..4].copy_from_slice(&n.to_le_bytes());
        self.frame[4..8].copy_from_slice(&crc.to_le_bytes());
        let tmp = self.tmp();
        let written = (|| {
            if self.file.is_none() {
                let mut f = File::create(&tmp)?;
                f.write_all(&[0; HEADER])?;
                self.file = Some(f);
            }
            self.file.as_mut().expect("created above").write_all(&self.frame)
        })();
        self.body += self.frame.len() as u64;
        self.frame.clear();
        written.map_err(|source| self.failed(source))
    }

    fn failed(&mut self, source: std::io::Error) -> StoreError {
        self.file = None;
        let _ = std::fs::remove_file(self.tmp());
        StoreError::Io { path: path(&self.dir, self.lsn), source }
    }

    /// Writes the header, syncs the file, renames it into place (replacing one of the same
    /// lsn that a checkpoint which did not finish left) and syncs the folder. Whether there was
    /// a part to write: with none, no file is made. A failure leaves no file of that name
    /// changed.
    pub(super) fn finish(mut self) -> Result<bool, StoreError> {
        if self.parts == 0 {
            return Ok(false);
        }
        self.flush_frame()?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.lsn.to_le_bytes());
        header.extend_from_slice(&self.parts.to_le_bytes());
        header.extend_from_slice(&self.body.to_le_bytes());
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        let (tmp, to) = (self.tmp(), path(&self.dir, self.lsn));
        let f = self.file.take().expect("a frame was written");
        let written = (|| {
            use std::os::unix::fs::FileExt;
            f.write_all_at(&header, 0)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &to)?;
            super::wal::sync_dir(&self.dir)
        })();
        written.map_err(|source| self.failed(source))?;
        Ok(true)
    }
}

/// The part files in `dir` by lsn, oldest first; temporary files (a checkpoint that stopped
/// before its rename) are deleted.
pub(super) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let io = |source| StoreError::Io { path: dir.to_owned(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(lsn) = name.strip_suffix(".parts").and_then(|s| s.parse::<u64>().ok()) {
            out.push((lsn, path));
        } else if name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(|source| StoreError::Io { path: path.clone(), source })?;
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Deletes the file of checkpoint `lsn`; one that is gone already is not an error.
pub(super) fn delete(dir: &Path, lsn: u64) -> std::io::Result<()> {
    match std::fs::remove_file(path(dir, lsn)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Damage found in a part file: where, what, and how many bytes of parts it cost.
#[derive(Debug)]
pub(super) struct Damage {
    pub(super) offset: u64,
    pub(super) detail: String,
    pub(super) bytes: u64,
}

/// Reads the part file at `path` (of checkpoint `lsn`), calling `each` with every part of the
/// frames that check out, in the order written; returns the damage found (none: the file is
/// whole). A header that does not check out loses the whole file; a frame whose checksum does
/// not match loses that frame; a frame length that cannot be right loses the rest.
pub(super) fn read(
    path: &Path,
    lsn: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
) -> Result<Vec<Damage>, StoreError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|source| StoreError::Io { path: path.to_owned(), source })?;
    let len = data.len() as u64;
    let whole = |detail: String| vec![Damage { offset: 0, detail, bytes: len }];
    if data.len() < HEADER {
        return Ok(whole(format!("{len} bytes, shorter than the {HEADER}-byte header")));
    }
    let (header, body) = data.split_at(HEADER);
    let field = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(header[32..36].try_into().expect("4 bytes"));
    if &header[..8] != MAGIC || crc32fast::hash(&header[..32]) != crc {
        return Ok(whole("the header does not check out".into()));
    }
    if field(8) != lsn {
        return Ok(whole(format!("its header names checkpoint {} where its name says {lsn}", field(8))));
    }
    let (want_parts, body_len) = (field(16), field(24));
    let mut damage = Vec::new();
    if body_len != body.len() as u64 {
        damage.push(Damage {
            offset: HEADER as u64,
            detail: format!("{} bytes of parts where its header says {body_len}", body.len()),
            bytes: body_len.saturating_sub(body.len() as u64),
        });
    }
    let (mut at, mut parts) = (0usize, 0u64);
    while at < body.len() {
        let offset = (HEADER + at) as u64;
        let left = body.len() - at;
        // The payload's length, if the header and the payload fit in what is left.
        let n = left.checked_sub(FRAME_HEADER).and_then(|room| {
            let n = u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes")) as usize;
            (n <= room).then_some(n)
        });
        let Some(n) = n else {
            damage.push(Damage {
                offset,
                detail: format!("{left} bytes left where a frame header and its payload should be"),
                bytes: left as u64,
            });
            break;
        };
        let crc = u32::from_le_bytes(body[at + 4..at + 8].try_into().expect("4 bytes"));
        let payload = &body[at + FRAME_HEADER..at + FRAME_HEADER + n];
        at += FRAME_HEADER + n;
        if crc32fast::hash(payload) != crc {
            damage.push(Damage {
                offset,
                detail: format!("the checksum of a frame of {n} bytes does not match"),
                bytes: n as u64,
            });
            continue;
        }
        let mut rd = Reader::new(payload, "head part frame");
        while !rd.done() {
            let id = rd.varint()?;
            let len = rd.varint()? as usize;
            each(id, rd.bytes(len)?)?;
            parts += 1;
        }
    }
    if damage.is_empty() && parts != want_parts {
        damage.push(Damage {
            offset: 0,
            detail: format!("{parts} parts where its header says {want_parts}"),
            bytes: 0,
        });
    }
    Ok(damage)
}

/// The error an open reports for damage it will not skip.
pub(super) fn damaged(path: &Path, d: &Damage) -> StoreError {
    StoreError::PartFile { path: path.to_owned(), offset: d.offset, detail: d.detail.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(n: u64) -> Vec<(u64, Vec<u8>)> {
        (0..n).map(|i| (i * 7, vec![i as u8; 1 + (i as usize * 37) % 3000])).collect()
    }

    fn write(dir: &Path, lsn: u64, ps: &[(u64, Vec<u8>)]) {
        let mut w = Writer::new(dir, lsn);
        for (id, b) in ps {
            w.add(*id, b).unwrap();
        }
        assert!(w.finish().unwrap());
    }

    fn read_all(path: &Path, lsn: u64) -> (Vec<(u64, Vec<u8>)>, Vec<Damage>) {
        let mut got = Vec::new();
        let d = read(path, lsn, |id, b| {
            got.push((id, b.to_vec()));
            Ok(())
        })
        .unwrap();
        (got, d)
    }

    #[test]
    fn parts_read_back_in_order_across_frames() {
        let dir = tempfile::tempdir().unwrap();
        let ps = parts(200);
        write(dir.path(), 42, &ps);
        assert_eq!(list(dir.path()).unwrap(), vec![(42, path(dir.path(), 42))]);
        let (got, d) = read_all(&path(dir.path(), 42), 42);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(got, ps);
        // More than one frame, so that damage is local.
        assert!(std::fs::metadata(path(dir.path(), 42)).unwrap().len() > 2 * FRAME_BYTES as u64);
    }

    #[test]
    fn damage_costs_one_frame_and_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ps = parts(200);
        write(dir.path(), 9, &ps);
        let p = path(dir.path(), 9);
        let mut data = std::fs::read(&p).unwrap();
        let at = HEADER + FRAME_HEADER + 100;
        data[at] ^= 0x55;
        std::fs::write(&p, &data).unwrap();
        let (got, d) = read_all(&p, 9);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].offset, HEADER as u64);
        assert!(d[0].detail.contains("checksum"), "{}", d[0].detail);
        assert!(!got.is_empty() && got.len() < ps.len());
        assert!(got.iter().all(|g| ps.contains(g)));
        // A cut file loses its tail, and says so.
        std::fs::write(&p, &data[..data.len() - 10]).unwrap();
        let (_, d) = read_all(&p, 9);
        assert!(d.iter().any(|d| d.detail.contains("header says")), "{d:?}");
        // A wrong lsn or header loses everything.
        let (got, d) = read_all(&p, 10);
        assert!(got.is_empty() && d.len() == 1 && d[0].detail.contains("names checkpoint 9"), "{d:?}");
        data[3] ^= 1;
        std::fs::write(&p, &data).unwrap();
        let (got, d) = read_all(&p, 9);
        assert!(got.is_empty() && d[0].detail.contains("header"), "{d:?}");
    }

    #[test]
    fn leftovers_of_a_stopped_write_are_deleted_and_names_sort_by_lsn() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 100, &parts(2));
        write(dir.path(), 9, &parts(2));
        std::fs::write(dir.path().join(format!("{:020}.tmp", 200)), b"half").unwrap();
        let l = list(dir.path()).unwrap();
        assert_eq!(l.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(), vec![9, 100]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        delete(dir.path(), 9).unwrap();
        delete(dir.path(), 9).unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 1);
        // Nothing to write, no file.
        assert!(!Writer::new(dir.path(), 300).finish().unwrap());
        assert_eq!(list(dir.path()).unwrap().len(), 1);
    }
}
