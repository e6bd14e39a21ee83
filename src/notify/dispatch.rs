//! Grouping, as Alertmanager's dispatcher does it. Alerts are routed into aggregation groups
//! (route × values of its `group_by` labels). A new group waits `group_wait` (at once if its
//! alert started longer ago than that) and then flushes every `group_interval`. A flush mutes
//! silenced and inhibited alerts and asks the notification log whether each receiver's
//! integration needs the group's state: new firing alerts, new resolutions (`send_resolved`),
//! every alert resolved, or `repeat_interval` passed. The log (`notify/nflog.json`) is saved
//! after the notifications it records are queued, so a restart neither re-pages nor loses a
//! resolution: the groups rebuild from the restored rule states, and the log remembers what
//! each receiver was told.
use super::payload::{NAlert, Notification};
use super::route::{Config, Inhibit, Route};
use super::silence::Silences;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Notification log entries are dropped this long after their last notification.
pub const NFLOG_RETENTION_MS: i64 = 5 * 86_400_000;

/// What a receiver's integration was last told about a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub firing: BTreeSet<u64>,
    pub resolved: BTreeSet<u64>,
    pub at_ms: i64,
}

/// Alertmanager's `needsUpdate`.
pub fn needs_update(
    e: Option<&Entry>,
    firing: &BTreeSet<u64>,
    resolved: &BTreeSet<u64>,
    send_resolved: bool,
    repeat_ms: i64,
    now: i64,
) -> bool {
    let Some(e) = e else { return !firing.is_empty() };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    // Everything resolved: said once, whether or not resolutions are sent, so that the
    // log forgets the firing alerts.
    if firing.is_empty() {
        return !e.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&e.resolved) {
        return true;
    }
    e.at_ms + repeat_ms <= now
}

struct Group {
    receiver: String,
    key: String,
    labels: Vec<(String, String)>,
    alerts: BTreeMap<u64, NAlert>,
    next_flush: i64,
    flushed: bool,
    last_flush: i64,
    wait_ms: i64,
    interval_ms: i64,
    repeat_ms: i64,
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    entries: BTreeMap<String, Entry>,
}

pub struct Dispatcher {
    groups: BTreeMap<String, Group>,
    nflog: BTreeMap<String, Entry>,
    saved_bytes: Vec<u8>,
    path: PathBuf,
    /// Every alert of the last update (for inhibitions).
    current: Vec<NAlert>,
}

fn group_key(r: &Route, labels: &[(String, String)]) -> String {
    let l: Vec<String> =
        labels.iter().map(|(k, v)| format!("{k}={}", serde_json::to_string(v).expect("string"))).collect();
    format!("{}:{{{}}}", r.key, l.join(","))
}

/// Whether `a` is inhibited by a firing alert of `all` under `rules`.
pub fn inhibited(a: &NAlert, all: &[NAlert], rules: &[Inhibit]) -> bool {
    let get =
        |ls: &[(String, String)], k: &str| ls.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone()).unwrap_or_default();
    rules.iter().any(|r| {
        if !r.target.iter().all(|m| m.matches(&a.labels)) {
            return false;
        }
        let two_sided = r.source.iter().all(|m| m.matches(&a.labels));
        all.iter().any(|s| {
            s.firing()
                && s.fingerprint != a.fingerprint
                && r.source.iter().all(|m| m.matches(&s.labels))
                && !(two_sided && r.target.iter().all(|m| m.matches(&s.labels)))
                && r.equal.iter().all(|k| get(&s.labels, k) == get(&a.labels, k))
        })
    })
}

