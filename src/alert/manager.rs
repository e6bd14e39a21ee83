//! The daemon's rules: loaded from `alerting.rule_files`, evaluated on schedule through the
//! PromQL engine over the store, their results (recorded series, `ALERTS`,
//! `ALERTS_FOR_STATE`) committed like any other data, and their states kept in a file that
//! survives a restart or a crash, so that a pending alert keeps its progress and a firing one
//! neither pages again nor loses its resolution.
//!
//! Reloads (file change, SIGHUP, `Alerts/ReloadRules`) swap the whole rule set or nothing: a
//! refused file leaves the rules in force and the refusal is reported. A rule that is still
//! there after a reload (same file, group and name) keeps its state.
use super::eval::{eval_group, Alert, Env, GroupState, RuleState, Storage};
use super::rules::{self, Group};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// A group and its state.
pub struct Loaded {
    pub group: Group,
    pub state: GroupState,
    pub interval_ms: i64,
}

/// The outcome of the last reload.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub ok: bool,
    pub errors: Vec<String>,
    pub at_ms: i64,
    pub files: Vec<String>,
}

/// An alert with where it comes from.
#[derive(Debug, Clone)]
pub struct RuleAlert {
    pub group: String,
    pub rule: String,
    pub expr: String,
    pub alert: Alert,
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    /// By group key (`file` + NUL + `group`): each rule's name and state.
    groups: BTreeMap<String, Vec<(String, RuleState)>>,
}

struct Inner {
    groups: Vec<Loaded>,
    mtimes: Vec<(PathBuf, Option<SystemTime>)>,
    reload: ReloadStatus,
    /// What was last written to the state file (written again only when it changes).
    saved_bytes: Vec<u8>,
}

pub struct Manager {
    patterns: Vec<String>,
    default_interval_ms: i64,
    state_path: PathBuf,
    pub env: Env,
    inner: Mutex<Inner>,
}

fn key(g: &Group) -> String {
    format!("{}\0{}", g.file, g.name)
}

fn mtimes(files: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>)> {
    files.iter().map(|f| (f.clone(), std::fs::metadata(f).and_then(|m| m.modified()).ok())).collect()
}

/// Rule states matched to the rules of `g` by name (in order, so two rules of one name keep
/// their own states).
fn adopt(g: &Group, mut old: Vec<(String, RuleState)>) -> GroupState {
    let mut st = GroupState::default();
    for r in &g.rules {
        let s = match old.iter().position(|(n, _)| *n == r.name) {
            Some(i) => old.remove(i).1,
            None => RuleState::default(),
        };
        st.rules.push(s);
    }
    st
}

