//! Write-ahead log: the durability point of ingest. An ack goes out only after the records it
//! covers are written here and `fdatasync`ed (one sync covers a whole group of batches).
//!
//! Why a log of our own beside sled: sled rewrites whole leaf nodes, so small appends cost
//! several times their size on disk, and the space of deleted keys is reused but never given
//! back to the file system. The WAL is a run of segment files that are deleted outright once a
//! checkpoint has put everything they hold into sled and the block files.
//!
//! # Format
//! Segment `NNNNNNNNNNNNNNNNNNNN.wal` (its first lsn, zero-padded) starts with a 32-byte header
//! `magic "MWWAL002" | first lsn: u64 | size: u64 | crc32: u32 | 0: u32` and is preallocated to
//! `size` bytes (zeros) before its first record, so that a record write never needs new disk
//! space: a full disk shows when a segment is started ([`Wal::reserve`]), before the
//! committer has changed anything, never in the middle of a group. Records follow:
//! `len: u32 LE | crc32(lsn, payload): u32 LE | lsn: u64 LE | payload` (the payload is a
//! batch's kind tag and protobuf, Snappy-compressed when that is smaller: `Body::encode` in
//! `store::batch`). After each `fdatasync` a *sync mark* is written (a header with
//! `len = SYNC_MARK`, `crc32(lsn, "sync")`, no payload): it says that everything before it was
//! on disk. It is not synced itself; it becomes durable with the next group, and after a
//! process crash (`kill -9`) it is in the page cache anyway.
//!
//! # Replay: a torn tail versus damage
//! The data of a segment ends at the first position that is not a valid record. What lies
//! there is either a torn write (a crash while a group was being written, so never acked) or
//! damage. Replay tells them apart with the marks: if a sync mark stands anywhere after that
//! position, the bad bytes were synced, and so acked, so the daemon stops, naming the file and
//! offset ([`WalError::Corrupt`]). Otherwise the bytes after the position were never
//! acknowledged and are zeroed (the tail of the newest segment only; in an older segment any
//! non-zero byte after the data is damage). A segment shorter than the size its header
//! promises was cut by something other than this daemon: damage too. `modelwatch recover`
//! replays what it can read and reports the rest instead of stopping ([`Wal::open`] with
//! `salvage`).
//!
//! What this does not catch: after a power loss (not a process crash) the mark of the last
//! group may not have reached the disk, so damage inside that one group would be taken for a
//! torn tail. Its records were synced, so only a media error could damage them.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: usize = 16;
const SEGMENT_HEADER: usize = 32;
const MAGIC: &[u8; 8] = b"MWWAL002";
/// `len` of a sync mark (no record is this long: see [`MAX_RECORD`]).
const SYNC_MARK: u32 = 0xFFFF_FFFF;
/// Largest record: the committer refuses bigger batches (`limits.max_batch_bytes` is checked
/// against it in `Config::validate`), and replay treats a larger length as damage.
pub const MAX_RECORD: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("write-ahead log {path} is damaged at byte {offset}: {detail} (run `modelwatch recover --data-dir DIR` to keep every readable record and see what was lost)")]
    Corrupt { path: PathBuf, offset: u64, detail: String },
    #[error("replaying write-ahead-log record {lsn} of {path}: {source}")]
    Replay { path: PathBuf, lsn: u64, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("write-ahead-log record of {len} bytes exceeds the largest record ({MAX_RECORD} bytes)")]
    TooLarge { len: usize },
}

impl WalError {
    /// The write failed for lack of disk space.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.to_owned(), source }
}

/// What a salvaging open could not read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Salvage {
    /// (segment, offset, what was wrong, bytes skipped).
    pub skipped: Vec<(PathBuf, u64, String, u64)>,
    /// Records read and replayed.
    pub records: u64,
}

