//! Templates in alert labels and annotations: the part of Go's `text/template` that rule files
//! use, with Prometheus' data (`$labels`, `$value`, `$externalLabels`, `$externalURL`, and the
//! same under `.Labels`, `.Value`, ...) and functions (`humanize`, `humanizeDuration`,
//! `printf`, ...).
//!
//! Parsing is separate from running, so that `rules check` refuses what would fail at every
//! evaluation (an undefined variable, an unknown function, an unclosed action), and the
//! evaluator expands a parsed template per alert.
//!
//! Supported: text and `{{ }}` actions with `{{-`/`-}}` trimming and `{{/* comments */}}`;
//! pipelines with `|`; variables (`$x := ...`, `$x = ...`); fields (`.Labels.job`,
//! `$labels.job`); string, raw string, number and `true`/`false`/`nil` literals; parenthesized
//! pipelines; `if`/`else if`/`else`/`end`, `with`, and `range` over a map or a list of values.
//! Not supported: `define`/`template`/`block`, and Prometheus' query functions (`query`,
//! `first`, `label`, `value`, `sortByLabel`, `strvalue`), which `check` names.
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A value inside a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A map of strings (`$labels`, `$externalLabels`).
    Map(BTreeMap<String, String>),
    /// The dot: named fields.
    Dict(BTreeMap<String, Value>),
    List(Vec<Value>),
}

impl Value {
    fn truth(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Dict(m) => !m.is_empty(),
            Value::List(l) => !l.is_empty(),
        }
    }

    /// As `{{ x }}` prints it (Go's `%v`).
    fn print(&self) -> String {
        match self {
            Value::Nil => "<no value>".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => go_g(*f, None),
            Value::Str(s) => s.clone(),
            Value::Map(m) => {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("map[{}]", parts.join(" "))
            }
            Value::Dict(m) => {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{}", v.print())).collect();
                format!("map[{}]", parts.join(" "))
            }
            Value::List(l) => {
                let parts: Vec<String> = l.iter().map(|v| v.print()).collect();
                format!("[{}]", parts.join(" "))
            }
        }
    }

    fn number(&self) -> Result<f64, String> {
        match self {
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            Value::Str(s) => {
                s.trim().parse::<f64>().map_err(|_| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))
            }
            other => Err(format!("can't convert {} to a number", other.print())),
        }
    }
}

/// What an alert's templates see.
pub struct Data<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
    pub value: f64,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Option<(String, Option<String>)>, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipe {
    /// `$x := ...` (declare) or `$x = ...` (assign: true).
    decl: Option<(String, bool)>,
    cmds: Vec<Vec<Term>>,
    line: usize,
}

#[derive(Debug, Clone)]
enum Term {
    Dot(Vec<String>),
    Var(String, Vec<String>),
    Lit(Value),
    Func(String),
    Sub(Box<Pipe>, Vec<String>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    nodes: Vec<Node>,
}

const FUNCS: &[&str] = &[
    "and",
    "or",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "title",
    "toUpper",
    "toLower",
    "match",
    "reReplaceAll",
    "stripPort",
    "stripDomain",
    "safeHtml",
    "html",
    "js",
    "urlquery",
    "toTime",
    "parseDuration",
    "externalURL",
    "join",
    "trimSpace",
];

const QUERY_FUNCS: &[&str] =
    &["query", "first", "label", "value", "sortByLabel", "strvalue", "args", "tmpl", "pathPrefix"];

/// The variables Prometheus defines before every alert template.
const PREDEFINED: &[&str] = &["$", "$labels", "$externalLabels", "$externalURL", "$value"];

impl Template {
    /// Parses `text`; `name` is what errors call it (`__alert_HighLatency`).
    pub fn parse(name: &str, text: &str) -> Result<Template, String> {
        let toks = lex(text).map_err(|(line, e)| format!("template: {name}:{line}: {e}"))?;
        let mut p = Parser { toks, at: 0, scope: PREDEFINED.iter().map(|s| s.to_string()).collect() };
        let (nodes, stop) = p.nodes().map_err(|(line, e)| format!("template: {name}:{line}: {e}"))?;
        if let Some((kw, line)) = stop {
            return Err(format!("template: {name}:{line}: unexpected {{{{{kw}}}}}"));
        }
        Ok(Template { name: name.to_string(), nodes })
    }

    /// Parses a notification template (Alertmanager's data: `.Status`, `.Alerts`,
    /// `.GroupLabels`, `.CommonLabels`, ...; only `$` is predefined).
    pub fn parse_notification(name: &str, text: &str) -> Result<Template, String> {
        let toks = lex(text).map_err(|(line, e)| format!("template: {name}:{line}: {e}"))?;
        let mut p = Parser { toks, at: 0, scope: vec!["$".to_string()] };
        let (nodes, stop) = p.nodes().map_err(|(line, e)| format!("template: {name}:{line}: {e}"))?;
        if let Some((kw, line)) = stop {
            return Err(format!("template: {name}:{line}: unexpected {{{{{kw}}}}}"));
        }
        Ok(Template { name: name.to_string(), nodes })
    }

