//! Notifications: where alerts go and how they get there. Knows no PromQL: after each
//! evaluation it is handed every firing and recently resolved alert.
//!
//! # Layout
//! - [`route`]: the notification file, in Alertmanager's format (`global`, the `route` tree
//!   with grouping timers, `receivers`, `inhibit_rules`);
//! - [`receiver`]: email, webhook, Slack, DingTalk and Feishu integrations: rendering a
//!   group's notification, and sending a queued one;
//! - [`payload`]: what a notification says (Alertmanager's template data, the webhook
//!   payload, the default title and text) and the body of Alertmanager's `POST /api/v2/alerts`;
//! - [`dispatch`]: aggregation groups, their timers, muting, and the notification log;
//! - [`silence`]: silences, kept in a file;
//! - [`queue`]: the durable queue: each notification a file, synced before the round that
//!   made it is done, sent by its own task, retried with backoff, every attempt logged.
pub mod dispatch;
pub mod payload;
pub mod queue;
pub mod receiver;
pub mod route;
pub mod silence;

use crate::alert::eval::{Alert, State};
use payload::NAlert;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Hands alerts to the dispatcher and to the Alertmanagers, and flushes groups when due.
pub struct Notifier {
    pub config: Arc<route::Config>,
    pub silences: Arc<silence::Silences>,
    alertmanagers: Vec<String>,
    external_url: String,
    external_labels: Vec<(String, String)>,
    queue: Arc<queue::Queue>,
    dispatch: Mutex<dispatch::Dispatcher>,
    /// When each alert was last sent to the Alertmanagers, and whether as resolved.
    am_sent: Mutex<HashMap<u64, (i64, bool)>>,
    /// How often a firing alert is sent again to the Alertmanagers (Prometheus' resend delay).
    pub resend_ms: i64,
    eval_interval_ms: i64,
}

impl Notifier {
    pub fn open(
        config: route::Config,
        cfg: &crate::config::AlertingConfig,
        dir: &std::path::Path,
    ) -> Result<Notifier, String> {
        let queue = queue::Queue::open(dir).map_err(|e| format!("notification queue in {}: {e}", dir.display()))?;
        let limits = silence::Limits {
            max_silences: cfg.max_silences,
            max_matchers: cfg.max_silence_matchers,
            max_bytes: cfg.max_silence_bytes,
        };
        Ok(Notifier {
            config: Arc::new(config),
            silences: Arc::new(silence::Silences::open(dir, limits)?),
            alertmanagers: cfg.alertmanagers.iter().map(|u| u.trim_end_matches('/').to_string()).collect(),
            external_url: cfg.external_url.clone(),
            external_labels: cfg.external_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            queue: Arc::new(queue),
            dispatch: Mutex::new(dispatch::Dispatcher::open(dir.join("nflog.json"))?),
            am_sent: Default::default(),
            resend_ms: 60_000,
            eval_interval_ms: cfg.evaluation_interval.as_millis() as i64,
        })
    }

    pub fn queue_handle(&self) -> Arc<queue::Queue> {
        self.queue.clone()
    }

    fn dispatcher(&self) -> std::sync::MutexGuard<'_, dispatch::Dispatcher> {
        self.dispatch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An alert as notifications carry it: external labels added, the link to its rule.
    pub fn to_nalert(&self, a: &Alert, expr: &str) -> NAlert {
        let mut labels = a.labels.clone();
        for (k, v) in &self.external_labels {
            if !labels.iter().any(|(x, _)| x == k) {
                labels.push((k.clone(), v.clone()));
            }
        }
        labels.sort();
        NAlert {
            fingerprint: payload::fingerprint(&labels),
            labels,
            annotations: a.annotations.clone(),
            starts_at: a.active_at,
            ends_at: if a.state == State::Inactive { Some(a.resolved_at.unwrap_or(a.active_at)) } else { None },
            generator_url: payload::generator(&self.external_url, expr),
        }
    }

    /// After an evaluation: `alerts` (with their rules' expressions) are every alert the rules
    /// hold. Firing and resolved ones go to the groups (flushed at once when due) and to the
    /// Alertmanagers (firing ones again every minute, resolved ones until they are dropped).
    pub fn update(&self, alerts: &[(Alert, String)], now: i64) -> std::io::Result<()> {
        let list: Vec<NAlert> =
            alerts.iter().filter(|(a, _)| a.state != State::Pending).map(|(a, e)| self.to_nalert(a, e)).collect();
        self.dispatcher().update(&list, &self.config, now);
        if !self.alertmanagers.is_empty() {
            let mut sent = self.am_sent.lock().unwrap_or_else(|p| p.into_inner());
            let due: Vec<NAlert> = list
                .iter()
                .filter(|a| match sent.get(&a.fingerprint) {
                    None => true,
                    Some((_, was_resolved)) if *was_resolved == a.firing() => true,
                    Some((t, _)) => now - t >= self.resend_ms,
                })
                .cloned()
                .collect();
            sent.retain(|fp, _| list.iter().any(|a| a.fingerprint == *fp));
            for a in &due {
                sent.insert(a.fingerprint, (now, !a.firing()));
            }
            drop(sent);
            if !due.is_empty() {
                let valid = now + 4 * self.resend_ms.max(self.eval_interval_ms);
                let body = payload::alertmanager(&due, valid);
                let items = self
                    .alertmanagers
                    .iter()
                    .map(|am| {
                        queue::Item::new(
                            "alertmanager",
                            "alertmanager",
                            &format!("{am}/api/v2/alerts"),
                            body.clone(),
                            now,
                        )
                    })
                    .collect();
                self.queue.push_all(items)?;
            }
        }
        self.flush(now)
    }

    /// When the next group is due.
    pub fn next_flush(&self) -> Option<i64> {
        self.dispatcher().next_flush()
    }

    /// Flushes the groups due at `now`: notifications queued (synced), then the log saved.
    pub fn flush(&self, now: i64) -> std::io::Result<()> {
        let mut d = self.dispatcher();
        if d.next_flush().is_none_or(|t| t > now) {
            return Ok(());
        }
        let out = d.flush_due(&self.config, &self.silences, &self.external_url, now);
        let (entries, items): (Vec<_>, Vec<_>) = out.into_iter().map(|(k, e, it)| ((k, e), it)).unzip();
        self.queue.push_all(items.into_iter().flatten().collect())?;
        d.record(entries, now)
    }

    /// The silences that match `a` now, and whether an inhibition mutes it.
    pub fn muted(&self, a: &Alert, now: i64) -> (Vec<String>, bool) {
        let n = self.to_nalert(a, "");
        self.dispatcher().muted(&n, &self.config, &self.silences, now)
    }

    /// The notification groups now (receiver, group key, alerts, next flush).
    pub fn groups(&self) -> Vec<(String, String, usize, i64)> {
        self.dispatcher().groups()
    }
}
