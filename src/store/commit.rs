//! The committer: one thread that owns the WAL. Handlers queue validated batches
//! ([`Committer::enqueue`], a bounded queue: `storage.commit_queue`); the thread takes what is
//! queued as one group (up to `storage.max_group_commit`) and:
//! 1. checks the data folder's free space against `storage.min_free_bytes` and reserves WAL
//!    room for the whole group: a full disk refuses the group with RESOURCE_EXHAUSTED before
//!    anything changed, and the next group tries again, so ingest resumes by itself once
//!    space is back;
//! 2. applies each batch to the store and appends its WAL record;
//! 3. syncs the WAL once (`fdatasync`): from here the group is durable;
//! 4. writes the raw records (if that fails, say for space, the batches are still durable in
//!    the WAL: they are kept and written again before the next checkpoint, which waits for
//!    them);
//! 5. replies to each batch (every stream sends its acks in its own order);
//! 6. cuts full heads into chunks (not while a checkpoint writes: see [`Worker::commit`]).
//!
//! A failed WAL write or sync after step 2 is fatal for ingest until a restart: memory then
//! holds batches the WAL may lack, and after a failed `fdatasync` the kernel may have dropped
//! the pages it could not write (PostgreSQL's "fsyncgate"), so retrying could ack lost data.
//! The reserve and the preallocated segments make that case a real I/O error, not a full disk.
use super::checkpoint::Checkpoint;
use super::lane::{Lane, Pending};
use super::wal::Wal;
use super::{Batch, StoreError, StoreRef};
use crate::pb;
use crate::telemetry::{
    STAGE_ACK, STAGE_APPLY, STAGE_CHECKPOINT, STAGE_CUT, STAGE_PERSIST, STAGE_QUEUE, STAGE_RESERVE, T,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error, Clone)]
pub enum CommitError {
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("no room for new data: {path} has {free} bytes free, below storage.min_free_bytes = {reserve} (nothing of this batch was stored; ingest resumes by itself once space is freed)")]
    DiskFull { path: PathBuf, free: u64, reserve: u64 },
    #[error("storage failed, nothing from this batch was acknowledged: {0}")]
    Storage(String),
}

/// Free bytes for unprivileged writers on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Lowers the calling thread's CPU priority (nice +10) for work that acks do not wait on
/// (the middle step of a checkpoint, deleting WAL segments): the committer and the handlers
/// come first when the cores are busy.
pub(super) fn background_priority() {
    // SAFETY: plain syscall on this thread; a failure only leaves the priority.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
}

struct CommitRequest {
    batch: Batch,
    queued: Instant,
    reply: oneshot::Sender<Result<pb::Ack, CommitError>>,
}

enum Msg {
    Commit(Box<CommitRequest>),
    /// Memory is short: checkpoint now, cutting every head into chunks, and hand freed memory
    /// back to the system.
    Relieve,
    /// Checkpoint and copy the folder (see `store::snapshot`).
    Snapshot(PathBuf, oneshot::Sender<Result<crate::store::snapshot::SnapshotReport, String>>),
    /// Commit what is queued, make the final checkpoint, stop.
    Close,
}

pub struct CommitConfig {
    pub data_dir: PathBuf,
    pub queue: usize,
    pub max_group: usize,
    pub checkpoint_interval: Duration,
    pub checkpoint_wal_bytes: u64,
    pub checkpoint_buckets: u64,
    pub min_free_bytes: u64,
}

impl CommitConfig {
    pub fn new(cfg: &crate::config::StorageConfig) -> CommitConfig {
        CommitConfig {
            data_dir: cfg.data_dir.clone(),
            queue: cfg.commit_queue,
            max_group: cfg.max_group_commit,
            checkpoint_interval: cfg.checkpoint_interval,
            checkpoint_wal_bytes: cfg.checkpoint_wal_bytes,
            checkpoint_buckets: cfg.checkpoint_buckets,
            min_free_bytes: cfg.min_free_bytes,
        }
    }
}