pub struct Wal {
    dir: PathBuf,
    /// (first lsn, path) of every segment, oldest first; the last is open for appends.
    segments: Vec<(u64, PathBuf)>,
    /// Segments no longer needed and not deleted yet, oldest first. They go oldest first,
    /// always before any newer one: a newer segment deleted while an older one stayed would
    /// leave a gap that the next open reports as damage.
    doomed: Vec<PathBuf>,
    /// The open segment and where the next record goes.
    file: File,
    pos: u64,
    /// Preallocated size of the open segment; 0 until its first [`Wal::reserve`].
    size: u64,
    buf: Vec<u8>,
    segment_bytes: u64,
    next_lsn: u64,
    /// Bytes of records appended since the last [`Wal::rotate`] (a checkpoint's).
    since_rotate: u64,
    /// Decoded bytes of the records appended since the last rotate ([`Wal::count_decoded`]).
    decoded_since_rotate: u64,
}

fn mark_crc(lsn: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(b"sync");
    h.finalize()
}

fn record_crc(lsn: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn segment_header(first: u64, size: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&first.to_le_bytes());
    h[16..24].copy_from_slice(&size.to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// fsyncs a directory, so that files created, renamed or deleted in it stay so after a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reserves `len` bytes of `file` on disk (zeros), so later writes need no new space.
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

impl Wal {
    /// Opens the log in `dir`, calling `replay(lsn, payload)` for every record with
    /// `lsn >= from`, in order. Returns the log, ready to append after the last record.
    /// Damage stops the open with [`WalError::Corrupt`]; with `salvage`, damaged stretches are
    /// skipped instead and listed in the returned [`Salvage`].
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        from: u64,
        salvage: bool,
        mut replay: impl FnMut(u64, &[u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
    ) -> Result<(Wal, Salvage), WalError> {
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
        let mut report = Salvage::default();
        let mut next_lsn = segments.first().map_or(from, |s| s.0);
        let count = segments.len();
        for (i, (first, path)) in segments.iter().enumerate() {
            if i == 0 && *first > from {
                let detail = format!(
                    "the oldest segment starts at record {first}, but the last checkpoint needs the log from record {from}: segments are missing"
                );
                if !salvage {
                    return Err(WalError::Corrupt { path: path.clone(), offset: 0, detail });
                }
                report.skipped.push((path.clone(), 0, detail, 0));
            } else if i > 0 && *first != next_lsn {
                let detail = format!("segment starts at record {first}, but the one before ends at {next_lsn}");
                if !salvage {
                    return Err(WalError::Corrupt { path: path.clone(), offset: 0, detail });
                }
                report.skipped.push((path.clone(), 0, detail, 0));
            }
            next_lsn = *first;
            let last = i + 1 == count;
            next_lsn = read_segment(path, next_lsn, last, salvage, &mut report, &mut |lsn, payload| {
                if lsn >= from {
                    replay(lsn, payload).map_err(|source| WalError::Replay { path: path.clone(), lsn, source })
                } else {
                    Ok(())
                }
            })?;
        }
        let next_lsn = next_lsn.max(from);
        // Appends always go to a new segment: the last one may end in zeros that a torn tail
        // left, or in a region another version preallocated differently.
        let (file, path) = Self::create_segment(dir, next_lsn)?;
        if segments.last().is_some_and(|(_, p)| *p == path) {
            segments.pop();
        }
        segments.push((next_lsn, path));
        let wal = Wal {
            dir: dir.to_owned(),
            segments,
            doomed: Vec::new(),
            file,
            pos: 0,
            size: 0,
            buf: Vec::new(),
            segment_bytes,
            next_lsn,
            since_rotate: 0,
            decoded_since_rotate: 0,
        };
        Ok((wal, report))
    }

    fn create_segment(dir: &Path, first: u64) -> Result<(File, PathBuf), WalError> {
        let path = dir.join(format!("{first:020}.wal"));
        let file =
            OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).map_err(io_err(&path))?;
        // The new file's directory entry must survive a crash too.
        sync_dir(dir).map_err(io_err(dir))?;
        Ok((file, path))
    }

    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    fn path(&self) -> &Path {
        &self.segments.last().expect("a segment is always open").1
    }

    /// Makes room for `bytes` of records (payloads) in the open segment: preallocates it, or
    /// starts and preallocates a new one. Called before a group is applied, so that a full disk
    /// is found before anything changed (the error then says so: [`WalError::is_disk_full`]).
    pub fn reserve(&mut self, bytes: u64) -> Result<(), WalError> {
        let need = bytes + HEADER as u64 * 2 + self.buf.len() as u64;
        if self.size > 0 && self.pos + need <= self.size {
            return Ok(());
        }
        if self.size > 0 && !self.buf.is_empty() {
            // Records of this group are buffered for the open segment: it grows instead.
            return self.grow(self.pos + need);
        }
        if self.size > 0 {
            // The open segment is full: records and mark of the last group are already written.
            let (file, path) = Self::create_segment(&self.dir, self.next_lsn)?;
            self.file = file;
            self.segments.push((self.next_lsn, path));
            self.pos = 0;
            self.size = 0;
        }
        let size = self.segment_bytes.max(need + SEGMENT_HEADER as u64);
        let path = self.path().to_owned();
        if let Err(e) = preallocate(&self.file, size) {
            // Leave the file empty, as before: a later reserve tries again.
            let _ = self.file.set_len(0);
            return Err(WalError::Io { path, source: e });
        }
        let first = self.segments.last().expect("open segment").0;
        self.file.write_all_at(&segment_header(first, size), 0).map_err(io_err(&path))?;
        self.pos = SEGMENT_HEADER as u64;
        self.size = size;
        Ok(())
    }

    /// Extends the open segment's preallocation to `size` bytes (a group larger than what was
    /// reserved for it) and rewrites its header to say so.
    fn grow(&mut self, size: u64) -> Result<(), WalError> {
        let path = self.path().to_owned();
        preallocate(&self.file, size).map_err(io_err(&path))?;
        let first = self.segments.last().expect("open segment").0;
        self.file.write_all_at(&segment_header(first, size), 0).map_err(io_err(&path))?;
        self.size = size;
        Ok(())
    }

    /// Buffers one record; it is durable after the next [`Wal::sync`]. The caller has
    /// [`Wal::reserve`]d room for it (else the segment is extended here).
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        if payload.len() >= MAX_RECORD {
            return Err(WalError::TooLarge { len: payload.len() });
        }
        if self.size == 0 || self.pos + (self.buf.len() + 2 * HEADER + payload.len()) as u64 > self.size {
            self.reserve(payload.len() as u64)?;
        }
        let lsn = self.next_lsn;
        self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&record_crc(lsn, payload).to_le_bytes());
        self.buf.extend_from_slice(&lsn.to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.next_lsn += 1;
        self.since_rotate += (HEADER + payload.len()) as u64;
        Ok(lsn)
    }

    /// Writes buffered records, waits until they are on disk, then writes the sync mark that
    /// says so (see the module docs).
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.path().to_owned();
        self.file.write_all_at(&self.buf, self.pos).map_err(io_err(&path))?;
        self.pos += self.buf.len() as u64;
        self.buf.clear();
        self.file.sync_data().map_err(io_err(&path))?;
        let mut mark = [0u8; HEADER];
        mark[..4].copy_from_slice(&SYNC_MARK.to_le_bytes());
        mark[4..8].copy_from_slice(&mark_crc(self.next_lsn).to_le_bytes());
        mark[8..].copy_from_slice(&self.next_lsn.to_le_bytes());
        self.file.write_all_at(&mark, self.pos).map_err(io_err(&path))?;
        self.pos += HEADER as u64;
        Ok(())
    }

    /// Starts a new segment if the open one holds anything; returns the first lsn of the
    /// segment now open (every earlier record is in a closed segment).
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        self.sync()?;
        self.since_rotate = 0;
        self.decoded_since_rotate = 0;
        if self.size > 0 {
            let (file, path) = Self::create_segment(&self.dir, self.next_lsn)?;
            self.file = file;
            self.segments.push((self.next_lsn, path));
            self.pos = 0;
            self.size = 0;
        }
        Ok(self.next_lsn)
    }

    /// Deletes closed segments whose records all have lsn < `keep_from`, then syncs the
    /// folder so that a crash cannot bring them back.
    pub fn truncate_before(&mut self, keep_from: u64) -> Result<(), WalError> {
        self.detach_before(keep_from);
        self.remove_doomed()
    }

    /// Deletes the doomed segments here, oldest first; what cannot be deleted stays doomed.
    pub fn remove_doomed(&mut self) -> Result<(), WalError> {
        let mut doomed = std::mem::take(&mut self.doomed);
        let r = remove_segments(&self.dir, &mut doomed);
        self.doomed = doomed;
        r
    }

    /// Dooms closed segments whose records all have lsn < `keep_from`: [`Wal::take_doomed`]
    /// hands them to whoever deletes them (unlinking a large file takes a while, so the
    /// committer leaves it to another thread). Until then an open finds them and skips them,
    /// as after a crash here.
    pub fn detach_before(&mut self, keep_from: u64) {
        while self.segments.len() > 1 && self.segments[1].0 <= keep_from {
            let (_, path) = self.segments.remove(0);
            self.doomed.push(path);
        }
    }

    /// The doomed segments, oldest first, for [`remove_segments`]; what that leaves must come
    /// back through [`Wal::give_back_doomed`] before the next are taken.
    pub fn take_doomed(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.doomed)
    }

    /// Puts back segments a [`remove_segments`] left (older than any doomed since).
    pub fn give_back_doomed(&mut self, mut left: Vec<PathBuf>) {
        left.append(&mut self.doomed);
        self.doomed = left;
    }

    /// Bytes of records written since the last checkpoint's rotation.
    /// What a replay would read since the last checkpoint: record bytes, or their decoded
    /// size where that was counted and is larger (a compressed record costs a replay its
    /// decoded size: checkpoints by `storage.checkpoint_wal_bytes` bound the replay's work).
    pub fn since_checkpoint(&self) -> u64 {
        self.since_rotate.max(self.decoded_since_rotate)
    }

    /// Counts a record just appended at its decoded size (see [`Wal::since_checkpoint`]).
    pub fn count_decoded(&mut self, bytes: u64) {
        self.decoded_since_rotate += HEADER as u64 + bytes;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the segments take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().filter_map(|(_, p)| fs::metadata(p).ok()).map(|m| m.len()).sum()
    }
}

