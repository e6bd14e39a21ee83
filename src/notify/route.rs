//! The notification file, in Alertmanager's format (a subset that reads the same): `global`
//! SMTP and Slack defaults, a `route` tree whose nodes match alerts by labels, group them and
//! name a receiver, `receivers`, and `inhibit_rules`. What modelwatch does not carry out is
//! refused by name rather than ignored.
use super::receiver::{self, Receiver};
use crate::promql::script::parse_duration;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    global: receiver::GlobalDoc,
    route: Option<RouteDoc>,
    #[serde(default)]
    receivers: Vec<receiver::ReceiverDoc>,
    #[serde(default)]
    inhibit_rules: Vec<InhibitDoc>,
    #[serde(default)]
    templates: Vec<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RouteDoc {
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default, rename = "match")]
    match_eq: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    #[serde(default)]
    routes: Vec<RouteDoc>,
    #[serde(default, rename = "continue")]
    cont: bool,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct InhibitDoc {
    #[serde(default)]
    source_matchers: Vec<String>,
    #[serde(default)]
    target_matchers: Vec<String>,
    #[serde(default)]
    source_match: BTreeMap<String, String>,
    #[serde(default)]
    source_match_re: BTreeMap<String, String>,
    #[serde(default)]
    target_match: BTreeMap<String, String>,
    #[serde(default)]
    target_match_re: BTreeMap<String, String>,
    #[serde(default)]
    equal: Vec<String>,
}

/// One label matcher (`severity="page"`, `model=~"llm-.*"`, `env!="dev"`).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub negate: bool,
    pub re: regex::Regex,
    /// As written back (`name="value"`), for keys and listings.
    pub text: String,
}

impl Matcher {
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim().trim_start_matches('{').trim_end_matches('}').trim();
        let (name, op, value) = ["=~", "!~", "!=", "="]
            .iter()
            .filter_map(|op| s.find(op).map(|at| (at, *op)))
            .min_by_key(|(at, op)| (*at, std::cmp::Reverse(op.len())))
            .map(|(at, op)| (s[..at].trim(), op, s[at + op.len()..].trim()))
            .ok_or_else(|| format!("bad matcher {s:?}: expected name=value, name!=value, name=~re or name!~re"))?;
        if name.is_empty() || !crate::ingest::validate::valid_label_name(name) {
            return Err(format!("bad matcher {s:?}: {name:?} is not a label name"));
        }
        let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            serde_json::from_str::<String>(value).map_err(|e| format!("bad matcher {s:?}: {e}"))?
        } else {
            value.to_string()
        };
        let pattern = if op.contains('~') { format!("^(?:{value})$") } else { format!("^{}$", regex::escape(&value)) };
        let re = regex::Regex::new(&pattern).map_err(|e| format!("bad matcher {s:?}: {e}"))?;
        let text = format!("{name}{op}{}", serde_json::to_string(&value).expect("string"));
        Ok(Matcher { name: name.to_string(), negate: op.starts_with('!'), re, text })
    }

    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let v = labels.iter().find(|(k, _)| *k == self.name).map_or("", |(_, v)| v.as_str());
        self.re.is_match(v) != self.negate
    }
}

/// Matchers from the three ways Alertmanager writes them (`matchers`, `match`, `match_re`).
fn matchers(
    list: &[String],
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
    path: &str,
) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    for m in list {
        out.push(Matcher::parse(m).map_err(|e| format!("{path}: {e}"))?);
    }
    for (op, map) in [("=", eq), ("=~", re)] {
        for (k, v) in map {
            out.push(
                Matcher::parse(&format!("{k}{op}{}", serde_json::to_string(v).expect("string")))
                    .map_err(|e| format!("{path}: {e}"))?,
            );
        }
    }
    Ok(out)
}

/// Alertmanager's defaults for the grouping timers.
pub const DEFAULT_GROUP_WAIT_MS: i64 = 30_000;
pub const DEFAULT_GROUP_INTERVAL_MS: i64 = 5 * 60_000;
pub const DEFAULT_REPEAT_INTERVAL_MS: i64 = 4 * 3_600_000;

#[derive(Debug, Clone)]
pub struct Route {
    /// Alertmanager's route key: the matchers from the root down (`{}/{severity="page"}`).
    pub key: String,
    pub receiver: String,
    /// Empty: one group for every alert of the route; `["..."]`: one per label set.
    pub group_by: Vec<String>,
    pub matchers: Vec<Matcher>,
    pub routes: Vec<Route>,
    pub cont: bool,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
}

impl Route {
    /// The labels of `labels` that name its group on this route.
    pub fn group_labels(&self, labels: &[(String, String)]) -> Vec<(String, String)> {
        if self.group_by.iter().any(|g| g == "...") {
            labels.to_vec()
        } else {
            labels.iter().filter(|(k, _)| self.group_by.contains(k)).cloned().collect()
        }
    }
}

