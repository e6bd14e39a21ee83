//! The durable notification queue. Each notification is a file in `notify/queue/`, written and
//! synced before [`Queue::push_all`] returns, so a notification made by an evaluation survives
//! a crash right after it. A sender task delivers each on its own (a slow or dead receiver
//! holds up nothing else), retries failures with exponential backoff (1 s doubling to
//! 5 min), and removes the file once the receiver answered 2xx; a notification is dropped
//! after `MAX_AGE_MS` undelivered. Every attempt is a line in `notify/attempts.log`.
//!
//! Delivery is at least once: a crash between a receiver's 2xx and the file's removal sends
//! that notification again after the restart.
use crate::clock::ClockRef;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Undelivered notifications older than this are given up (and logged).
pub const MAX_AGE_MS: i64 = 24 * 3_600_000;
const MAX_BACKOFF_MS: i64 = 5 * 60_000;
/// The attempt log is rotated (to `attempts.log.1`) past this size.
const LOG_ROTATE_BYTES: u64 = 16 << 20;

/// How an item travels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A POST of `body` (JSON) to `url`.
    #[default]
    Http,
    /// `body` is the whole message, sent over SMTP from `mail_from` to `mail_to`.
    Email,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered(String),
    /// Worth another try (no answer, 5xx, 429, a transient SMTP error).
    Retry(String),
    /// Refused for good (4xx, a permanent SMTP error, a robot's error code): not retried.
    Fail(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub receiver: String,
    /// Which of the receiver's integrations (`webhook[0]`, `email[1]`, `alertmanager`).
    #[serde(default)]
    pub integration: String,
    pub url: String,
    /// The JSON body, or the mail, as text.
    pub body: String,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mail_from: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mail_to: Vec<String>,
    pub created_ms: i64,
    pub attempts: u32,
    /// When the next attempt is due (ms).
    pub next_ms: i64,
}

impl Item {
    pub fn new(receiver: &str, integration: &str, url: &str, body: Vec<u8>, now: i64) -> Item {
        Item {
            receiver: receiver.into(),
            integration: integration.into(),
            url: url.into(),
            body: String::from_utf8(body).unwrap_or_default(),
            kind: Kind::Http,
            mail_from: String::new(),
            mail_to: Vec::new(),
            created_ms: now,
            attempts: 0,
            next_ms: now,
        }
    }
}

struct Inner {
    items: BTreeMap<u64, Item>,
    next_seq: u64,
    in_flight: HashSet<u64>,
}

pub struct Queue {
    dir: PathBuf,
    log_path: PathBuf,
    inner: Mutex<Inner>,
    log: Mutex<()>,
    wake: tokio::sync::Notify,
}

pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

