//! Rule files in Prometheus' format, read and checked: `groups:` with `name`, `interval`,
//! `limit`, `labels`, `query_offset`; rules with `record` or `alert`, `expr`, `for`,
//! `keep_firing_for`, `labels`, `annotations`. A file is taken whole or refused whole, with the
//! file, the group, the rule and the reason (the shape of `promtool check rules`' messages).
use super::template::Template;
use crate::ingest::validate::{valid_label_name, valid_metric_name};
use crate::promql::script::parse_duration;
use promql_parser::parser::Expr;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A YAML scalar read as text (`severity: 1` is the label value "1", as Prometheus reads it).
#[derive(Debug, Clone)]
pub(crate) struct Text(pub(crate) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Asked for a string, the YAML reader hands over the scalar as written (`0x10` stays
        // `0x10`, not 16), as Go's YAML reader does for a string field.
        String::deserialize(d).map(Text)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    groups: Vec<GroupDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupDoc {
    #[serde(default)]
    name: String,
    interval: Option<Text>,
    query_offset: Option<Text>,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    labels: BTreeMap<String, Text>,
    #[serde(default)]
    rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    record: Option<Text>,
    alert: Option<Text>,
    expr: Option<Text>,
    #[serde(rename = "for")]
    for_: Option<Text>,
    keep_firing_for: Option<Text>,
    #[serde(default)]
    labels: BTreeMap<String, Text>,
    #[serde(default)]
    annotations: BTreeMap<String, Text>,
}

/// A label or annotation value: plain text, or a template expanded per alert.
#[derive(Debug, Clone)]
pub struct Tmpl {
    pub text: String,
    pub parsed: Option<Template>,
}

impl Tmpl {
    fn new(name: &str, text: &str) -> Result<Tmpl, String> {
        let t = Template::parse(name, text)?;
        Ok(Tmpl { text: text.to_string(), parsed: (!t.is_plain()).then_some(t) })
    }
}

#[derive(Debug, Clone)]
pub enum Kind {
    Record,
    Alert { for_ms: i64, keep_firing_for_ms: i64, annotations: Vec<(String, Tmpl)> },
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// The recorded metric's or the alert's name.
    pub name: String,
    pub expr_text: String,
    pub expr: Expr,
    /// The rule's labels, the group's under them (the rule's win).
    pub labels: Vec<(String, Tmpl)>,
    pub kind: Kind,
}

impl Rule {
    pub fn is_alert(&self) -> bool {
        matches!(self.kind, Kind::Alert { .. })
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub file: String,
    pub name: String,
    /// `None`: the global evaluation interval.
    pub interval_ms: Option<i64>,
    pub query_offset_ms: i64,
    /// At most this many alerts per alerting rule and series per recording rule (0: no limit).
    pub limit: usize,
    pub rules: Vec<Rule>,
}

fn duration(what: &str, t: &Option<Text>) -> Result<i64, String> {
    match t {
        None => Ok(0),
        Some(Text(s)) => match parse_duration(s) {
            Some(ms) if ms >= 0 => Ok(ms),
            _ => Err(format!("{what}: not a valid duration string: {s:?}")),
        },
    }
}

/// Where `expr: <text>` of the `n`th rule (0-based, over the whole file) starts: `line:col`
/// of the value, for parse errors (Prometheus names the YAML node's position).
fn expr_position(src: &str, n: usize) -> Option<(usize, usize)> {
    let mut seen = 0;
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start().trim_start_matches("- ");
        if let Some(rest) = t.strip_prefix("expr:") {
            if seen == n {
                let col = line.len() - rest.len() + (rest.len() - rest.trim_start().len()) + 1;
                return Some((i + 1, col));
            }
            seen += 1;
        }
    }
    None
}

/// Reads one rule file's text; `file` is how errors name it.
pub fn parse_file(file: &str, src: &str) -> Result<Vec<Group>, Vec<String>> {
    let doc: FileDoc = serde_yaml::from_str(src).map_err(|e| vec![format!("{file}: yaml: {e}")])?;
    let mut errs = Vec::new();
    let mut groups = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut rule_no = 0;
    for g in doc.groups {
        if g.name.is_empty() {
            errs.push(format!("{file}: groupname must not be empty"));
        } else if !names.insert(g.name.clone()) {
            errs.push(format!("{file}: {:?}: groupname must be unique within a file", g.name));
        }
        let interval_ms = match &g.interval {
            None => None,
            Some(_) => match duration("interval", &g.interval) {
                Ok(0) => Some(0),
                Ok(ms) => Some(ms),
                Err(e) => {
                    errs.push(format!("{file}: group {:?}: {e}", g.name));
                    None
                }
            },
        };
        if interval_ms == Some(0) {
            errs.push(format!("{file}: group {:?}: interval must be greater than zero", g.name));
        }
        let query_offset_ms = duration("query_offset", &g.query_offset).unwrap_or_else(|e| {
            errs.push(format!("{file}: group {:?}: {e}", g.name));
            0
        });
        for k in g.labels.keys() {
            if !valid_label_name(k) {
                errs.push(format!("{file}: group {:?}: invalid label name: {k}", g.name));
            }
        }
        let mut rules = Vec::new();
        for (i, r) in g.rules.into_iter().enumerate() {
            let n = rule_no;
            rule_no += 1;
            let name = r.record.as_ref().or(r.alert.as_ref()).map(|t| t.0.clone()).unwrap_or_default();
            let at = |reason: String| format!("{file}: group {:?}, rule {}, {:?}: {reason}", g.name, i + 1, name);
            let mut bad = |reason: String| errs.push(at(reason));
            let mut ok = true;
            match (&r.record, &r.alert) {
                (Some(_), Some(_)) => {
                    bad("only one of 'record' and 'alert' must be set".into());
                    ok = false;
                }
                (None, None) => {
                    bad("one of 'record' or 'alert' must be set".into());
                    ok = false;
                }
                (Some(rec), None) => {
                    if rec.0.is_empty() {
                        bad("field 'record' must be set in rule".into());
                        ok = false;
                    } else if !valid_metric_name(&rec.0) {
                        bad(format!("invalid recording rule name: {}", rec.0));
                        ok = false;
                    }
                    if !r.annotations.is_empty() {
                        bad("invalid field 'annotations' in recording rule".into());
                        ok = false;
                    }
                    if r.for_.is_some() {
                        bad("invalid field 'for' in recording rule".into());
                        ok = false;
                    }
                    if r.keep_firing_for.is_some() {
                        bad("invalid field 'keep_firing_for' in recording rule".into());
                        ok = false;
                    }
                }
                (None, Some(a)) => {
                    if a.0.is_empty() {
                        bad("field 'alert' must be set in rule".into());
                        ok = false;
                    }
                }
            }
            let expr_text = r.expr.as_ref().map(|t| t.0.clone()).unwrap_or_default();
            let expr = if expr_text.trim().is_empty() {
                Err(at("field 'expr' must be set in rule".into()))
            } else {
                promql_parser::parser::parse(&expr_text).map_err(|e| {
                    let pos = expr_position(src, n).map(|(l, c)| format!("{l}:{c}: ")).unwrap_or_default();
                    format!(
                        "{file}: {pos}group {:?}, rule {}, {:?}: could not parse expression: {}",
                        g.name,
                        i + 1,
                        name,
                        e.trim()
                    )
                })
            };
            let expr = match expr {
                Ok(e) => Some(e),
                Err(e) => {
                    errs.push(e);
                    None
                }
            };
            let mut bad = |reason: String| errs.push(at(reason));
            let tname = if r.alert.is_some() { format!("__alert_{name}") } else { format!("__record_{name}") };
            let mut labels: BTreeMap<String, Tmpl> = BTreeMap::new();
            for (k, v) in g.labels.iter().chain(r.labels.iter()) {
                if !valid_label_name(k) || k == "__name__" {
                    bad(format!("invalid label name: {k}"));
                    ok = false;
                    continue;
                }
                if r.record.is_some() {
                    labels.insert(k.clone(), Tmpl { text: v.0.clone(), parsed: None });
                    continue;
                }
                match Tmpl::new(&tname, &v.0) {
                    Ok(t) => {
                        labels.insert(k.clone(), t);
                    }
                    Err(e) => {
                        bad(format!("label {k:?}: {e}"));
                        ok = false;
                    }
                }
            }
            let mut annotations = Vec::new();
            for (k, v) in &r.annotations {
                if !valid_label_name(k) {
                    bad(format!("invalid annotation name: {k}"));
                    ok = false;
                    continue;
                }
                match Tmpl::new(&tname, &v.0) {
                    Ok(t) => annotations.push((k.clone(), t)),
                    Err(e) => {
                        bad(format!("annotation {k:?}: {e}"));
                        ok = false;
                    }
                }
            }
            let for_ms = duration("for", &r.for_).unwrap_or_else(|e| {
                bad(e);
                ok = false;
                0
            });
            let keep_ms = duration("keep_firing_for", &r.keep_firing_for).unwrap_or_else(|e| {
                bad(e);
                ok = false;
                0
            });
            let (Some(expr), true) = (expr, ok) else { continue };
            let kind = if r.alert.is_some() {
                Kind::Alert { for_ms, keep_firing_for_ms: keep_ms, annotations }
            } else {
                Kind::Record
            };
            rules.push(Rule { name, expr_text, expr, labels: labels.into_iter().collect(), kind });
        }
        groups.push(Group {
            file: file.to_string(),
            name: g.name,
            interval_ms,
            query_offset_ms,
            limit: g.limit,
            rules,
        });
    }
    if errs.is_empty() {
        Ok(groups)
    } else {
        Err(errs)
    }
}

/// Reads a rule file from disk.
pub fn load_file(path: &Path) -> Result<Vec<Group>, Vec<String>> {
    let name = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: {e}")])?;
    parse_file(&name, &src)
}

/// The files that `patterns` (globs) name, sorted and without repeats; a pattern that matches
/// nothing is not an error (as Prometheus' `rule_files`).
pub fn expand_globs(patterns: &[String], base: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let mut out = Vec::new();
    for p in patterns {
        let full = if Path::new(p).is_absolute() { p.clone() } else { base.join(p).display().to_string() };
        let paths = glob::glob(&full).map_err(|e| format!("rule_files: {p:?}: {e}"))?;
        for path in paths {
            out.push(path.map_err(|e| format!("rule_files: {p:?}: {e}"))?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Loads every file; refuses the set if any file is refused.
pub fn load_all(files: &[std::path::PathBuf]) -> Result<Vec<Group>, Vec<String>> {
    let mut groups = Vec::new();
    let mut errs = Vec::new();
    for f in files {
        match load_file(f) {
            Ok(g) => groups.extend(g),
            Err(e) => errs.extend(e),
        }
    }
    if errs.is_empty() {
        Ok(groups)
    } else {
        Err(errs)
    }
}

/// Recording rules that record the same series twice (same name and labels), as promtool's
/// lint reports them: `(metric, labels)` per duplicate.
pub fn duplicates(groups: &[Group]) -> Vec<(String, Vec<(String, String)>)> {
    let mut seen: BTreeMap<(String, Vec<(String, String)>), usize> = BTreeMap::new();
    for g in groups {
        for r in &g.rules {
            if let Kind::Record = r.kind {
                let ls: Vec<(String, String)> = r.labels.iter().map(|(k, v)| (k.clone(), v.text.clone())).collect();
                *seen.entry((r.name.clone(), ls)).or_default() += 1;
            }
        }
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_file_and_each_refusal() {
        let g = parse_file(
            "f.yml",
            "groups:\n- name: a\n  interval: 30s\n  rules:\n  - alert: X\n    expr: up == 0\n    for: 5m\n    labels: {severity: 1}\n    annotations: {summary: 'v={{ $value }}'}\n  - record: r:x\n    expr: sum(up)\n",
        )
        .unwrap();
        assert_eq!(g[0].interval_ms, Some(30_000));
        assert_eq!(g[0].rules.len(), 2);
        assert_eq!(g[0].rules[0].labels[0].1.text, "1");
        let bad = |src: &str| parse_file("f.yml", src).unwrap_err().join("\n");
        assert!(bad("groups:\n- name: a\n  rules:\n  - record: x\n    alert: y\n    expr: 1\n").contains("only one of"));
        assert!(bad("groups:\n- name: a\n  rules:\n  - record: 'x y'\n    expr: 1\n")
            .contains("invalid recording rule name"));
        assert!(bad("groups:\n- name: a\n  rules:\n  - record: x\n    expr: 1\n    for: 1m\n")
            .contains("invalid field 'for'"));
        assert!(bad("groups:\n- name: a\n  rules:\n  - alert: x\n    expr: 1\n    for: soon\n")
            .contains("not a valid duration"));
        assert!(
            bad("groups:\n- name: a\n  rules:\n  - alert: x\n    expr: 1\n- name: a\n  rules: []\n").contains("unique")
        );
        assert!(bad("groups:\n- name: a\n  rules:\n  - alert: x\n    exp: 1\n").contains("unknown field"));
        let e = bad("groups:\n- name: a\n  rules:\n  - record: x\n    expr: 'test +'\n");
        assert!(e.starts_with("f.yml: 5:11: group \"a\", rule 1, \"x\": could not parse expression"), "{e}");
    }
}