/// Cloneable handle to the committer thread. The thread runs until [`Committer::close`] (or
/// until every handle is dropped), then makes a final checkpoint (every head cut, WAL emptied).
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Msg>,
    failed: Arc<Mutex<Option<String>>>,
    closed: Arc<AtomicBool>,
}

pub type AckFuture = oneshot::Receiver<Result<pb::Ack, CommitError>>;

impl Committer {
    /// Queues a batch (waiting while the queue is full); the returned future yields its ack
    /// once the batch is durable.
    pub async fn enqueue(&self, batch: Batch) -> Result<AckFuture, CommitError> {
        if let Some(f) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(CommitError::Storage(format!("an earlier write failed ({f}); restart the daemon")));
        }
        if self.closed.load(Ordering::Relaxed) {
            return Err(CommitError::ShuttingDown);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Commit(Box::new(CommitRequest { batch, queued: Instant::now(), reply })))
            .await
            .map_err(|_| CommitError::ShuttingDown)?;
        Ok(rx)
    }

    /// Stops taking batches; the thread commits what is queued, checkpoints and exits.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Close).await;
    }

    /// Asks for a checkpoint that cuts every head (memory pressure); does not wait for it, and
    /// a request while the queue is full is dropped (the next one will come).
    pub fn relieve(&self) {
        let _ = self.tx.try_send(Msg::Relieve);
    }

    /// A consistent copy of the data folder at `dest`, made on the committer thread (batches
    /// wait meanwhile).
    pub async fn snapshot(&self, dest: PathBuf) -> Result<crate::store::snapshot::SnapshotReport, String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Snapshot(dest, reply)).await.map_err(|_| "the daemon is shutting down".to_string())?;
        rx.await.map_err(|_| "the daemon is shutting down".to_string())?
    }

    /// Batches queued for the committer now.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub async fn submit(&self, batch: Batch) -> Result<pb::Ack, CommitError> {
        self.enqueue(batch).await?.await.map_err(|_| CommitError::ShuttingDown)?
    }

    /// Starts the committer thread; `rt` drives its timer.
    pub fn spawn(
        store: StoreRef,
        wal: Wal,
        cfg: CommitConfig,
        rt: tokio::runtime::Handle,
    ) -> (Committer, std::thread::JoinHandle<Result<(), StoreError>>) {
        let (tx, rx) = mpsc::channel(cfg.queue);
        T.wal_bytes.set(wal.disk_bytes() as f64);
        T.wal_since_checkpoint.set(wal.since_checkpoint() as f64);
        let failed = Arc::new(Mutex::new(None));
        let worker = Worker {
            store,
            wal,
            rx,
            rt,
            cfg,
            failed: failed.clone(),
            unpersisted: Vec::new(),
            last_full_warning: None,
            inflight: None,
            trim: None,
            reaper: None,
            merging: None,
            checkpoints: Lane::new("modelwatch-checkpoint"),
            merges: Lane::new("modelwatch-merge"),
            trims: Lane::new("modelwatch-wal-trim"),
        };
        let join = std::thread::Builder::new()
            .name("modelwatch-commit".into())
            .spawn(move || worker.run())
            .expect("spawning the committer thread");
        (Committer { tx, failed, closed: Arc::new(AtomicBool::new(false)) }, join)
    }
}