impl Queue {
    /// Opens (creating) `dir/queue` and reads what is left in it.
    pub fn open(dir: &Path) -> std::io::Result<Queue> {
        let qdir = dir.join("queue");
        std::fs::create_dir_all(&qdir)?;
        let mut items = BTreeMap::new();
        for e in std::fs::read_dir(&qdir)? {
            let p = e?.path();
            let Some(seq) = p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if p.extension().is_some_and(|x| x == "json") {
                match std::fs::read(&p).map(|b| serde_json::from_slice::<Item>(&b)) {
                    Ok(Ok(it)) => {
                        items.insert(seq, it);
                    }
                    _ => tracing::error!(path = %p.display(), "an unreadable queued notification is left in place"),
                }
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
        let next_seq = items.keys().next_back().map_or(1, |k| k + 1);
        if !items.is_empty() {
            tracing::info!(queued = items.len(), "notifications left from before the restart will be sent");
        }
        Ok(Queue {
            dir: qdir,
            log_path: dir.join("attempts.log"),
            inner: Mutex::new(Inner { items, next_seq, in_flight: HashSet::new() }),
            log: Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Queues `items` durably (each file synced, then the folder).
    pub fn push_all(&self, items: Vec<Item>) -> std::io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        for it in items {
            let seq = {
                let mut inner = self.lock();
                let s = inner.next_seq;
                inner.next_seq += 1;
                s
            };
            write_synced(&self.path(seq), &serde_json::to_vec(&it).map_err(std::io::Error::other)?)?;
            self.lock().items.insert(seq, it);
        }
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.wake.notify_one();
        Ok(())
    }

    /// Notifications not yet delivered.
    /// Notifications queued now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn pending(&self) -> Vec<Item> {
        self.lock().items.values().cloned().collect()
    }

    fn record(&self, now: i64, it: &Item, outcome: &str) {
        let _g = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if std::fs::metadata(&self.log_path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
            let _ = std::fs::rename(&self.log_path, self.log_path.with_extension("log.1"));
        }
        let line = serde_json::json!({
            "time": super::payload::rfc3339(now),
            "receiver": it.receiver,
            "integration": it.integration,
            "url": it.url,
            "attempt": it.attempts,
            "outcome": outcome,
        });
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path) {
            let _ = writeln!(f, "{line}");
        }
    }

    /// The attempt log's lines (newest last).
    pub fn attempts(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn finish(&self, seq: u64, now: i64, result: Outcome) {
        let mut inner = self.lock();
        inner.in_flight.remove(&seq);
        let Some(mut it) = inner.items.get(&seq).cloned() else { return };
        it.attempts += 1;
        let (outcome, done, label) = match result {
            Outcome::Delivered(m) => (m, true, "delivered"),
            Outcome::Fail(m) => (format!("{m}; not retried"), true, "failed"),
            Outcome::Retry(m) => (m, false, "retry"),
        };
        let expired = !done && now - it.created_ms > MAX_AGE_MS;
        // `webhook[0]` counts as `webhook`.
        let integration = it.integration.split('[').next().unwrap_or_default();
        crate::telemetry::T.notifications.add(&[&it.receiver, integration, if expired { "expired" } else { label }], 1);
        if done || expired {
            inner.items.remove(&seq);
            drop(inner);
            let _ = std::fs::remove_file(self.path(seq));
            let line = if expired { format!("{outcome}; given up after {} attempts", it.attempts) } else { outcome };
            if !line.starts_with("delivered") {
                tracing::warn!(receiver = %it.receiver, integration = %it.integration, outcome = %line, "notification not delivered");
            }
            self.record(now, &it, &line);
            return;
        }
        let backoff = (1000i64 << (it.attempts - 1).min(20)).min(MAX_BACKOFF_MS);
        it.next_ms = now + backoff;
        inner.items.insert(seq, it.clone());
        drop(inner);
        if let Err(e) = write_synced(&self.path(seq), &serde_json::to_vec(&it).unwrap_or_default()) {
            tracing::error!(error = %e, "a queued notification's retry state was not saved");
        }
        self.record(now, &it, &format!("{outcome}; retry in {} ms", backoff));
    }

    /// Sends what is due until `shutdown`; each delivery runs as its own task.
    pub async fn run(
        self: Arc<Self>,
        sender: Arc<super::receiver::Sender>,
        clock: ClockRef,
        shutdown: CancellationToken,
    ) {
        loop {
            let now = clock.now_ms();
            let due: Vec<(u64, Item)> = {
                let mut inner = self.lock();
                let d: Vec<(u64, Item)> = inner
                    .items
                    .iter()
                    .filter(|(s, it)| it.next_ms <= now && !inner.in_flight.contains(s))
                    .map(|(s, it)| (*s, it.clone()))
                    .collect();
                for (s, _) in &d {
                    inner.in_flight.insert(*s);
                }
                d
            };
            for (seq, it) in due {
                let (q, s, clock) = (self.clone(), sender.clone(), clock.clone());
                tokio::spawn(async move {
                    let result = s.send(&it, clock.now_ms()).await;
                    q.finish(seq, clock.now_ms(), result);
                    q.wake.notify_one();
                });
            }
            // Retries are due by the (injectable) clock: look again every 200 ms, or at once
            // when something is queued or a delivery ends.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}