    /// Expands with `dot` as `.` and `$`.
    pub fn expand_dot(&self, dot: &Value) -> Result<String, String> {
        let mut vars: Vec<(String, Value)> = vec![("$".into(), dot.clone())];
        let mut out = String::new();
        run(&self.nodes, dot, &mut vars, &mut out, 0)
            .map_err(|(line, e)| format!("error executing template {n}: template: {n}:{line}: {e}", n = self.name))?;
        Ok(out)
    }

    /// Whether the text has no action at all (plain labels need no expansion).
    pub fn is_plain(&self) -> bool {
        self.nodes.iter().all(|n| matches!(n, Node::Text(_)))
    }

    pub fn expand(&self, data: &Data) -> Result<String, String> {
        let mut dot = BTreeMap::new();
        dot.insert("Labels".to_string(), Value::Map(data.labels.clone()));
        dot.insert("ExternalLabels".to_string(), Value::Map(data.external_labels.clone()));
        dot.insert("ExternalURL".to_string(), Value::Str(data.external_url.to_string()));
        dot.insert("Value".to_string(), Value::Float(data.value));
        let dot = Value::Dict(dot);
        let mut vars: Vec<(String, Value)> = vec![
            ("$".into(), dot.clone()),
            ("$labels".into(), Value::Map(data.labels.clone())),
            ("$externalLabels".into(), Value::Map(data.external_labels.clone())),
            ("$externalURL".into(), Value::Str(data.external_url.to_string())),
            ("$value".into(), Value::Float(data.value)),
        ];
        let mut out = String::new();
        run(&self.nodes, &dot, &mut vars, &mut out, 0)
            .map_err(|(line, e)| format!("error executing template {n}: template: {n}:{line}: {e}", n = self.name))?;
        Ok(out)
    }
}

// ---- lexing: text and actions ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    /// The inside of one action, trimmed, with its line.
    Action(String, usize),
}

fn lex(text: &str) -> Result<Vec<Tok>, (usize, String)> {
    let mut toks = Vec::new();
    let mut rest = text;
    let mut line = 1;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let t = if trim_next { rest.trim_start() } else { rest };
            toks.push(Tok::Text(t.to_string()));
            break;
        };
        let mut t = &rest[..open];
        if trim_next {
            t = t.trim_start();
        }
        let after = &rest[open + 2..];
        let trim_left = after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_left {
            t = t.trim_end();
        }
        if !t.is_empty() {
            toks.push(Tok::Text(t.to_string()));
        }
        line += rest[..open].matches('\n').count();
        let body_start = if trim_left { 1 } else { 0 };
        // The closing `}}` outside string literals.
        let b = after.as_bytes();
        let mut i = body_start;
        let mut close = None;
        while i + 1 < b.len() + 1 {
            match b.get(i) {
                None => break,
                Some(b'"') => {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                Some(b'`') => {
                    i += 1;
                    while i < b.len() && b[i] != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                Some(b'}') if b.get(i + 1) == Some(&b'}') => {
                    close = Some(i);
                    break;
                }
                Some(_) => i += 1,
            }
        }
        let Some(close) = close else { return Err((line, "unclosed action".into())) };
        let mut body = &after[body_start..close];
        trim_next = false;
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        let action_line = line;
        line += body.matches('\n').count();
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            toks.push(Tok::Action(body.to_string(), action_line));
        }
        rest = &after[close + 2..];
    }
    Ok(toks)
}

// ---- parsing ----

struct Parser {
    toks: Vec<Tok>,
    at: usize,
    scope: Vec<String>,
}

type PErr = (usize, String);
/// Nodes parsed up to a closing keyword (`end`, `else ...`) and its line.
type Parsed = (Vec<Node>, Option<(String, usize)>);

impl Parser {
    /// Nodes up to `end`/`else` (returned with its line) or the end of the text.
    fn nodes(&mut self) -> Result<Parsed, PErr> {
        let mut out = Vec::new();
        while self.at < self.toks.len() {
            let tok = self.toks[self.at].clone();
            self.at += 1;
            match tok {
                Tok::Text(t) => out.push(Node::Text(t)),
                Tok::Action(a, line) => {
                    let word = a.split_whitespace().next().unwrap_or("");
                    match word {
                        "end" => return Ok((out, Some(("end".into(), line)))),
                        "else" => return Ok((out, Some((a.clone(), line)))),
                        "if" => out.push(self.if_node(&a[2..], line)?),
                        "with" => {
                            let p = pipe(&a[4..], line, &mut self.scope)?;
                            let mark = self.scope.len();
                            let (body, stop) = self.nodes()?;
                            let els = self.else_tail(stop, line)?;
                            self.scope.truncate(mark);
                            out.push(Node::With(p, body, els));
                        }
                        "range" => {
                            let inner = a[5..].trim();
                            let mark = self.scope.len();
                            // `range $k, $v := pipeline` or `range $v := pipeline`.
                            let (vars, expr) = match inner.split_once(":=") {
                                Some((vs, e)) if vs.trim_start().starts_with('$') => {
                                    let names: Vec<String> = vs.split(',').map(|v| v.trim().to_string()).collect();
                                    for n in &names {
                                        self.scope.push(n.clone());
                                    }
                                    let v = match names.as_slice() {
                                        [v] => Some((v.clone(), None)),
                                        [k, v] => Some((k.clone(), Some(v.clone()))),
                                        _ => return Err((line, "too many declarations in range".into())),
                                    };
                                    (v, e)
                                }
                                _ => (None, inner),
                            };
                            let p = pipe(expr, line, &mut self.scope)?;
                            let (body, stop) = self.nodes()?;
                            let els = self.else_tail(stop, line)?;
                            self.scope.truncate(mark);
                            out.push(Node::Range(p, vars, body, els));
                        }
                        "define" | "template" | "block" => {
                            return Err((line, format!("{{{{{word}}}}} is not supported by modelwatch")))
                        }
                        _ => out.push(Node::Action(pipe(&a, line, &mut self.scope)?)),
                    }
                }
            }
        }
        Ok((out, None))
    }

