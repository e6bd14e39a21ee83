//! The series catalog: each metric series' id, kind, name and labels, in an append-only file of
//! its own (`DATA/series.cat`) instead of sled. The label index ([`super::index`]) holds the
//! catalog in memory and is built from this file at open; nothing else reads it. In sled, one
//! entry per series cost about 340 bytes on disk for 80 bytes of content (sled logs every
//! insert and rewrites whole nodes as they fill) and kept its tree nodes in sled's cache beside
//! the index's own copy.
//!
//! Layout: the 8-byte [`MAGIC`], then one frame per checkpoint that saw new series:
//! `length: u32 LE | crc32 of the payload: u32 LE | payload`, where the payload is the
//! Snappy-compressed (raw format) run of records `id: varint | length: varint |`
//! [`keys::encode_series`]. The labels of a service's series repeat from one to the next, so a
//! series takes a fraction of its plain size.
//!
//! Durability: series made since the last checkpoint are kept in memory ([`Catalog::add`]) and
//! are rebuilt, with the same ids, by WAL replay after a crash. Step 2 of a checkpoint appends
//! them as one frame and syncs the file before the checkpoint record, which names the file's
//! end ([`keys::Meta::catalog_end`]). At open the file is cut back to that end (later frames
//! belong to records that replay recreates) and every frame before it must check out: damage
//! there names the file and the offset rather than losing series.
//!
//! Data folders from before this file kept the catalog in sled's `series` tree: their record
//! has no catalog end. Their series are read from sled and written into the file by the first
//! checkpoint, after whose flush the tree is emptied.
use super::keys::{self, put_varint, Reader, SeriesValue};
use super::StoreError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const FILE: &str = "series.cat";
pub const MAGIC: &[u8; 8] = b"mwseries";
const HEADER: u64 = MAGIC.len() as u64;
const FRAME_HEADER: usize = 8;

/// Series made since the last checkpoint, encoded as frame records.
#[derive(Default)]
pub struct Pending {
    records: Vec<u8>,
    count: usize,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

pub struct Catalog {
    path: PathBuf,
    file: File,
    st: Mutex<State>,
}

struct State {
    /// End of the last frame written and synced.
    end: u64,
    pending: Pending,
}

impl Catalog {
    /// Opens the catalog cut back to `end` (the checkpoint record's; `None`: the folder has
    /// none yet, so the file starts empty) and returns its series in the order written.
    pub fn open(dir: &Path, end: Option<u64>) -> Result<(Catalog, Vec<(u64, SeriesValue)>), StoreError> {
        let path = dir.join(FILE);
        let ioerr = |source| StoreError::Io { path: path.clone(), source };
        let damaged = |offset: u64, detail: String| StoreError::Catalog { path: path.clone(), offset, detail };
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(ioerr)?;
        let len = file.metadata().map_err(ioerr)?.len();
        let mut series = Vec::new();
        let end = match end {
            None => {
                // No checkpoint vouches for anything in it: what is there (a checkpoint that
                // stopped before its record) is rewritten from sled or the WAL.
                file.set_len(0).map_err(ioerr)?;
                file.write_all_at(MAGIC, 0).map_err(ioerr)?;
                file.sync_all().map_err(ioerr)?;
                super::wal::sync_dir(dir).map_err(ioerr)?;
                HEADER
            }
            Some(end) => {
                if len < end || end < HEADER {
                    return Err(damaged(
                        len,
                        format!(
                            "it ends at byte {len}, but the checkpoint record says {end}: the file lost data or was replaced"
                        ),
                    ));
                }
                let mut magic = [0u8; 8];
                file.read_exact_at(&mut magic, 0).map_err(ioerr)?;
                if &magic != MAGIC {
                    return Err(damaged(0, "not a series catalog (wrong header)".into()));
                }
                let mut at = HEADER;
                while at < end {
                    let left = end - at;
                    if left < FRAME_HEADER as u64 {
                        return Err(damaged(at, format!("{left} bytes where a frame header of 8 should be")));
                    }
                    let mut h = [0u8; FRAME_HEADER];
                    file.read_exact_at(&mut h, at).map_err(ioerr)?;
                    let n = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
                    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
                    if n > left - FRAME_HEADER as u64 {
                        return Err(damaged(at, format!("a frame of {n} bytes runs past the end ({end})")));
                    }
                    let mut payload = vec![0u8; n as usize];
                    file.read_exact_at(&mut payload, at + FRAME_HEADER as u64).map_err(ioerr)?;
                    if crc32fast::hash(&payload) != crc {
                        return Err(damaged(at, format!("the checksum of a frame of {n} bytes does not match")));
                    }
                    decode_frame(&payload, &mut series).map_err(|e| damaged(at, e))?;
                    at += FRAME_HEADER as u64 + n;
                }
                if len > end {
                    file.set_len(end).map_err(ioerr)?;
                    file.sync_all().map_err(ioerr)?;
                }
                end
            }
        };
        Ok((Catalog { path, file, st: Mutex::new(State { end, pending: Pending::default() }) }, series))
    }

