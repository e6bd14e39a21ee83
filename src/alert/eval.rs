//! One evaluation of a rule group at a time `t`, with Prometheus' semantics: a recording rule
//! writes its result under its name; an alerting rule moves each label set of its result
//! through inactive → pending → firing (after `for`) and back (resolved, or held by
//! `keep_firing_for`), and writes `ALERTS` and `ALERTS_FOR_STATE`. Series a rule wrote last
//! time and not now get a staleness marker, so they end at once as in Prometheus.
//!
//! The evaluator does not know where samples go: [`Storage`] is the store behind the daemon's
//! committer, or memory in `rules test`.
use super::rules::{Group, Kind, Rule, Tmpl};
use super::template::Data;
use crate::promql::{self, Answer, Labels, Opts, Source, NAME, STALE_NAN};
use crate::query::Budget;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How long a resolved alert is kept (and sent as resolved), as Prometheus' `resolvedRetention`.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Inactive,
    Pending,
    Firing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
        }
    }
}

mod nan_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(&crate::promql::fmt_value(*v))
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum F {
            N(f64),
            S(String),
        }
        Ok(match F::deserialize(d)? {
            F::N(v) => v,
            F::S(s) => match s.as_str() {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                _ => f64::NAN,
            },
        })
    }
}

mod as_list {
    use super::{Alert, Labels};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;
    pub fn serialize<S: Serializer>(m: &BTreeMap<Labels, Alert>, s: S) -> Result<S::Ok, S::Error> {
        m.values().collect::<Vec<_>>().serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Labels, Alert>, D::Error> {
        Ok(Vec::<Alert>::deserialize(d)?.into_iter().map(|a| (a.labels.clone(), a)).collect())
    }
}

/// One alert: a label set of an alerting rule's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Sorted; `alertname` included, no `__name__`.
    pub labels: Labels,
    pub annotations: Vec<(String, String)>,
    pub state: State,
    pub active_at: i64,
    #[serde(default)]
    pub fired_at: Option<i64>,
    #[serde(default)]
    pub resolved_at: Option<i64>,
    #[serde(default)]
    pub keep_firing_since: Option<i64>,
    #[serde(with = "nan_null")]
    pub value: f64,
}

/// What a rule has that outlives one evaluation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuleState {
    /// Alerts by label set (alerting rules only); saved as a list (JSON keys are strings).
    #[serde(with = "as_list")]
    pub active: BTreeMap<Labels, Alert>,
    /// Series written by the last evaluation (for staleness markers).
    pub written: BTreeSet<Labels>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_eval_ms: i64,
    #[serde(default)]
    pub last_duration_s: f64,
    #[serde(default)]
    pub evaluated: bool,
}

impl RuleState {
    pub fn health(&self) -> &'static str {
        match (&self.last_error, self.evaluated) {
            (Some(_), _) => "err",
            (None, true) => "ok",
            (None, false) => "unknown",
        }
    }
}

/// Where a group's results go and what its queries read.
pub trait Storage {
    fn source(&self) -> &dyn Source;
    /// Appends samples stamped `t` (staleness markers included); later rules of the same
    /// evaluation read them.
    fn append(&mut self, t: i64, samples: &[(Labels, f64)]) -> Result<(), String>;
    /// A fresh budget for one rule's query.
    fn budget(&self) -> Budget;
}

/// The daemon-wide settings that rules see.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub opts: Opts,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
}

fn query(rule: &Rule, t: i64, st: &dyn Storage, opts: &Opts) -> Result<Vec<(Labels, f64)>, String> {
    let mut budget = st.budget();
    match promql::instant(st.source(), &rule.expr, t, opts, &mut budget).map_err(|e| e.to_string())? {
        Answer::Vector { series, .. } => Ok(series),
        Answer::Scalar { v, .. } => Ok(vec![(Vec::new(), v)]),
        other => Err(format!("rule result is not a vector or scalar but a {}", other.result_type())),
    }
}

fn expand(t: &Tmpl, data: &Data) -> String {
    match &t.parsed {
        None => t.text.clone(),
        Some(p) => p.expand(data).unwrap_or_else(|e| format!("<error expanding template: {e}>")),
    }
}

fn sorted(mut ls: Labels) -> Labels {
    ls.sort();
    ls
}