/// Deletes doomed segments of the WAL in `dir`, oldest first, then syncs the folder; on a
/// failure `paths` keeps the ones not deleted (the failed one first).
pub fn remove_segments(dir: &Path, paths: &mut Vec<PathBuf>) -> Result<(), WalError> {
    let mut removed = 0;
    let mut result = Ok(());
    for path in paths.iter() {
        match fs::remove_file(path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => removed += 1,
            Err(e) => {
                result = Err(io_err(path)(e));
                break;
            }
        }
    }
    if removed > 0 {
        if let Err(e) = sync_dir(dir) {
            // Unsynced removals may come back after a crash: oldest first still, so no gap.
            result = result.and(Err(io_err(dir)(e)));
        }
    }
    paths.drain(..removed);
    result
}

/// Whether every byte is zero (8 at a time: a preallocated segment is mostly zeros).
fn is_zero(data: &[u8]) -> bool {
    let words = data.chunks_exact(8);
    let rest = words.remainder();
    words.into_iter().all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0) && rest.iter().all(|&b| b == 0)
}

/// Whether `data[at..]` starts with a valid sync mark.
fn is_mark(data: &[u8], at: usize) -> bool {
    data.len() - at >= HEADER
        && le32(&data[at..]) == SYNC_MARK
        && le32(&data[at + 4..]) == mark_crc(le64(&data[at + 8..]))
}

