//! Admission control under memory pressure, as the OpenTelemetry Collector's memory limiter
//! does it: the daemon's resident memory is read every [`CHECK_EVERY`]; above
//! `limits.memory_limit` new ingest is refused with RESOURCE_EXHAUSTED and a retry delay
//! (`google.rpc.RetryInfo`), and the committer is asked for a checkpoint that cuts every
//! in-memory head into chunks (the bulk of the daemon's memory under load); below
//! `memory_resume` × the limit ingest is accepted again. What was acked stays; what is refused
//! was never acked, so a client resends it after the delay (the Rust and Python clients do).
//!
//! Apart from that mark, the bytes of received messages that wait for their fsync are bounded
//! (`limits.ingest_inflight_bytes`, [`Admission::reserve`]): a client that streams without
//! waiting for acks is held back by HTTP/2 flow control instead of filling memory with
//! decoded batches.
use crate::config::Limits;
use crate::store::commit::Committer;
use crate::telemetry::T;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const CHECK_EVERY: Duration = Duration::from_millis(100);

pub struct Admission {
    /// Room for received ingest messages, in KiB of their encoded size.
    inflight: Arc<tokio::sync::Semaphore>,
    inflight_kib: u32,
    limit: u64,
    resume: u64,
    retry_after: Duration,
    refusing: AtomicBool,
    rss: AtomicU64,
}

/// What one reading changed.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    None,
    Started,
    Ended,
}

impl Admission {
    pub fn new(l: &Limits) -> Admission {
        let inflight_kib = (l.ingest_inflight_bytes.div_ceil(1024)).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        Admission {
            inflight: Arc::new(tokio::sync::Semaphore::new(inflight_kib as usize)),
            inflight_kib,
            limit: l.memory_limit,
            resume: (l.memory_limit as f64 * l.memory_resume) as u64,
            retry_after: l.memory_retry_after,
            refusing: AtomicBool::new(false),
            rss: AtomicU64::new(0),
        }
    }

    /// Waits for room for a received message of `bytes` (encoded); the room is given back when
    /// the permit drops, once the message's ack is out.
    pub async fn reserve(&self, bytes: usize) -> tokio::sync::OwnedSemaphorePermit {
        let kib = (bytes.div_ceil(1024) as u64).clamp(1, u64::from(self.inflight_kib)) as u32;
        match self.inflight.clone().try_acquire_many_owned(kib) {
            Ok(p) => p,
            Err(_) => {
                T.inflight_waits.add(1);
                self.inflight.clone().acquire_many_owned(kib).await.expect("the semaphore is never closed")
            }
        }
    }

    /// Bytes (KiB steps) of received messages waiting for their ack now.
    pub fn inflight_bytes(&self) -> u64 {
        u64::from(self.inflight_kib).saturating_sub(self.inflight.available_permits() as u64) * 1024
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Ok, or the refusal to send.
    pub fn admit(&self) -> Result<(), tonic::Status> {
        if !self.refusing.load(Ordering::Relaxed) {
            return Ok(());
        }
        T.memory_refused.add(1);
        let rss = self.rss.load(Ordering::Relaxed);
        let msg = format!(
            "limits.memory_limit: the daemon's resident memory ({} MiB) is above its limit ({} MiB); \
             nothing of this call was stored; retry in {:?}",
            rss >> 20,
            self.limit >> 20,
            self.retry_after
        );
        Err(crate::api::retry_later(msg, self.retry_after))
    }

    fn observe(&self, rss: u64) -> Change {
        self.rss.store(rss, Ordering::Relaxed);
        let refusing = self.refusing.load(Ordering::Relaxed);
        if !refusing && rss > self.limit {
            self.refusing.store(true, Ordering::Relaxed);
            T.memory_refusing.set(1.0);
            Change::Started
        } else if refusing && rss < self.resume {
            self.refusing.store(false, Ordering::Relaxed);
            T.memory_refusing.set(0.0);
            Change::Ended
        } else {
            Change::None
        }
    }
}

/// Reads resident memory until `stop`; asks `committer` for relief when the limit is crossed,
/// and again every retry delay while it stays above the resume mark.
pub fn spawn(adm: Arc<Admission>, committer: Committer, stop: CancellationToken) {
    if !adm.enabled() {
        return;
    }
    tokio::spawn(async move {
        let mut last_relief: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let Some(rss) = crate::telemetry::resident_bytes() else { continue };
            match adm.observe(rss) {
                Change::Started => {
                    tracing::warn!(
                        rss_mib = rss >> 20,
                        limit_mib = adm.limit >> 20,
                        "resident memory above limits.memory_limit: refusing ingest, cutting heads into chunks"
                    );
                    committer.relieve();
                    last_relief = Some(Instant::now());
                }
                Change::Ended => {
                    tracing::info!(
                        rss_mib = rss >> 20,
                        "resident memory below the resume mark: accepting ingest again"
                    );
                    last_relief = None;
                }
                Change::None => {
                    if adm.refusing.load(Ordering::Relaxed)
                        && last_relief.is_none_or(|t| t.elapsed() >= adm.retry_after)
                    {
                        committer.relieve();
                        last_relief = Some(Instant::now());
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_the_limit_until_below_the_resume_mark() {
        let l = Limits { memory_limit: 1000, memory_resume: 0.8, ..Limits::default() };
        let a = Admission::new(&l);
        assert!(a.admit().is_ok());
        assert_eq!(a.observe(900), Change::None);
        assert_eq!(a.observe(1001), Change::Started);
        let s = a.admit().unwrap_err();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.message().starts_with("limits.memory_limit:"), "{}", s.message());
        use prost::Message;
        let st = crate::pb::rpc::Status::decode(s.details()).unwrap();
        let info = crate::pb::rpc::RetryInfo::decode(&st.details[0].value[..]).unwrap();
        assert_eq!(info.retry_delay.unwrap().seconds, 1);
        assert_eq!(a.observe(850), Change::None, "between the marks it keeps refusing");
        assert!(a.admit().is_err());
        assert_eq!(a.observe(799), Change::Ended);
        assert!(a.admit().is_ok());
    }
}