    fn if_node(&mut self, cond: &str, line: usize) -> Result<Node, PErr> {
        let mut arms = Vec::new();
        let mut cond = cond.to_string();
        let mut cline = line;
        loop {
            let p = pipe(&cond, cline, &mut self.scope)?;
            let mark = self.scope.len();
            let (body, stop) = self.nodes()?;
            self.scope.truncate(mark);
            arms.push((p, body));
            match stop {
                Some((kw, _)) if kw == "end" => return Ok(Node::If(arms, Vec::new())),
                Some((kw, l)) if kw.starts_with("else") => {
                    let rest = kw[4..].trim();
                    if let Some(c) = rest.strip_prefix("if ") {
                        cond = c.to_string();
                        cline = l;
                        continue;
                    }
                    let (els, stop) = self.nodes()?;
                    return match stop {
                        Some((kw, _)) if kw == "end" => Ok(Node::If(arms, els)),
                        _ => Err((line, "unexpected EOF: {{if}} without {{end}}".into())),
                    };
                }
                _ => return Err((line, "unexpected EOF: {{if}} without {{end}}".into())),
            }
        }
    }

    fn else_tail(&mut self, stop: Option<(String, usize)>, line: usize) -> Result<Vec<Node>, PErr> {
        match stop {
            Some((kw, _)) if kw == "end" => Ok(Vec::new()),
            Some((kw, _)) if kw == "else" => {
                let (els, stop) = self.nodes()?;
                match stop {
                    Some((kw, _)) if kw == "end" => Ok(els),
                    _ => Err((line, "unexpected EOF: missing {{end}}".into())),
                }
            }
            _ => Err((line, "unexpected EOF: missing {{end}}".into())),
        }
    }
}

fn pipe(src: &str, line: usize, scope: &mut Vec<String>) -> Result<Pipe, PErr> {
    let toks = words(src).map_err(|e| (line, e))?;
    let mut decl = None;
    let mut body: &[String] = &toks;
    if toks.len() >= 2 && toks[0].starts_with('$') && (toks[1] == ":=" || toks[1] == "=") {
        if toks[1] == "=" && !scope.contains(&toks[0]) {
            return Err((line, format!("undefined variable {:?}", toks[0])));
        }
        decl = Some((toks[0].clone(), toks[1] == "="));
        body = &toks[2..];
    }
    let mut cmds = Vec::new();
    for cmd in body.split(|t| t == "|") {
        if cmd.is_empty() {
            return Err((line, "missing command".into()));
        }
        let mut terms = Vec::new();
        for w in cmd {
            terms.push(term(w, line, scope)?);
        }
        cmds.push(terms);
    }
    if cmds.is_empty() {
        return Err((line, "missing value for command".into()));
    }
    if let Some((d, false)) = &decl {
        scope.push(d.clone());
    }
    Ok(Pipe { decl, cmds, line })
}

fn fields(s: &str) -> Vec<String> {
    s.split('.').filter(|x| !x.is_empty()).map(str::to_string).collect()
}

fn term(w: &str, line: usize, scope: &mut Vec<String>) -> Result<Term, PErr> {
    if w.starts_with('(') {
        // `(pipeline).Field...`
        let close = w.rfind(')').ok_or((line, "unclosed left paren".to_string()))?;
        let inner = pipe(&w[1..close], line, scope)?;
        return Ok(Term::Sub(Box::new(inner), fields(&w[close + 1..])));
    }
    if w == "." {
        return Ok(Term::Dot(Vec::new()));
    }
    if let Some(f) = w.strip_prefix('.') {
        return Ok(Term::Dot(fields(f)));
    }
    if let Some(rest) = w.strip_prefix('$') {
        let (name, f) = match rest.find('.') {
            Some(i) => (&w[..i + 1], fields(&rest[i..])),
            None => (w, Vec::new()),
        };
        if !scope.iter().any(|s| s == name) {
            return Err((line, format!("undefined variable {name:?}")));
        }
        return Ok(Term::Var(name.to_string(), f));
    }
    if w.starts_with('"') {
        return unquote(w).map(|s| Term::Lit(Value::Str(s))).map_err(|e| (line, e));
    }
    if w.starts_with('`') {
        return Ok(Term::Lit(Value::Str(w.trim_matches('`').to_string())));
    }
    match w {
        "true" => return Ok(Term::Lit(Value::Bool(true))),
        "false" => return Ok(Term::Lit(Value::Bool(false))),
        "nil" => return Ok(Term::Lit(Value::Nil)),
        _ => {}
    }
    if w.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        if let Ok(i) = w.parse::<i64>() {
            return Ok(Term::Lit(Value::Int(i)));
        }
        if let Ok(f) = w.parse::<f64>() {
            return Ok(Term::Lit(Value::Float(f)));
        }
        return Err((line, format!("bad number syntax: {w:?}")));
    }
    if QUERY_FUNCS.contains(&w) {
        return Err((line, format!("function {w:?} is not supported by modelwatch")));
    }
    if FUNCS.contains(&w) {
        return Ok(Term::Func(w.to_string()));
    }
    Err((line, format!("function {w:?} not defined")))
}