/// An inhibition: while an alert matching `source` fires, alerts matching `target` with the
/// same values of the `equal` labels are not sent.
#[derive(Debug, Clone)]
pub struct Inhibit {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub root: Option<Route>,
    pub receivers: Vec<Receiver>,
    pub inhibit: Vec<Inhibit>,
    /// What the file sets that is read but not carried out (reported by `check`).
    pub notes: Vec<String>,
}

fn timer(what: &str, v: &Option<String>, inherited: i64, path: &str) -> Result<i64, String> {
    match v {
        None => Ok(inherited),
        Some(s) => match parse_duration(s) {
            Some(ms) if ms >= 0 => Ok(ms),
            _ => Err(format!("{path}: {what}: not a valid duration: {s:?}")),
        },
    }
}

fn build(d: &RouteDoc, parent: Option<&Route>, path: &str) -> Result<Route, String> {
    let ms = matchers(&d.matchers, &d.match_eq, &d.match_re, path)?;
    let receiver = match (&d.receiver, parent) {
        (Some(r), _) => r.clone(),
        (None, Some(p)) => p.receiver.clone(),
        (None, None) => return Err("route: the top route must name a receiver".into()),
    };
    if parent.is_none() && !ms.is_empty() {
        return Err("route: the top route must not have matchers (it takes every alert)".into());
    }
    let group_by = d.group_by.clone().or_else(|| parent.map(|p| p.group_by.clone())).unwrap_or_default();
    if group_by.iter().any(|g| g == "...") && group_by.len() > 1 {
        return Err(format!("{path}: group_by: \"...\" must be alone"));
    }
    for g in &group_by {
        if g != "..." && !crate::ingest::validate::valid_label_name(g) {
            return Err(format!("{path}: group_by: {g:?} is not a label name"));
        }
    }
    let own = format!("{{{}}}", ms.iter().map(|m| m.text.as_str()).collect::<Vec<_>>().join(","));
    let key = match parent {
        Some(p) => format!("{}/{own}", p.key),
        None => own,
    };
    let (pw, pi, pr) = parent
        .map_or((DEFAULT_GROUP_WAIT_MS, DEFAULT_GROUP_INTERVAL_MS, DEFAULT_REPEAT_INTERVAL_MS), |p| {
            (p.group_wait_ms, p.group_interval_ms, p.repeat_interval_ms)
        });
    let group_interval_ms = timer("group_interval", &d.group_interval, pi, path)?;
    if group_interval_ms == 0 {
        return Err(format!("{path}: group_interval: must be more than 0"));
    }
    let repeat_interval_ms = timer("repeat_interval", &d.repeat_interval, pr, path)?;
    if repeat_interval_ms == 0 {
        return Err(format!("{path}: repeat_interval: must be more than 0"));
    }
    let mut r = Route {
        key,
        receiver,
        group_by,
        matchers: ms,
        routes: Vec::new(),
        cont: d.cont,
        group_wait_ms: timer("group_wait", &d.group_wait, pw, path)?,
        group_interval_ms,
        repeat_interval_ms,
    };
    let mut kids = Vec::new();
    for (i, c) in d.routes.iter().enumerate() {
        kids.push(build(c, Some(&r), &format!("{path}.routes[{i}]"))?);
    }
    r.routes = kids;
    Ok(r)
}

fn check_receivers(r: &Route, names: &[String]) -> Result<(), String> {
    if !names.contains(&r.receiver) {
        return Err(format!("route: receiver {:?} is not defined in receivers", r.receiver));
    }
    r.routes.iter().try_for_each(|c| check_receivers(c, names))
}

impl Config {
    pub fn parse(src: &str) -> Result<Config, String> {
        let d: Doc = serde_yaml::from_str(src).map_err(|e| {
            let m = e.to_string();
            if m.contains("unknown field") {
                format!("{m} (modelwatch carries out email_configs, webhook_configs, slack_configs, dingtalk_configs and feishu_configs; PagerDuty, OpsGenie and the other integrations, and time intervals, are not supported)")
            } else {
                m
            }
        })?;
        let mut notes = Vec::new();
        if !d.templates.is_empty() {
            notes
                .push("templates: template files are not read; write templates inline in the receiver's fields".into());
        }
        let mut receivers = Vec::new();
        for (i, r) in d.receivers.into_iter().enumerate() {
            if receivers.iter().any(|x: &Receiver| x.name == r.name) {
                return Err(format!("receivers: {:?} is defined twice", r.name));
            }
            receivers.push(Receiver::build(r, &d.global).map_err(|e| format!("receivers[{i}]: {e}"))?);
        }
        let root = match &d.route {
            Some(r) => {
                let root = build(r, None, "route")?;
                let names: Vec<String> = receivers.iter().map(|r| r.name.clone()).collect();
                check_receivers(&root, &names)?;
                Some(root)
            }
            None if receivers.is_empty() => None,
            None => return Err("route: missing (receivers are named, but nothing routes to them)".into()),
        };
        let mut inhibit = Vec::new();
        for (i, r) in d.inhibit_rules.iter().enumerate() {
            let path = format!("inhibit_rules[{i}]");
            let source = matchers(&r.source_matchers, &r.source_match, &r.source_match_re, &path)?;
            let target = matchers(&r.target_matchers, &r.target_match, &r.target_match_re, &path)?;
            if source.is_empty() || target.is_empty() {
                return Err(format!("{path}: needs source and target matchers"));
            }
            inhibit.push(Inhibit { source, target, equal: r.equal.clone() });
        }
        Ok(Config { root, receivers, inhibit, notes })
    }

