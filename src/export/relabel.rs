//! Relabeling before a series leaves the host, with the semantics of Prometheus'
//! `relabel_config` (regexes anchored at both ends, `source_labels` joined by `separator`,
//! `$1`/`${name}` in `replacement`, a label set to "" removed), plus a `match` selector for
//! `keep` and `drop`.
use crate::config::RelabelConfig;
use crate::promql::{self, Labels};
use promql_parser::label::Matcher;
use regex::Regex;

enum Action {
    Replace,
    Keep,
    Drop,
    LabelDrop,
    LabelKeep,
    LabelMap,
}

struct Step {
    action: Action,
    /// For keep/drop: one matcher set per `or` branch of the selector.
    selector: Option<Vec<Vec<Matcher>>>,
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    target_label: String,
    replacement: String,
}

/// The endpoint's steps, compiled.
#[derive(Default)]
pub struct Relabeler {
    steps: Vec<Step>,
}

impl Relabeler {
    pub fn new(cfgs: &[RelabelConfig]) -> Result<Relabeler, String> {
        let mut steps = Vec::new();
        for (i, c) in cfgs.iter().enumerate() {
            let action = match c.action.as_str() {
                "replace" => Action::Replace,
                "keep" => Action::Keep,
                "drop" => Action::Drop,
                "labeldrop" => Action::LabelDrop,
                "labelkeep" => Action::LabelKeep,
                "labelmap" => Action::LabelMap,
                other => {
                    return Err(format!(
                    "relabel[{i}].action {other:?} is not one of replace, keep, drop, labeldrop, labelkeep, labelmap"
                ))
                }
            };
            let regex = Regex::new(&format!("^(?:{})$", c.regex))
                .map_err(|e| format!("relabel[{i}].regex {:?} does not compile: {e}", c.regex))?;
            let selector = if c.matches.is_empty() {
                None
            } else {
                if !matches!(action, Action::Keep | Action::Drop) {
                    return Err(format!("relabel[{i}].match is for the keep and drop actions"));
                }
                match promql::parse(&c.matches) {
                    Ok(promql_parser::parser::Expr::VectorSelector(vs)) => Some(promql::eval::selector_matchers(&vs)),
                    Ok(_) => return Err(format!("relabel[{i}].match {:?} is not a series selector", c.matches)),
                    Err(e) => return Err(format!("relabel[{i}].match {:?}: {e}", c.matches)),
                }
            };
            if matches!(action, Action::Replace) && c.target_label.is_empty() {
                return Err(format!("relabel[{i}]: the replace action needs target_label"));
            }
            if matches!(action, Action::Keep | Action::Drop) && selector.is_none() && c.source_labels.is_empty() {
                return Err(format!("relabel[{i}]: {} needs match, or source_labels and regex", c.action));
            }
            steps.push(Step {
                action,
                selector,
                source_labels: c.source_labels.clone(),
                separator: c.separator.clone(),
                regex,
                target_label: c.target_label.clone(),
                replacement: c.replacement.clone(),
            });
        }
        Ok(Relabeler { steps })
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies every step to `ls` (sorted by name, `__name__` among them); `None` when a step
    /// drops the series. The result is sorted and has no empty values.
    pub fn apply(&self, mut ls: Labels) -> Option<Labels> {
        for s in &self.steps {
            let joined = || {
                s.source_labels
                    .iter()
                    .map(|n| promql::label(&ls, n).unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(&s.separator)
            };
            match s.action {
                Action::Keep | Action::Drop => {
                    let hit = match &s.selector {
                        Some(sets) => sets.iter().any(|set| promql::source::matches_all(set, &ls)),
                        None => s.regex.is_match(&joined()),
                    };
                    if hit != matches!(s.action, Action::Keep) {
                        return None;
                    }
                }
                Action::Replace => {
                    let value = joined();
                    if let Some(caps) = s.regex.captures(&value) {
                        let mut target = String::new();
                        caps.expand(&s.target_label, &mut target);
                        let mut v = String::new();
                        caps.expand(&s.replacement, &mut v);
                        if !target.is_empty() {
                            set(&mut ls, &target, v);
                        }
                    }
                }
                Action::LabelDrop => ls.retain(|(k, _)| !s.regex.is_match(k)),
                Action::LabelKeep => ls.retain(|(k, _)| k == promql::NAME || s.regex.is_match(k)),
                Action::LabelMap => {
                    let mut add = Vec::new();
                    for (k, v) in &ls {
                        if let Some(caps) = s.regex.captures(k) {
                            let mut target = String::new();
                            caps.expand(&s.replacement, &mut target);
                            add.push((target, v.clone()));
                        }
                    }
                    for (k, v) in add {
                        set(&mut ls, &k, v);
                    }
                }
            }
        }
        ls.retain(|(_, v)| !v.is_empty());
        promql::label(&ls, promql::NAME)?;
        Some(ls)
    }
}

/// Sets (or, with "", removes) one label, keeping `ls` sorted.
pub fn set(ls: &mut Labels, name: &str, value: String) {
    match ls.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
        Ok(i) if value.is_empty() => {
            ls.remove(i);
        }
        Ok(i) => ls[i].1 = value,
        Err(_) if value.is_empty() => {}
        Err(i) => ls.insert(i, (name.to_string(), value)),
    }
}

/// Adds the labels of `external` that `ls` does not have.
pub fn add_external(ls: &mut Labels, external: &[(String, String)]) {
    for (k, v) in external {
        if let Err(i) = ls.binary_search_by(|(n, _)| n.as_str().cmp(k)) {
            ls.insert(i, (k.clone(), v.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        let mut v: Labels = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        v.sort();
        v
    }

    fn cfg(action: &str) -> RelabelConfig {
        RelabelConfig { action: action.into(), ..Default::default() }
    }

    #[test]
    fn keep_drop_replace_and_label_actions() {
        let series = ls(&[("__name__", "gpu_util"), ("gpu", "0"), ("service", "ocr"), ("pod", "ocr-7")]);
        let keep = RelabelConfig { matches: r#"{__name__=~"gpu_.*"}"#.into(), ..cfg("keep") };
        let r = Relabeler::new(std::slice::from_ref(&keep)).unwrap();
        assert!(r.apply(series.clone()).is_some());
        assert!(r.apply(ls(&[("__name__", "cpu"), ("service", "ocr")])).is_none());

        let drop = RelabelConfig { source_labels: vec!["service".into()], regex: "oc.".into(), ..cfg("drop") };
        assert!(Relabeler::new(&[drop]).unwrap().apply(series.clone()).is_none());

        let rename = RelabelConfig {
            source_labels: vec!["service".into(), "gpu".into()],
            regex: "(.*);(.*)".into(),
            target_label: "where".into(),
            replacement: "${1}/gpu$2".into(),
            ..cfg("replace")
        };
        let no_pod = RelabelConfig { regex: "pod".into(), ..cfg("labeldrop") };
        let out = Relabeler::new(&[rename, no_pod]).unwrap().apply(series.clone()).unwrap();
        assert_eq!(out, ls(&[("__name__", "gpu_util"), ("gpu", "0"), ("service", "ocr"), ("where", "ocr/gpu0")]));

        // The regex is anchored: "oc" does not match "ocr".
        let partial = RelabelConfig { source_labels: vec!["service".into()], regex: "oc".into(), ..cfg("keep") };
        assert!(Relabeler::new(&[partial]).unwrap().apply(series.clone()).is_none());

        let mut with_host = series.clone();
        add_external(&mut with_host, &[("host".into(), "h1".into()), ("service".into(), "x".into())]);
        assert_eq!(promql::label(&with_host, "host"), Some("h1"));
        assert_eq!(promql::label(&with_host, "service"), Some("ocr"));
        assert!(with_host.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn bad_steps_are_refused_with_their_index() {
        let e = Relabeler::new(&[cfg("keep")]).err().unwrap();
        assert!(e.contains("relabel[0]"), "{e}");
        let e = Relabeler::new(&[RelabelConfig { regex: "(".into(), ..cfg("labeldrop") }]).err().unwrap();
        assert!(e.contains("relabel[0].regex"), "{e}");
        let e = Relabeler::new(&[cfg("hashmod")]).err().unwrap();
        assert!(e.contains("hashmod"), "{e}");
    }
}