fn unquote(w: &str) -> Result<String, String> {
    let inner = w.strip_prefix('"').and_then(|x| x.strip_suffix('"')).ok_or("unterminated quoted string")?;
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(o) => return Err(format!("unknown escape sequence \\{o}")),
            None => return Err("unterminated quoted string".into()),
        }
    }
    Ok(out)
}

/// Splits an action into words: literals kept whole, parentheses as one word, `|` alone.
fn words(s: &str) -> Result<Vec<String>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == '|' {
            out.push("|".into());
            i += 1;
            continue;
        }
        if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            if i >= b.len() {
                return Err("unterminated quoted string".into());
            }
            i += 1;
        } else if c == '`' {
            i += 1;
            while i < b.len() && b[i] != '`' {
                i += 1;
            }
            if i >= b.len() {
                return Err("unterminated raw quoted string".into());
            }
            i += 1;
        } else if c == '(' {
            let mut depth = 0;
            let mut in_q = false;
            while i < b.len() {
                match b[i] {
                    '"' => in_q = !in_q,
                    '\\' if in_q => i += 1,
                    '(' if !in_q => depth += 1,
                    ')' if !in_q => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if depth != 0 {
                return Err("unclosed left paren".into());
            }
            i += 1;
            // A field chain after the parenthesis.
            while i < b.len() && !b[i].is_whitespace() && b[i] != '|' {
                i += 1;
            }
        } else {
            while i < b.len() && !b[i].is_whitespace() && b[i] != '|' {
                i += 1;
            }
        }
        out.push(b[start..i].iter().collect());
    }
    Ok(out)
}

// ---- running ----

type RErr = (usize, String);

fn run(
    nodes: &[Node],
    dot: &Value,
    vars: &mut Vec<(String, Value)>,
    out: &mut String,
    depth: usize,
) -> Result<(), RErr> {
    if depth > 100 {
        return Err((0, "exceeded maximum template depth (100)".into()));
    }
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipe(p, dot, vars)?;
                if p.decl.is_none() {
                    out.push_str(&v.print());
                }
            }
            Node::If(arms, els) => {
                let mark = vars.len();
                let mut done = false;
                for (c, body) in arms {
                    if eval_pipe(c, dot, vars)?.truth() {
                        run(body, dot, vars, out, depth + 1)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    run(els, dot, vars, out, depth + 1)?;
                }
                vars.truncate(mark);
            }
            Node::With(p, body, els) => {
                let mark = vars.len();
                let v = eval_pipe(p, dot, vars)?;
                if v.truth() {
                    run(body, &v, vars, out, depth + 1)?;
                } else {
                    run(els, dot, vars, out, depth + 1)?;
                }
                vars.truncate(mark);
            }
            Node::Range(p, names, body, els) => {
                let mark = vars.len();
                let v = eval_pipe(p, dot, vars)?;
                let items: Vec<(Value, Value)> = match v {
                    Value::Map(m) => m.into_iter().map(|(k, v)| (Value::Str(k), Value::Str(v))).collect(),
                    Value::Dict(m) => m.into_iter().map(|(k, v)| (Value::Str(k), v)).collect(),
                    Value::List(l) => l.into_iter().enumerate().map(|(i, v)| (Value::Int(i as i64), v)).collect(),
                    Value::Nil => Vec::new(),
                    other => return Err((p.line, format!("range can't iterate over {}", other.print()))),
                };
                if items.is_empty() {
                    run(els, dot, vars, out, depth + 1)?;
                }
                for (k, v) in items {
                    let inner = vars.len();
                    match names {
                        Some((a, None)) => vars.push((a.clone(), v.clone())),
                        Some((a, Some(b))) => {
                            vars.push((a.clone(), k));
                            vars.push((b.clone(), v.clone()));
                        }
                        None => {}
                    }
                    run(body, &v, vars, out, depth + 1)?;
                    vars.truncate(inner);
                }
                vars.truncate(mark);
            }
        }
    }
    Ok(())
}