struct Worker {
    store: StoreRef,
    wal: Wal,
    rx: mpsc::Receiver<Msg>,
    rt: tokio::runtime::Handle,
    cfg: CommitConfig,
    failed: Arc<Mutex<Option<String>>>,
    /// Durable batches whose raw records could not be written yet (with their lsn).
    unpersisted: Vec<(Batch, u64)>,
    last_full_warning: Option<Instant>,
    /// A timed checkpoint whose middle step runs on its own thread (see `store::checkpoint`).
    inflight: Option<Inflight>,
    /// Deleting the WAL segments a checkpoint doomed; returns those it could not.
    trim: Option<Pending<Vec<PathBuf>>>,
    /// The thread that frees spent batches ([`Worker::reap`]); started with the first.
    reaper: Option<std::sync::mpsc::Sender<Vec<Batch>>>,
    /// Merging request-id runs ([`Worker::merge_request_ids`]).
    merging: Option<Merging>,
    /// The threads of the three kinds of slow job (see [`super::lane`] for why they last).
    checkpoints: Lane,
    merges: Lane,
    trims: Lane,
}

struct Merging {
    stop: Arc<AtomicBool>,
    job: Pending<()>,
}

struct Inflight {
    began: Instant,
    job: Pending<(Checkpoint, Result<(), StoreError>)>,
}