type RecordFn<'a> = dyn FnMut(u64, &[u8]) -> Result<(), WalError> + 'a;

/// Reads one segment, calling `f` per record; returns the lsn after its last record.
fn read_segment(
    path: &Path,
    first: u64,
    last: bool,
    salvage: bool,
    report: &mut Salvage,
    f: &mut RecordFn<'_>,
) -> Result<u64, WalError> {
    let mut data = Vec::new();
    let mut fh = OpenOptions::new().read(true).write(last).open(path).map_err(io_err(path))?;
    fh.read_to_end(&mut data).map_err(io_err(path))?;
    let corrupt =
        |offset: usize, detail: String| WalError::Corrupt { path: path.to_owned(), offset: offset as u64, detail };
    if data.is_empty() {
        return Ok(first);
    }
    // The header: a torn one is possible only in the newest segment, before any group was
    // synced into it (it is written with the first group).
    let header_ok = data.len() >= SEGMENT_HEADER
        && &data[..8] == MAGIC
        && le32(&data[24..]) == crc32fast::hash(&data[..24])
        && le64(&data[8..]) == first;
    if !header_ok {
        let marked = !is_zero(&data) && (0..data.len()).any(|i| is_mark(&data, i));
        if last && !marked {
            tracing::warn!(path = %path.display(), "cutting off a write-ahead-log segment whose header was torn by a crash (nothing in it was acknowledged)");
            fh.set_len(0).map_err(io_err(path))?;
            fh.sync_all().map_err(io_err(path))?;
            return Ok(first);
        }
        let detail = "bad segment header".to_string();
        if !salvage {
            return Err(corrupt(0, detail));
        }
        report.skipped.push((path.to_owned(), 0, detail, data.len() as u64));
        return Ok(first);
    }
    let size = le64(&data[16..]);
    if (data.len() as u64) < size {
        let detail = format!("the file has {} of the {size} bytes it was created with: it was cut short", data.len());
        if !salvage {
            return Err(corrupt(data.len(), detail));
        }
        report.skipped.push((path.to_owned(), data.len() as u64, detail, size - data.len() as u64));
    }
    let mut pos = SEGMENT_HEADER;
    let mut lsn = first;
    loop {
        // Each turn: one record, one mark, or the end of the data.
        let problem = if data.len() - pos < HEADER {
            if is_zero(&data[pos..]) {
                break;
            }
            "truncated record header".to_string()
        } else {
            let len = le32(&data[pos..]);
            let crc = le32(&data[pos + 4..]);
            let rec_lsn = le64(&data[pos + 8..]);
            if len == SYNC_MARK && crc == mark_crc(rec_lsn) {
                pos += HEADER;
                continue;
            }
            let len = len as usize;
            if len == 0 && crc == 0 && rec_lsn == 0 {
                "end of data".to_string()
            } else if len >= MAX_RECORD || data.len() - pos - HEADER < len {
                format!("record of {len} bytes runs past the end")
            } else if record_crc(rec_lsn, &data[pos + HEADER..pos + HEADER + len]) != crc {
                "checksum mismatch".to_string()
            } else if rec_lsn != lsn {
                format!("record {rec_lsn} where record {lsn} was expected")
            } else {
                f(lsn, &data[pos + HEADER..pos + HEADER + len])?;
                report.records += 1;
                pos += HEADER + len;
                lsn += 1;
                continue;
            }
        };
        // The data ends at `pos`. Synced bytes after it mean damage; otherwise the rest was
        // never acknowledged. (Zeros hold no mark: the usual end costs one pass.)
        let all_zero = is_zero(&data[pos..]);
        let synced_after =
            if all_zero { None } else { (pos + 1..data.len().saturating_sub(HEADER - 1)).find(|&i| is_mark(&data, i)) };
        match synced_after {
            None if all_zero => break,
            None if last => {
                tracing::warn!(path = %path.display(), offset = pos, %problem, "zeroing a torn write-ahead-log tail (a group that was never synced, so never acknowledged)");
                let zeros = vec![0u8; data.len() - pos];
                fh.seek(SeekFrom::Start(pos as u64)).map_err(io_err(path))?;
                fh.write_all(&zeros).map_err(io_err(path))?;
                fh.sync_all().map_err(io_err(path))?;
                break;
            }
            _ if !salvage => {
                let why = if synced_after.is_some() {
                    "records after it were synced, so acknowledged"
                } else {
                    "an older segment must end in zeros"
                };
                return Err(corrupt(pos, format!("{problem} ({why})")));
            }
            None => {
                report.skipped.push((path.to_owned(), pos as u64, problem, (data.len() - pos) as u64));
                break;
            }
            Some(next) => {
                // Salvage: skip to the next valid record after the damage (or the mark).
                let resume = (pos + 1..next).find(|&i| valid_record_at(&data, i)).unwrap_or(next);
                report.skipped.push((path.to_owned(), pos as u64, problem, (resume - pos) as u64));
                if let Some(l) = (resume < next).then(|| le64(&data[resume + 8..])) {
                    lsn = l;
                } else {
                    lsn = le64(&data[next + 8..]);
                }
                pos = resume;
            }
        }
    }
    Ok(lsn)
}