fn field(v: Value, names: &[String], line: usize) -> Result<Value, RErr> {
    let mut v = v;
    for n in names {
        v = match v {
            // A missing key of a string map is the empty string, as Go's zero value.
            // Alertmanager's KV methods on a label map.
            Value::Map(m) if n == "SortedPairs" => Value::List(
                m.into_iter()
                    .map(|(k, v)| {
                        Value::Dict(BTreeMap::from([
                            ("Name".to_string(), Value::Str(k)),
                            ("Value".to_string(), Value::Str(v)),
                        ]))
                    })
                    .collect(),
            ),
            Value::Map(m) if n == "Names" => Value::List(m.into_keys().map(Value::Str).collect()),
            Value::Map(m) if n == "Values" => Value::List(m.into_values().map(Value::Str).collect()),
            Value::Map(m) => Value::Str(m.get(n).cloned().unwrap_or_default()),
            // Alertmanager's `.Alerts.Firing`, `.Alerts.Resolved`, and `.Names`/`.Values` of
            // a list of pairs.
            Value::List(l) if n == "Firing" || n == "Resolved" => {
                let want = if n == "Firing" { "firing" } else { "resolved" };
                Value::List(
                    l.into_iter()
                        .filter(|a| matches!(a, Value::Dict(d) if d.get("Status") == Some(&Value::Str(want.into()))))
                        .collect(),
                )
            }
            Value::List(l) if n == "Names" || n == "Values" => {
                let key = if n == "Names" { "Name" } else { "Value" };
                Value::List(
                    l.into_iter()
                        .map(|p| match p {
                            Value::Dict(mut d) => d.remove(key).unwrap_or(Value::Nil),
                            _ => Value::Nil,
                        })
                        .collect(),
                )
            }
            Value::Dict(m) => match m.get(n) {
                Some(x) => x.clone(),
                None => return Err((line, format!("can't evaluate field {n}"))),
            },
            Value::Nil => Value::Nil,
            other => return Err((line, format!("can't evaluate field {n} in type {}", type_name(&other)))),
        };
    }
    Ok(v)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float64",
        Value::Str(_) => "string",
        Value::Map(_) => "map[string]string",
        Value::Dict(_) => "struct",
        Value::List(_) => "slice",
    }
}

fn eval_pipe(p: &Pipe, dot: &Value, vars: &mut Vec<(String, Value)>) -> Result<Value, RErr> {
    let mut prev: Option<Value> = None;
    for cmd in &p.cmds {
        prev = Some(eval_cmd(cmd, prev, dot, vars, p.line)?);
    }
    let v = prev.unwrap_or(Value::Nil);
    if let Some((d, assign)) = &p.decl {
        // `:=` declares (shadowing), `=` assigns the innermost.
        match vars.iter_mut().rev().find(|(k, _)| k == d) {
            Some(slot) if *assign => slot.1 = v.clone(),
            _ => vars.push((d.clone(), v.clone())),
        }
    }
    Ok(v)
}

fn eval_term(t: &Term, dot: &Value, vars: &mut Vec<(String, Value)>, line: usize) -> Result<Value, RErr> {
    match t {
        Term::Dot(f) => field(dot.clone(), f, line),
        Term::Var(n, f) => {
            let v = vars.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or(Value::Nil);
            field(v, f, line)
        }
        Term::Lit(v) => Ok(v.clone()),
        Term::Sub(p, f) => {
            let v = eval_pipe(p, dot, vars)?;
            field(v, f, line)
        }
        Term::Func(name) => call(name, Vec::new(), line),
    }
}

fn eval_cmd(
    cmd: &[Term],
    prev: Option<Value>,
    dot: &Value,
    vars: &mut Vec<(String, Value)>,
    line: usize,
) -> Result<Value, RErr> {
    match &cmd[0] {
        Term::Func(name) => {
            let mut args = Vec::with_capacity(cmd.len());
            for t in &cmd[1..] {
                args.push(eval_term(t, dot, vars, line)?);
            }
            if let Some(p) = prev {
                args.push(p);
            }
            call(name, args, line)
        }
        t => {
            if cmd.len() > 1 || prev.is_some() {
                return Err((line, "can't give argument to non-function".into()));
            }
            eval_term(t, dot, vars, line)
        }
    }
}

