//! The threads queries run on: `query.max_concurrent` of them, at a lower CPU priority
//! (nice +10) than ingest, behind a bounded queue. Ingest is what clients wait on to free their
//! buffers; a heavy query should use the CPU ingest leaves, not take it (on a 2-core host, a
//! back-to-back loop of heavy queries at normal priority cut acked ingest by a fifth). The
//! queue bounds how many queries wait (and so the memory they can hold): past it a query is
//! refused with RESOURCE_EXHAUSTED naming the key.
use super::QueryError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

type Job = Box<dyn FnOnce() + Send>;

pub struct QueryPool {
    tx: SyncSender<Job>,
    threads: usize,
    waiting: Arc<AtomicUsize>,
}

/// Niceness of query threads (Linux applies `setpriority(PRIO_PROCESS, 0, …)` to the calling
/// thread).
const NICE: i32 = 10;

impl QueryPool {
    pub fn new(threads: usize) -> QueryPool {
        let (tx, rx) = sync_channel::<Job>(threads * 16);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("modelwatch-query-{i}"))
                .spawn(move || {
                    // SAFETY: plain syscall on this thread; a failure only leaves the priority.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
                    loop {
                        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        job();
                    }
                })
                .expect("spawning a query thread");
        }
        QueryPool { tx, threads, waiting: Arc::new(AtomicUsize::new(0)) }
    }

    /// Queries waiting for a thread now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Runs `f` on a query thread; the future yields its result. `api` (an index of
    /// [`crate::telemetry::QUERY_APIS`]) labels its time on `/metrics`.
    pub async fn run<T: Send + 'static>(
        &self,
        api: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, QueryError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let waiting = self.waiting.clone();
        let job: Job = Box::new(move || {
            waiting.fetch_sub(1, Ordering::Relaxed);
            let t = Instant::now();
            // A panic (a bug: no query may cause one) is the query's failure, not the thread's.
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
                let what = crate::panic_text(&*p).unwrap_or_default();
                tracing::error!(panic = %what, "a query panicked");
                QueryError::Failed(what)
            });
            crate::telemetry::T.query[api].since(t);
            let _ = reply.send(out);
        });
        self.waiting.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                crate::telemetry::T.queries_refused.add(1);
                return Err(QueryError::TooCostly(format!(
                    "{} queries are already waiting for the {} query threads (query.max_concurrent): try again shortly",
                    self.threads * 16,
                    self.threads
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                return Err(QueryError::TooCostly("the daemon is shutting down".into()));
            }
        }
        rx.await.map_err(|_| QueryError::Failed("the query thread stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_query_fails_alone_and_its_thread_goes_on() {
        let pool = QueryPool::new(1);
        for _ in 0..3 {
            let r = pool.run(0, || -> u32 { panic!("index out of bounds") }).await;
            match r {
                Err(QueryError::Failed(m)) => assert!(m.contains("index out of bounds"), "{m}"),
                other => panic!("expected a failure, got {other:?}"),
            }
        }
        // The one thread still answers.
        assert_eq!(pool.run(0, || 7u32).await.unwrap(), 7);
    }
}