fn valid_record_at(data: &[u8], at: usize) -> bool {
    if data.len() - at < HEADER {
        return false;
    }
    let len = le32(&data[at..]) as usize;
    len < MAX_RECORD
        && data.len() - at - HEADER >= len
        && record_crc(le64(&data[at + 8..]), &data[at + HEADER..at + HEADER + len]) == le32(&data[at + 4..])
}

#[cfg(test)]
mod tests {
    use super::*;

    type Got = Vec<(u64, Vec<u8>)>;

    fn open(dir: &Path, from: u64, salvage: bool) -> Result<(Wal, Got, Salvage), WalError> {
        let mut got = Vec::new();
        let (wal, rep) = Wal::open(dir, 1 << 20, from, salvage, |lsn, p| {
            got.push((lsn, p.to_vec()));
            Ok(())
        })?;
        Ok((wal, got, rep))
    }

    fn payloads(got: &Got) -> Vec<Vec<u8>> {
        got.iter().map(|g| g.1.clone()).collect()
    }

    /// Groups of records, one sync each; returns the open segment's path.
    fn write_groups(wal: &mut Wal, groups: &[&[&[u8]]]) -> PathBuf {
        for g in groups {
            for p in *g {
                wal.append(p).unwrap();
            }
            wal.sync().unwrap();
        }
        wal.segments.last().unwrap().1.clone()
    }

