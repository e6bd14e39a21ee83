//! Prometheus' PromQL test scripts (`promql/promqltest/testdata/*.test`): `load` blocks of
//! series in the expanding notation, `clear`, and `eval instant|range` with the expected
//! answer. [`run`] loads each block into a fresh [`MemSource`], evaluates every `eval` with the
//! engine and reports each case as passed, failed (with why) or skipped (with why).
//!
//! Not checked: the `expect info` / `expect warn` annotations (the engine does not produce
//! Prometheus' annotations); cases over native histograms are skipped and named.
use super::{fmt_labels, fmt_value, Answer, Labels, MemSource, Opts, NAME, STALE_NAN};
use crate::config::QueryConfig;
use crate::query::Budget;
use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Debug, Clone)]
pub struct Case {
    /// 1-based line of the `eval`.
    pub line: usize,
    pub query: String,
    pub outcome: Outcome,
}

/// A duration in Prometheus' notation (`1h30m`, `10s53ms`, `0`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return Some((n * 1000.0).round() as i64);
    }
    let mut total = 0i64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A sample value as the test formats write it (`Inf`, `-Inf`, `NaN`, `0x1f`, decimals).
pub fn parse_number(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ if s.starts_with("0x") => i64::from_str_radix(&s[2..], 16).ok().map(|v| v as f64),
        _ => s.parse().ok(),
    }
}

/// One value of the expanding notation: `None` is an omitted sample (`_`).
pub fn expand_values(tokens: &[&str]) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in tokens {
        let (head, times) = match tok.rsplit_once('x') {
            Some((h, t)) if !h.is_empty() && !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) => {
                (h, Some(t.parse::<u64>().map_err(|e| format!("{tok}: {e}"))?))
            }
            _ => (*tok, None),
        };
        if head == "_" {
            out.extend(std::iter::repeat_n(None, times.unwrap_or(1) as usize));
            continue;
        }
        if head == "stale" {
            let v = f64::from_bits(STALE_NAN);
            out.extend(std::iter::repeat_n(Some(v), times.map_or(1, |t| t as usize + 1)));
            continue;
        }
        // `a+bxN` / `a-bxN`: split at a sign that is not the first character nor after `e`.
        let bytes = head.as_bytes();
        let split = (1..bytes.len())
            .find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && bytes[i - 1] != b'e' && bytes[i - 1] != b'E');
        let (a, b) = match split {
            Some(i) => (&head[..i], Some(&head[i..])),
            None => (head, None),
        };
        let mut a = parse_number(a).ok_or_else(|| format!("bad value {tok:?}"))?;
        match (b, times) {
            (None, None) => out.push(Some(a)),
            (None, Some(n)) => out.extend(std::iter::repeat_n(Some(a), n as usize + 1)),
            (Some(b), Some(n)) => {
                let b = parse_number(b).ok_or_else(|| format!("bad increment in {tok:?}"))?;
                out.push(Some(a));
                for _ in 0..n {
                    a += b;
                    out.push(Some(a));
                }
            }
            (Some(_), None) => return Err(format!("bad value {tok:?}")),
        }
    }
    Ok(out)
}

/// `name{a="b"}` → its label set (name as `__name__`).
pub fn parse_series(desc: &str) -> Result<Labels, String> {
    if desc.trim() == "{}" {
        return Ok(Vec::new());
    }
    let e = promql_parser::parser::parse(desc).map_err(|e| format!("{desc}: {e}"))?;
    let Expr::VectorSelector(vs) = e else { return Err(format!("{desc}: not a series")) };
    let mut ls: Labels = Vec::new();
    if let Some(n) = vs.name {
        ls.push((NAME.to_string(), n));
    }
    for m in vs.matchers.matchers {
        if m.op != MatchOp::Equal {
            return Err(format!("{desc}: only = matchers describe a series"));
        }
        if !(m.name == NAME && ls.iter().any(|(k, _)| k == NAME)) {
            ls.push((m.name, m.value));
        }
    }
    ls.sort();
    Ok(ls)
}

