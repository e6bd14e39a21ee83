//! `/federate`: the newest sample of every series that a `match[]` selector picks (within the
//! lookback delta, stale series left out), in the Prometheus text format with each sample's
//! own timestamp, as Prometheus serves it, so that a central Prometheus can scrape selected
//! series from every daemon (`honor_labels: true`). Metric series and the derived inference
//! and log series alike; `fleet.external_labels` added where a series lacks the label.
use super::relabel::add_external;
use crate::promql::source::{Source, StoreSource};
use crate::promql::{self, is_stale, Labels, PromqlError, NAME};
use crate::query::Budget;
use crate::store::Store;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The body of a `/federate` answer for `selectors` at `now`.
pub fn federate(
    store: &Store,
    selectors: &[String],
    now: i64,
    lookback_ms: i64,
    external: &Labels,
    budget: &mut Budget,
) -> Result<String, PromqlError> {
    let src = StoreSource { store };
    let mut newest: BTreeMap<Labels, (i64, f64)> = BTreeMap::new();
    for sel in selectors {
        let vs = match promql::parse(sel)? {
            promql_parser::parser::Expr::VectorSelector(vs) => vs,
            _ => return Err(PromqlError::Parse(format!("match[] {sel:?} is not a series selector"))),
        };
        for ms in promql::eval::selector_matchers(&vs) {
            // Prometheus' lookback window is left-open: (now - lookback, now].
            for s in src.select(&ms, now - lookback_ms + 1, now, budget)? {
                let (Some(&t), Some(&v)) = (s.ts.last(), s.vals.last()) else { continue };
                if is_stale(v) {
                    continue;
                }
                newest.insert(s.labels, (t, v));
            }
        }
        budget.series(newest.len())?;
    }
    // Grouped by metric name (the map's order is by label set, and the name is one label).
    let mut by_name: BTreeMap<String, Vec<(Labels, i64, f64)>> = BTreeMap::new();
    for (mut ls, (t, v)) in newest {
        add_external(&mut ls, external);
        let name = promql::label(&ls, NAME).unwrap_or("").to_string();
        by_name.entry(name).or_default().push((ls, t, v));
    }
    let mut out = String::new();
    for (name, rows) in by_name {
        let _ = writeln!(out, "# TYPE {name} untyped");
        for (ls, t, v) in rows {
            out.push_str(&name);
            out.push('{');
            let mut first = true;
            for (k, val) in ls.iter().filter(|(k, _)| k != NAME) {
                if !first {
                    out.push(',');
                }
                first = false;
                let _ = write!(out, "{k}=\"");
                escape(&mut out, val);
                out.push('"');
            }
            out.push_str("} ");
            promql::write_value(&mut out, v);
            let _ = writeln!(out, " {t}");
        }
    }
    Ok(out)
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn escape(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
