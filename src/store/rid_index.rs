//! Request-id index, LSM-style: one sled insert per indexed record capped ingest of events that
//! carry a request id near 200k/s, so entries are kept in memory (rebuilt by WAL replay) and
//! written at each checkpoint as one sorted run of `(hash64(request id), time key)` pairs, with
//! one sled catalog entry per run. Runs of a similar size are merged (size-tiered, streaming:
//! a merge holds a buffer per run, not the runs) so their count stays logarithmic; the
//! committer merges on a thread of its own after a checkpoint ([`RidIndex::maybe_merge`]), so
//! that checkpoints never wait for a merge. Retention drops runs whose newest entry has
//! expired. A hash match is only a candidate: the reader compares the record's request id.
//!
//! Look-ups stay near constant as the index grows (measured: `modelwatch loadgen --kind events
//! --request-ids --lookups N`). In memory, entries are split by the top byte of their hash, so
//! a look-up scans a 256th of them; each run keeps the hash of every [`FENCE`]-th entry in
//! memory (8 bytes per 128 entries), so a look-up reads one block of a run with one `pread`.
//! Before both, a look-up at 400,000 events in memory took 4–6 ms, a scan of all of them.
//!
//! Each run is a file of its own (`DATA/rid/<events|logs>/NNNNNNNNNNNNNNNNNNNN.run`): merges
//! and expiry delete whole files, so the space of merged-away runs is returned at once (in the
//! shared block files it stayed until the whole file expired: the index took several times its
//! size). A run file is synced before its catalog entry is written; files the catalog no longer
//! names are deleted only after the next sled flush ([`RidIndex::take_doomed`]), and at open
//! any file the catalog does not name (a checkpoint that did not finish) is deleted.
//!
//! Runs are written in the packed layout of [`rid_block`], in the form [`WRITTEN`]: since
//! 2026-12-06 an entry locates a record's group (WAL record and 10-second slot), not the record,
//! and `GetRequest` finds the records in the group by their request id; since 7d40854 a run
//! names each entry's group by its number in the run's table of groups ([`Form::Numbered`],
//! unless the run has about a group per entry). Runs of the forms before, which located the
//! record or kept each entry's slot and lsn, are read and merged into the new form.
//!
//! The fixed layout of runs written before 2026-12-05 (read, and merged away): `count: u64
//! BE`, then `count` entries of `hash: u64 BE | time key: 20 bytes`, sorted, then `crc32` of
//! all that (checked when a merge reads the run), then the fences: the hash of entries 0,
//! FENCE, 2·FENCE, … (u64 BE) and their `crc32` (checked at open). Runs written before fences
//! existed end after the first checksum; their fences are read at open.
//! Catalog entry: run id (u64 BE) → `count: u64 | oldest ts | newest ts` (i64 BE), then for a
//! packed run one byte naming its form (2: records, 3: groups, 4: numbered groups).
use super::blocks::Blocks;
use super::keys;
use super::rid_block::{self, Form, Group};
use super::StoreError;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const ENTRY: usize = 28;
/// Runs are merged once this many have a similar size.
const MERGE_FAN_IN: usize = 8;
/// Entries per fence (see the module documentation): a look-up reads `FENCE × 28` bytes of a run.
const FENCE: u64 = 128;

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
    layout: Layout,
}

/// How a run file lays its entries out.
#[derive(Clone)]
enum Layout {
    /// 28 bytes an entry (written before 2026-12-05); `fences`: the hash of entries 0, FENCE,
    /// 2·FENCE, ….
    Fixed { fences: Arc<Vec<u64>> },
    /// Blocks of [`rid_block::BLOCK`] entries of `form`: each one's first (masked) hash, and
    /// where each begins (one more offset: where the last ends); the run's groups (numbered
    /// form only); the file's length.
    Packed { form: Form, fences: Arc<Vec<u64>>, offsets: Arc<Vec<u64>>, groups: Arc<Vec<Group>>, len: u64 },
}

impl Layout {
    fn packed(form: Form, table: Vec<(u64, u64)>, groups: Vec<Group>, end: u64, len: u64) -> Layout {
        let offsets = table.iter().map(|t| t.1).chain([end]).collect();
        let fences = Arc::new(table.into_iter().map(|t| t.0).collect());
        Layout::Packed { form, fences, offsets: Arc::new(offsets), groups: Arc::new(groups), len }
    }

    /// Bytes the run file takes.
    fn bytes(&self, count: u64) -> u64 {
        match self {
            Layout::Fixed { fences } => 16 + count * ENTRY as u64 + fences.len() as u64 * 8,
            Layout::Packed { len, .. } => *len,
        }
    }
}

/// (hash64 of a request id, time key of its record).
type Entry = rid_block::Entry;

/// Entries since the last checkpoint, unsorted: one push per record on the ingest path (a map
/// of vectors cost an allocation per request id); sorted once when written as a run. They are
/// split into [`PARTS`] partitions by the top byte of the hash, so a look-up scans one. In
/// each partition, full chunks of [`SEAL`] entries are sealed (shared, immutable): a look-up
/// copies their handles and scans only the open chunk under the lock, so a GetRequest never
/// holds the committer up for longer than that.
struct Mem {
    parts: Vec<Part>,
    len: usize,
    min_ts: i64,
    max_ts: i64,
    /// The entries' groups, for the run's table: a batch's entries share their WAL record and
    /// mostly their slot, so a set insert is only needed when the group changes (a set insert
    /// per entry at the flush cost 1.1 s per 8 M entries).
    groups: BTreeSet<Group>,
    last_group: Option<Group>,
}

#[derive(Default)]
struct Part {
    sealed: Vec<Arc<Vec<Entry>>>,
    open: Vec<Entry>,
}

const PARTS: usize = 256;
const SEAL: usize = 4096;

fn part_of(h: u64) -> usize {
    (h >> 56) as usize
}

impl Default for Mem {
    fn default() -> Mem {
        Mem {
            parts: (0..PARTS).map(|_| Part::default()).collect(),
            len: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            groups: BTreeSet::new(),
            last_group: None,
        }
    }
}

impl Mem {
    fn put(&mut self, e: Entry, ts: i64) {
        // A time key that does not decode (none does: the committer builds them) is refused
        // by the run's writer, which finds no group for it.
        if let Ok(g) = group_of(&e) {
            if self.last_group != Some(g) {
                self.groups.insert(g);
                self.last_group = Some(g);
            }
        }
        let p = &mut self.parts[part_of(e.0)];
        p.open.push(e);
        if p.open.len() >= SEAL {
            let full = std::mem::take(&mut p.open);
            p.sealed.push(Arc::new(full));
        }
        self.len += 1;
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
    }