fn call(name: &str, args: Vec<Value>, line: usize) -> Result<Value, RErr> {
    let err = |e: String| (line, format!("error calling {name}: {e}"));
    let want = |n: usize| -> Result<(), RErr> {
        if args.len() != n {
            return Err((line, format!("wrong number of args for {name}: want {n} got {}", args.len())));
        }
        Ok(())
    };
    let num = |v: &Value| v.number().map_err(err);
    Ok(match name {
        "and" => args.iter().find(|a| !a.truth()).or(args.last()).cloned().unwrap_or(Value::Nil),
        "or" => args.iter().find(|a| a.truth()).or(args.last()).cloned().unwrap_or(Value::Nil),
        "not" => {
            want(1)?;
            Value::Bool(!args[0].truth())
        }
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            if args.len() < 2 {
                return Err((line, format!("wrong number of args for {name}: want 2 got {}", args.len())));
            }
            let ord = compare(&args[0], &args[1]).map_err(err)?;
            let r = match name {
                "eq" => args[1..].iter().any(|b| compare(&args[0], b).ok() == Some(std::cmp::Ordering::Equal)),
                "ne" => ord != std::cmp::Ordering::Equal,
                "lt" => ord == std::cmp::Ordering::Less,
                "le" => ord != std::cmp::Ordering::Greater,
                "gt" => ord == std::cmp::Ordering::Greater,
                _ => ord != std::cmp::Ordering::Less,
            };
            Value::Bool(r)
        }
        "len" => {
            want(1)?;
            Value::Int(match &args[0] {
                Value::Str(s) => s.len(),
                Value::Map(m) => m.len(),
                Value::Dict(m) => m.len(),
                Value::List(l) => l.len(),
                other => return Err(err(format!("len of type {}", type_name(other)))),
            } as i64)
        }
        "index" => {
            want(2)?;
            match (&args[0], &args[1]) {
                (Value::Map(m), k) => Value::Str(m.get(&k.print()).cloned().unwrap_or_default()),
                (Value::Dict(m), k) => m.get(&k.print()).cloned().unwrap_or(Value::Nil),
                (Value::List(l), Value::Int(i)) => {
                    l.get(*i as usize).cloned().ok_or_else(|| err(format!("index out of range: {i}")))?
                }
                (a, _) => return Err(err(format!("can't index item of type {}", type_name(a)))),
            }
        }
        "print" => Value::Str(go_print(&args, false)),
        "println" => Value::Str(go_print(&args, true)),
        "printf" => {
            if args.is_empty() {
                return Err((line, "wrong number of args for printf: want at least 1 got 0".into()));
            }
            let Value::Str(f) = &args[0] else { return Err(err("format is not a string".into())) };
            Value::Str(sprintf(f, &args[1..]))
        }
        "humanize" => {
            want(1)?;
            Value::Str(humanize(num(&args[0])?))
        }
        "humanize1024" => {
            want(1)?;
            Value::Str(humanize1024(num(&args[0])?))
        }
        "humanizeDuration" => {
            want(1)?;
            Value::Str(humanize_duration(num(&args[0])?))
        }
        "humanizePercentage" => {
            want(1)?;
            Value::Str(format!("{}%", go_g(num(&args[0])? * 100.0, Some(4))))
        }
        "humanizeTimestamp" => {
            want(1)?;
            let v = num(&args[0])?;
            if !v.is_finite() {
                Value::Str(go_g(v, Some(4)))
            } else {
                Value::Str(fmt_utc(v))
            }
        }
        "toTime" => {
            want(1)?;
            Value::Str(fmt_utc(num(&args[0])?))
        }
        "parseDuration" => {
            want(1)?;
            let s = args[0].print();
            let ms = crate::promql::script::parse_duration(&s)
                .ok_or_else(|| err(format!("not a valid duration string: {s:?}")))?;
            Value::Float(ms as f64 / 1000.0)
        }
        "title" => {
            want(1)?;
            let s = args[0].print();
            let mut out = String::with_capacity(s.len());
            let mut start = true;
            for c in s.chars() {
                if start && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric() && c != '\'';
            }
            Value::Str(out)
        }
        "toUpper" => {
            want(1)?;
            Value::Str(args[0].print().to_uppercase())
        }
        "toLower" => {
            want(1)?;
            Value::Str(args[0].print().to_lowercase())
        }
        "match" => {
            want(2)?;
            let re = regex::Regex::new(&args[0].print()).map_err(|e| err(e.to_string()))?;
            Value::Bool(re.is_match(&args[1].print()))
        }
        "reReplaceAll" => {
            want(3)?;
            let re = regex::Regex::new(&args[0].print()).map_err(|e| err(e.to_string()))?;
            let repl = args[1].print();
            Value::Str(re.replace_all(&args[2].print(), repl.as_str()).into_owned())
        }
        "stripPort" => {
            want(1)?;
            let s = args[0].print();
            Value::Str(match s.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                    h.trim_start_matches('[').trim_end_matches(']').to_string()
                }
                _ => s,
            })
        }
        "stripDomain" => {
            want(1)?;
            let s = args[0].print();
            let (host, port) = match s.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h.to_string(), Some(p.to_string())),
                _ => (s.clone(), None),
            };
            let short = if host.parse::<std::net::IpAddr>().is_ok() {
                host
            } else {
                host.split('.').next().unwrap_or("").to_string()
            };
            Value::Str(match port {
                Some(p) => format!("{short}:{p}"),
                None => short,
            })
        }
        "safeHtml" => {
            want(1)?;
            Value::Str(args[0].print())
        }
        "html" => Value::Str(
            go_print(&args, false)
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&#34;")
                .replace('\'', "&#39;"),
        ),
        "js" => Value::Str(
            go_print(&args, false)
                .replace('\\', "\\\\")
                .replace('\'', "\\'")
                .replace('"', "\\\"")
                .replace('<', "\\u003C")
                .replace('>', "\\u003E"),
        ),
        "urlquery" => {
            let s = go_print(&args, false);
            let mut out = String::new();
            for b in s.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
                    b' ' => out.push('+'),
                    _ => {
                        let _ = write!(out, "%{b:02X}");
                    }
                }
            }
            Value::Str(out)
        }
        "externalURL" => Value::Nil,
        "join" => {
            want(2)?;
            let sep = args[0].print();
            match &args[1] {
                Value::List(l) => Value::Str(l.iter().map(|v| v.print()).collect::<Vec<_>>().join(&sep)),
                other => return Err((line, format!("join: expected a list, got {}", type_name(other)))),
            }
        }
        "trimSpace" => {
            want(1)?;
            Value::Str(args[0].print().trim().to_string())
        }
        other => return Err((line, format!("function {other:?} not defined"))),
    })
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            let (x, y) = (a.number()?, b.number()?);
            x.partial_cmp(&y).ok_or_else(|| "NaN is not comparable".into())
        }
        _ => Err(format!("incompatible types for comparison: {} and {}", type_name(a), type_name(b))),
    }
}

fn go_print(args: &[Value], ln: bool) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        // Print adds a space between operands when neither is a string; Println always.
        if i > 0 && (ln || !(matches!(a, Value::Str(_)) || matches!(args[i - 1], Value::Str(_)))) {
            out.push(' ');
        }
        out.push_str(&a.print());
    }
    if ln {
        out.push('\n');
    }
    out
}

