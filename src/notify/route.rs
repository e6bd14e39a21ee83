//! The routing file, in Alertmanager's format: a `route` tree whose nodes match alerts by
//! labels and name a receiver, and `receivers`. Parts of Alertmanager's format that modelwatch
//! does not carry out are refused by name rather than ignored, except the grouping timers
//! (`group_wait`, `group_interval`, `repeat_interval`), which are read and reported by
//! `check`: each alert is notified on its own when it starts and when it ends.
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    global: Option<serde_yaml::Value>,
    route: Option<RouteDoc>,
    #[serde(default)]
    receivers: Vec<ReceiverDoc>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverDoc {
    name: String,
    #[serde(default)]
    webhook_configs: Vec<WebhookDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookDoc {
    url: String,
    #[serde(default = "yes")]
    send_resolved: bool,
    #[serde(default)]
    max_alerts: usize,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub send_resolved: bool,
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub webhook_configs: Vec<Webhook>,
}

/// One label matcher (`severity="page"`, `model=~"llm-.*"`, `env!="dev"`).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub negate: bool,
    pub re: regex::Regex,
}

impl Matcher {
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim().trim_start_matches('{').trim_end_matches('}').trim();
        let (name, op, value) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| s.split_once(op).map(|(n, v)| (n.trim(), *op, v.trim())))
            .ok_or_else(|| format!("bad matcher {s:?}: expected name=value, name!=value, name=~re or name!~re"))?;
        let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            serde_json::from_str::<String>(value).map_err(|e| format!("bad matcher {s:?}: {e}"))?
        } else {
            value.to_string()
        };
        let pattern = if op.contains('~') { format!("^(?:{value})$") } else { format!("^{}$", regex::escape(&value)) };
        let re = regex::Regex::new(&pattern).map_err(|e| format!("bad matcher {s:?}: {e}"))?;
        Ok(Matcher { name: name.to_string(), negate: op.starts_with('!'), re })
    }

    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let v = labels.iter().find(|(k, _)| *k == self.name).map_or("", |(_, v)| v.as_str());
        self.re.is_match(v) != self.negate
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub receiver: String,
    pub group_by: Vec<String>,
    pub matchers: Vec<Matcher>,
    pub routes: Vec<Route>,
    pub cont: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub root: Option<Route>,
    pub receivers: Vec<Receiver>,
    /// What the file sets that is read but not carried out (reported by `check`).
    pub notes: Vec<String>,
}