    /// Every entry, sorted, without duplicates: partition by partition (they are in hash
    /// order), each sorted on its own.
    fn sorted(&self) -> Vec<Entry> {
        let mut out = Vec::with_capacity(self.len);
        for p in &self.parts {
            let start = out.len();
            for c in &p.sealed {
                out.extend_from_slice(c);
            }
            out.extend_from_slice(&p.open);
            out[start..].sort_unstable();
        }
        out.dedup();
        out
    }
}

/// What a flush has taken from memory: as it was, then sorted (so that the unsorted copy is
/// not held while the run is written).
#[derive(Clone)]
enum Flushing {
    Taken(Arc<Mem>),
    Sorted(Arc<Vec<Entry>>),
}

/// Writes a run file entry by entry in a packed layout, [`WRITTEN`] but in tests (sorted input,
/// consecutive duplicates dropped); nothing of it is named by the catalog until
/// [`RidIndex::add_run`].
struct RunWriter {
    form: Form,
    out: BufWriter<File>,
    id: u64,
    path: PathBuf,
    /// Entries of the block being filled.
    block: Vec<Entry>,
    /// The run's groups ([`Form::Numbered`]), sorted: every entry's must be among them; and
    /// their numbers.
    groups: Vec<Group>,
    numbers: rid_block::Numbers,
    buf: Vec<u8>,
    /// (first hash, offset) of each block written.
    table: Vec<(u64, u64)>,
    offset: u64,
    count: u64,
    last: Option<Entry>,
}

impl RunWriter {
    fn create(dir: &Path, id: u64, form: Form, groups: Vec<Group>) -> Result<RunWriter, StoreError> {
        let path = run_path(dir, id);
        let f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).map_err(io(&path))?;
        let out = BufWriter::with_capacity(1 << 16, f);
        let block = Vec::with_capacity(rid_block::BLOCK);
        let (buf, table) = (Vec::new(), Vec::new());
        let numbers = rid_block::Numbers::new(&groups);
        Ok(RunWriter { form, out, id, path, block, groups, numbers, buf, table, offset: 0, count: 0, last: None })
    }

    fn push(&mut self, e: Entry) -> Result<(), StoreError> {
        let e = self.form.entry(e);
        if self.last == Some(e) {
            return Ok(());
        }
        self.block.push(e);
        self.count += 1;
        self.last = Some(e);
        if self.block.len() == rid_block::BLOCK {
            self.write_block()?;
        }
        Ok(())
    }

    fn write_block(&mut self) -> Result<(), StoreError> {
        self.buf.clear();
        rid_block::encode(&self.block, self.form, &self.numbers, &mut self.buf)?;
        self.out.write_all(&self.buf).map_err(io(&self.path))?;
        self.table.push((self.block[0].0, self.offset));
        self.offset += self.buf.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the last block and the table, and syncs the file.
    fn finish(mut self) -> Result<(File, u64, Layout), StoreError> {
        if !self.block.is_empty() {
            self.write_block()?;
        }
        let groups = if self.form.numbered() { std::mem::take(&mut self.groups) } else { Vec::new() };
        let mut t = Vec::with_capacity((self.table.len() + groups.len()) * 16 + self.form.tail_len());
        rid_block::encode_table(&self.table, &groups, self.count, self.form, &mut t);
        self.out.write_all(&t).map_err(io(&self.path))?;
        let RunWriter { form, out, path, table, offset, count, .. } = self;
        let f = out.into_inner().map_err(|e| io(&path)(e.into_error()))?;
        f.sync_all().map_err(io(&path))?;
        let len = offset + t.len() as u64;
        Ok((f, count, Layout::packed(form, table, groups, offset, len)))
    }
}

/// Reads a run's entries in order for a merge, checking its checksums.
enum RunReader {
    Fixed {
        r: BufReader<File>,
        path: PathBuf,
        left: u64,
        crc: crc32fast::Hasher,
    },
    Packed {
        form: Form,
        file: Arc<File>,
        offsets: Arc<Vec<u64>>,
        groups: Arc<Vec<Group>>,
        path: PathBuf,
        next: usize,
        entries: std::vec::IntoIter<Entry>,
    },
}

impl RunReader {
    fn open(dir: &Path, run: &Run) -> Result<RunReader, StoreError> {
        let path = run_path(dir, run.id);
        if let Layout::Packed { form, offsets, groups, .. } = &run.layout {
            let (form, file, offsets, groups) = (*form, run.file.clone(), offsets.clone(), groups.clone());
            let entries = Vec::new().into_iter();
            return Ok(RunReader::Packed { form, file, offsets, groups, path, next: 0, entries });
        }
        let f = File::open(&path).map_err(io(&path))?;
        let mut r = BufReader::with_capacity(1 << 16, f);
        let mut head = [0u8; 8];
        r.read_exact(&mut head).map_err(io(&path))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        if u64::from_be_bytes(head) != run.count {
            return Err(StoreError::Open {
                path,
                detail: format!(
                    "request-id run holds {} entries, its catalog entry says {}",
                    u64::from_be_bytes(head),
                    run.count
                ),
            });
        }
        Ok(RunReader::Fixed { r, path, left: run.count, crc })
    }

    fn next(&mut self) -> Result<Option<Entry>, StoreError> {
        match self {
            RunReader::Packed { form, file, offsets, groups, path, next, entries } => loop {
                if let Some(e) = entries.next() {
                    return Ok(Some(e));
                }
                if *next + 1 >= offsets.len() {
                    return Ok(None);
                }
                *entries = read_block(path, file, *form, groups, offsets, *next)?.into_iter();
                *next += 1;
            },
            RunReader::Fixed { r, path, left, crc } => {
                if *left == 0 {
                    let mut c = [0u8; 4];
                    r.read_exact(&mut c).map_err(io(path))?;
                    if std::mem::take(crc).finalize() != u32::from_be_bytes(c) {
                        return Err(StoreError::Open {
                            path: path.clone(),
                            detail: "request-id run: checksum mismatch".into(),
                        });
                    }
                    return Ok(None);
                }
                let mut b = [0u8; ENTRY];
                r.read_exact(&mut b).map_err(io(path))?;
                crc.update(&b);
                *left -= 1;
                Ok(Some(entry(&b)))
            }
        }
    }
}