impl Worker {
    fn is_failed(&self) -> bool {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn run(mut self) -> Result<(), StoreError> {
        let mut next_checkpoint = Instant::now() + self.cfg.checkpoint_interval;
        let mut dirty = false;
        loop {
            let mut wait = next_checkpoint.saturating_duration_since(Instant::now());
            let idle_cut = self.store.has_due();
            if self.inflight.is_some() || idle_cut {
                // Look in on the checkpoint's thread, and cut waiting heads, now and then even
                // when no batch comes.
                wait = wait.min(Duration::from_millis(20));
            }
            let first = self.rt.block_on(async { tokio::time::timeout(wait, self.rx.recv()).await });
            match first {
                Ok(Some(Msg::Commit(req))) => {
                    let mut group = vec![*req];
                    let mut close = false;
                    let mut relieve = false;
                    let mut snapshot = None;
                    while group.len() < self.cfg.max_group {
                        match self.rx.try_recv() {
                            Ok(Msg::Commit(r)) => group.push(*r),
                            Ok(Msg::Relieve) => {
                                relieve = true;
                                break;
                            }
                            Ok(Msg::Snapshot(dest, reply)) => {
                                snapshot = Some((dest, reply));
                                break;
                            }
                            Ok(Msg::Close) => {
                                close = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    dirty |= self.commit(group);
                    if close {
                        self.drain();
                        break;
                    }
                    if relieve && self.relieve(dirty) {
                        dirty = false;
                    }
                    if let Some((dest, reply)) = snapshot {
                        let _ = reply.send(self.snapshot(&dest));
                    }
                }
                Ok(Some(Msg::Snapshot(dest, reply))) => {
                    let _ = reply.send(self.snapshot(&dest));
                }
                Ok(Some(Msg::Relieve)) => {
                    if self.relieve(dirty) {
                        dirty = false;
                    }
                }
                Ok(Some(Msg::Close)) => {
                    self.drain();
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    if idle_cut && !self.is_failed() && self.inflight.is_none() {
                        if let Err(e) = self.store.cut_due() {
                            tracing::warn!(error = %e, "cutting heads failed; they stay in memory (and in the write-ahead log) until a later cut");
                        }
                    }
                }
            }
            if self.inflight.as_mut().is_some_and(|c| c.job.is_finished()) && !self.finish_inflight() {
                dirty = true;
            }
            // A checkpoint is due by time, or early when the WAL grew past its budget (replay
            // never reads more than two checkpoints' worth) or the aggregates in memory past
            // theirs. One runs at a time.
            if self.inflight.is_none()
                && (Instant::now() >= next_checkpoint
                    || self.wal.since_checkpoint() >= self.cfg.checkpoint_wal_bytes
                    || self.store.held_buckets() as u64 >= self.cfg.checkpoint_buckets)
            {
                // An idle daemon checkpoints once more to pack the hours its last one left.
                if (dirty || self.store.wants_packing()) && self.begin_checkpoint() {
                    dirty = false;
                }
                next_checkpoint = Instant::now() + self.cfg.checkpoint_interval;
            }
        }
        self.finish_inflight();
        self.join_trim();
        self.stop_merging();
        if self.is_failed() {
            // Memory may hold writes the WAL lacks; writing them to sled now would store data
            // that was never acked while skipping some that was. The WAL replays at start.
            return Ok(());
        }
        if !self.retry_unpersisted() {
            tracing::warn!(
                "raw records could not be written before shutdown; the write-ahead log keeps them for the next start"
            );
            return Ok(());
        }
        self.store.checkpoint(&mut self.wal, true)?;
        tracing::info!("store flushed");
        Ok(())
    }

    fn snapshot(&mut self, dest: &std::path::Path) -> Result<crate::store::snapshot::SnapshotReport, String> {
        self.finish_inflight();
        self.join_trim();
        if self.is_failed() {
            return Err("an earlier write failed; restart the daemon".into());
        }
        if !self.retry_unpersisted() {
            return Err("raw records wait to be written (disk full?); try again".into());
        }
        let t = Instant::now();
        let r = self.store.snapshot(&mut self.wal, dest).map_err(|e| e.to_string());
        T.wal_bytes.set(self.wal.disk_bytes() as f64);
        T.wal_since_checkpoint.set(self.wal.since_checkpoint() as f64);
        tracing::info!(ok = r.is_ok(), took_ms = t.elapsed().as_millis() as u64, dest = %dest.display(), "snapshot");
        r
    }

    /// Begins a timed checkpoint and leaves its middle step to a thread of its own, so that
    /// groups go on meanwhile; true when it began. The next one begins after this one is
    /// finished ([`Worker::finish_inflight`]).
    fn begin_checkpoint(&mut self) -> bool {
        if self.is_failed() || !self.retry_unpersisted() {
            return false;
        }
        let began = Instant::now();
        let begun = self.store.checkpoint_begin(&mut self.wal, false);
        T.commit_stage[STAGE_CHECKPOINT].since(began);
        let mut c = match begun {
            Ok(c) => c,
            Err(e) => {
                T.checkpoint_failures.add(1);
                tracing::error!(error = %e, "checkpoint failed; the write-ahead log keeps everything until the next one succeeds");
                return false;
            }
        };
        let store = self.store.clone();
        let spawned = self.checkpoints.run(move || {
            let r = store.checkpoint_write(&mut c);
            crate::telemetry::trim_heap();
            (c, r)
        });
        match spawned {
            Ok(job) => {
                self.inflight = Some(Inflight { began, job });
                true
            }
            Err(e) => {
                T.checkpoint_failures.add(1);
                tracing::error!(error = %e, "cannot start the checkpoint thread; the next checkpoint tries again");
                false
            }
        }
    }

    /// Waits for the checkpoint in flight, if any, and finishes it on this thread (the heads
    /// learn what was saved, the WAL is cut). False when it failed (logged and counted: the
    /// WAL keeps everything until the next one succeeds).
    fn finish_inflight(&mut self) -> bool {
        let Some(Inflight { began, job }) = self.inflight.take() else { return true };
        let (c, written) = match job.wait() {
            Some(r) => r,
            None => {
                T.checkpoint_failures.add(1);
                tracing::error!(
                    "the checkpoint thread panicked; the write-ahead log keeps everything until the next checkpoint"
                );
                return false;
            }
        };
        let finishing = Instant::now();
        let r = written.and_then(|()| self.store.checkpoint_finish(&mut self.wal, c));
        if r.is_ok() {
            self.trim_wal();
        }
        T.commit_stage[STAGE_CHECKPOINT].since(finishing);
        self.checkpoint_done(began, r)
    }

    /// Deletes the WAL's doomed segments on a thread of its own (unlinking a large file takes
    /// a while), once the previous such thread is done: segments go oldest first.
    fn trim_wal(&mut self) {
        self.join_trim();
        let doomed = self.wal.take_doomed();
        if doomed.is_empty() {
            return;
        }
        let dir = self.wal.dir().to_owned();
        let mut list = doomed.clone();
        let spawned = self.trims.run(move || {
            if let Err(e) = super::wal::remove_segments(&dir, &mut list) {
                tracing::warn!(error = %e, "deleting old write-ahead-log segments failed; the next checkpoint tries again");
            }
            list
        });
        match spawned {
            Ok(t) => self.trim = Some(t),
            Err(_) => self.wal.give_back_doomed(doomed),
        }
    }

    /// Waits for the WAL-trimming thread; what it could not delete goes back to the WAL.
    fn join_trim(&mut self) {
        if let Some(t) = self.trim.take() {
            if let Some(left) = t.wait() {
                self.wal.give_back_doomed(left);
            }
        }
    }

    /// Merges request-id runs on a thread of its own after a checkpoint wrote a run, unless
    /// the merging thread is still busy (the next checkpoint looks again; until then the runs
    /// are a few more).
    fn merge_request_ids(&mut self) {
        if self.merging.as_mut().is_some_and(|m| !m.job.is_finished()) {
            return;
        }
        self.merging = None;
        let stop = Arc::new(AtomicBool::new(false));
        let (store, raised) = (self.store.clone(), stop.clone());
        let spawned = self.merges.run(move || {
            let began = Instant::now();
            match store.merge_request_ids(&raised) {
                Ok(0) => {}
                Ok(_) => T.rid_merge.since(began),
                Err(e) => {
                    T.rid_merge_failures.add(1);
                    tracing::error!(error = %e, "merging request-id runs failed; the runs stay as they are (look-ups read each) and the next checkpoint tries again");
                }
            }
            crate::telemetry::trim_heap();
        });
        match spawned {
            Ok(job) => self.merging = Some(Merging { stop, job }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the thread that merges request-id runs; the next checkpoint tries again")
            }
        }
    }

    /// Gives up the merge in progress (its inputs stay) and waits for its thread.
    fn stop_merging(&mut self) {
        if let Some(m) = self.merging.take() {
            m.stop.store(true, Ordering::Relaxed);
            let _ = m.job.wait();
        }
    }

    fn checkpoint_done(&mut self, began: Instant, r: Result<(), StoreError>) -> bool {
        match r {
            Ok(()) => {
                T.checkpoint.since(began);
                T.wal_bytes.set(self.wal.disk_bytes() as f64);
                T.wal_since_checkpoint.set(self.wal.since_checkpoint() as f64);
                self.merge_request_ids();
                true
            }
            Err(e) => {
                T.checkpoint_failures.add(1);
                tracing::error!(error = %e, "checkpoint failed; the write-ahead log keeps everything until the next one succeeds");
                false
            }
        }
    }

    /// A checkpoint (cutting every head with `cut_all`) made here, after the one in flight,
    /// unless an earlier write failed or raw records still wait; true when it ran. A failure
    /// is logged and counted, and the WAL keeps everything until the next one succeeds.
    fn checkpoint(&mut self, cut_all: bool) -> bool {
        self.finish_inflight();
        self.join_trim();
        if self.is_failed() || !self.retry_unpersisted() {
            return false;
        }
        let t = Instant::now();
        let r = self.store.checkpoint(&mut self.wal, cut_all);
        self.checkpoint_done(t, r)
    }

    /// A checkpoint that cuts every head, then glibc's free memory returned to the system, so
    /// that resident memory falls. True when the checkpoint ran (nothing left dirty).
    fn relieve(&mut self, dirty: bool) -> bool {
        // A timed checkpoint in flight has not cut every head: relief still needs its own.
        let done = (dirty || self.inflight.is_some()) && self.checkpoint(true);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free heap pages.
        unsafe {
            libc::malloc_trim(0);
        }
        done
    }

    /// Commits whatever is still queued (handlers that raced the close).
    fn drain(&mut self) {
        let mut rest = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Commit(r) => rest.push(*r),
                Msg::Snapshot(_, reply) => {
                    let _ = reply.send(Err("the daemon is shutting down".into()));
                }
                _ => {}
            }
        }
        if !rest.is_empty() {
            self.commit(rest);
        }
        self.rx.close();
    }

    /// Writes the raw records that an earlier group could not; true when none are left.
    fn retry_unpersisted(&mut self) -> bool {
        while let Some((b, lsn)) = self.unpersisted.first() {
            if let Err(e) = self.store.persist(b, *lsn) {
                tracing::warn!(error = %e, "raw records still cannot be written; retrying before the next checkpoint");
                return false;
            }
            self.unpersisted.remove(0);
        }
        true
    }

    /// Frees the batches done with on another thread: a batch of thousands of series is
    /// thousands of allocations, and freeing them here would hold the next group.
    fn reap(&mut self, spent: Vec<Batch>) {
        if spent.is_empty() {
            return;
        }
        if self.reaper.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<Batch>>();
            let spawned =
                std::thread::Builder::new().name("modelwatch-reap".into()).spawn(move || while rx.recv().is_ok() {});
            if spawned.is_ok() {
                self.reaper = Some(tx);
            }
        }
        if let Some(tx) = &self.reaper {
            // A failed send hands the batches back in its error, dropped here.
            let _ = tx.send(spent);
        }
    }

    /// Refuses a whole group before anything changed.
    fn refuse(group: Vec<CommitRequest>, err: CommitError) {
        let reason = match err {
            CommitError::DiskFull { .. } => "disk_full",
            CommitError::ShuttingDown => "shutting_down",
            _ => "storage",
        };
        T.refused.add(&[reason], group.len() as u64);
        for req in group {
            let _ = req.reply.send(Err(err.clone()));
        }
    }

    /// Commits one group; true when anything reached the store (so a checkpoint is due).
    fn commit(&mut self, group: Vec<CommitRequest>) -> bool {
        if let Some(f) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            let err = CommitError::Storage(format!("an earlier write failed ({f}); restart the daemon"));
            Self::refuse(group, err);
            return false;
        }
        let path = self.cfg.data_dir.clone();
        let free = free_bytes(&path).unwrap_or(u64::MAX);
        let reserve = self.cfg.min_free_bytes;
        let full = |free| CommitError::DiskFull { path: path.clone(), free, reserve };
        if free < self.cfg.min_free_bytes {
            if self.last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                tracing::warn!(path = %path.display(), free, reserve = self.cfg.min_free_bytes, "disk space below storage.min_free_bytes: refusing new data until space is freed");
                self.last_full_warning = Some(Instant::now());
            }
            Self::refuse(group, full(free));
            return false;
        }
        if !self.unpersisted.is_empty() && !self.retry_unpersisted() {
            Self::refuse(group, full(free));
            return false;
        }
        let bytes: u64 = group
            .iter()
            .map(|r| r.batch.encoded.as_ref().map_or_else(|| r.batch.body.encoded_len(), Vec::len) as u64)
            .sum();
        let reserving = Instant::now();
        let reserved = self.wal.reserve(bytes);
        T.commit_stage[STAGE_RESERVE].since(reserving);
        if let Err(e) = reserved {
            let err = if e.is_disk_full() {
                full(free_bytes(&path).unwrap_or(0))
            } else {
                CommitError::Storage(e.to_string())
            };
            Self::refuse(group, err);
            return false;
        }
        self.last_full_warning = None;