fn build(d: &RouteDoc, parent: Option<&Route>, notes: &mut Vec<String>, path: &str) -> Result<Route, String> {
    let mut matchers = Vec::new();
    for m in &d.matchers {
        matchers.push(Matcher::parse(m).map_err(|e| format!("{path}: {e}"))?);
    }
    for (k, v) in &d.match_eq {
        matchers.push(
            Matcher::parse(&format!("{k}={}", serde_json::to_string(v).expect("string")))
                .map_err(|e| format!("{path}: {e}"))?,
        );
    }
    for (k, v) in &d.match_re {
        matchers.push(
            Matcher::parse(&format!("{k}=~{}", serde_json::to_string(v).expect("string")))
                .map_err(|e| format!("{path}: {e}"))?,
        );
    }
    for (what, v) in
        [("group_wait", &d.group_wait), ("group_interval", &d.group_interval), ("repeat_interval", &d.repeat_interval)]
    {
        if let Some(v) = v {
            notes.push(format!("{path}: {what}: {v} is read but not applied (each alert is notified on its own)"));
        }
    }
    let receiver = match (&d.receiver, parent) {
        (Some(r), _) => r.clone(),
        (None, Some(p)) => p.receiver.clone(),
        (None, None) => return Err("route: the top route must name a receiver".into()),
    };
    let group_by = d.group_by.clone().or_else(|| parent.map(|p| p.group_by.clone())).unwrap_or_default();
    let mut r = Route { receiver, group_by, matchers, routes: Vec::new(), cont: d.cont };
    let mut kids = Vec::new();
    for (i, c) in d.routes.iter().enumerate() {
        kids.push(build(c, Some(&r), notes, &format!("{path}.routes[{i}]"))?);
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
                format!("{m} (modelwatch carries out webhook_configs; email, Slack and DingTalk receivers, inhibit_rules and time intervals are not supported yet)")
            } else {
                m
            }
        })?;
        let mut notes = Vec::new();
        if d.global.is_some() {
            notes.push("global: read but not used".into());
        }
        if !d.templates.is_empty() {
            notes.push("templates: not used (payloads are Alertmanager's webhook format)".into());
        }
        let mut receivers = Vec::new();
        for r in d.receivers {
            if receivers.iter().any(|x: &Receiver| x.name == r.name) {
                return Err(format!("receivers: {:?} is defined twice", r.name));
            }
            let mut hooks = Vec::new();
            for w in r.webhook_configs {
                let u =
                    reqwest::Url::parse(&w.url).map_err(|e| format!("receiver {:?}: url {:?}: {e}", r.name, w.url))?;
                if u.scheme() != "http" && u.scheme() != "https" {
                    return Err(format!("receiver {:?}: url {:?}: not http or https", r.name, w.url));
                }
                if w.max_alerts > 0 {
                    notes.push(format!("receiver {:?}: max_alerts: each payload carries one alert", r.name));
                }
                hooks.push(Webhook { url: w.url, send_resolved: w.send_resolved });
            }
            receivers.push(Receiver { name: r.name, webhook_configs: hooks });
        }
        let root = match &d.route {
            Some(r) => {
                let root = build(r, None, &mut notes, "route")?;
                let names: Vec<String> = receivers.iter().map(|r| r.name.clone()).collect();
                check_receivers(&root, &names)?;
                Some(root)
            }
            None if receivers.is_empty() => None,
            None => return Err("route: missing (receivers are named, but nothing routes to them)".into()),
        };
        Ok(Config { root, receivers, notes })
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
    pub fn route(&self, labels: &[(String, String)]) -> Vec<Route> {
        let mut out = Vec::new();
        if let Some(r) = &self.root {
            walk(r, labels, &mut out);
        }
        out
    }
}

fn walk(r: &Route, labels: &[(String, String)], out: &mut Vec<Route>) {
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
        out.push(Route { routes: Vec::new(), ..r.clone() });
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
            "route:\n  receiver: default\n  group_by: [alertname]\n  routes:\n  - matchers: ['severity=\"page\"']\n    receiver: pager\n    continue: true\n  - match_re: {model: 'llm-.*'}\n    receiver: llm\nreceivers:\n- name: default\n  webhook_configs: [{url: 'http://127.0.0.1:1/d'}]\n- name: pager\n  webhook_configs: [{url: 'http://127.0.0.1:1/p', send_resolved: false}]\n- name: llm\n",
        )
        .unwrap();
        let names = |l: &[(&str, &str)]| c.route(&ls(l)).into_iter().map(|r| r.receiver).collect::<Vec<_>>();
        assert_eq!(names(&[("severity", "page"), ("model", "llm-7b")]), ["pager", "llm"]);
        assert_eq!(names(&[("severity", "page")]), ["pager"]);
        assert_eq!(names(&[("model", "bert")]), ["default"]);
        assert_eq!(c.route(&ls(&[]))[0].group_by, ["alertname"]);
        assert!(!c.receiver("pager").unwrap().webhook_configs[0].send_resolved);
        let e =
            Config::parse("route: {receiver: x}\nreceivers: [{name: x, email_configs: [{to: a@b}]}]\n").unwrap_err();
        assert!(e.contains("email_configs") && e.contains("not supported yet"), "{e}");
        let e = Config::parse("route: {receiver: nope}\nreceivers: [{name: x}]\n").unwrap_err();
        assert!(e.contains("\"nope\" is not defined"), "{e}");
    }
}