// ---- Go's number formatting ----

/// Go's `%g` (`prec` significant digits; `None` is the shortest exact form, as `%v`).
pub fn go_g(v: f64, prec: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let neg = v.is_sign_negative() && v != 0.0;
    let a = v.abs();
    let sci = match prec {
        None => format!("{a:e}"),
        Some(p) => format!("{a:.*e}", p.max(1) - 1),
    };
    let (mant, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    let mut digits: String = mant.chars().filter(|c| *c != '.').collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    if a == 0.0 {
        digits = "0".into();
    }
    let nd = digits.len() as i32;
    let dp = exp + 1;
    let eprec = match prec {
        None => 6,
        Some(p) => {
            let p = p.max(1) as i32;
            if p > nd && nd >= dp {
                nd
            } else {
                p
            }
        }
    };
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if exp < -4 || exp >= eprec {
        out.push_str(&digits[..1]);
        if nd > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if dp <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-dp) as usize));
        out.push_str(&digits);
    } else if dp >= nd {
        out.push_str(&digits);
        out.push_str(&"0".repeat((dp - nd) as usize));
    } else {
        out.push_str(&digits[..dp as usize]);
        out.push('.');
        out.push_str(&digits[dp as usize..]);
    }
    out
}

/// Go's `%e` with `prec` decimals (exponent with a sign and at least two digits).
fn go_e(v: f64, prec: usize) -> String {
    if !v.is_finite() {
        return go_g(v, None);
    }
    let s = format!("{v:.prec$e}");
    let (m, e) = s.split_once('e').expect("exponent form");
    let e: i32 = e.parse().expect("exponent");
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// A subset of Go's `fmt.Sprintf`: verbs `v s q d f F e g x X t %`, flags `-+ 0`, width and
/// precision. A verb that does not fit its operand prints as Go does (`%!d(float64=1.5)`).
pub fn sprintf(f: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = f.chars().peekable();
    let mut ai = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&fl) = it.peek() {
            match fl {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            it.next();
        }
        let mut width = String::new();
        while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            it.next();
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                it.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(ai) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        ai += 1;
        let bad = || format!("%!{verb}({}={})", type_name(arg), arg.print());
        let mut s = match (verb, arg) {
            ('v', Value::Float(x)) => match prec {
                Some(p) => go_g(*x, Some(p)),
                None => go_g(*x, None),
            },
            ('v' | 's', Value::Str(x)) => match prec {
                Some(p) => x.chars().take(p).collect(),
                None => x.clone(),
            },
            ('v', a) => a.print(),
            ('s', a @ (Value::Map(_) | Value::Dict(_) | Value::List(_) | Value::Bool(_))) => a.print(),
            ('q', Value::Str(x)) => format!("{x:?}"),
            ('d', Value::Int(i)) => i.to_string(),
            ('x', Value::Int(i)) => format!("{i:x}"),
            ('X', Value::Int(i)) => format!("{i:X}"),
            ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('f' | 'F', Value::Float(_) | Value::Int(_)) => {
                let x = arg.number().unwrap_or(f64::NAN);
                if x.is_finite() {
                    format!("{x:.*}", prec.unwrap_or(6))
                } else {
                    go_g(x, None)
                }
            }
            ('e', Value::Float(_) | Value::Int(_)) => go_e(arg.number().unwrap_or(f64::NAN), prec.unwrap_or(6)),
            ('g', Value::Float(_) | Value::Int(_)) => go_g(arg.number().unwrap_or(f64::NAN), prec),
            ('t', Value::Bool(b)) => b.to_string(),
            _ => bad(),
        };
        let numeric = matches!(arg, Value::Int(_) | Value::Float(_));
        if numeric && !s.starts_with('-') && !s.starts_with('+') {
            if plus {
                s.insert(0, '+');
            } else if space {
                s.insert(0, ' ');
            }
        }
        let w: usize = width.parse().unwrap_or(0);
        let len = s.chars().count();
        if len < w {
            let pad = w - len;
            if minus {
                s.push_str(&" ".repeat(pad));
            } else if zero && numeric {
                let sign = if s.starts_with('-') || s.starts_with('+') { 1 } else { 0 };
                s.insert_str(sign, &"0".repeat(pad));
            } else {
                s.insert_str(0, &" ".repeat(pad));
            }
        }
        out.push_str(&s);
    }
    if ai < args.len() {
        let extra: Vec<String> = args[ai..].iter().map(|a| format!("{}={}", type_name(a), a.print())).collect();
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

/// Prometheus' `humanize`: SI prefixes, 4 significant digits.
pub fn humanize(mut v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g(v, Some(4));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_g(v, Some(4)))
}

/// Prometheus' `humanize1024`: binary prefixes.
pub fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return go_g(v, Some(4));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_g(v, Some(4)))
}

/// Prometheus' `humanizeDuration`: seconds as `1d 2h 3m 4s`, or with a sub-second prefix.
pub fn humanize_duration(mut v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, Some(4));
    }
    if v == 0.0 {
        return format!("{}s", go_g(v, Some(4)));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let a = v.abs();
        let whole = a as i64;
        let (s, m, h, d) = (whole % 60, whole / 60 % 60, whole / 3600 % 24, whole / 86_400);
        if d != 0 {
            return format!("{sign}{d}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", go_g(a, Some(4)));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_g(v, Some(4)))
}