/// Splits `name{...} values...` into the series part and the rest.
fn split_series(line: &str) -> (&str, &str) {
    let line = line.trim();
    if let Some(open) = line.find('{') {
        let ws = line.find(char::is_whitespace).unwrap_or(line.len());
        if open < ws {
            // Find the closing brace outside quotes.
            let mut in_q = false;
            let mut esc = false;
            for (i, c) in line.char_indices().skip(open) {
                if esc {
                    esc = false;
                    continue;
                }
                match c {
                    '\\' => esc = true,
                    '"' => in_q = !in_q,
                    '}' if !in_q => return (&line[..=i], line[i + 1..].trim()),
                    _ => {}
                }
            }
        }
    }
    match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    }
}

struct Eval {
    line: usize,
    query: String,
    /// Instant at `start`, or a range.
    start: i64,
    end: i64,
    step: i64,
    range: bool,
    fail: Option<Option<String>>,
    ordered: bool,
    string: Option<String>,
    expected: Vec<String>,
}

/// Runs one script; `opts` as the daemon's engine defaults.
pub fn run(text: &str, opts: &Opts) -> Vec<Case> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cases = Vec::new();
    let mut src = MemSource::new();
    let mut native_names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        if line == "clear" {
            src.clear();
            native_names.clear();
            i += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("load_with_nhcb ").or_else(|| line.strip_prefix("load ")) {
            // `load_with_nhcb` also stores each classic histogram as a native one under its
            // base name: queries of that name are native-histogram cases.
            let nhcb = line.starts_with("load_with_nhcb");
            let interval = parse_duration(rest).unwrap_or(0);
            i += 1;
            while i < lines.len()
                && (lines[i].starts_with(' ') || lines[i].starts_with('\t'))
                && !lines[i].trim().is_empty()
            {
                let (desc, vals) = split_series(lines[i]);
                if vals.contains("{{") {
                    if let Ok(ls) = parse_series(desc) {
                        if let Some(n) = super::label(&ls, NAME) {
                            native_names.push(n.to_string());
                        }
                    }
                } else if let (Ok(ls), Ok(values)) =
                    (parse_series(desc), expand_values(&vals.split_whitespace().collect::<Vec<_>>()))
                {
                    if nhcb {
                        if let Some(base) = super::label(&ls, NAME).and_then(|n| {
                            n.strip_suffix("_bucket").or(n.strip_suffix("_count")).or(n.strip_suffix("_sum"))
                        }) {
                            native_names.push(base.to_string());
                        }
                    }
                    for (k, v) in values.iter().enumerate() {
                        if let Some(v) = v {
                            src.add(&ls, k as i64 * interval, *v);
                        }
                    }
                }
                i += 1;
            }
            continue;
        }
        if line.starts_with("eval") {
            let start_line = i + 1;
            let (ev, next) = parse_eval(&lines, i);
            i = next;
            let Some(ev) = ev else {
                cases.push(Case {
                    line: start_line,
                    query: line.into(),
                    outcome: Outcome::Fail("cannot read this eval".into()),
                });
                continue;
            };
            let outcome = if native_names.iter().any(|n| mentions(&ev.query, n))
                || ev.expected.iter().any(|l| l.contains("{{"))
            {
                Outcome::Skip("native histograms".into())
            } else {
                check(&src, &ev, opts)
            };
            cases.push(Case { line: ev.line, query: ev.query, outcome });
            continue;
        }
        i += 1;
    }
    cases
}

