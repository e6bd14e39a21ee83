//! Notifications: where alerts go and how they get there. Knows no PromQL: it is handed the
//! alerts that changed ([`crate::alert::manager::Change`]) after each evaluation.
//!
//! # Layout
//! - [`route`]: the routing file, in Alertmanager's format (a subset: `route` with `receiver`,
//!   `matchers`/`match`/`match_re`, `routes`, `continue`, `group_by`; `receivers` with
//!   `webhook_configs`);
//! - [`payload`]: Alertmanager's webhook body (version 4) and its `POST /api/v2/alerts` body;
//! - [`queue`]: the durable queue: each notification a file, synced before the evaluation
//!   that made it is done, sent by its own task, retried with backoff until the receiver
//!   takes it, then removed; every attempt is appended to `attempts.log`.
pub mod payload;
pub mod queue;
pub mod route;

use crate::alert::eval::State;
use crate::alert::manager::Change;
use std::collections::HashMap;

/// What the evaluator hands over after each round: turns changes into queued notifications.
pub struct Notifier {
    pub routes: route::Config,
    pub alertmanagers: Vec<String>,
    pub external_url: String,
    pub external_labels: Vec<(String, String)>,
    pub queue: std::sync::Arc<queue::Queue>,
    /// When each firing alert was last sent to the Alertmanagers (by fingerprint).
    am_sent: std::sync::Mutex<HashMap<u64, i64>>,
    /// How long Alertmanager should consider a firing alert current without news.
    pub resend_ms: i64,
    pub eval_interval_ms: i64,
}

impl Notifier {
    pub fn new(routes: route::Config, cfg: &crate::config::AlertingConfig, queue: queue::Queue) -> Notifier {
        Notifier {
            routes,
            alertmanagers: cfg.alertmanagers.iter().map(|u| u.trim_end_matches('/').to_string()).collect(),
            external_url: cfg.external_url.clone(),
            external_labels: cfg.external_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            queue: std::sync::Arc::new(queue),
            am_sent: Default::default(),
            resend_ms: 60_000,
            eval_interval_ms: cfg.evaluation_interval.as_millis() as i64,
        }
    }

    pub fn queue_handle(&self) -> std::sync::Arc<queue::Queue> {
        self.queue.clone()
    }

    /// Queues what `changes` call for at `now`: to each routed receiver, a firing alert once
    /// when it starts firing and a resolved one once when it ends (if `send_resolved`); to
    /// each Alertmanager, firing alerts again every minute and resolved ones once.
    pub fn handle(&self, changes: &[Change], now: i64) -> std::io::Result<()> {
        let mut out: Vec<queue::Item> = Vec::new();
        for c in changes {
            let a = &c.alert;
            let mut labels = a.labels.clone();
            for (k, v) in &self.external_labels {
                if !labels.iter().any(|(x, _)| x == k) {
                    labels.push((k.clone(), v.clone()));
                }
            }
            labels.sort();
            let starts = a.state == State::Firing && c.was != State::Firing;
            let ends = a.state == State::Inactive && c.was == State::Firing;
            if starts || ends {
                for r in self.routes.route(&labels) {
                    let Some(rc) = self.routes.receiver(&r.receiver) else { continue };
                    for w in &rc.webhook_configs {
                        if ends && !w.send_resolved {
                            continue;
                        }
                        let body = payload::webhook(&r, &rc.name, &labels, a, &self.external_url, &c.expr);
                        out.push(queue::Item::new(&rc.name, &w.url, body, now));
                    }
                }
            }
            if !self.alertmanagers.is_empty() && a.state != State::Pending {
                let fp = payload::fingerprint(&labels);
                let mut sent = self.am_sent.lock().unwrap_or_else(|p| p.into_inner());
                let due = ends || starts || sent.get(&fp).is_none_or(|t| now - t >= self.resend_ms);
                if due {
                    if ends {
                        sent.remove(&fp);
                    } else {
                        sent.insert(fp, now);
                    }
                    let valid = now + 4 * self.resend_ms.max(self.eval_interval_ms);
                    let body = payload::alertmanager(&labels, a, &self.external_url, &c.expr, valid);
                    for am in &self.alertmanagers {
                        out.push(queue::Item::new("alertmanager", &format!("{am}/api/v2/alerts"), body.clone(), now));
                    }
                }
            }
        }
        self.queue.push_all(out)
    }
}
