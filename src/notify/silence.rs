//! Silences, as Alertmanager has them: matchers, a start and an end, who made it and why.
//! While a silence is active, the alerts it matches stay visible (firing, with the silence
//! named) but are not sent. Kept in `notify/silences.json` (written whole, synced, renamed);
//! expired silences are dropped five days after they end.
use super::route::Matcher;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How long an expired silence stays listed.
pub const EXPIRED_RETENTION_MS: i64 = 5 * 86_400_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    /// As given (`alertname="GpuHot"`, `model=~"llm-.*"`).
    pub matchers: Vec<String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
    pub updated_at: i64,
}

impl Silence {
    pub fn state(&self, now: i64) -> &'static str {
        if now < self.starts_at {
            "pending"
        } else if now < self.ends_at {
            "active"
        } else {
            "expired"
        }
    }
}

/// What a silence may hold (`[alerting]` settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_silences: usize,
    pub max_matchers: usize,
    /// Bytes of `created_by` plus `comment` plus the matchers.
    pub max_bytes: usize,
}

pub struct Silences {
    path: PathBuf,
    limits: Limits,
    list: Mutex<Vec<(Silence, Vec<Matcher>)>>,
}

fn compile(s: &Silence) -> Result<Vec<Matcher>, String> {
    s.matchers.iter().enumerate().map(|(i, m)| Matcher::parse(m).map_err(|e| format!("matchers[{i}]: {e}"))).collect()
}

/// A fresh id in the UUID layout, from the process' random hash seed, the time and a counter.
fn new_id(now: i64) -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let s = std::collections::hash_map::RandomState::new();
    let mut h1 = s.build_hasher();
    h1.write_i64(now);
    h1.write_u64(n);
    let a = h1.finish();
    let mut h2 = s.build_hasher();
    h2.write_u64(a);
    h2.write_u64(std::process::id().into());
    let b = h2.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

impl Silences {
    /// Opens `dir/silences.json` (none yet: no silences).
    pub fn open(dir: &Path, limits: Limits) -> Result<Silences, String> {
        let path = dir.join("silences.json");
        let list: Vec<Silence> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut out = Vec::new();
        for s in list {
            let m = compile(&s).map_err(|e| format!("{}: silence {}: {e}", path.display(), s.id))?;
            out.push((s, m));
        }
        Ok(Silences { path, limits, list: Mutex::new(out) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Silence, Vec<Matcher>)>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, list: &[(Silence, Vec<Matcher>)]) -> Result<(), String> {
        let v: Vec<&Silence> = list.iter().map(|(s, _)| s).collect();
        let bytes = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
        super::queue::write_synced(&self.path, &bytes).map_err(|e| format!("{}: {e}", self.path.display()))?;
        if let Some(d) = self.path.parent() {
            std::fs::File::open(d).and_then(|f| f.sync_all()).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        Ok(())
    }

    /// Creates a silence (`starts_at` 0 or in the past: now). Every refusal names the field.
    pub fn add(
        &self,
        matchers: Vec<String>,
        starts_at: i64,
        ends_at: i64,
        created_by: String,
        comment: String,
        now: i64,
    ) -> Result<Silence, String> {
        let l = self.limits;
        if matchers.is_empty() {
            return Err("matchers: at least one is needed".into());
        }
        if matchers.len() > l.max_matchers {
            return Err(format!(
                "matchers: {} given, the limit (alerting.max_silence_matchers) is {}",
                matchers.len(),
                l.max_matchers
            ));
        }
        let bytes = created_by.len() + comment.len() + matchers.iter().map(String::len).sum::<usize>();
        if bytes > l.max_bytes {
            return Err(format!(
                "created_by, comment and matchers: {bytes} bytes, the limit (alerting.max_silence_bytes) is {}",
                l.max_bytes
            ));
        }
        if created_by.trim().is_empty() {
            return Err("created_by: empty (say who silences)".into());
        }
        let starts_at = starts_at.max(now);
        if ends_at <= starts_at {
            return Err(format!(
                "ends_at: {} is not after the start {}",
                super::payload::rfc3339(ends_at),
                super::payload::rfc3339(starts_at)
            ));
        }
        let s = Silence { id: new_id(now), matchers, starts_at, ends_at, created_by, comment, updated_at: now };
        let m = compile(&s)?;
        if m.iter().all(|m| m.matches(&[])) {
            return Err("matchers: every one matches an empty label, so the silence would match every alert".into());
        }
        let mut list = self.lock();
        list.retain(|(s, _)| now - s.ends_at < EXPIRED_RETENTION_MS);
        if list.iter().filter(|(s, _)| s.state(now) != "expired").count() >= l.max_silences {
            return Err(format!(
                "silences: {} in force, the limit (alerting.max_silences) is {}",
                l.max_silences, l.max_silences
            ));
        }
        list.push((s.clone(), m));
        if let Err(e) = self.save(&list) {
            list.pop();
            return Err(format!("not saved: {e}"));
        }
        Ok(s)
    }

    /// Ends a silence now (a pending one never starts).
    pub fn expire(&self, id: &str, now: i64) -> Result<Silence, String> {
        let mut list = self.lock();
        let before = list.clone();
        let Some((s, _)) = list.iter_mut().find(|(s, _)| s.id == id) else {
            return Err(format!("id: no silence {id:?}"));
        };
        if s.state(now) == "expired" {
            return Err(format!("id: silence {id:?} has already expired"));
        }
        if s.starts_at > now {
            s.starts_at = now;
        }
        s.ends_at = now;
        s.updated_at = now;
        let out = s.clone();
        if let Err(e) = self.save(&list) {
            *list = before;
            return Err(format!("not saved: {e}"));
        }
        Ok(out)
    }

    /// Every silence (expired ones for five days), newest first.
    pub fn list(&self) -> Vec<Silence> {
        let mut v: Vec<Silence> = self.lock().iter().map(|(s, _)| s.clone()).collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.updated_at));
        v
    }

