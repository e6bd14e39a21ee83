//! Prometheus remote-write out: each endpoint is fed from what the store holds (everything in
//! it was acknowledged after an fsync), never from a queue in memory, so an outage of the
//! receiver or a `kill -9` of the daemon only delays data.
//!
//! The endpoint's series are split between `shards` senders by id; a sender repeatedly lists
//! its series whose newest sample is past the cursor ([`Store::last_sample_times`]), reads the
//! samples after the cursor, sends them in requests of at most `batch_samples` samples, and
//! advances the cursor of each series in a request once the receiver answered 2xx. One request
//! at a time per sender, so a series' samples arrive in order. The derived series (inference
//! and log counters) go through one more sender, by 10-second buckets, `derived_delay` behind.
//!
//! Answers: 2xx advances; 5xx, 429 and transport errors are retried with backoff and jitter
//! (a 429's `Retry-After` honoured); any other 4xx splits the request in halves (by series,
//! then by samples) so that only the samples the receiver refuses are skipped and counted as
//! dropped. That also covers the requests sent again after a crash: Prometheus refuses a
//! sample older than the series' newest as out of order.
use super::cursor::{Cursors, DERIVED};
use super::relabel::{add_external, Relabeler};
use super::wire::{encode_write_request, Wire};
use crate::config::{QueryConfig, RemoteWriteConfig};
use crate::promql::{derived, Labels, NAME};
use crate::store::index::FxMap;
use crate::store::{Store, StoreRef};
use crate::telemetry::T;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HOUR: i64 = 3_600_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One configured endpoint and its state.
pub struct Endpoint {
    pub name: String,
    cfg: RemoteWriteConfig,
    client: reqwest::Client,
    relabel: Relabeler,
    /// `fleet.external_labels` overlaid with the endpoint's own, sorted.
    external: Labels,
    cursors: Mutex<Cursors>,
    /// Per sender (the last one is the derived sender): how far behind it was at its last pass.
    lag_ms: Vec<AtomicI64>,
    pending: Vec<AtomicU64>,
    /// When the last "dropped" warning was logged (ms), to log at most one every 10 s.
    last_warn: AtomicI64,
    /// The derived series' read budget.
    derived_query: QueryConfig,
    /// How far back the derived sender starts on a new endpoint.
    derived_retention_ms: i64,
}

/// What a sender sends in one request: series with their samples.
pub struct Outgoing {
    pub labels: Arc<Labels>,
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
}

enum Answer {
    Sent,
    Refused(u16, String),
}

/// The daemon is stopping; nothing more is sent and cursors stay where the receiver left them.
struct Stopped;