/// Evaluates `rule` at `t`; returns the samples it writes (without staleness markers).
pub fn eval_rule(
    rule: &Rule,
    st: &mut RuleState,
    t: i64,
    query_offset_ms: i64,
    limit: usize,
    storage: &dyn Storage,
    env: &Env,
) -> Result<Vec<(Labels, f64)>, String> {
    let res = query(rule, t - query_offset_ms, storage, &env.opts)?;
    match &rule.kind {
        Kind::Record => {
            let mut out = Vec::with_capacity(res.len());
            let mut seen = BTreeSet::new();
            for (mut ls, v) in res {
                promql::set_label(&mut ls, NAME, &rule.name);
                for (k, tv) in &rule.labels {
                    promql::set_label(&mut ls, k, &tv.text);
                }
                if !seen.insert(ls.clone()) {
                    return Err("vector contains metrics with the same labelset after applying rule labels".into());
                }
                out.push((ls, v));
            }
            if limit > 0 && out.len() > limit {
                return Err(format!("exceeded limit of {limit} with {} series", out.len()));
            }
            Ok(out)
        }
        Kind::Alert { for_ms, keep_firing_for_ms, annotations } => {
            let mut now: BTreeMap<Labels, Alert> = BTreeMap::new();
            for (ls, v) in res {
                let map: BTreeMap<String, String> = ls.iter().cloned().collect();
                let data = Data {
                    labels: &map,
                    external_labels: &env.external_labels,
                    external_url: &env.external_url,
                    value: v,
                };
                let mut labels = promql::without_name(ls.clone());
                for (k, tv) in &rule.labels {
                    promql::set_label(&mut labels, k, &expand(tv, &data));
                }
                promql::set_label(&mut labels, "alertname", &rule.name);
                let ann: Vec<(String, String)> =
                    annotations.iter().map(|(k, tv)| (k.clone(), expand(tv, &data))).collect();
                let a = Alert {
                    labels: labels.clone(),
                    annotations: ann,
                    state: State::Pending,
                    active_at: t,
                    fired_at: None,
                    resolved_at: None,
                    keep_firing_since: None,
                    value: v,
                };
                if now.insert(labels, a).is_some() {
                    return Err("vector contains metrics with the same labelset after applying alert labels".into());
                }
            }
            for (k, a) in &now {
                match st.active.get_mut(k) {
                    Some(old) if old.state != State::Inactive => {
                        old.value = a.value;
                        old.annotations = a.annotations.clone();
                    }
                    _ => {
                        st.active.insert(k.clone(), a.clone());
                    }
                }
            }
            let mut out = Vec::new();
            let mut n_active = 0;
            let mut drop = Vec::new();
            for (k, a) in st.active.iter_mut() {
                if !now.contains_key(k) {
                    let mut keep = false;
                    if a.state == State::Firing && *keep_firing_for_ms > 0 {
                        let since = *a.keep_firing_since.get_or_insert(t);
                        keep = t - since < *keep_firing_for_ms;
                    }
                    if a.state == State::Pending || a.resolved_at.is_some_and(|r| t - r > RESOLVED_RETENTION_MS) {
                        drop.push(k.clone());
                    }
                    if a.state != State::Inactive && !keep {
                        a.state = State::Inactive;
                        a.resolved_at = Some(t);
                    }
                    if !keep {
                        continue;
                    }
                } else {
                    a.keep_firing_since = None;
                }
                n_active += 1;
                if a.state == State::Pending && t - a.active_at >= *for_ms {
                    a.state = State::Firing;
                    a.fired_at = Some(t);
                }
                let mut al = a.labels.clone();
                al.push((NAME.into(), "ALERTS".into()));
                al.push(("alertstate".into(), a.state.as_str().into()));
                out.push((sorted(al), 1.0));
                let mut fs = a.labels.clone();
                fs.push((NAME.into(), "ALERTS_FOR_STATE".into()));
                out.push((sorted(fs), (a.active_at / 1000) as f64));
            }
            for k in drop {
                st.active.remove(&k);
            }
            if limit > 0 && n_active > limit {
                st.active.clear();
                return Err(format!("exceeded limit of {limit} with {n_active} alerts"));
            }
            Ok(out)
        }
    }
}

/// A group's state: one [`RuleState`] per rule, in the group's order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupState {
    pub rules: Vec<RuleState>,
    #[serde(default)]
    pub last_eval_ms: i64,
}

/// Evaluates every rule of `g` at `t`, in order, appending each rule's samples (and markers
/// for the series it no longer writes) before the next rule runs. Rule errors are kept in
/// their rule's state; the returned list names them (`rule: NAME, err: ...`).
pub fn eval_group(g: &Group, gs: &mut GroupState, t: i64, storage: &mut dyn Storage, env: &Env) -> Vec<String> {
    gs.rules.resize_with(g.rules.len(), RuleState::default);
    let mut errors = Vec::new();
    for (rule, st) in g.rules.iter().zip(gs.rules.iter_mut()) {
        let started = std::time::Instant::now();
        let res = eval_rule(rule, st, t, g.query_offset_ms, g.limit, storage, env);
        st.last_eval_ms = t;
        st.evaluated = true;
        let samples = match res {
            Ok(s) => {
                st.last_error = None;
                s
            }
            Err(e) => {
                errors.push(format!("rule: {}, err: {e}", rule.name));
                st.last_error = Some(e);
                Vec::new()
            }
        };
        let now: BTreeSet<Labels> = samples.iter().map(|(l, _)| l.clone()).collect();
        let mut all = samples;
        for gone in st.written.difference(&now) {
            all.push((gone.clone(), f64::from_bits(STALE_NAN)));
        }
        st.written = now;
        if let Err(e) = storage.append(t, &all) {
            errors.push(format!("rule: {}, err: {e}", rule.name));
            st.last_error = Some(e);
        }
        st.last_duration_s = started.elapsed().as_secs_f64();
    }
    gs.last_eval_ms = t;
    errors
}