/// Unix seconds as Go prints a UTC time (`2023-11-14 22:13:20 +0000 UTC`, fractions trimmed).
pub fn fmt_utc(secs: f64) -> String {
    let whole = secs.floor() as i64;
    let nanos = ((secs - whole as f64) * 1e9).round() as i64;
    let days = whole.div_euclid(86_400);
    let sod = whole.rem_euclid(86_400);
    let (y, mo, d) = civil(days);
    let mut s = format!("{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60);
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(t: &str, labels: &[(&str, &str)], value: f64) -> Result<String, String> {
        let l: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let e = BTreeMap::new();
        Template::parse("t", t)?.expand(&Data { labels: &l, external_labels: &e, external_url: "http://x", value })
    }

    #[test]
    fn variables_fields_and_pipelines() {
        assert_eq!(
            expand("Instance {{ $labels.instance }} down", &[("instance", "a:1")], 0.0).unwrap(),
            "Instance a:1 down"
        );
        assert_eq!(expand("{{ .Labels.job }}/{{ $labels.nope }}!", &[("job", "j")], 0.0).unwrap(), "j/!");
        assert_eq!(expand("{{ $value }}", &[], 0.95).unwrap(), "0.95");
        assert_eq!(expand("{{ $value }}", &[], 1234567.0).unwrap(), "1.234567e+06");
        assert_eq!(expand("{{ $value | humanize }}", &[], 1234567.0).unwrap(), "1.235M");
        assert_eq!(expand("{{ humanize $value }}", &[], 0.0012).unwrap(), "1.2m");
        assert_eq!(expand("{{ $value | humanizePercentage }}", &[], 0.0523).unwrap(), "5.23%");
        assert_eq!(expand("{{ $value | humanizeDuration }}", &[], 93784.0).unwrap(), "1d 2h 3m 4s");
        assert_eq!(expand("{{ $value | humanizeDuration }}", &[], 0.25).unwrap(), "250ms");
        assert_eq!(expand("{{ $value | humanize1024 }}", &[], 2048.0).unwrap(), "2ki");
        assert_eq!(expand("{{ printf \"%.2f\" $value }} s", &[], 0.8123).unwrap(), "0.81 s");
        assert_eq!(expand("{{ printf \"%d%%\" 5 }}", &[], 0.0).unwrap(), "5%");
        assert_eq!(expand("{{ humanizeTimestamp 1700000000 }}", &[], 0.0).unwrap(), "2023-11-14 22:13:20 +0000 UTC");
        assert_eq!(expand("  {{- $value -}}  x", &[], 2.0).unwrap(), "2x");
        assert_eq!(expand("{{/* note */}}ok", &[], 2.0).unwrap(), "ok");
        assert_eq!(expand("{{ $x := 3 }}{{ $x }}", &[], 2.0).unwrap(), "3");
        assert_eq!(expand("{{ $labels.model | toUpper }}", &[("model", "llm")], 0.0).unwrap(), "LLM");
    }

    #[test]
    fn control_flow() {
        let t = "{{ if gt $value 0.9 }}high{{ else if gt $value 0.5 }}mid{{ else }}low{{ end }}";
        assert_eq!(expand(t, &[], 0.95).unwrap(), "high");
        assert_eq!(expand(t, &[], 0.6).unwrap(), "mid");
        assert_eq!(expand(t, &[], 0.1).unwrap(), "low");
        assert_eq!(
            expand("{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}", &[("a", "1"), ("b", "2")], 0.0).unwrap(),
            "a=1;b=2;"
        );
        assert_eq!(expand("{{ with $labels.a }}[{{ . }}]{{ end }}", &[("a", "1")], 0.0).unwrap(), "[1]");
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = Template::parse("__alert_InstanceDown", "Instance {{ $label.foo }} down").unwrap_err();
        assert_eq!(e, "template: __alert_InstanceDown:1: undefined variable \"$label\"");
        assert!(Template::parse("t", "{{ nosuch 1 }}").unwrap_err().contains("function \"nosuch\" not defined"));
        assert!(Template::parse("t", "{{ query \"up\" }}").unwrap_err().contains("not supported"));
        assert!(Template::parse("t", "{{ if 1 }}x").unwrap_err().contains("without {{end}}"));
        assert!(Template::parse("t", "{{ $value").unwrap_err().contains("unclosed action"));
    }

    #[test]
    fn go_number_forms() {
        assert_eq!(go_g(100000.0, None), "100000");
        assert_eq!(go_g(1e6, None), "1e+06");
        assert_eq!(go_g(0.0001, None), "0.0001");
        assert_eq!(go_g(0.00001, None), "1e-05");
        assert_eq!(go_g(1500.0, Some(4)), "1500");
        assert_eq!(go_g(12345.0, Some(4)), "1.234e+04");
        assert_eq!(go_g(1.5, Some(4)), "1.5");
        assert_eq!(go_g(-2.0, None), "-2");
        assert_eq!(
            sprintf(
                "%5.1f|%-4d|%s|%v",
                &[Value::Float(2.6789), Value::Int(7), Value::Str("x".into()), Value::Float(2.5)]
            ),
            "  2.7|7   |x|2.5"
        );
        assert_eq!(sprintf("%d", &[Value::Float(1.5)]), "%!d(float64=1.5)");
    }
}