impl Dispatcher {
    pub fn open(path: PathBuf) -> Result<Dispatcher, String> {
        let saved: Saved = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Dispatcher {
            groups: BTreeMap::new(),
            nflog: saved.entries,
            saved_bytes: Vec::new(),
            path,
            current: Vec::new(),
        })
    }

    /// Takes the full set of firing and recently resolved alerts at `now`.
    pub fn update(&mut self, alerts: &[NAlert], cfg: &Config, now: i64) {
        let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
        for a in alerts {
            for r in cfg.route(&a.labels) {
                let labels = r.group_labels(&a.labels);
                let key = group_key(r, &labels);
                let id = format!("{key}\u{0}{}", r.receiver);
                let g = self.groups.entry(id.clone()).or_insert_with(|| Group {
                    receiver: r.receiver.clone(),
                    key,
                    labels,
                    alerts: BTreeMap::new(),
                    next_flush: now + r.group_wait_ms,
                    flushed: false,
                    last_flush: 0,
                    wait_ms: r.group_wait_ms,
                    interval_ms: r.group_interval_ms,
                    repeat_ms: r.repeat_interval_ms,
                });
                (g.wait_ms, g.interval_ms, g.repeat_ms) = (r.group_wait_ms, r.group_interval_ms, r.repeat_interval_ms);
                // An alert that started longer ago than `group_wait` does not wait again.
                if !g.flushed && a.starts_at + g.wait_ms <= now {
                    g.next_flush = g.next_flush.min(now);
                }
                g.alerts.insert(a.fingerprint, a.clone());
                seen.insert((id, a.fingerprint));
            }
        }
        for (id, g) in self.groups.iter_mut() {
            g.alerts.retain(|fp, a| {
                if seen.contains(&(id.clone(), *fp)) {
                    return true;
                }
                match a.ends_at {
                    // Gone while firing (its rule was removed): resolved now.
                    None => {
                        a.ends_at = Some(now);
                        true
                    }
                    // Gone once resolved: kept until a flush has seen it.
                    Some(end) => g.last_flush < end,
                }
            });
        }
        self.groups.retain(|_, g| !g.alerts.is_empty());
        self.current = alerts.to_vec();
    }

    /// When the next group flushes.
    pub fn next_flush(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush).min()
    }

    /// Whether an alert is muted now: the silences that match it, and whether it is inhibited.
    pub fn muted(&self, a: &NAlert, cfg: &Config, silences: &Silences, now: i64) -> (Vec<String>, bool) {
        (silences.silencing(&a.labels, now), inhibited(a, &self.current, &cfg.inhibit))
    }

    /// Flushes the groups that are due: the notifications to queue (each with the log
    /// entry to record once it is queued).
    pub fn flush_due(
        &mut self,
        cfg: &Config,
        silences: &Silences,
        external_url: &str,
        now: i64,
    ) -> Vec<(String, Entry, Option<super::queue::Item>)> {
        let mut out = Vec::new();
        for g in self.groups.values_mut() {
            if g.next_flush > now {
                continue;
            }
            g.next_flush = now + g.interval_ms;
            g.flushed = true;
            g.last_flush = now;
            let Some(rcv) = cfg.receiver(&g.receiver) else { continue };
            let live: Vec<&NAlert> = g
                .alerts
                .values()
                .filter(|a| silences.silencing(&a.labels, now).is_empty() && !inhibited(a, &self.current, &cfg.inhibit))
                .collect();
            let firing: BTreeSet<u64> = live.iter().filter(|a| a.firing()).map(|a| a.fingerprint).collect();
            let resolved: BTreeSet<u64> = live.iter().filter(|a| !a.firing()).map(|a| a.fingerprint).collect();
            for (iname, integ) in rcv.integrations() {
                let log_key = format!("{}\u{0}{}\u{0}{iname}", g.key, g.receiver);
                let send_resolved = integ.send_resolved();
                if !needs_update(self.nflog.get(&log_key), &firing, &resolved, send_resolved, g.repeat_ms, now) {
                    continue;
                }
                let mut alerts: Vec<NAlert> = live.iter().filter(|a| a.firing()).map(|a| (*a).clone()).collect();
                alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
                if send_resolved {
                    let mut r: Vec<NAlert> = live.iter().filter(|a| !a.firing()).map(|a| (*a).clone()).collect();
                    r.sort_by(|a, b| a.labels.cmp(&b.labels));
                    alerts.extend(r);
                }
                let entry = Entry { firing: firing.clone(), resolved: resolved.clone(), at_ms: now };
                if alerts.is_empty() {
                    out.push((log_key, entry, None));
                    continue;
                }
                let n = Notification {
                    receiver: g.receiver.clone(),
                    group_key: g.key.clone(),
                    group_labels: g.labels.clone(),
                    alerts,
                    external_url: external_url.to_string(),
                };
                match integ.render(&g.receiver, &iname, &n, now) {
                    Ok(item) => out.push((log_key, entry, Some(item))),
                    Err(e) => {
                        tracing::error!(receiver = %g.receiver, integration = %iname, error = %e, "notification not made")
                    }
                }
            }
        }
        out
    }

    /// Records what was queued; saves the log when it changed.
    pub fn record(&mut self, entries: Vec<(String, Entry)>, now: i64) -> std::io::Result<()> {
        for (k, e) in entries {
            self.nflog.insert(k, e);
        }
        self.nflog.retain(|_, e| now - e.at_ms < NFLOG_RETENTION_MS);
        let bytes = serde_json::to_vec(&Saved { entries: self.nflog.clone() }).map_err(std::io::Error::other)?;
        if bytes == self.saved_bytes {
            return Ok(());
        }
        super::queue::write_synced(&self.path, &bytes)?;
        self.saved_bytes = bytes;
        Ok(())
    }

    /// Groups now: (receiver, group key, alerts, next flush), for listings.
    pub fn groups(&self) -> Vec<(String, String, usize, i64)> {
        self.groups.values().map(|g| (g.receiver.clone(), g.key.clone(), g.alerts.len(), g.next_flush)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::silence::Limits;

    fn alert(name: &str, model: &str, starts: i64, ends: Option<i64>) -> NAlert {
        let labels: Vec<(String, String)> =
            vec![("alertname".into(), name.into()), ("model".into(), model.into()), ("severity".into(), "page".into())];
        NAlert {
            fingerprint: super::super::payload::fingerprint(&labels),
            labels,
            annotations: Vec::new(),
            starts_at: starts,
            ends_at: ends,
            generator_url: String::new(),
        }
    }

    fn names(out: &[(String, Entry, Option<super::super::queue::Item>)]) -> Vec<Vec<String>> {
        out.iter()
            .filter_map(|(_, _, it)| it.as_ref())
            .map(|it| {
                let v: serde_json::Value = serde_json::from_str(&it.body).unwrap();
                v["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| format!("{}:{}", a["labels"]["model"].as_str().unwrap(), a["status"].as_str().unwrap()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn groups_wait_batch_repeat_and_resolve_as_alertmanager() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::parse(
            "route:\n  receiver: r\n  group_by: [alertname]\n  group_wait: 30s\n  group_interval: 5m\n  repeat_interval: 1h\nreceivers:\n- name: r\n  webhook_configs: [{url: 'http://127.0.0.1:1/'}]\ninhibit_rules:\n- source_matchers: [alertname=Down]\n  target_matchers: [alertname=Slow]\n  equal: [model]\n",
        )
        .unwrap();
        let sil = Silences::open(dir.path(), Limits { max_silences: 10, max_matchers: 10, max_bytes: 1000 }).unwrap();
        let mut d = Dispatcher::open(dir.path().join("nflog.json")).unwrap();
        let step = |d: &mut Dispatcher, alerts: &[NAlert], now: i64| {
            d.update(alerts, &cfg, now);
            let out = d.flush_due(&cfg, &sil, "", now);
            let n = names(&out);
            d.record(out.into_iter().map(|(k, e, _)| (k, e)).collect(), now).unwrap();
            n
        };
        let t = 1_000_000;
        // Two alerts of a new group within group_wait: one notification with both.
        assert!(step(&mut d, &[alert("Slow", "a", t, None)], t).is_empty());
        assert!(
            step(&mut d, &[alert("Slow", "a", t, None), alert("Slow", "b", t + 15_000, None)], t + 15_000).is_empty()
        );
        let both = [alert("Slow", "a", t, None), alert("Slow", "b", t + 15_000, None)];
        assert_eq!(step(&mut d, &both, t + 30_000), [["a:firing", "b:firing"]]);
        // Nothing new: nothing sent at the next interval; again after repeat_interval.
        assert!(step(&mut d, &both, t + 330_000).is_empty());
        assert_eq!(step(&mut d, &both, t + 30_000 + 3_600_000).len(), 1);
        // b resolves: sent at the next interval, with a still firing.
        let t2 = t + 30_000 + 3_600_000 + 300_000;
        let r = [alert("Slow", "a", t, None), alert("Slow", "b", t + 15_000, Some(t2 - 10_000))];
        assert_eq!(step(&mut d, &r, t2), [["a:firing", "b:resolved"]]);
        // A restart: a new dispatcher from the saved log, the same alerts: nothing re-sent.
        let mut d2 = Dispatcher::open(dir.path().join("nflog.json")).unwrap();
        assert!(step(&mut d2, &r, t2 + 15_000).is_empty());
        // Inhibited: "Down" for model a mutes "Slow" for a; when a then resolves, the
        // receiver hears that every alert it knows of is resolved.
        let t3 = t2 + 300_000;
        let inh = [alert("Slow", "a", t, None), alert("Down", "a", t3, None)];
        assert!(step(&mut d2, &inh, t3).is_empty());
        // The "Slow" group's next flush: a is muted, b is gone; the log learns that the
        // receiver's firing alerts are over (nothing to send: no resolved alert left).
        assert!(step(&mut d2, &inh, t3 + 15_000).is_empty());
        assert!(d2.muted(&inh[0], &cfg, &sil, t3).1);
        assert!(!d2.muted(&inh[1], &cfg, &sil, t3).1);
        // Silenced: not sent, but named.
        let s = sil.add(vec!["alertname=\"Down\"".into()], 0, t3 + 3_600_000, "ops".into(), String::new(), t3).unwrap();
        assert_eq!(d2.muted(&inh[1], &cfg, &sil, t3).0, [s.id]);
        assert!(step(&mut d2, &inh, t3 + 30_000).is_empty());
    }

    #[test]
    fn needs_update_is_alertmanagers() {
        let s = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        let e = Entry { firing: s(&[1, 2]), resolved: s(&[]), at_ms: 0 };
        assert!(!needs_update(None, &s(&[]), &s(&[1]), true, 10, 0));
        assert!(needs_update(None, &s(&[1]), &s(&[]), true, 10, 0));
        assert!(!needs_update(Some(&e), &s(&[1]), &s(&[]), true, 10, 5));
        assert!(needs_update(Some(&e), &s(&[1]), &s(&[2]), true, 10, 5));
        assert!(!needs_update(Some(&e), &s(&[1]), &s(&[2]), false, 10, 5));
        assert!(needs_update(Some(&e), &s(&[]), &s(&[1, 2]), false, 10, 5));
        assert!(needs_update(Some(&e), &s(&[1]), &s(&[]), true, 10, 10));
        assert!(needs_update(Some(&e), &s(&[3]), &s(&[]), true, 10, 5));
    }
}