    /// The ids of the active silences that match `labels`.
    pub fn silencing(&self, labels: &[(String, String)], now: i64) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(s, m)| s.state(now) == "active" && m.iter().all(|m| m.matches(labels)))
            .map(|(s, _)| s.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silences_match_expire_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let lim = Limits { max_silences: 2, max_matchers: 4, max_bytes: 200 };
        let s = Silences::open(dir.path(), lim).unwrap();
        let l = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let a = s.add(vec!["alertname=\"GpuHot\"".into()], 0, 1000, "ops".into(), "fan swap".into(), 10).unwrap();
        assert_eq!(a.starts_at, 10);
        assert_eq!(s.silencing(&l(&[("alertname", "GpuHot")]), 500), std::slice::from_ref(&a.id));
        assert!(s.silencing(&l(&[("alertname", "Other")]), 500).is_empty());
        assert!(s.silencing(&l(&[("alertname", "GpuHot")]), 1000).is_empty());
        let e = s.add(vec!["x=~\".*\"".into()], 0, 1000, "ops".into(), String::new(), 10).unwrap_err();
        assert!(e.contains("every alert"), "{e}");
        let e = s.add(vec!["x=\"1\"".into()], 0, 5, "ops".into(), String::new(), 10).unwrap_err();
        assert!(e.starts_with("ends_at"), "{e}");
        let e = s.add(vec!["x=\"1\"".into(); 5], 0, 50, "ops".into(), String::new(), 10).unwrap_err();
        assert!(e.contains("alerting.max_silence_matchers"), "{e}");
        s.expire(&a.id, 20).unwrap();
        assert!(s.silencing(&l(&[("alertname", "GpuHot")]), 30).is_empty());
        assert!(s.expire(&a.id, 30).unwrap_err().contains("already expired"));
        let s2 = Silences::open(dir.path(), lim).unwrap();
        assert_eq!(s2.list(), s.list());
        assert_eq!(s2.list()[0].state(30), "expired");
    }
}
