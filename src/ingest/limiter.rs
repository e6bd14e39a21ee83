//! Per-client limits: streams open at once (`limits.max_streams_per_client`) and batches per
//! second (`limits.max_batch_rate_per_client`, a token bucket holding one second's worth, at
//! least one batch). A client is its client id, or `service <name>` for batches without one.
//! gRPC-free: the adapters turn refusals into RESOURCE_EXHAUSTED.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Entry {
    streams: u32,
    tokens: f64,
    at: Instant,
}

pub struct ClientLimits {
    max_streams: u32,
    /// Batches per second; 0: no limit.
    rate: f64,
    burst: f64,
    clients: Mutex<HashMap<String, Entry>>,
}

/// Why a client's call is refused.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    Streams { open: u32, limit: u32 },
    Rate { limit: f64, retry_after: Duration },
}

impl Refusal {
    /// The `reason` label of `modelwatch_ingest_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Streams { .. } => "client_streams",
            Refusal::Rate { .. } => "client_rate",
        }
    }

    pub fn message(&self, client: &str) -> String {
        match self {
            Refusal::Streams { open, limit } => format!(
                "limits.max_streams_per_client: client {client:?} has {open} streams open, the limit is {limit}"
            ),
            Refusal::Rate { limit, retry_after } => format!(
                "limits.max_batch_rate_per_client: client {client:?} sends more than {limit} batches/s; \
                 nothing of this batch was stored; retry in {retry_after:?}"
            ),
        }
    }
}

/// The key a batch is counted under.
pub fn client_key(client_id: &str, service: &str) -> String {
    if client_id.is_empty() {
        format!("service {service}")
    } else {
        client_id.to_string()
    }
}

/// An open stream; dropping it closes it.
pub struct StreamSlot {
    limits: Arc<ClientLimits>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut m = self.limits.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = m.get_mut(&self.key) {
            e.streams = e.streams.saturating_sub(1);
        }
    }
}

impl ClientLimits {
    pub fn new(max_streams: u32, rate: f64) -> ClientLimits {
        ClientLimits { max_streams, rate, burst: rate.max(1.0), clients: Mutex::new(HashMap::new()) }
    }

    fn with<R>(&self, key: &str, now: Instant, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(key.to_string()).or_insert(Entry { streams: 0, tokens: self.burst, at: now });
        f(e)
    }

    /// Opens a stream for `key`, or says how many it has.
    pub fn open_stream(self: &Arc<Self>, key: &str) -> Result<StreamSlot, Refusal> {
        let max = self.max_streams;
        self.with(key, Instant::now(), |e| {
            if max > 0 && e.streams >= max {
                return Err(Refusal::Streams { open: e.streams, limit: max });
            }
            e.streams += 1;
            Ok(())
        })?;
        Ok(StreamSlot { limits: self.clone(), key: key.to_string() })
    }

    /// Takes one batch from `key`'s bucket, or says when one will be there.
    pub fn take_batch(&self, key: &str, now: Instant) -> Result<(), Refusal> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let (rate, burst) = (self.rate, self.burst);
        self.with(key, now, |e| {
            let elapsed = now.saturating_duration_since(e.at).as_secs_f64();
            e.tokens = (e.tokens + elapsed * rate).min(burst);
            e.at = now;
            if e.tokens >= 1.0 {
                e.tokens -= 1.0;
                Ok(())
            } else {
                let wait = Duration::from_secs_f64(((1.0 - e.tokens) / rate).min(3600.0));
                Err(Refusal::Rate { limit: rate, retry_after: wait.max(Duration::from_millis(1)) })
            }
        })
    }

    /// Forgets clients with no stream open whose bucket is full again.
    pub fn expire(&self, now: Instant) -> usize {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.len();
        let (rate, burst) = (self.rate, self.burst);
        m.retain(|_, e| {
            let full = rate <= 0.0 || e.tokens + now.saturating_duration_since(e.at).as_secs_f64() * rate >= burst;
            e.streams > 0 || !full
        });
        n - m.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_counted_per_client_and_freed_on_drop() {
        let l = Arc::new(ClientLimits::new(2, 0.0));
        let a = l.open_stream("a").unwrap();
        let _b = l.open_stream("a").unwrap();
        assert_eq!(l.open_stream("a").err(), Some(Refusal::Streams { open: 2, limit: 2 }));
        let _other = l.open_stream("b").unwrap();
        drop(a);
        let _c = l.open_stream("a").unwrap();
    }

    #[test]
    fn the_bucket_holds_a_second_and_refills() {
        let l = ClientLimits::new(0, 4.0);
        let t = Instant::now();
        for _ in 0..4 {
            l.take_batch("a", t).unwrap();
        }
        match l.take_batch("a", t) {
            Err(Refusal::Rate { retry_after, .. }) => assert_eq!(retry_after, Duration::from_millis(250)),
            other => panic!("{other:?}"),
        }
        l.take_batch("b", t).unwrap();
        l.take_batch("a", t + Duration::from_millis(250)).unwrap();
        assert!(l.take_batch("a", t + Duration::from_millis(250)).is_err());
        assert_eq!(l.expire(t + Duration::from_secs(2)), 2);
        assert!(ClientLimits::new(0, 0.0).take_batch("a", t).is_ok());
    }
}