    /// Records a new series; it is written by the next checkpoint.
    pub fn add(&self, id: u64, kind: i32, name: &str, labels: &[(String, String)]) {
        let v = keys::encode_series(kind, name, labels);
        let mut st = super::lock(&self.st);
        put_varint(&mut st.pending.records, id);
        put_varint(&mut st.pending.records, v.len() as u64);
        st.pending.records.extend_from_slice(&v);
        st.pending.count += 1;
    }

    /// The series added so far, for a checkpoint to write (step 1).
    pub fn take(&self) -> Pending {
        std::mem::take(&mut super::lock(&self.st).pending)
    }

    /// Puts series taken by a checkpoint that did not write them back in front of those added
    /// since.
    pub fn restore(&self, mut p: Pending) {
        let mut st = super::lock(&self.st);
        p.records.extend_from_slice(&st.pending.records);
        p.count += st.pending.count;
        st.pending = p;
    }

    /// Appends `p` as one frame and syncs the file (step 2, before the checkpoint record);
    /// returns the file's end for the record. On failure the series go back to pending and the
    /// next checkpoint writes them over whatever this one left past the end.
    pub fn write(&self, p: Pending) -> Result<u64, StoreError> {
        if p.is_empty() {
            return Ok(super::lock(&self.st).end);
        }
        let end = super::lock(&self.st).end;
        let payload = snap::raw::Encoder::new().compress_vec(&p.records).expect("snappy takes any input below 4 GiB");
        let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let written = self.file.write_all_at(&frame, end).and_then(|_| self.file.sync_data());
        match written {
            Ok(()) => {
                let mut st = super::lock(&self.st);
                st.end = end + frame.len() as u64;
                Ok(st.end)
            }
            Err(source) => {
                self.restore(p);
                Err(StoreError::Io { path: self.path.clone(), source })
            }
        }
    }
}

fn decode_frame(payload: &[u8], out: &mut Vec<(u64, SeriesValue)>) -> Result<(), String> {
    let plain = snap::raw::Decoder::new().decompress_vec(payload).map_err(|e| format!("snappy: {e}"))?;
    let mut r = Reader::new(&plain, "series catalog frame");
    while !r.done() {
        let id = r.varint().map_err(|e| e.to_string())?;
        let n = r.varint().map_err(|e| e.to_string())? as usize;
        let v = r.bytes(n).map_err(|e| e.to_string())?;
        out.push((id, keys::decode_series(v).map_err(|e| format!("series {id}: {e}"))?));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(i: u64) -> Vec<(String, String)> {
        vec![("model".into(), format!("m{}", i % 3)), ("service".into(), "svc".into())]
    }

    fn add(c: &Catalog, ids: std::ops::Range<u64>) {
        for i in ids {
            c.add(i, 1, "latency_seconds", &labels(i));
        }
    }

    #[test]
    fn frames_round_trip_and_leftovers_past_the_recorded_end_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (c, none) = Catalog::open(dir.path(), None).unwrap();
        assert!(none.is_empty());
        add(&c, 1..101);
        let e1 = c.write(c.take()).unwrap();
        add(&c, 101..151);
        let e2 = c.write(c.take()).unwrap();
        assert!(e2 > e1 && e1 > HEADER);
        // Snappy: 150 series of ~50 plain bytes each take much less.
        assert!(e2 < 150 * 25, "{e2} bytes");
        // A checkpoint recorded e1; the second frame came after it.
        drop(c);
        let (c, got) = Catalog::open(dir.path(), Some(e1)).unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!(got[7], (8, (1, "latency_seconds".to_string(), labels(8))));
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().len(), e1);
        // Written again from replay, it lands where the cut frame was.
        add(&c, 101..151);
        assert_eq!(c.write(c.take()).unwrap(), e2);
        let (_, got) = Catalog::open(dir.path(), Some(e2)).unwrap();
        assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (1..151).collect::<Vec<_>>());
    }

    #[test]
    fn restored_series_come_before_later_ones_and_an_empty_take_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = Catalog::open(dir.path(), None).unwrap();
        assert_eq!(c.write(c.take()).unwrap(), HEADER);
        add(&c, 1..4);
        let p = c.take();
        add(&c, 4..6);
        c.restore(p);
        let end = c.write(c.take()).unwrap();
        let (_, got) = Catalog::open(dir.path(), Some(end)).unwrap();
        assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn damage_and_loss_before_the_recorded_end_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = Catalog::open(dir.path(), None).unwrap();
        add(&c, 1..50);
        let end = c.write(c.take()).unwrap();
        drop(c);
        let path = dir.path().join(FILE);
        let good = std::fs::read(&path).unwrap();
        for at in [0, 3, 12, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let Err(e) = Catalog::open(dir.path(), Some(end)) else { panic!("byte {at}: opened") };
            let msg = e.to_string();
            assert!(msg.contains("series.cat") && msg.contains("damaged"), "{msg}");
        }
        std::fs::write(&path, &good[..good.len() - 5]).unwrap();
        let Err(e) = Catalog::open(dir.path(), Some(end)) else { panic!("opened a short file") };
        assert!(e.to_string().contains("lost data"), "{e}");
        // Never more than a frame's stated length is read or allocated.
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        assert!(Catalog::open(dir.path(), Some(end)).is_err());
    }
}
