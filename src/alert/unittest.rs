//! `modelwatch rules test FILE...`: rule unit tests in `promtool test rules`' format, run on
//! the real engine over an in-memory store. Input series in the expanding notation, then
//! every group evaluated at each `evaluation_interval` from 0 to the last asked time;
//! `alert_rule_test` compares the firing alerts at `eval_time`, `promql_expr_test` an
//! expression's value. Messages follow promtool's.
//!
//! Native histograms are not in modelwatch's engine: input series written as `{{...}}` are
//! left out and the expression tests that expect a `histogram` are skipped, each counted in
//! the report.
use super::eval::{eval_group, Env, GroupState, State, Storage};
use super::rules::{self, Group};
use super::template::go_g;
use crate::config::QueryConfig;
use crate::promql::script::{expand_values, parse_duration, parse_number, parse_series};
use crate::promql::{self, fmt_labels, Answer, Labels, MemSource, Opts, Source};
use crate::query::Budget;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A scalar as written in the file (`0x10` stays `0x10`).
#[derive(Debug, Deserialize, Default)]
#[serde(transparent)]
struct Scalar(String);

impl Scalar {
    fn text(&self) -> String {
        self.0.clone()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    evaluation_interval: Option<Scalar>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    interval: Option<Scalar>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: Scalar,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    #[serde(default)]
    eval_time: Scalar,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    #[serde(default)]
    eval_time: Scalar,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    #[serde(default)]
    value: Option<Scalar>,
    /// A native histogram: not supported, the case is skipped.
    #[serde(default)]
    histogram: Option<String>,
}

/// The outcome of one test file.
#[derive(Debug, Default)]
pub struct Report {
    /// Failures, each in promtool's wording.
    pub errors: Vec<String>,
    /// What was left out (native histograms), with why.
    pub skipped: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Prometheus' duration notation (`1d`, `2m59s999ms`, `0s`).
pub fn fmt_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms.unsigned_abs();
    if ms < 0 {
        out.push('-');
    }
    for (unit, size) in [
        ("y", 365 * 86_400_000u64),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

fn dur(s: &Scalar, what: &str) -> Result<i64, String> {
    let t = if s.0.is_empty() { "0".to_string() } else { s.text() };
    parse_duration(&t).ok_or_else(|| format!("{what}: not a valid duration string: {t:?}"))
}

struct Mem {
    src: MemSource,
}

impl Storage for Mem {
    fn source(&self) -> &dyn Source {
        &self.src
    }
    fn append(&mut self, t: i64, samples: &[(Labels, f64)]) -> Result<(), String> {
        for (l, v) in samples {
            self.src.add(l, t, *v);
        }
        Ok(())
    }
    fn budget(&self) -> Budget {
        Budget::new(&QueryConfig { max_samples: u64::MAX / 2, max_points: u64::MAX / 2, ..QueryConfig::default() })
    }
}

/// Runs one unit-test file.
pub fn run_file(path: &Path) -> Report {
    let mut rep = Report::default();
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            rep.errors.push(format!("{}: {e}", path.display()));
            return rep;
        }
    };
    let tf: TestFile = match serde_yaml::from_str(&src) {
        Ok(t) => t,
        Err(e) => {
            rep.errors.push(format!("yaml: {e}"));
            return rep;
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let eval_ms = match tf.evaluation_interval.as_ref().map(|s| dur(s, "evaluation_interval")).unwrap_or(Ok(60_000)) {
        Ok(ms) if ms > 0 => ms,
        Ok(_) => {
            rep.errors.push("evaluation_interval must be greater than zero".into());
            return rep;
        }
        Err(e) => {
            rep.errors.push(e);
            return rep;
        }
    };
    let files = match rules::expand_globs(&tf.rule_files, base) {
        Ok(f) => f,
        Err(e) => {
            rep.errors.push(e);
            return rep;
        }
    };
    // Rule files are named as the test file names them (relative), as promtool prints them.
    let mut groups = Vec::new();
    for f in &files {
        let shown = f.strip_prefix(base).unwrap_or(f).display().to_string();
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                rep.errors.push(format!("{shown}: {e}"));
                continue;
            }
        };
        match rules::parse_file(&shown, &text) {
            Ok(g) => groups.extend(g),
            Err(e) => rep.errors.extend(e),
        }
    }
    if !rep.errors.is_empty() {
        return rep;
    }
    let order: Vec<Group> = if tf.group_eval_order.is_empty() {
        groups
    } else {
        let mut out = Vec::new();
        for name in &tf.group_eval_order {
            match groups.iter().find(|g| &g.name == name) {
                Some(g) => out.push(g.clone()),
                None => {
                    rep.errors.push(format!("group name {name:?} listed in the evaluation order does not exist"));
                    return rep;
                }
            }
        }
        if out.len() != groups.len() {
            rep.errors.push("all groups must be named in group_eval_order".into());
            return rep;
        }
        out
    };
    for tg in &tf.tests {
        run_group(tg, &order, eval_ms, &mut rep);
    }
    rep
}

fn run_group(tg: &TestGroup, groups: &[Group], eval_ms: i64, rep: &mut Report) {
    let interval = match tg.interval.as_ref().map(|s| dur(s, "interval")).unwrap_or(Ok(eval_ms)) {
        Ok(ms) => ms,
        Err(e) => {
            rep.errors.push(e);
            return;
        }
    };
    let mut mem = Mem { src: MemSource::new() };
    for s in &tg.input_series {
        let values = s.values.text();
        if values.contains("{{") {
            rep.skipped.push(format!("input series {}: a native histogram", s.series));
            continue;
        }
        let labels = match parse_series(&s.series) {
            Ok(l) => l,
            Err(e) => {
                rep.errors.push(e);
                return;
            }
        };
        let toks: Vec<&str> = values.split_whitespace().collect();
        let vals = match expand_values(&toks) {
            Ok(v) => v,
            Err(e) => {
                rep.errors.push(format!("{}: {e}", s.series));
                return;
            }
        };
        for (i, v) in vals.into_iter().enumerate() {
            if let Some(v) = v {
                mem.src.add(&labels, i as i64 * interval, v);
            }
        }
    }
    let env = Env {
        opts: Opts { lookback_ms: 5 * 60_000, subquery_step_ms: eval_ms },
        external_labels: tg.external_labels.clone(),
        external_url: tg.external_url.clone(),
    };
    // Alert checks by time.
    let mut alert_times: Vec<(i64, &AlertTest)> = Vec::new();
    for at in &tg.alert_rule_test {
        match dur(&at.eval_time, "eval_time") {
            Ok(t) => alert_times.push((t, at)),
            Err(e) => {
                rep.errors.push(e);
                return;
            }
        }
    }
    alert_times.sort_by_key(|(t, _)| *t);
    let mut expr_times = Vec::new();
    for et in &tg.promql_expr_test {
        match dur(&et.eval_time, "eval_time") {
            Ok(t) => expr_times.push(t),
            Err(e) => {
                rep.errors.push(e);
                return;
            }
        }
    }
    let max_t = alert_times.iter().map(|(t, _)| *t).chain(expr_times.iter().copied()).max().unwrap_or(0);
    let mut states: Vec<GroupState> = groups.iter().map(|_| GroupState::default()).collect();
    let mut next = 0;
    let mut ts = 0i64;
    let name_part = if tg.name.is_empty() { String::new() } else { format!("    name: {},\n", tg.name) };
    while ts <= max_t {
        let mut eval_errs = Vec::new();
        for (g, st) in groups.iter().zip(states.iter_mut()) {
            for e in eval_group(g, st, ts, &mut mem, &env) {
                let (rule, err) = e.split_once(", err: ").unwrap_or(("", &e));
                eval_errs.push(format!("    {rule}, time: {}, err: {err}", fmt_duration(ts)));
            }
        }
        if !eval_errs.is_empty() {
            rep.errors.extend(eval_errs);
            return;
        }
        while next < alert_times.len() && alert_times[next].0 >= ts && alert_times[next].0 < ts + eval_ms {
            let (t, test) = alert_times[next];
            let mut got: Vec<(Labels, Labels)> = Vec::new();
            for (g, st) in groups.iter().zip(states.iter()) {
                for (r, rs) in g.rules.iter().zip(st.rules.iter()) {
                    if !r.is_alert() || r.name != test.alertname {
                        continue;
                    }
                    for a in rs.active.values() {
                        if a.state == State::Firing {
                            let mut ann = a.annotations.clone();
                            ann.sort();
                            got.push((a.labels.clone(), ann));
                        }
                    }
                }
            }
            let mut exp: Vec<(Labels, Labels)> = test
                .exp_alerts
                .iter()
                .map(|a| {
                    let mut l: Labels = a.exp_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    promql::set_label(&mut l, "alertname", &test.alertname);
                    let ann: Labels = a.exp_annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    (l, ann)
                })
                .collect();
            got.sort();
            exp.sort();
            if got != exp {
                rep.errors.push(format!(
                    "{name_part}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                    test.alertname,
                    fmt_duration(t),
                    fmt_alerts(&exp),
                    fmt_alerts(&got)
                ));
            }
            next += 1;
        }
        ts += eval_ms;
    }
    for (et, t) in tg.promql_expr_test.iter().zip(expr_times) {
        if et.exp_samples.iter().any(|s| s.histogram.is_some()) {
            rep.skipped.push(format!("expr {:?} at {}: expects a native histogram", et.expr, fmt_duration(t)));
            continue;
        }
        let got = match eval_expr(&et.expr, t, &mem, &env.opts) {
            Ok(g) => g,
            Err(e) => {
                rep.errors.push(format!("    expr: {:?}, time: {}, err: {e}", et.expr, fmt_duration(t)));
                continue;
            }
        };
        let mut exp = Vec::new();
        let mut bad = None;
        for s in &et.exp_samples {
            let labels = if s.labels.trim().is_empty() { Ok(Vec::new()) } else { parse_series(&s.labels) };
            let v = match &s.value {
                None => Ok(0.0),
                Some(Scalar(x)) => parse_number(x.trim()).ok_or_else(|| format!("{x:?}: not a number")),
            };
            match (labels, v) {
                (Ok(l), Ok(v)) => exp.push((l, v)),
                (Err(e), _) | (_, Err(e)) => bad = Some(e),
            }
        }
        if let Some(e) = bad {
            rep.errors.push(format!("    expr: {:?}, time: {}, err: {e}", et.expr, fmt_duration(t)));
            continue;
        }
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        let same = got.len() == exp.len()
            && got
                .iter()
                .zip(&exp)
                .all(|(g, e)| g.0 == e.0 && (g.1 == e.1 || (g.1.is_nan() && e.1.is_nan()) || almost(g.1, e.1)));
        if !same {
            rep.errors.push(format!(
                "{name_part}    expr: {:?}, time: {},\n        exp: {}\n        got: {}",
                et.expr,
                fmt_duration(t),
                fmt_samples(&exp),
                fmt_samples(&got)
            ));
        }
    }
}

fn almost(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn eval_expr(q: &str, t: i64, mem: &Mem, opts: &Opts) -> Result<Vec<(Labels, f64)>, String> {
    let expr = promql::parse(q).map_err(|e| e.to_string())?;
    let mut budget = mem.budget();
    let mut got = match promql::instant(mem.source(), &expr, t, opts, &mut budget).map_err(|e| e.to_string())? {
        Answer::Vector { series, .. } => series,
        Answer::Scalar { v, .. } => vec![(Vec::new(), v)],
        other => return Err(format!("rule result is not a vector or scalar but a {}", other.result_type())),
    };
    got.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(got)
}

fn fmt_samples(s: &[(Labels, f64)]) -> String {
    let parts: Vec<String> = s.iter().map(|(l, v)| format!("{} {}", fmt_labels(l), go_e_upper(*v))).collect();
    parts.join(",\n             ")
}

/// Go's `%E` as promtool prints sample values (`1E+00`).
fn go_e_upper(v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, None);
    }
    let s = format!("{v:E}");
    let (m, e) = s.split_once('E').expect("exponent form");
    let e: i32 = e.parse().expect("exponent");
    format!("{m}E{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

fn fmt_alerts(a: &[(Labels, Labels)]) -> String {
    if a.is_empty() {
        return "[]".into();
    }
    let mut out = String::from("[\n");
    for (i, (l, ann)) in a.iter().enumerate() {
        let f = |x: &Labels| {
            let p: Vec<String> = x.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{{{}}}", p.join(", "))
        };
        out.push_str(&format!(
            "            {i}:\n              Labels:{}\n              Annotations:{}\n",
            f(l),
            f(ann)
        ));
    }
    out.push_str("            ]");
    out
}