    #[test]
    fn compressed_records_count_at_their_decoded_size_until_a_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path(), 0, false).unwrap();
        wal.reserve(1 << 10).unwrap();
        wal.append(&[1; 100]).unwrap();
        assert_eq!(wal.since_checkpoint(), (HEADER + 100) as u64);
        // The same record, decoded to 900 bytes: a replay reads that much.
        wal.count_decoded(900);
        assert_eq!(wal.since_checkpoint(), (HEADER + 900) as u64);
        wal.rotate().unwrap();
        assert_eq!(wal.since_checkpoint(), 0);
    }

    #[test]
    fn append_sync_reopen_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, got, _) = open(dir.path(), 0, false).unwrap();
        assert!(got.is_empty());
        for i in 0..10u8 {
            assert_eq!(wal.append(&[i; 3]).unwrap(), u64::from(i));
        }
        wal.sync().unwrap();
        drop(wal);
        let (wal, got, _) = open(dir.path(), 4, false).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(got[0], (4, vec![4; 3]));
        assert_eq!(wal.next_lsn(), 10);
    }

    #[test]
    fn torn_tail_is_zeroed_and_rotation_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path(), 0, false).unwrap();
        write_groups(&mut wal, &[&[b"a", b"b"]]);
        assert_eq!(wal.rotate().unwrap(), 2);
        let last = write_groups(&mut wal, &[&[b"c"]]);
        // a group written but never synced: its bytes, half of them, after the last mark
        let end = wal.pos;
        drop(wal);
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.write_all_at(&[200, 0, 0, 0, 1, 2], end).unwrap();
        drop(f);
        let (mut wal, got, _) = open(dir.path(), 0, false).unwrap();
        assert_eq!(payloads(&got), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(wal.append(b"d").unwrap(), 3);
        wal.sync().unwrap();
        wal.truncate_before(3).unwrap();
        drop(wal);
        let (_, got, _) = open(dir.path(), 3, false).unwrap();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn damage_before_a_sync_mark_stops_the_open_and_salvage_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path(), 0, false).unwrap();
        let path = write_groups(&mut wal, &[&[b"one", b"two"], &[b"three"], &[b"four"]]);
        drop(wal);
        // flip bytes inside "two" (newest segment, but groups after it were synced)
        let mut data = fs::read(&path).unwrap();
        let at = SEGMENT_HEADER + HEADER + 3 + HEADER;
        data[at] ^= 0xff;
        fs::write(&path, &data).unwrap();
        let err = open(dir.path(), 0, false).err().unwrap().to_string();
        assert!(err.contains("damaged at byte") && err.contains(&format!("{}", at - HEADER)), "{err}");
        assert!(err.contains("modelwatch recover"), "{err}");
        let (_, got, rep) = open(dir.path(), 0, true).unwrap();
        assert_eq!(payloads(&got), vec![b"one".to_vec(), b"three".to_vec(), b"four".to_vec()]);
        assert_eq!(rep.skipped.len(), 1, "{rep:?}");
        assert_eq!(rep.records, 3);
    }

    #[test]
    fn a_segment_cut_short_is_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path(), 0, false).unwrap();
        let path = write_groups(&mut wal, &[&[&[7u8; 5000]], &[&[8u8; 5000]]]);
        drop(wal);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
        let err = open(dir.path(), 0, false).err().unwrap().to_string();
        assert!(err.contains("cut short"), "{err}");
    }

    #[test]
    fn damage_in_an_older_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path(), 0, false).unwrap();
        write_groups(&mut wal, &[&[b"hello"]]);
        wal.rotate().unwrap();
        write_groups(&mut wal, &[&[b"world"]]);
        let first = wal.segments[0].1.clone();
        drop(wal);
        let mut data = fs::read(&first).unwrap();
        data[SEGMENT_HEADER + HEADER] ^= 0xff;
        fs::write(&first, data).unwrap();
        let err = open(dir.path(), 0, false).err().unwrap().to_string();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn missing_segments_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path(), 0, false).unwrap();
        write_groups(&mut wal, &[&[b"a"]]);
        wal.rotate().unwrap();
        write_groups(&mut wal, &[&[b"b"]]);
        let first = wal.segments[0].1.clone();
        drop(wal);
        fs::remove_file(first).unwrap();
        let err = open(dir.path(), 0, false).err().unwrap().to_string();
        assert!(err.contains("segments are missing"), "{err}");
    }

    #[test]
    fn big_records_get_a_segment_of_their_own_size() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path(), 0, false).unwrap();
        let big = vec![3u8; 3 << 20];
        wal.reserve(big.len() as u64).unwrap();
        wal.append(&big).unwrap();
        wal.append(b"small").unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, got, _) = open(dir.path(), 0, false).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.len(), 3 << 20);
    }

    /// Doomed segments go oldest first: one that cannot be deleted stops the newer ones, and
    /// stays (with them) for the next try.
    #[test]
    fn a_segment_that_cannot_be_deleted_keeps_the_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("a.wal");
        let stuck = dir.path().join("b.wal");
        let newer = dir.path().join("c.wal");
        std::fs::write(&old, b"x").unwrap();
        // A non-empty directory: remove_file fails on it.
        std::fs::create_dir(&stuck).unwrap();
        std::fs::write(stuck.join("f"), b"x").unwrap();
        std::fs::write(&newer, b"x").unwrap();
        let mut list = vec![old.clone(), stuck.clone(), newer.clone()];
        assert!(remove_segments(dir.path(), &mut list).is_err());
        assert_eq!(list, vec![stuck.clone(), newer.clone()]);
        assert!(!old.exists() && newer.exists());
        std::fs::remove_dir_all(&stuck).unwrap();
        remove_segments(dir.path(), &mut list).unwrap();
        assert!(list.is_empty() && !newer.exists());
    }
}