impl Endpoint {
    pub fn new(
        cfg: &RemoteWriteConfig,
        fleet_external: &std::collections::BTreeMap<String, String>,
        dir: &std::path::Path,
        now: i64,
        query: &QueryConfig,
        derived_retention: Duration,
    ) -> Result<Endpoint, String> {
        let name = cfg.endpoint_name();
        let relabel = Relabeler::new(&cfg.relabel)?;
        let mut ext = fleet_external.clone();
        ext.extend(cfg.external_labels.clone());
        let external: Labels = ext.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let epoch = cfg.backfill_ms().map_or(i64::MIN, |b| now - b);
        let cursors = Cursors::open(dir, &name, epoch).map_err(|e| format!("cursor of {name}: {e}"))?;
        let mut b =
            reqwest::Client::builder().timeout(cfg.timeout).connect_timeout(cfg.timeout.min(Duration::from_secs(10)));
        if let Some(ca) = &cfg.tls_ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("tls_ca_file {}: {e}", ca.display()))?;
            for c in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("tls_ca_file {}: {e}", ca.display()))?
            {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
            let mut pem = std::fs::read(cert).map_err(|e| format!("tls_cert_file {}: {e}", cert.display()))?;
            pem.extend(std::fs::read(key).map_err(|e| format!("tls_key_file {}: {e}", key.display()))?);
            b = b.identity(reqwest::Identity::from_pem(&pem).map_err(|e| format!("client certificate: {e}"))?);
        }
        let client = b.build().map_err(|e| format!("HTTP client: {e}"))?;
        let mut derived_query = query.clone();
        derived_query.max_series = usize::MAX;
        derived_query.max_samples = u64::MAX;
        derived_query.max_points = u64::MAX;
        derived_query.timeout = Duration::from_secs(3600);
        Ok(Endpoint {
            name,
            cfg: cfg.clone(),
            client,
            relabel,
            external,
            cursors: Mutex::new(cursors),
            lag_ms: (0..=cfg.shards).map(|_| AtomicI64::new(0)).collect(),
            pending: (0..=cfg.shards).map(|_| AtomicU64::new(0)).collect(),
            last_warn: AtomicI64::new(i64::MIN),
            derived_query,
            derived_retention_ms: derived_retention.as_millis() as i64,
        })
    }

    /// The labels a series leaves with: relabeled, external labels added; `None`: not sent.
    fn outgoing_labels(&self, ls: Labels) -> Option<Labels> {
        let mut ls = if self.relabel.is_empty() { ls } else { self.relabel.apply(ls)? };
        add_external(&mut ls, &self.external);
        Some(ls)
    }

    fn publish_lag(&self) {
        let lag = self.lag_ms.iter().map(|a| a.load(Ordering::Relaxed)).max().unwrap_or(0);
        let pending: u64 = self.pending.iter().map(|a| a.load(Ordering::Relaxed)).sum();
        T.remote_write_lag_seconds.set(&[&self.name], lag as f64 / 1000.0);
        T.remote_write_pending_samples.set(&[&self.name], pending as f64);
    }

    /// Posts one encoded request until the receiver answers 2xx or refuses it with a 4xx.
    async fn post(&self, body: Vec<u8>, samples: u64, shutdown: &CancellationToken) -> Result<Answer, Stopped> {
        let mut backoff = self.cfg.min_backoff;
        loop {
            let mut req = self
                .client
                .post(&self.cfg.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("User-Agent", concat!("modelwatch/", env!("CARGO_PKG_VERSION")))
                .header("X-Prometheus-Remote-Write-Version", "0.1.0");
            for (k, v) in &self.cfg.headers {
                req = req.header(k, v);
            }
            if let Some(token) = self.token() {
                req = req.bearer_auth(token);
            }
            let (retry, wait) = match req.body(body.clone()).send().await {
                Ok(resp) if resp.status().is_success() => {
                    T.remote_write_requests.add(&[&self.name, "sent"], 1);
                    T.remote_write_samples.add(&[&self.name, "sent"], samples);
                    return Ok(Answer::Sent);
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = resp.text().await.unwrap_or_default();
                    T.remote_write_requests.add(&[&self.name, "failed"], 1);
                    T.remote_write_samples.add(&[&self.name, "failed"], samples);
                    if status == 429 || status >= 500 {
                        (format!("HTTP {status}: {}", text.trim()), after)
                    } else {
                        return Ok(Answer::Refused(status, text.trim().chars().take(300).collect()));
                    }
                }
                Err(e) => {
                    T.remote_write_requests.add(&[&self.name, "failed"], 1);
                    T.remote_write_samples.add(&[&self.name, "failed"], samples);
                    (format!("{e}"), None)
                }
            };
            T.remote_write_requests.add(&[&self.name, "retried"], 1);
            T.remote_write_samples.add(&[&self.name, "retried"], samples);
            let jitter = 1.0 + 0.5 * random_unit();
            let wait = wait.unwrap_or(backoff).min(self.cfg.max_backoff.max(Duration::from_secs(1)));
            let wait = wait.mul_f64(jitter);
            tracing::debug!(endpoint = %self.name, error = %retry, wait_ms = wait.as_millis() as u64, "remote-write: retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Stopped),
                _ = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(self.cfg.max_backoff);
        }
    }

    fn token(&self) -> Option<String> {
        if let Some(f) = &self.cfg.bearer_token_file {
            match std::fs::read_to_string(f) {
                Ok(t) => return Some(t.trim().to_string()),
                Err(e) => {
                    tracing::warn!(endpoint = %self.name, file = %f.display(), error = %e, "remote-write: cannot read bearer_token_file")
                }
            }
        }
        (!self.cfg.bearer_token.is_empty()).then(|| self.cfg.bearer_token.clone())
    }

    /// Sends `series` (each series' samples in order), splitting a refused request in halves
    /// until what is refused is single samples, which are skipped and counted.
    async fn deliver(&self, series: Vec<Outgoing>, shutdown: &CancellationToken) -> Result<(), Stopped> {
        let mut stack = vec![series];
        let mut wire = Wire::default();
        while let Some(part) = stack.pop() {
            if part.is_empty() {
                continue;
            }
            let samples: u64 = part.iter().map(|s| s.ts.len() as u64).sum();
            let body = encode_write_request(&mut wire, &part);
            match self.post(body, samples, shutdown).await? {
                Answer::Sent => {}
                Answer::Refused(status, text) => {
                    if part.len() > 1 {
                        let mut first = part;
                        let second = first.split_off(first.len() / 2);
                        stack.push(second);
                        stack.push(first);
                    } else if samples > 1 {
                        let mut s = part.into_iter().next().expect("one series");
                        let at = s.ts.len() / 2;
                        let second =
                            Outgoing { labels: s.labels.clone(), ts: s.ts.split_off(at), vals: s.vals.split_off(at) };
                        stack.push(vec![second]);
                        stack.push(vec![s]);
                    } else {
                        T.remote_write_requests.add(&[&self.name, "dropped"], 1);
                        T.remote_write_samples.add(&[&self.name, "dropped"], 1);
                        let now = crate::clock::wall_ms();
                        if self.last_warn.load(Ordering::Relaxed) < now - 10_000 {
                            self.last_warn.store(now, Ordering::Relaxed);
                            let s = &part[0];
                            tracing::warn!(
                                endpoint = %self.name, status, answer = %text,
                                series = %series_name(&s.labels), ts = s.ts[0],
                                "remote-write: the receiver refused a sample; it is skipped (counted in modelwatch_remote_write_samples_total{{outcome=\"dropped\"}}; further ones for 10 s are only counted)"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn advance(&self, updates: &[(u64, i64)]) {
        if let Err(e) = lock(&self.cursors).advance(updates) {
            tracing::error!(endpoint = %self.name, error = %e, "remote-write: cannot write the cursor; these samples may be sent again after a restart");
        }
    }
}

fn series_name(ls: &Labels) -> String {
    let name = crate::promql::label(ls, NAME).unwrap_or("");
    let rest: Vec<String> = ls.iter().filter(|(k, _)| k != NAME).map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", rest.join(", "))
}

/// A number in [0, 1) for jitter, from a per-thread xorshift seeded by the clock.
fn random_unit() -> f64 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new(
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)) | 1
    ));
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// A series with samples waiting to be sent by one sender.
struct Pending {
    id: u64,
    labels: Arc<Labels>,
    /// Samples after this timestamp are still to be sent.
    from: i64,
    last: i64,
}

/// One sender's series labels as they leave (`None`: relabeled away), cached: a series'
/// labels never change.
type LabelCache = FxMap<u64, Option<Arc<Labels>>>;

/// The sender's series with samples past their cursor, and the lag and count they add up to.
fn plan(store: &Store, ep: &Endpoint, shard: usize, cache: &mut LabelCache) -> (VecDeque<Pending>, i64, u64) {
    let shards = ep.cfg.shards as u64;
    let mut out = VecDeque::new();
    let (mut lag, mut pending) = (0i64, 0u64);
    let last_times = store.last_sample_times();
    let cursors = lock(&ep.cursors);
    let mut want = Vec::new();
    for (id, last) in last_times {
        if id % shards != shard as u64 {
            continue;
        }
        let from = cursors.get(id);
        if last > from {
            want.push((id, from, last));
        }
    }
    drop(cursors);
    for (id, from, last) in want {
        let labels = cache
            .entry(id)
            .or_insert_with(|| {
                let meta = store.series_meta(id)?;
                let mut ls = meta.labels.clone();
                let at = ls.partition_point(|(k, _)| k.as_str() < NAME);
                ls.insert(at, (NAME.to_string(), meta.name.clone()));
                ep.outgoing_labels(ls).map(Arc::new)
            })
            .clone();
        let Some(labels) = labels else { continue };
        pending += store.samples_after(id, from).unwrap_or(0);
        // A series never sent (cursor at the epoch's start) counts as at most 30 days behind.
        lag = lag.max(last.saturating_sub(from).min(30 * 24 * HOUR));
        out.push_back(Pending { id, labels, from, last });
    }
    (out, lag, pending)
}

/// Samples of `p` after `p.from`: the first non-empty window of an hour, growing eightfold.
fn read_after(store: &Store, p: &Pending) -> (Vec<i64>, Vec<f64>) {
    let mut window = HOUR as i128;
    loop {
        let end = if p.last as i128 - p.from as i128 <= window { p.last } else { (p.from as i128 + window) as i64 };
        match store.read_samples(p.id, p.from.saturating_add(1), end) {
            Ok((ts, vals)) if !ts.is_empty() => return (ts, vals),
            Ok(_) if end < p.last => window *= 8,
            Ok(_) => return (Vec::new(), Vec::new()),
            Err(e) => {
                tracing::error!(series = p.id, error = %e, "remote-write: cannot read a series; it is retried at the next pass");
                return (Vec::new(), Vec::new());
            }
        }
    }
}

/// Takes up to `max` samples off the front of `plan`: the request and the cursor updates it
/// makes once acknowledged. A series cut short goes back to the front.
fn next_request(store: &Store, plan: &mut VecDeque<Pending>, max: usize) -> (Vec<Outgoing>, Vec<(u64, i64)>) {
    let (mut out, mut updates) = (Vec::new(), Vec::new());
    let mut left = max;
    while left > 0 {
        let Some(mut p) = plan.pop_front() else { break };
        let (mut ts, mut vals) = read_after(store, &p);
        if ts.is_empty() {
            continue;
        }
        let take = left.min(ts.len());
        ts.truncate(take);
        vals.truncate(take);
        let newest = ts[take - 1];
        left -= take;
        updates.push((p.id, newest));
        out.push(Outgoing { labels: p.labels.clone(), ts, vals });
        if newest < p.last {
            p.from = newest;
            plan.push_front(p);
        }
    }
    (out, updates)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// One sender of metric series: its share of the series, one request at a time.
async fn sender(ep: Arc<Endpoint>, store: StoreRef, shard: usize, shutdown: CancellationToken) {
    let mut cache: LabelCache = Default::default();
    loop {
        let (e, s) = (ep.clone(), store.clone());
        let Some((mut queue, lag, pending, c)) = blocking(move || {
            let mut c = cache;
            let (q, lag, pending) = plan(&s, &e, shard, &mut c);
            (q, lag, pending, c)
        })
        .await
        else {
            return;
        };
        cache = c;
        ep.lag_ms[shard].store(lag, Ordering::Relaxed);
        ep.pending[shard].store(pending, Ordering::Relaxed);
        ep.publish_lag();
        if queue.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(ep.cfg.interval) => continue,
            }
        }
        while !queue.is_empty() && !shutdown.is_cancelled() {
            let (s, max) = (store.clone(), ep.cfg.batch_samples);
            let Some((q, (series, updates))) = blocking(move || {
                let mut q = queue;
                let r = next_request(&s, &mut q, max);
                (q, r)
            })
            .await
            else {
                return;
            };
            queue = q;
            let sent: u64 = series.iter().map(|s| s.ts.len() as u64).sum();
            if ep.deliver(series, &shutdown).await.is_err() {
                return;
            }
            ep.advance(&updates);
            let left = ep.pending[shard].load(Ordering::Relaxed).saturating_sub(sent);
            ep.pending[shard].store(left, Ordering::Relaxed);
        }
    }
}

/// The sender of the derived series: every bucket that ended `derived_delay` ago, an hour of
/// buckets per request group at most.
async fn derived_sender(
    ep: Arc<Endpoint>,
    store: StoreRef,
    clock: crate::clock::ClockRef,
    shutdown: CancellationToken,
) {
    let slot = ep.cfg.shards;
    let bucket = store.bucket_ms();
    // A derived series begins with a zero at the start of its first bucket, which can be the
    // previous window's end: it is sent for series first seen after this sender's first
    // window (before that, the receiver may have it already).
    let mut seen: std::collections::HashSet<Arc<Labels>> = Default::default();
    let mut first_window = true;
    loop {
        let horizon = (clock.now_ms() - ep.cfg.derived_delay.as_millis() as i64).div_euclid(bucket) * bucket;
        let mut from = lock(&ep.cursors).get(DERIVED);
        let oldest = (horizon - ep.derived_retention_ms).div_euclid(HOUR) * HOUR;
        if from < oldest {
            from = oldest;
        }
        ep.lag_ms[slot].store((horizon - from).max(0), Ordering::Relaxed);
        ep.publish_lag();
        if from >= horizon {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(ep.cfg.interval.max(Duration::from_millis(bucket as u64 / 2))) => continue,
            }
        }
        let to = horizon.min(from.saturating_add(HOUR));
        let (e, s) = (ep.clone(), store.clone());
        let Some(read) = blocking(move || {
            let mut budget = crate::query::Budget::new(&e.derived_query);
            derived::select(&s, &[], from, to, &mut budget).map(|all| {
                all.into_iter()
                    .filter_map(|r| {
                        let labels = Arc::new(e.outgoing_labels(r.labels)?);
                        Some(Outgoing { labels, ts: r.ts, vals: r.vals })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await
        else {
            return;
        };
        let series: Vec<Outgoing> = match read {
            Ok(all) => all
                .into_iter()
                .filter_map(|mut o| {
                    let new = seen.insert(o.labels.clone()) && !first_window;
                    let a = o.ts.partition_point(|&t| t < from);
                    let b = o.ts.partition_point(|&t| t <= from);
                    let keep_from = if new && b > a && o.vals[a] == 0.0 { a } else { b };
                    o.ts.drain(..keep_from);
                    o.vals.drain(..keep_from);
                    (!o.ts.is_empty()).then_some(o)
                })
                .collect(),
            Err(e) => {
                tracing::error!(endpoint = %ep.name, error = %e, "remote-write: cannot read the derived series; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(ep.cfg.max_backoff) => continue,
                }
            }
        };
        ep.pending[slot].store(series.iter().map(|s| s.ts.len() as u64).sum(), Ordering::Relaxed);
        // Requests of at most batch_samples: whole series while they fit, a long one cut.
        let mut batch: Vec<Outgoing> = Vec::new();
        let mut n = 0;
        let mut queue: VecDeque<Outgoing> = series.into();
        while let Some(mut s) = queue.pop_front() {
            let room = ep.cfg.batch_samples - n;
            if s.ts.len() > room {
                let rest =
                    Outgoing { labels: s.labels.clone(), ts: s.ts.split_off(room), vals: s.vals.split_off(room) };
                queue.push_front(rest);
            }
            n += s.ts.len();
            if !s.ts.is_empty() {
                batch.push(s);
            }
            if n >= ep.cfg.batch_samples {
                if ep.deliver(std::mem::take(&mut batch), &shutdown).await.is_err() {
                    return;
                }
                n = 0;
            }
        }
        if ep.deliver(batch, &shutdown).await.is_err() {
            return;
        }
        ep.advance(&[(DERIVED, to)]);
        ep.pending[slot].store(0, Ordering::Relaxed);
        first_window = false;
    }
}

/// Starts every sender of `ep`, and the task that syncs its cursor log every second (and
/// folds it into the snapshot at shutdown).
pub fn spawn(ep: Arc<Endpoint>, store: StoreRef, clock: crate::clock::ClockRef, shutdown: CancellationToken) {
    for shard in 0..ep.cfg.shards {
        tokio::spawn(sender(ep.clone(), store.clone(), shard, shutdown.clone()));
    }
    if ep.cfg.derived {
        tokio::spawn(derived_sender(ep.clone(), store.clone(), clock, shutdown.clone()));
    }
    tokio::spawn(async move {
        loop {
            let stop = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            };
            let e = ep.clone();
            let _ = blocking(move || {
                let mut c = lock(&e.cursors);
                let r = if stop { c.compact() } else { c.sync() };
                if let Err(err) = r {
                    tracing::error!(endpoint = %e.name, error = %err, "remote-write: cannot sync the cursor");
                }
            })
            .await;
            if stop {
                return;
            }
        }
    });
}
