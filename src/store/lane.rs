//! A lane: one long-lived background thread that runs the committer's slow jobs (a
//! checkpoint's middle step, a merge of request-id runs, deleting WAL segments) one after
//! another, at a lower CPU priority.
//!
//! Each job used to get a thread of its own. glibc gives a new thread an arena in turn (up to
//! its cap), so a checkpoint every 10 s left its allocations, some of them long-lived (the
//! values it handed to sled), in a different arena each time, and every arena kept the free
//! memory around them: at 100,000 series fed every 10 s the free memory held in arenas grew by
//! about 0.3 MB a second (8 MB to 62 MB in three minutes) while the memory in use stayed at
//! 100 MB. With one arena, or a checkpoint a minute, it stayed at 5–15 MB. A lane keeps its
//! thread, and so its arena.
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

/// A named background thread, started with its first job; it ends when the lane is dropped.
pub(super) struct Lane {
    name: &'static str,
    tx: Option<mpsc::Sender<Job>>,
}

/// A job's result, to look in on or wait for.
pub(super) struct Pending<R> {
    rx: mpsc::Receiver<R>,
    /// The result once seen: `None` inside when the job panicked.
    got: Option<Option<R>>,
}

impl Lane {
    pub(super) fn new(name: &'static str) -> Lane {
        Lane { name, tx: None }
    }

    /// Queues `f` behind the lane's jobs; an error when its thread cannot be started.
    pub(super) fn run<R: Send + 'static>(
        &mut self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::io::Result<Pending<R>> {
        let (tx, rx) = mpsc::sync_channel(1);
        // A panic drops `tx` unsent: the receiver sees the job end without a result.
        let mut job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        for _ in 0..2 {
            let lane = match &self.tx {
                Some(lane) => lane,
                None => self.tx.insert(self.start()?),
            };
            match lane.send(job) {
                Ok(()) => return Ok(Pending { rx, got: None }),
                // The thread is gone (it cannot be, short of an abort): start another.
                Err(mpsc::SendError(back)) => {
                    job = back;
                    self.tx = None;
                }
            }
        }
        Err(std::io::Error::other(format!("the {} thread stopped", self.name)))
    }

    fn start(&self) -> std::io::Result<mpsc::Sender<Job>> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name(self.name.into()).spawn(move || {
            super::commit::background_priority();
            while let Ok(job) = rx.recv() {
                // A panic is the job's to report (its result never comes); the lane goes on.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
        })?;
        Ok(tx)
    }
}

impl<R> Pending<R> {
    /// Whether the job has ended (with a result or a panic).
    pub(super) fn is_finished(&mut self) -> bool {
        if self.got.is_none() {
            match self.rx.try_recv() {
                Ok(r) => self.got = Some(Some(r)),
                Err(mpsc::TryRecvError::Disconnected) => self.got = Some(None),
                Err(mpsc::TryRecvError::Empty) => {}
            }
        }
        self.got.is_some()
    }

    /// Waits for the job's result; `None` when it panicked.
    pub(super) fn wait(self) -> Option<R> {
        match self.got {
            Some(r) => r,
            None => self.rx.recv().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_in_order_on_one_thread_and_a_panic_is_reported() {
        let mut lane = Lane::new("modelwatch-test-lane");
        let a = lane.run(|| std::thread::current().id()).unwrap();
        let mut boom = lane.run(|| -> u32 { panic!("job failed") }).unwrap();
        let b = lane.run(|| std::thread::current().id()).unwrap();
        let (a, b) = (a.wait().unwrap(), b.wait().unwrap());
        assert_eq!(a, b, "one thread runs every job");
        assert_ne!(a, std::thread::current().id());
        assert!(boom.is_finished());
        assert_eq!(boom.wait(), None, "a panicked job has no result");
        assert_eq!(lane.run(|| 7).unwrap().wait(), Some(7), "the lane outlives a panic");
    }
}