        let applying = Instant::now();
        for req in &group {
            T.commit_stage[STAGE_QUEUE].observe(applying.duration_since(req.queued).as_secs_f64());
        }
        // (request, ack and the lsn of its WAL record if one was written), in arrival order.
        let mut done: Vec<(CommitRequest, pb::Ack, Option<u64>)> = Vec::with_capacity(group.len());
        let mut failure: Option<String> = None;
        for mut req in group {
            if let Some(f) = &failure {
                let _ = req.reply.send(Err(CommitError::Storage(f.clone())));
                continue;
            }
            let lsn = self.wal.next_lsn();
            match self.store.apply(&mut req.batch, lsn) {
                Ok(applied) => {
                    let written = match &applied.record {
                        Some(rec) => match self.wal.append(rec) {
                            Ok(_) => {
                                T.wal_written.add(rec.len() as u64);
                                let decoded = match req.batch.decoded_len {
                                    0 => req.batch.body.encoded_len(),
                                    n => n,
                                };
                                self.wal.count_decoded(decoded as u64);
                                Some(lsn)
                            }
                            Err(e) => {
                                failure = Some(e.to_string());
                                let _ = req.reply.send(Err(CommitError::Storage(e.to_string())));
                                continue;
                            }
                        },
                        None => None,
                    };
                    done.push((req, applied.ack, written));
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    let _ = req.reply.send(Err(CommitError::Storage(e.to_string())));
                }
            }
        }
        if failure.is_none() {
            T.commit_stage[STAGE_APPLY].since(applying);
            let t = Instant::now();
            if let Err(e) = self.wal.sync() {
                failure = Some(e.to_string());
            }
            T.fsync.since(t);
            T.group.observe(done.len() as f64);
            T.wal_since_checkpoint.set(self.wal.since_checkpoint() as f64);
            T.wal_bytes.set(self.wal.disk_bytes() as f64);
        }
        if let Some(f) = failure {
            tracing::error!(error = %f, "write-ahead-log write failed; refusing further ingest until a restart");
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(f.clone());
            for (req, _, _) in done {
                let _ = req.reply.send(Err(CommitError::Storage(f.clone())));
            }
            return true;
        }
        // Durable now: the block files may take the raw records (a failure leaves the batch in
        // the WAL, retried before the next checkpoint). The acks come after them, so that what
        // was acked can be read, and before the cut of full heads, which does not change what
        // a query sees and may take milliseconds.
        let persisting = Instant::now();
        let mut replies = Vec::with_capacity(done.len());
        let mut spent = Vec::with_capacity(done.len());
        for (req, ack, lsn) in done {
            let CommitRequest { batch, queued, reply } = req;
            let kind = batch.body.kind() as usize;
            if lsn.is_some() {
                T.batches_stored[kind].add(1);
            } else if ack.duplicate {
                T.batches_duplicate[kind].add(1);
            }
            match lsn {
                Some(lsn) if !self.unpersisted.is_empty() => self.unpersisted.push((batch, lsn)),
                Some(lsn) => match self.store.persist(&batch, lsn) {
                    Ok(()) => spent.push(batch),
                    Err(e) => {
                        tracing::warn!(error = %e, "raw records could not be written; the write-ahead log holds them, retrying before the next checkpoint");
                        self.unpersisted.push((batch, lsn));
                    }
                },
                None => spent.push(batch),
            }
            replies.push((reply, queued, ack));
        }
        self.reap(spent);
        T.commit_stage[STAGE_PERSIST].since(persisting);
        for (reply, queued, ack) in replies {
            let _ = reply.send(Ok(ack));
            T.commit_stage[STAGE_ACK].since(queued);
        }
        // Not while a checkpoint writes: its sled flush would make durable chunks holding
        // samples of records after its lsn, which a replay then finds stored already and leaves
        // out of the stored-sample count (the data stays exact, the count fell short). Heads
        // due meanwhile are cut once it is finished.
        if self.inflight.is_none() {
            let cutting = Instant::now();
            if let Err(e) = self.store.cut_due() {
                tracing::warn!(error = %e, "cutting full heads failed; they stay in memory (and in the write-ahead log) until a later cut");
            }
            T.commit_stage[STAGE_CUT].since(cutting);
        }
        true
    }
}