/// Block `i` of a packed run (`form`, `groups`, `offsets`: its layout's), its checksum checked.
fn read_block(
    path: &Path,
    file: &File,
    form: Form,
    groups: &[Group],
    offsets: &[u64],
    i: usize,
) -> Result<Vec<Entry>, StoreError> {
    let mut b = vec![0u8; (offsets[i + 1] - offsets[i]) as usize];
    file.read_exact_at(&mut b, offsets[i]).map_err(io(path))?;
    rid_block::decode(&b, form, groups)
        .map_err(|e| StoreError::Open { path: path.to_owned(), detail: format!("request-id run: {e}") })
}

/// A packed run file's table (and groups), from its tail, checked against its checksum and
/// the catalog.
fn read_table(path: &Path, file: &File, form: Form, count: u64) -> Result<Layout, StoreError> {
    let damaged =
        |detail: String| StoreError::Open { path: path.to_owned(), detail: format!("request-id run: {detail}") };
    let len = file.metadata().map_err(io(path))?.len();
    let tail_len = form.tail_len() as u64;
    if len < tail_len {
        return Err(damaged(format!("{len} bytes, too short for a run")));
    }
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact_at(&mut tail, len - tail_len).map_err(io(path))?;
    let t = rid_block::decode_tail(&tail, form).map_err(|e| damaged(e.to_string()))?;
    if t.count != count {
        return Err(damaged(format!("holds {} entries, its catalog entry says {count}", t.count)));
    }
    let table_len = t.table_bytes().filter(|&b| b.checked_add(tail_len).is_some_and(|all| all <= len));
    let table_len = table_len
        .ok_or_else(|| damaged(format!("{} blocks and {} groups do not fit in {len} bytes", t.blocks, t.groups)))?;
    let end = len - tail_len - table_len;
    let mut b = vec![0u8; table_len as usize];
    file.read_exact_at(&mut b, end).map_err(io(path))?;
    let (groups, table) = rid_block::decode_table(&b, &tail, &t).map_err(|e| damaged(e.to_string()))?;
    if table.windows(2).any(|w| w[1].1 <= w[0].1) || table.last().is_some_and(|l| l.1 >= end) {
        return Err(damaged("block offsets out of order".into()));
    }
    Ok(Layout::packed(form, table, groups, end, len))
}

/// A run file's fences: from its tail, checked against their checksum, or for a run written
/// before fences existed, read entry by entry.
fn read_fences(path: &Path, file: &File, count: u64) -> Result<Vec<u64>, StoreError> {
    let damaged = |detail: String| StoreError::Open { path: path.to_owned(), detail };
    let len = file.metadata().map_err(io(path))?.len();
    let body = 12 + count * ENTRY as u64;
    let n = count.div_ceil(FENCE);
    if len == body {
        let mut out = Vec::with_capacity(n as usize);
        let mut h = [0u8; 8];
        for j in 0..n {
            file.read_exact_at(&mut h, 8 + j * FENCE * ENTRY as u64).map_err(io(path))?;
            out.push(u64::from_be_bytes(h));
        }
        return Ok(out);
    }
    if len != body + n * 8 + 4 {
        return Err(damaged(format!(
            "request-id run of {count} entries is {len} bytes long, expected {} (or {body} without fences)",
            body + n * 8 + 4
        )));
    }
    let mut b = vec![0u8; n as usize * 8 + 4];
    file.read_exact_at(&mut b, body).map_err(io(path))?;
    let (f, c) = b.split_at(n as usize * 8);
    if crc32fast::hash(f) != u32::from_be_bytes(c.try_into().expect("4 bytes")) {
        return Err(damaged("request-id run: fences' checksum mismatch".into()));
    }
    Ok(f.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes"))).collect())
}

pub struct RidIndex {
    dir: PathBuf,
    catalog: sled::Tree,
    mem: Mutex<Mem>,
    runs: Mutex<Vec<Run>>,
    /// Run files no longer in the catalog, deleted after the next sled flush.
    doomed: Mutex<Vec<PathBuf>>,
    /// The entries a flush took from memory, until its run is in `runs`: look-ups read them
    /// there meanwhile (else a `GetRequest` during a checkpoint missed the records it was
    /// writing: CI found it, 2026-12-05).
    flushing: Mutex<Option<Flushing>>,
    /// The next run's id: flushes (checkpoint thread) and merges (a thread of their own) both
    /// take ids, so they come from a counter, not from the runs in the list.
    next_id: AtomicU64,
    /// Held by a merge: one at a time.
    merging: Mutex<()>,
}

/// What [`RidIndex::maybe_merge`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    pub merges: u64,
    pub entries: u64,
    /// True when `stop` was raised: the merge in progress was given up, its inputs kept.
    pub stopped: bool,
}

/// A merge checks its stop flag every this many entries.
const STOP_EVERY: u64 = 1 << 16;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

fn run_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.run"))
}

/// A run's catalog value; the last byte names the packed form (24 bytes: fixed layout).
fn catalog_value(count: u64, min_ts: i64, max_ts: i64, form: Form) -> [u8; 25] {
    let mut v = [0u8; 25];
    v[..8].copy_from_slice(&count.to_be_bytes());
    v[8..16].copy_from_slice(&min_ts.to_be_bytes());
    v[16..24].copy_from_slice(&max_ts.to_be_bytes());
    v[24] = form_byte(form);
    v
}

/// The form new runs are written in (but for runs of nearly as many groups as entries: see
/// [`Form::numbering_pays`]); runs of the others are read, and merged into it.
const WRITTEN: Form = Form::Numbered;

fn form_byte(f: Form) -> u8 {
    match f {
        Form::Records => 2,
        Form::Groups => 3,
        Form::Numbered => 4,
    }
}

fn form_of(byte: u8) -> Option<Form> {
    [Form::Records, Form::Groups, Form::Numbered].into_iter().find(|&f| form_byte(f) == byte)
}