impl Manager {
    /// Loads the rules and the saved states. A refused rule set starts the daemon with no
    /// rules and the refusal in [`Manager::reload_status`].
    pub fn new(cfg: &crate::config::AlertingConfig, data_dir: &Path, env: Env, now_ms: i64) -> Manager {
        let state_path = data_dir.join("alerts").join("state.json");
        let saved: Saved = std::fs::read(&state_path)
            .ok()
            .and_then(|b| match serde_json::from_slice(&b) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(path = %state_path.display(), error = %e, "alert states unreadable; starting without them");
                    None
                }
            })
            .unwrap_or_default();
        let m = Manager {
            patterns: cfg.rule_files.clone(),
            default_interval_ms: cfg.evaluation_interval.as_millis() as i64,
            state_path,
            env,
            inner: Mutex::new(Inner {
                groups: Vec::new(),
                mtimes: Vec::new(),
                reload: ReloadStatus::default(),
                saved_bytes: Vec::new(),
            }),
        };
        let mut states = saved.groups;
        let r = m.reload_with(now_ms, &mut states);
        if let Err(e) = r {
            tracing::error!(errors = ?e, "rule files refused; no rules in force");
        }
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the rule files again; on success the new set replaces the old, keeping the
    /// state of each rule still there. Returns the number of rules now in force.
    pub fn reload(&self, now_ms: i64) -> Result<usize, Vec<String>> {
        let mut states: BTreeMap<String, Vec<(String, RuleState)>> = BTreeMap::new();
        {
            let inner = self.lock();
            for l in &inner.groups {
                let named = l.group.rules.iter().map(|r| r.name.clone()).zip(l.state.rules.iter().cloned()).collect();
                states.insert(key(&l.group), named);
            }
        }
        self.reload_with(now_ms, &mut states)
    }

    fn reload_with(
        &self,
        now_ms: i64,
        states: &mut BTreeMap<String, Vec<(String, RuleState)>>,
    ) -> Result<usize, Vec<String>> {
        let files = rules::expand_globs(&self.patterns, Path::new(".")).map_err(|e| vec![e]);
        let loaded = files.clone().and_then(|f| rules::load_all(&f));
        let mut inner = self.lock();
        inner.reload.at_ms = now_ms;
        match loaded {
            Err(errs) => {
                inner.reload.ok = false;
                inner.reload.errors = errs.clone();
                // Watch the files again so that a fix is picked up.
                if let Ok(f) = files {
                    inner.mtimes = mtimes(&f);
                }
                Err(errs)
            }
            Ok(groups) => {
                let files = files.unwrap_or_default();
                let mut out = Vec::with_capacity(groups.len());
                for g in groups {
                    let st = adopt(&g, states.remove(&key(&g)).unwrap_or_default());
                    let interval_ms = g.interval_ms.unwrap_or(self.default_interval_ms);
                    out.push(Loaded { group: g, state: st, interval_ms });
                }
                let n = out.iter().map(|l| l.group.rules.len()).sum();
                inner.groups = out;
                inner.reload = ReloadStatus {
                    ok: true,
                    errors: Vec::new(),
                    at_ms: now_ms,
                    files: files.iter().map(|f| f.display().to_string()).collect(),
                };
                inner.mtimes = mtimes(&files);
                tracing::info!(rules = n, files = files.len(), "rules loaded");
                Ok(n)
            }
        }
    }

    /// Whether a rule file changed (or one appeared or went) since the last reload.
    pub fn files_changed(&self) -> bool {
        let now = match rules::expand_globs(&self.patterns, Path::new(".")) {
            Ok(f) => mtimes(&f),
            Err(_) => return false,
        };
        self.lock().mtimes != now
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.lock().reload.clone()
    }

    /// The earliest time a group is due (ms), if any group is loaded.
    pub fn next_due(&self) -> Option<i64> {
        let inner = self.lock();
        inner.groups.iter().map(due).min()
    }

    /// Evaluates every group whose time has come at `now_ms` (each at its own schedule:
    /// multiples of its interval). Returns whether any was, and the errors of the rules.
    pub fn eval_due(&self, now_ms: i64, storage: &mut dyn Storage) -> (bool, Vec<String>) {
        let mut inner = self.lock();
        let mut errors = Vec::new();
        let mut any = false;
        for l in inner.groups.iter_mut() {
            if due(l) > now_ms {
                continue;
            }
            any = true;
            // The newest scheduled time not after now: a daemon that was away skips the
            // evaluations it missed rather than running them all.
            let t = now_ms - now_ms.rem_euclid(l.interval_ms);
            errors.extend(eval_group(&l.group, &mut l.state, t, storage, &self.env));
        }
        (any, errors)
    }

    /// Saves the states when they changed. Called after the notifications an evaluation made
    /// are queued: a crash between the two sends a notification twice rather than never.
    pub fn save_states(&self) -> std::io::Result<()> {
        let mut inner = self.lock();
        save(&self.state_path, &mut inner)
    }

    /// The longest evaluation interval of the groups (the default when none is loaded).
    pub fn max_interval_ms(&self) -> i64 {
        let inner = self.lock();
        inner.groups.iter().map(|l| l.interval_ms).max().unwrap_or(self.default_interval_ms)
    }

    /// Every rule, for `ListRules`.
    pub fn with_groups<T>(&self, f: impl FnOnce(&[Loaded]) -> T) -> T {
        f(&self.lock().groups)
    }

    /// Pending and firing alerts (and resolved ones still kept), by rule.
    pub fn alerts(&self) -> Vec<RuleAlert> {
        let inner = self.lock();
        let mut out = Vec::new();
        for l in &inner.groups {
            for (r, st) in l.group.rules.iter().zip(&l.state.rules) {
                for a in st.active.values() {
                    out.push(RuleAlert {
                        group: l.group.name.clone(),
                        rule: r.name.clone(),
                        expr: r.expr_text.clone(),
                        alert: a.clone(),
                    });
                }
            }
        }
        out
    }
}

fn due(l: &Loaded) -> i64 {
    let last = l.state.last_eval_ms;
    if last == 0 {
        return 0;
    }
    last - last.rem_euclid(l.interval_ms) + l.interval_ms
}

/// Writes the states (alerts and written series of every rule) when they changed: a new file
/// beside the old, synced, renamed over it, the folder synced.
fn save(path: &Path, inner: &mut Inner) -> std::io::Result<()> {
    let mut saved = Saved::default();
    for l in &inner.groups {
        let rules = l
            .group
            .rules
            .iter()
            .zip(&l.state.rules)
            .map(|(r, s)| {
                let mut s = s.clone();
                // Figures that change every round are not worth a write.
                s.last_duration_s = 0.0;
                s.last_eval_ms = 0;
                (r.name.clone(), s)
            })
            .collect();
        saved.groups.insert(key(&l.group), rules);
    }
    let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
    if bytes == inner.saved_bytes {
        return Ok(());
    }
    let dir = path.parent().expect("state file in a folder");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    inner.saved_bytes = bytes;
    Ok(())
}