fn mentions(q: &str, name: &str) -> bool {
    q.match_indices(name).any(|(at, _)| {
        let before = q[..at].chars().next_back();
        let after = q[at + name.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        !word(before) && !word(after)
    })
}

fn parse_eval(lines: &[&str], at: usize) -> (Option<Eval>, usize) {
    let line = lines[at].trim();
    let mut i = at + 1;
    let (directive, rest) = line.split_once(' ').unwrap_or((line, ""));
    let mut ev = Eval {
        line: at + 1,
        query: String::new(),
        start: 0,
        end: 0,
        step: 0,
        range: false,
        fail: None,
        ordered: directive == "eval_ordered",
        string: None,
        expected: Vec::new(),
    };
    if directive == "eval_fail" {
        ev.fail = Some(None);
    }
    let parsed = (|| {
        if let Some(r) = rest.strip_prefix("instant at ") {
            let (t, q) = r.split_once(' ')?;
            ev.start = parse_duration(t)?;
            ev.end = ev.start;
            ev.query = q.trim().to_string();
        } else if let Some(r) = rest.strip_prefix("range from ") {
            let mut parts = r.splitn(6, ' ');
            ev.start = parse_duration(parts.next()?)?;
            if parts.next()? != "to" {
                return None;
            }
            ev.end = parse_duration(parts.next()?)?;
            if parts.next()? != "step" {
                return None;
            }
            ev.step = parse_duration(parts.next()?)?;
            ev.query = parts.next()?.trim().to_string();
            ev.range = true;
        } else {
            return None;
        }
        Some(())
    })();
    while i < lines.len() && !lines[i].trim().is_empty() && (lines[i].starts_with(' ') || lines[i].starts_with('\t')) {
        let l = lines[i].trim();
        i += 1;
        if l.starts_with('#') {
            continue;
        }
        if let Some(x) = l.strip_prefix("expect ") {
            if let Some(m) = x.strip_prefix("fail") {
                let m = m.trim();
                ev.fail = Some(m.strip_prefix("msg:").map(|s| s.trim().to_string()));
            } else if x == "ordered" {
                ev.ordered = true;
            } else if let Some(s) = x.strip_prefix("string ") {
                let s = s.trim();
                ev.string = Some(s[1..s.len().saturating_sub(1)].to_string());
            }
            continue;
        }
        ev.expected.push(l.to_string());
    }
    (parsed.map(|_| ev), i)
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let eps = 1e-6;
    let (aa, bb) = (a.abs(), b.abs());
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || aa + bb < f64::MIN_POSITIVE {
        return diff < eps * f64::MIN_POSITIVE;
    }
    diff / (aa + bb).min(f64::MAX) < eps
}

fn check(src: &MemSource, ev: &Eval, opts: &Opts) -> Outcome {
    let cfg = QueryConfig { max_samples: u64::MAX / 2, max_points: u64::MAX / 2, ..QueryConfig::default() };
    let mut budget = Budget::new(&cfg);
    let result = super::parse(&ev.query).and_then(|e| {
        if ev.range {
            super::range(src, &e, ev.start, ev.end, ev.step, opts, &mut budget)
        } else {
            super::instant(src, &e, ev.start, opts, &mut budget)
        }
    });
    match (&ev.fail, result) {
        (Some(msg), Err(e)) => match msg {
            Some(m) if !e.to_string().contains(m.as_str()) => {
                Outcome::Fail(format!("failed with {e:?}, expected message {m:?}"))
            }
            _ => Outcome::Pass,
        },
        (Some(_), Ok(a)) => Outcome::Fail(format!("expected an error, got {a:?}")),
        (None, Err(e)) => Outcome::Fail(format!("error: {e}")),
        (None, Ok(a)) => compare(ev, &a),
    }
}

fn compare(ev: &Eval, a: &Answer) -> Outcome {
    if let Some(s) = &ev.string {
        return match a {
            Answer::String { s: got, .. } if got == s => Outcome::Pass,
            other => Outcome::Fail(format!("expected string {s:?}, got {other:?}")),
        };
    }
    // Expected: (labels, values) per line; a bare number is a scalar.
    let mut exp: Vec<(Option<Labels>, Vec<Option<f64>>)> = Vec::new();
    for l in &ev.expected {
        let (desc, vals) = split_series(l);
        if let Some(v) = parse_number(desc) {
            if vals.is_empty() {
                exp.push((None, vec![Some(v)]));
                continue;
            }
        }
        let Ok(ls) = parse_series(desc) else { return Outcome::Fail(format!("cannot read expected line {l:?}")) };
        match expand_values(&vals.split_whitespace().collect::<Vec<_>>()) {
            Ok(v) => exp.push((Some(ls), v)),
            Err(e) => return Outcome::Fail(format!("cannot read expected line {l:?}: {e}")),
        }
    }
    match a {
        Answer::Scalar { v, .. } => match exp.as_slice() {
            [(None, e)] if e.len() == 1 && close(e[0].unwrap_or(f64::NAN), *v) => Outcome::Pass,
            _ => Outcome::Fail(format!("got scalar {}, expected {:?}", fmt_value(*v), ev.expected)),
        },
        Answer::String { s, .. } => Outcome::Fail(format!("got string {s:?}")),
        Answer::Vector { series, .. } => {
            if exp.len() != series.len() {
                return Outcome::Fail(format!(
                    "got {} series, expected {}: got {}",
                    series.len(),
                    exp.len(),
                    show(series.iter().map(|(l, v)| (l, vec![*v])))
                ));
            }
            for (k, (ls, vals)) in exp.iter().enumerate() {
                let Some(ls) = ls else { return Outcome::Fail("expected a scalar, got a vector".into()) };
                let found = series.iter().position(|(l, _)| l == ls);
                let Some(j) = found else {
                    return Outcome::Fail(format!(
                        "expected {} not in the answer: {}",
                        fmt_labels(ls),
                        show(series.iter().map(|(l, v)| (l, vec![*v])))
                    ));
                };
                if ev.ordered && j != k {
                    return Outcome::Fail(format!("{} at position {j}, expected {k}", fmt_labels(ls)));
                }
                let want = vals.first().copied().flatten().unwrap_or(f64::NAN);
                if !close(want, series[j].1) {
                    return Outcome::Fail(format!(
                        "{}: got {}, expected {}",
                        fmt_labels(ls),
                        fmt_value(series[j].1),
                        fmt_value(want)
                    ));
                }
            }
            Outcome::Pass
        }
        Answer::Matrix(m) => {
            if exp.len() != m.len() {
                return Outcome::Fail(format!(
                    "got {} series, expected {}: got {}",
                    m.len(),
                    exp.len(),
                    show(m.iter().map(|s| (&s.labels, s.vals.clone())))
                ));
            }
            for (ls, vals) in &exp {
                let ls = ls.clone().unwrap_or_default();
                let Some(s) = m.iter().find(|s| s.labels == ls) else {
                    return Outcome::Fail(format!(
                        "expected {} not in the answer: {}",
                        fmt_labels(&ls),
                        show(m.iter().map(|s| (&s.labels, s.vals.clone())))
                    ));
                };
                // A range answer's points sit at steps; `_` is a step without one. An instant
                // answer's range vector lists its samples.
                let got: Vec<Option<f64>> = if ev.range {
                    let n = ((ev.end - ev.start) / ev.step + 1) as usize;
                    let mut g = vec![None; n];
                    for (t, v) in s.ts.iter().zip(&s.vals) {
                        g[((t - ev.start) / ev.step) as usize] = Some(*v);
                    }
                    g
                } else {
                    s.vals.iter().map(|v| Some(*v)).collect()
                };
                let mut want = vals.clone();
                while want.len() < got.len() && ev.range {
                    want.push(None);
                }
                let same = want.len() == got.len()
                    && want.iter().zip(&got).all(|(a, b)| match (a, b) {
                        (None, None) => true,
                        (Some(x), Some(y)) => close(*x, *y) || (super::is_stale(*x) && y.is_nan()),
                        _ => false,
                    });
                if !same {
                    let f = |v: &[Option<f64>]| {
                        v.iter().map(|x| x.map_or("_".to_string(), fmt_value)).collect::<Vec<_>>().join(" ")
                    };
                    return Outcome::Fail(format!("{}: got {}, expected {}", fmt_labels(&ls), f(&got), f(&want)));
                }
            }
            Outcome::Pass
        }
    }
}

fn show<'a>(it: impl Iterator<Item = (&'a Labels, Vec<f64>)>) -> String {
    let v: Vec<String> = it
        .take(6)
        .map(|(l, v)| format!("{} {}", fmt_labels(l), v.iter().map(|x| fmt_value(*x)).collect::<Vec<_>>().join(" ")))
        .collect();
    v.join("; ")
}