/// The group (slot start, lsn) an entry locates.
fn group_of(e: &Entry) -> Result<Group, StoreError> {
    Ok(rid_block::group_of(&e.1)?)
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
            // A run's value: 24 bytes in the fixed layout, 25 when packed (the last byte names
            // the form).
            let packed = match v.len() {
                25 => form_of(v[24]),
                _ => None,
            };
            match v.len() {
                24 | 25 if v.len() == 24 || packed.is_some() => {
                    let count = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                    let min_ts = i64::from_be_bytes(v[8..16].try_into().expect("8 bytes"));
                    let max_ts = i64::from_be_bytes(v[16..24].try_into().expect("8 bytes"));
                    let path = run_path(dir, id);
                    let file = File::open(&path).map_err(|e| StoreError::Open {
                        path: path.clone(),
                        detail: format!("request-id run named by the catalog: {e}"),
                    })?;
                    let layout = if let Some(form) = packed {
                        read_table(&path, &file, form, count)?
                    } else {
                        Layout::Fixed { fences: Arc::new(read_fences(&path, &file, count)?) }
                    };
                    runs.push(Run { id, count, min_ts, max_ts, file: Arc::new(file), layout });
                }
                36 => {
                    // modelwatch 0.1 kept runs in the block files.
                    let r = keys::decode_block_ref(&v[..28])?;
                    let data = blocks.read(&r.loc())?;
                    for c in data.get(8..).unwrap_or(&[]).chunks_exact(ENTRY) {
                        let e = entry(c);
                        mem.put(e, keys::decode_time_key(&e.1)?.0);
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
        let next_id = runs.iter().map(|r| r.id + 1).max().unwrap_or(1);
        Ok(RidIndex {
            dir: dir.to_owned(),
            catalog,
            mem: Mutex::new(mem),
            runs: Mutex::new(runs),
            doomed: Mutex::new(Vec::new()),
            flushing: Mutex::new(None),
            next_id: AtomicU64::new(next_id),
            merging: Mutex::new(()),
        })
    }

    /// Adds one batch's `(request id hash, time key, ts)` entries.
    pub fn add(&self, entries: &[(u64, [u8; 20], i64)]) {
        if entries.is_empty() {
            return;
        }
        let mut m = lock(&self.mem);
        for (h, tk, ts) in entries {
            m.put((*h, *tk), *ts);
        }
    }

    /// Writes what memory holds as a run (checkpoints call this before sled's flush). On
    /// failure the entries stay in memory for the next checkpoint. Runs are merged apart from
    /// this ([`RidIndex::maybe_merge`]): at 100 M events a merge took 6–10 s, and a checkpoint
    /// that waited for it held the next one up while the WAL and memory grew.
    pub fn flush(&self) -> Result<(), StoreError> {
        let m = {
            let mut mem = lock(&self.mem);
            if mem.len == 0 {
                return Ok(());
            }
            let m = Arc::new(std::mem::take(&mut *mem));
            *lock(&self.flushing) = Some(Flushing::Taken(m.clone()));
            m
        };
        let (min_ts, max_ts) = (m.min_ts, m.max_ts);
        let groups: Vec<Group> = m.groups.iter().copied().collect();
        let entries = Arc::new(m.sorted());
        *lock(&self.flushing) = Some(Flushing::Sorted(entries.clone()));
        drop(m);
        let written = self.new_run(entries.len() as u64, groups).and_then(|mut w| {
            for e in entries.iter() {
                w.push(*e)?;
            }
            self.add_run(w, min_ts, max_ts)
        });
        if let Err(e) = written {
            let mut cur = lock(&self.mem);
            for (i, &en) in entries.iter().enumerate() {
                // min/max stay those of the whole set.
                cur.put(en, if i == 0 { min_ts } else { max_ts });
            }
            *lock(&self.flushing) = None;
            return Err(e);
        }
        // The run is in `runs` (add_run): the taken entries may go.
        *lock(&self.flushing) = None;
        Ok(())
    }

    /// A writer for the next run id (ids only grow), of about
    /// `entries` entries in `groups`, in [`WRITTEN`] or where that costs more, [`Form::Groups`]
    /// ([`Form::numbering_pays`]).
    fn new_run(&self, entries: u64, groups: Vec<Group>) -> Result<RunWriter, StoreError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if Form::numbering_pays(entries, &groups) {
            RunWriter::create(&self.dir, id, WRITTEN, groups)
        } else {
            RunWriter::create(&self.dir, id, Form::Groups, Vec::new())
        }
    }

    /// The groups of a run's entries: its table, or for a run of an older form, read from its
    /// entries.
    fn run_groups(&self, run: &Run) -> Result<Vec<Group>, StoreError> {
        if let Layout::Packed { form: Form::Numbered, groups, .. } = &run.layout {
            return Ok(groups.to_vec());
        }
        let mut r = RunReader::open(&self.dir, run)?;
        let mut set = BTreeSet::new();
        while let Some(e) = r.next()? {
            set.insert(group_of(&e)?);
        }
        Ok(set.into_iter().collect())
    }

    /// Finishes a run file and names it in the catalog.
    fn add_run(&self, w: RunWriter, min_ts: i64, max_ts: i64) -> Result<(), StoreError> {
        let (id, path, form) = (w.id, w.path.clone(), w.form);
        let (f, count, layout) = match w.finish() {
            Ok(x) => x,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        // On disk, with its directory entry, before the catalog names it.
        super::wal::sync_dir(&self.dir).map_err(io(&self.dir))?;
        self.catalog.insert(keys::series_key(id), &catalog_value(count, min_ts, max_ts, form)[..])?;
        lock(&self.runs).push(Run { id, count, min_ts, max_ts, file: Arc::new(f), layout });
        Ok(())
    }

    /// Size-tiered merges: while `MERGE_FAN_IN` runs share a size tier, they become one. Safe
    /// beside flushes and look-ups; the caller keeps expiry off meanwhile (the store holds its
    /// maintenance lock, which retention takes too), so that no input expires mid-merge.
    /// `stop` gives up a merge in progress within [`STOP_EVERY`] entries (shutdown): its
    /// inputs stay, its partial output is deleted.
    pub fn maybe_merge(&self, stop: &AtomicBool) -> Result<Merged, StoreError> {
        let _one = lock(&self.merging);
        let mut done = Merged::default();
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
                    None => return Ok(done),
                }
            };
            if stop.load(Ordering::Relaxed) {
                done.stopped = true;
                return Ok(done);
            }
            let entries = group.iter().map(|r| r.count).sum::<u64>();
            if !self.merge(&group, stop)? {
                done.stopped = true;
                return Ok(done);
            }
            done.merges += 1;
            done.entries += entries;
        }
    }

    /// Merges `group` into one run; false when `stop` gave it up.
    fn merge(&self, group: &[Run], stop: &AtomicBool) -> Result<bool, StoreError> {
        // A k-way merge of the sorted runs: memory holds a buffer per run, whatever their size.
        let began = std::time::Instant::now();
        let mut groups = BTreeSet::new();
        for r in group {
            groups.extend(self.run_groups(r)?);
        }
        let mut readers = group.iter().map(|r| RunReader::open(&self.dir, r)).collect::<Result<Vec<_>, _>>()?;
        let mut w = self.new_run(group.iter().map(|r| r.count).sum(), groups.into_iter().collect())?;
        let merged = (|| {
            let mut heap = BinaryHeap::with_capacity(readers.len());
            for (i, r) in readers.iter_mut().enumerate() {
                if let Some(e) = r.next()? {
                    heap.push(Reverse((e, i)));
                }
            }
            let mut n = 0u64;
            while let Some(Reverse((e, i))) = heap.pop() {
                w.push(e)?;
                if let Some(next) = readers[i].next()? {
                    heap.push(Reverse((next, i)));
                }
                n += 1;
                if n.is_multiple_of(STOP_EVERY) && stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
            }
            Ok::<_, StoreError>(true)
        })();
        if !matches!(merged, Ok(true)) {
            // Stopped, or a damaged input: the inputs stay as they are, the partial output goes.
            let _ = fs::remove_file(&w.path);
            return merged;
        }
        drop(readers);
        let min_ts = group.iter().map(|r| r.min_ts).min().unwrap_or(i64::MIN);
        let max_ts = group.iter().map(|r| r.max_ts).max().unwrap_or(i64::MAX);
        let out = w.id;
        self.add_run(w, min_ts, max_ts)?;
        self.remove(&group.iter().map(|r| r.id).collect::<Vec<_>>())?;
        tracing::info!(
            runs = group.len(),
            entries = group.iter().map(|r| r.count).sum::<u64>(),
            run = out,
            ms = began.elapsed().as_millis() as u64,
            "request-id runs merged"
        );
        Ok(true)
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
            let p = &m.parts[part_of(h)];
            (p.open.iter().filter(|e| e.0 == h).map(|e| e.1).collect(), p.sealed.clone())
        };
        for chunk in sealed {
            out.extend(chunk.iter().filter(|e| e.0 == h).map(|e| e.1));
        }
        // Then what a flush is writing, then the runs: an entry a flush takes from memory is
        // in `flushing` until its run is in `runs`.
        let flushing = lock(&self.flushing).clone();
        match flushing {
            Some(Flushing::Taken(m)) => {
                let p = &m.parts[part_of(h)];
                for chunk in p.sealed.iter().map(|c| &c[..]).chain([&p.open[..]]) {
                    out.extend(chunk.iter().filter(|e| e.0 == h).map(|e| e.1));
                }
            }
            Some(Flushing::Sorted(v)) => {
                let from = v.partition_point(|e| e.0 < h);
                out.extend(v[from..].iter().take_while(|e| e.0 == h).map(|e| e.1));
            }
            None => {}
        }
        let runs: Vec<Run> = lock(&self.runs).clone();
        for run in runs {
            match &run.layout {
                Layout::Fixed { fences } => self.lookup_fixed(&run, fences, h, &mut out)?,
                Layout::Packed { form, fences, offsets, groups, .. } => {
                    // Packed runs keep the hash's top bits: compare those.
                    let h = form.mask(h);
                    let path = run_path(&self.dir, run.id);
                    let mut block = fences.partition_point(|&f| f < h).saturating_sub(1);
                    'blocks: while block < fences.len() {
                        for (eh, tk) in read_block(&path, &run.file, *form, groups, offsets, block)? {
                            if eh == h {
                                out.insert(tk);
                            } else if eh > h {
                                break 'blocks;
                            }
                        }
                        block += 1;
                    }
                }
            }
        }
        Ok(out)
    }

    /// A look-up in a run of the fixed layout: one read of `FENCE` entries, or more where
    /// equal hashes cross a fence.
    fn lookup_fixed(&self, run: &Run, fences: &[u64], h: u64, out: &mut BTreeSet<[u8; 20]>) -> Result<(), StoreError> {
        let mut buf = vec![0u8; FENCE as usize * ENTRY];
        // The fence block where entries with hash h begin: the last fence below h (equal
        // hashes may start before a fence that equals h).
        let mut block = fences.partition_point(|&f| f < h).saturating_sub(1) as u64;
        loop {
            let first = block * FENCE;
            if first >= run.count {
                return Ok(());
            }
            let n = FENCE.min(run.count - first) as usize;
            let b = &mut buf[..n * ENTRY];
            run.file.read_exact_at(b, 8 + first * ENTRY as u64).map_err(io(&run_path(&self.dir, run.id)))?;
            for c in b.chunks_exact(ENTRY) {
                let (eh, tk) = entry(c);
                if eh == h {
                    out.insert(tk);
                } else if eh > h {
                    return Ok(());
                }
            }
            block += 1;
        }
    }

    /// Drops runs whose newest entry is older than `cutoff`.
    pub fn expire(&self, cutoff: i64) -> Result<(), StoreError> {
        let old: Vec<u64> = lock(&self.runs).iter().filter(|r| r.max_ts < cutoff).map(|r| r.id).collect();
        self.remove(&old)
    }

    /// Bytes the run files take.
    pub fn disk_bytes(&self) -> u64 {
        lock(&self.runs).iter().map(|r| r.layout.bytes(r.count)).sum()
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

    /// The sorted, distinct groups of `entries`.
    fn groups_of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Result<Vec<Group>, StoreError> {
        let mut set = BTreeSet::new();
        for e in entries {
            set.insert(group_of(e)?);
        }
        Ok(set.into_iter().collect())
    }

    fn merge(ix: &RidIndex) -> Result<Merged, StoreError> {
        ix.maybe_merge(&AtomicBool::new(false))
    }

    fn open_index(dir: &Path) -> (sled::Db, Blocks, PathBuf, RidIndex) {
        let db = sled::Config::new().path(dir.join("db")).open().unwrap();
        let blocks = Blocks::open(&dir.join("blocks"), 1 << 20).unwrap();
        let rid = dir.join("rid");
        let ix = RidIndex::open(db.open_tree("runs").unwrap(), &rid, &blocks).unwrap();
        (db, blocks, rid, ix)
    }

    fn run_files(rid: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(rid).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    }

    /// A run in the fixed layout, as builds before the packed one wrote it (`fences`: with its
    /// fences, as from 2026-11-24), named by the catalog.
    fn write_fixed(catalog: &sled::Tree, rid: &Path, id: u64, entries: &[Entry], fences: bool) {
        let mut body = (entries.len() as u64).to_be_bytes().to_vec();
        for e in entries {
            body.extend_from_slice(&e.0.to_be_bytes());
            body.extend_from_slice(&e.1);
        }
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        if fences {
            let mut fb: Vec<u8> = entries.iter().step_by(FENCE as usize).flat_map(|e| e.0.to_be_bytes()).collect();
            let c = crc32fast::hash(&fb);
            fb.extend_from_slice(&c.to_be_bytes());
            body.extend_from_slice(&fb);
        }
        fs::write(run_path(rid, id), body).unwrap();
        let ts = |e: &Entry| keys::decode_time_key(&e.1).unwrap().0;
        let (lo, hi) = (entries.iter().map(ts).min().unwrap(), entries.iter().map(ts).max().unwrap());
        catalog.insert(keys::series_key(id), &catalog_value(entries.len() as u64, lo, hi, WRITTEN)[..24]).unwrap();
    }

    /// A packed run of `form` (records: as builds of 2026-12-05 wrote them; groups: as those of
    /// 424d295 to 3e0e13f did), named by the catalog.
    fn write_packed(catalog: &sled::Tree, rid: &Path, id: u64, entries: &[Entry], form: Form) {
        let groups = if form.numbered() { groups_of(entries).unwrap() } else { Vec::new() };
        let mut w = RunWriter::create(rid, id, form, groups).unwrap();
        for e in entries {
            w.push(*e).unwrap();
        }
        let (_, count, _) = w.finish().unwrap();
        let ts = |e: &Entry| keys::decode_time_key(&e.1).unwrap().0;
        let (lo, hi) = (entries.iter().map(ts).min().unwrap(), entries.iter().map(ts).max().unwrap());
        catalog.insert(keys::series_key(id), &catalog_value(count, lo, hi, form)[..]).unwrap();
    }

    #[test]
    fn lookups_cross_blocks_partitions_and_every_layout() {
        let dir = tempfile::tempdir().unwrap();
        let (db, blocks, rid, ix) = open_index(dir.path());
        // 5,000 entries of one request id (20 blocks, sealed chunks in memory), among 10,000
        // of other hashes in the same partition, two of them its neighbours in the kept bits.
        let h = hash("x");
        // 100 records of a WAL record each.
        let tk = |i: u32| keys::time_key(1_000 + i as i64, 7 + u64::from(i / 100), i);
        let mut batch: Vec<(u64, [u8; 20], i64)> = (0..5_000).map(|i| (h, tk(i), 1_000)).collect();
        for i in 0..10_000u64 {
            let other = (h & 0xff00_0000_0000_0000) | ((i * 0x0000_1000_0000_0001) & 0x00ff_ffff_ffff_ffff);
            if WRITTEN.mask(other) != WRITTEN.mask(h) {
                batch.push((other, tk(i as u32), 1_000));
            }
        }
        let step = 1 << (64 - WRITTEN.bits());
        batch.push((h - step, tk(1), 1_000));
        batch.push((h + step, tk(2), 1_000));
        // Differs only in bits a packed run drops: a candidate there, which the reader's check
        // of the request id turns away.
        let near = keys::time_key(5, 5, 5);
        batch.push((h ^ 1, near, 1_000));
        ix.add(&batch);
        assert!(lock(&ix.mem).parts[part_of(h)].sealed.len() >= 3, "the partition sealed chunks");
        assert_eq!(ix.lookup("x").unwrap(), (0..5_000).map(tk).collect::<BTreeSet<_>>(), "from memory");
        ix.flush().unwrap();
        // A packed run gives the slot's start for the time (the reader takes it from the record)
        // and, written as groups, ANY for the index (the reader finds the records in the group).
        let mut want: BTreeSet<_> = (0..5_000).map(|i| WRITTEN.entry((h, tk(i))).1).collect();
        want.insert(WRITTEN.entry((h, near)).1);
        assert_eq!(want.len(), 51, "x's 50 groups and near's");
        assert!(want.iter().all(|k| k[16..] == rid_block::ANY.to_be_bytes()));
        assert_eq!(ix.lookup("x").unwrap(), want, "from the packed run");
        assert!(ix.lookup("y").unwrap().is_empty());
        let packed = lock(&ix.runs)[0].clone();
        assert_eq!(fs::metadata(run_path(&rid, packed.id)).unwrap().len(), packed.layout.bytes(packed.count));
        assert!(packed.layout.bytes(packed.count) < packed.count * 7, "{} bytes", packed.layout.bytes(packed.count));
        drop(ix);
        // Runs of the fixed layout, with fences and from before them, and packed runs of
        // records (2026-12-05) and of groups (2026-12-06) answer beside it.
        let entries = |salt: u32| {
            let mut v: Vec<Entry> = (0..1_000).map(|i| (hash(&format!("f{i}")), tk(i + salt))).collect();
            v.push((hash("x"), tk(9_000 + salt)));
            v.sort();
            v
        };
        let catalog = db.open_tree("runs").unwrap();
        write_fixed(&catalog, &rid, 100, &entries(0), true);
        write_fixed(&catalog, &rid, 101, &entries(1), false);
        write_packed(&catalog, &rid, 102, &entries(2), Form::Records);
        write_packed(&catalog, &rid, 103, &entries(3), Form::Groups);
        let ix = RidIndex::open(db.open_tree("runs").unwrap(), &rid, &blocks).unwrap();
        want.extend([tk(9_000), tk(9_001), rid_block::in_slot(&tk(9_002)), Form::Groups.entry((0, tk(9_003))).1]);
        assert_eq!(ix.lookup("x").unwrap(), want, "all five runs");
        assert_eq!(ix.lookup("f999").unwrap().len(), 4);
        drop(ix);
        // Damaged fences, a damaged table or damaged groups are reported at open, not used.
        let Layout::Packed { offsets, groups, form, .. } = &packed.layout else { panic!("packed") };
        assert_eq!((*form, groups.len()), (Form::Numbered, 100 + 1), "the others' groups (x's among them) and near's");
        let groups_at = *offsets.last().unwrap() as usize + 3;
        for (id, what, back) in [
            (100, "fences' checksum", 10),
            (packed.id, "table checksum", WRITTEN.tail_len() + 3),
            (packed.id, "table checksum", fs::metadata(run_path(&rid, packed.id)).unwrap().len() as usize - groups_at),
        ] {
            let full = fs::read(run_path(&rid, id)).unwrap();
            let mut bad = full.clone();
            let at = bad.len() - back;
            bad[at] ^= 0x40;
            fs::write(run_path(&rid, id), &bad).unwrap();
            let err = RidIndex::open(db.open_tree("runs").unwrap(), &rid, &blocks).err().expect("damage is reported");
            assert!(err.to_string().contains(what), "{err}");
            fs::write(run_path(&rid, id), &full).unwrap();
        }
        // A damaged block fails the look-ups that read it, naming the file.
        let full = fs::read(run_path(&rid, packed.id)).unwrap();
        let mut bad = full.clone();
        bad[30] ^= 1;
        fs::write(run_path(&rid, packed.id), &bad).unwrap();
        let ix = RidIndex::open(db.open_tree("runs").unwrap(), &rid, &blocks).unwrap();
        let err = (0..200).find_map(|i| ix.lookup(&format!("f{i}")).err()).expect("a look-up reads block 0");
        assert!(err.to_string().contains("checksum mismatch") && err.to_string().contains(".run"), "{err}");
        drop(ix);
        fs::write(run_path(&rid, packed.id), &full).unwrap();
        // A merge that meets a damaged run fails, names it and leaves every run as it was.
        let ix = RidIndex::open(db.open_tree("runs").unwrap(), &rid, &blocks).unwrap();
        let z =
            |round: u32| (0..20_000).map(|i| (hash(&format!("z{i}")), tk(i + 100 * round), 2_000)).collect::<Vec<_>>();
        for round in 0..(MERGE_FAN_IN - 1) as u32 {
            ix.add(&z(round));
            ix.flush().unwrap();
        }
        let before = run_files(&rid);
        assert_eq!(
            before.len(),
            MERGE_FAN_IN + 4,
            "x's run, two fixed runs, one of records, one of groups, seven of z: no merge yet"
        );
        let victim = before.last().unwrap().clone();
        let mut hurt = fs::read(&victim).unwrap();
        hurt[100] ^= 1;
        fs::write(&victim, &hurt).unwrap();
        ix.add(&z(99));
        ix.flush().unwrap();
        let err = merge(&ix).expect_err("the eighth run of the tier starts a merge, which reads the damaged run");
        assert!(err.to_string().contains("checksum mismatch") && err.to_string().contains(".run"), "{err}");
        assert_eq!(run_files(&rid).len(), before.len() + 1, "the new run is kept, no partial merge output");
        assert_eq!(ix.lookup("z19999").unwrap().len(), 8, "every run still answers");
    }

    #[test]
    fn a_run_with_a_group_per_entry_keeps_slot_and_lsn_instead_of_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, _blocks, _rid, ix) = open_index(dir.path());
        // A service that sends one event a WAL record: as many groups as entries.
        let e = |i: u64| (hash(&format!("one{i}")), keys::time_key(1_000 * i as i64, 10 + i, 0), 1_000 * i as i64);
        ix.add(&(0..3_000).map(e).collect::<Vec<_>>());
        ix.flush().unwrap();
        let run = lock(&ix.runs)[0].clone();
        let Layout::Packed { form, groups, .. } = &run.layout else { panic!("packed") };
        assert_eq!((*form, groups.len()), (Form::Groups, 0));
        // Hash differences of about 2^36 / 3,000 (24 bits), 300 slots (9 bits), 3,000 lsns (12).
        assert!(run.layout.bytes(run.count) < 3_000 * 7, "{} bytes", run.layout.bytes(run.count));
        for i in [0, 1_234, 2_999] {
            assert_eq!(ix.lookup(&format!("one{i}")).unwrap(), BTreeSet::from([Form::Groups.entry((0, e(i).1)).1]));
        }
        // Grouped 100 a WAL record, numbers cost less.
        let g =
            |i: u64| (hash(&format!("two{i}")), keys::time_key(1_000 * i as i64, 10 + i / 100, 0), 1_000 * i as i64);
        ix.add(&(0..3_000).map(g).collect::<Vec<_>>());
        ix.flush().unwrap();
        let run = lock(&ix.runs)[1].clone();
        let Layout::Packed { form, groups, .. } = &run.layout else { panic!("packed") };
        assert_eq!(*form, Form::Numbered);
        assert_eq!(groups.len(), groups_of(&(0..3_000).map(|i| (g(i).0, g(i).1)).collect::<Vec<_>>()).unwrap().len());
        assert_eq!(ix.lookup("two2999").unwrap(), BTreeSet::from([Form::Numbered.entry((0, g(2_999).1)).1]));
    }

    #[test]
    fn a_merge_streams_sorted_runs_of_every_layout_into_one_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _blocks, rid, ix) = open_index(dir.path());
        // 8 runs of 3,000 entries each (fan-in 8), every entry twice across neighbouring runs;
        // the first two in the fixed layout, the third a packed run of records, the fourth
        // one of groups.
        let e = |i: u64| (hash(&format!("m{i}")), keys::time_key(i as i64, 1, i as u32), i as i64);
        let catalog = db.open_tree("runs").unwrap();
        for round in 0..4u64 {
            let mut v: Vec<Entry> = (round * 1_500..round * 1_500 + 3_000).map(|i| (e(i).0, e(i).1)).collect();
            v.sort();
            match round {
                0 | 1 => write_fixed(&catalog, &rid, 50 + round, &v, true),
                2 => write_packed(&catalog, &rid, 50 + round, &v, Form::Records),
                _ => write_packed(&catalog, &rid, 50 + round, &v, Form::Groups),
            }
        }
        drop(ix);
        let ix = RidIndex::open(catalog, &rid, &_blocks).unwrap();
        for round in 4..MERGE_FAN_IN as u64 {
            ix.add(&(round * 1_500..round * 1_500 + 3_000).map(e).collect::<Vec<_>>());
            ix.flush().unwrap();
        }
        assert_eq!(lock(&ix.runs).len(), MERGE_FAN_IN, "flushes do not merge");
        let distinct = (MERGE_FAN_IN as u64 - 1) * 1_500 + 3_000;
        assert_eq!(merge(&ix).unwrap(), Merged { merges: 1, entries: MERGE_FAN_IN as u64 * 3_000, stopped: false });
        let runs = lock(&ix.runs).clone();
        assert_eq!(runs.len(), 1, "merged");
        assert_eq!(runs[0].count, distinct, "duplicates dropped");
        // The merged file reads back whole: sorted, checksums and table right.
        let mut r = RunReader::open(&rid, &runs[0]).unwrap();
        let mut last = None;
        let mut n = 0;
        while let Some(x) = r.next().unwrap() {
            assert!(last.is_none_or(|l: Entry| l.0 <= x.0) && last != Some(x), "sorted, distinct");
            last = Some(x);
            n += 1;
        }
        assert_eq!(n, distinct);
        let Layout::Packed { fences, offsets, form, groups, .. } = &runs[0].layout else {
            panic!("a merge writes a packed run")
        };
        assert_eq!(*form, WRITTEN);
        // Every entry's own group (lsn 1, its own 10-second slot), from the runs of every form.
        let want: BTreeSet<Group> = (0..distinct as i64).map(|i| (i.div_euclid(10_000) * 10_000, 1)).collect();
        assert_eq!(groups.iter().copied().collect::<BTreeSet<_>>(), want);
        let Layout::Packed { fences: f2, offsets: o2, groups: g2, .. } =
            read_table(&run_path(&rid, runs[0].id), &runs[0].file, WRITTEN, distinct).unwrap()
        else {
            panic!("packed")
        };
        assert_eq!((fences, offsets, groups), (&f2, &o2, &g2));
        for i in [0, 1_499, 7_000, distinct - 1] {
            assert_eq!(ix.lookup(&format!("m{i}")).unwrap().len(), 1, "m{i}");
        }
    }

    #[test]
    fn entries_a_flush_is_writing_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, _blocks, _rid, ix) = open_index(dir.path());
        let tk = keys::time_key(1_000, 3, 1);
        ix.add(&[(hash("here"), tk, 1_000)]);
        // What flush does first: memory is taken; the run is not written yet.
        let m = Arc::new(std::mem::take(&mut *lock(&ix.mem)));
        *lock(&ix.flushing) = Some(Flushing::Taken(m.clone()));
        assert_eq!(ix.lookup("here").unwrap(), BTreeSet::from([tk]), "neither in memory nor in a run, yet found");
        // Then sorted, before the run is written.
        *lock(&ix.flushing) = Some(Flushing::Sorted(Arc::new(m.sorted())));
        assert_eq!(ix.lookup("here").unwrap(), BTreeSet::from([tk]), "sorted, yet found");
        *lock(&ix.flushing) = None;
        assert!(ix.lookup("here").unwrap().is_empty(), "the test took them for good");
        ix.add(&[(hash("here"), tk, 1_000)]);
        ix.flush().unwrap();
        assert!(lock(&ix.flushing).is_none());
        assert_eq!(ix.lookup("here").unwrap(), BTreeSet::from([WRITTEN.entry((0, tk)).1]), "from the run");
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
            merge(&ix).unwrap();
        }
        let runs = lock(&ix.runs).len();
        assert!(runs < 20, "runs were merged: {runs}");
        let doomed = ix.take_doomed();
        assert_eq!(doomed.len() + runs, 20 + 20 / MERGE_FAN_IN, "merged-away runs are doomed");
        ix.delete(&doomed).unwrap();
        assert_eq!(fs::read_dir(&rid).unwrap().count(), runs, "their files are gone");
        ix.add(&[(hash("r3"), keys::time_key(99_999, 99, 0), 99_999)]);
        let got = ix.lookup("r3").unwrap();
        // A round's 5 records of r3 share a WAL record and a slot: one entry of a run.
        assert_eq!(got.len(), 20 + 1, "every round's group plus the one record in memory");
        assert!(ix.lookup("nope").unwrap().is_empty());
        drop(ix);
        // A run file the catalog does not name (an unfinished checkpoint) is removed at open.
        fs::write(rid.join(format!("{:020}.run", 777)), b"junk").unwrap();
        let ix = RidIndex::open(db.open_tree("runs").unwrap(), &rid, &blocks).unwrap();
        assert!(!rid.join(format!("{:020}.run", 777)).exists());
        assert_eq!(ix.lookup("r3").unwrap().len(), 20, "runs are durable; memory is the WAL's to replay");
        ix.expire(1_000_000).unwrap();
        assert!(ix.lookup("r3").unwrap().is_empty());
    }

    #[test]
    fn a_stopped_merge_keeps_its_inputs_and_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let (db, blocks, rid, ix) = open_index(dir.path());
        let per = STOP_EVERY / 2 + 1;
        for round in 0..MERGE_FAN_IN as u64 {
            let e = |i: u64| (hash(&format!("s{round}-{i}")), keys::time_key(i as i64, round, 0), i as i64);
            ix.add(&(0..per).map(e).collect::<Vec<_>>());
            ix.flush().unwrap();
        }
        let before = run_files(&rid);
        assert_eq!(before.len(), MERGE_FAN_IN);
        let done = ix.maybe_merge(&AtomicBool::new(true)).unwrap();
        assert_eq!(done, Merged { merges: 0, entries: 0, stopped: true });
        assert_eq!(run_files(&rid), before, "nothing written, nothing doomed");
        assert!(ix.take_doomed().is_empty());
        // Raised mid-merge, the merge gives up at its next check (after STOP_EVERY of the
        // 4·STOP_EVERY entries, some blocks of its output written): the partial output goes.
        let runs = lock(&ix.runs).clone();
        assert!(!ix.merge(&runs, &AtomicBool::new(true)).unwrap(), "given up");
        assert_eq!(run_files(&rid), before, "the partial output is deleted, the inputs stay");
        assert_eq!(lock(&ix.runs).len(), MERGE_FAN_IN);
        assert_eq!(ix.lookup("s3-7").unwrap().len(), 1);
        // A later merge (and a reopen) start from the same runs; a new id is not reused.
        let next = ix.next_id.load(Ordering::Relaxed);
        assert_eq!(merge(&ix).unwrap().merges, 1);
        assert_eq!(lock(&ix.runs)[0].id, next);
        drop(ix);
        let ix = RidIndex::open(db.open_tree("runs").unwrap(), &rid, &blocks).unwrap();
        assert_eq!(ix.lookup("s7-0").unwrap().len(), 1);
        assert!(ix.next_id.load(Ordering::Relaxed) > next);
    }
}