    pub fn load(path: &str) -> Result<Config, String> {
        if path.is_empty() {
            return Ok(Config::default());
        }
        let src = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        Config::parse(&src).map_err(|e| format!("{path}: {e}"))
    }

    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }

    /// The routes an alert with `labels` ends at, as Alertmanager walks the tree: the first
    /// matching child (and further ones while `continue` is set), recursively; a node whose
    /// children do not match takes the alert itself.
    pub fn route(&self, labels: &[(String, String)]) -> Vec<&Route> {
        let mut out = Vec::new();
        if let Some(r) = &self.root {
            walk(r, labels, &mut out);
        }
        out
    }
}

fn walk<'a>(r: &'a Route, labels: &[(String, String)], out: &mut Vec<&'a Route>) {
    let mut matched = false;
    for c in &r.routes {
        if !c.matchers.iter().all(|m| m.matches(labels)) {
            continue;
        }
        matched = true;
        walk(c, labels, out);
        if !c.cont {
            break;
        }
    }
    if !matched {
        out.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn routes_as_alertmanager_walks_them() {
        let c = Config::parse(
            "route:\n  receiver: default\n  group_by: [alertname]\n  group_wait: 10s\n  routes:\n  - matchers: ['severity=\"page\"']\n    receiver: pager\n    continue: true\n    repeat_interval: 1h\n  - match_re: {model: 'llm-.*'}\n    receiver: llm\nreceivers:\n- name: default\n  webhook_configs: [{url: 'http://127.0.0.1:1/d'}]\n- name: pager\n  webhook_configs: [{url: 'http://127.0.0.1:1/p', send_resolved: false}]\n- name: llm\n",
        )
        .unwrap();
        let names = |l: &[(&str, &str)]| c.route(&ls(l)).into_iter().map(|r| r.receiver.clone()).collect::<Vec<_>>();
        assert_eq!(names(&[("severity", "page"), ("model", "llm-7b")]), ["pager", "llm"]);
        assert_eq!(names(&[("severity", "page")]), ["pager"]);
        assert_eq!(names(&[("model", "bert")]), ["default"]);
        let root = c.route(&ls(&[]))[0];
        assert_eq!(root.group_by, ["alertname"]);
        assert_eq!(root.key, "{}");
        assert_eq!(
            (root.group_wait_ms, root.group_interval_ms, root.repeat_interval_ms),
            (10_000, 300_000, 14_400_000)
        );
        let pager = c.route(&ls(&[("severity", "page")]))[0];
        assert_eq!(pager.key, "{}/{severity=\"page\"}");
        assert_eq!((pager.group_wait_ms, pager.repeat_interval_ms), (10_000, 3_600_000));
        assert!(!c.receiver("pager").unwrap().webhooks[0].send_resolved);
        let e = Config::parse("route: {receiver: x}\nreceivers: [{name: x, pagerduty_configs: [{routing_key: a}]}]\n")
            .unwrap_err();
        assert!(e.contains("pagerduty_configs") && e.contains("not supported"), "{e}");
        let e = Config::parse("route: {receiver: nope}\nreceivers: [{name: x}]\n").unwrap_err();
        assert!(e.contains("\"nope\" is not defined"), "{e}");
        let e = Config::parse("route: {receiver: x, group_wait: soon}\nreceivers: [{name: x}]\n").unwrap_err();
        assert!(e.contains("group_wait") && e.contains("soon"), "{e}");
    }

    #[test]
    fn matchers_read_as_alertmanager_writes_them() {
        let m = Matcher::parse("model=~\"llm-.*\"").unwrap();
        assert!(m.matches(&ls(&[("model", "llm-7b")])) && !m.matches(&ls(&[("model", "bert")])));
        let m = Matcher::parse("{env!=dev}").unwrap();
        assert!(m.matches(&ls(&[])) && !m.matches(&ls(&[("env", "dev")])));
        assert_eq!(m.text, "env!=\"dev\"");
        // The first operator wins: a value may hold `=`.
        let m = Matcher::parse("q=\"a=b\"").unwrap();
        assert!(m.matches(&ls(&[("q", "a=b")])));
        assert!(Matcher::parse("=x").is_err() && Matcher::parse("x").is_err() && Matcher::parse("a=~(").is_err());
    }
}
