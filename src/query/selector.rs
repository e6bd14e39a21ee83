//! PromQL-style selectors: `name{label="v", other=~"re", x!="y", z!~"w"}` and matcher lists.
use super::{invalid, QueryError};
use crate::pb;
use crate::store::index::{MatchOp, Matcher, NAME_LABEL};

/// Parses `name{label="v", other=~"re", x!="y", z!~"w"}`; the name and the braces are each
/// optional.
pub fn parse_selector(s: &str) -> Result<Vec<Matcher>, QueryError> {
    let s = s.trim();
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    let (name, rest) = match s.find('{') {
        Some(i) => (s[..i].trim(), &s[i..]),
        None => (s, ""),
    };
    let bad = |why: &str| invalid("selector", format!("{s:?}: {why}"));
    if !name.is_empty() {
        out.push(Matcher::new(NAME_LABEL, MatchOp::Eq, name).map_err(|e| bad(&e.to_string()))?);
    }
    if rest.is_empty() {
        return Ok(out);
    }
    let body = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')).ok_or_else(|| bad("unbalanced braces"))?;
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i].is_whitespace() || chars[*i] == ',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        if label.is_empty() {
            return Err(bad(&format!("expected a label name at position {start}")));
        }
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let op_str: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let (op, len) = match op_str.as_str() {
            "=~" => (MatchOp::Re, 2),
            "!=" => (MatchOp::Neq, 2),
            "!~" => (MatchOp::Nre, 2),
            _ if op_str.starts_with('=') => (MatchOp::Eq, 1),
            _ => return Err(bad(&format!("expected =, !=, =~ or !~ after {label}"))),
        };
        i += len;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() || chars[i] != '"' {
            return Err(bad(&format!("expected a quoted value for {label}")));
        }
        i += 1;
        let mut value = String::new();
        loop {
            match chars.get(i) {
                None => return Err(bad("unterminated string")),
                Some('"') => {
                    i += 1;
                    break;
                }
                Some('\\') => {
                    match chars.get(i + 1) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(*c),
                        None => return Err(bad("unterminated string")),
                    }
                    i += 2;
                }
                Some(c) => {
                    value.push(*c);
                    i += 1;
                }
            }
        }
        out.push(Matcher::new(&label, op, &value).map_err(|e| bad(&format!("bad regex for {label}: {e}")))?);
    }
    Ok(out)
}

pub fn matchers_of(selector: &str, list: &[pb::Matcher]) -> Result<Vec<Matcher>, QueryError> {
    let mut ms = parse_selector(selector)?;
    for (i, m) in list.iter().enumerate() {
        let op = pb::MatchOp::try_from(m.op).map_err(|_| {
            invalid(
                "matchers",
                format!("matchers[{i}].op {} is not a known value (MATCH_OP_EQ, _NEQ, _RE, _NRE)", m.op),
            )
        })?;
        let op = match op {
            pb::MatchOp::Eq => MatchOp::Eq,
            pb::MatchOp::Neq => MatchOp::Neq,
            pb::MatchOp::Re => MatchOp::Re,
            pb::MatchOp::Nre => MatchOp::Nre,
        };
        ms.push(
            Matcher::new(&m.name, op, &m.value)
                .map_err(|e| invalid("matchers", format!("bad regex for {}: {e}", m.name)))?,
        );
    }
    if ms.is_empty() || ms.iter().all(|m| m.matches("")) {
        return Err(invalid(
            "selector",
            "give at least one matcher that does not match everything, e.g. a metric name",
        ));
    }
    Ok(ms)
}
