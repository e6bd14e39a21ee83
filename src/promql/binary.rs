//! Binary operators: arithmetic, comparisons (filtering or `bool`), and the set operators, with
//! vector matching (`on`, `ignoring`, `group_left`, `group_right`).
use super::eval::{Collector, Evaluator, Series, Value};
use super::{exec, fmt_labels, label, set_label, without_name, Labels, PromqlError, NAME};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use std::collections::{HashMap, HashSet};

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn parse(s: &str) -> Result<Op, PromqlError> {
        Ok(match s {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            other => return Err(exec(format!("operator {other} is not supported"))),
        })
    }

    fn comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    /// (value, keep): arithmetic always keeps; a comparison keeps when it holds.
    fn apply(self, l: f64, r: f64) -> (f64, bool) {
        match self {
            Op::Add => (l + r, true),
            Op::Sub => (l - r, true),
            Op::Mul => (l * r, true),
            Op::Div => (l / r, true),
            Op::Mod => (l % r, true),
            Op::Pow => (l.powf(r), true),
            Op::Atan2 => (l.atan2(r), true),
            Op::Eq => (l, l == r),
            Op::Ne => (l, l != r),
            Op::Gt => (l, l > r),
            Op::Lt => (l, l < r),
            Op::Ge => (l, l >= r),
            Op::Le => (l, l <= r),
            Op::And | Op::Or | Op::Unless => (l, true),
        }
    }
}

pub fn eval(ev: &mut Evaluator, b: &BinaryExpr) -> Result<Value, PromqlError> {
    let op = Op::parse(&b.op.to_string().to_lowercase())?;
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs)?;
    let rhs = ev.eval(&b.rhs)?;
    let n = ev.n();
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&x, &y)| {
                    let (v, keep) = op.apply(x, y);
                    if op.comparison() {
                        if keep {
                            1.0
                        } else {
                            0.0
                        }
                    } else {
                        v
                    }
                })
                .collect(),
        )),
        (Value::Vector(l), Value::Scalar(r)) => vector_scalar(l, &r, op, false, return_bool, n),
        (Value::Scalar(l), Value::Vector(r)) => vector_scalar(r, &l, op, true, return_bool, n),
        (Value::Vector(l), Value::Vector(r)) => {
            let card = b.modifier.as_ref().map(|m| m.card.clone()).unwrap_or(VectorMatchCardinality::OneToOne);
            let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
            match op {
                Op::And | Op::Or | Op::Unless => set_op(l, r, op, matching.as_ref(), n),
                _ => vector_vector(l, r, op, card, matching.as_ref(), return_bool, n),
            }
        }
        _ => Err(exec("binary operators apply to scalars and instant vectors only")),
    }
}

fn vector_scalar(
    vs: Vec<Series>,
    s: &[f64],
    op: Op,
    swap: bool,
    return_bool: bool,
    n: usize,
) -> Result<Value, PromqlError> {
    let drop_name = !op.comparison() || return_bool;
    let mut c = Collector::new(n);
    for series in vs {
        let labels = if drop_name { without_name(series.labels) } else { series.labels };
        for (i, v) in series.vals.iter().enumerate() {
            let Some(v) = *v else { continue };
            let (l, r) = if swap { (s[i], v) } else { (v, s[i]) };
            let (mut out, keep) = op.apply(l, r);
            // A comparison keeps the vector's value, whichever side it is on.
            if op.comparison() {
                out = v;
            }
            if return_bool {
                c.put(labels.clone(), i, if keep { 1.0 } else { 0.0 })?;
            } else if keep {
                c.put(labels.clone(), i, out)?;
            }
        }
    }
    Ok(Value::Vector(c.finish()))
}

/// The matching signature of a label set.
fn signature(ls: &Labels, m: Option<&LabelModifier>) -> Labels {
    match m {
        Some(LabelModifier::Include(on)) => {
            ls.iter().filter(|(k, _)| on.labels.iter().any(|l| l == k)).cloned().collect()
        }
        Some(LabelModifier::Exclude(ign)) => {
            ls.iter().filter(|(k, _)| k != NAME && !ign.labels.iter().any(|l| l == k)).cloned().collect()
        }
        None => ls.iter().filter(|(k, _)| k != NAME).cloned().collect(),
    }
}

fn set_op(l: Vec<Series>, r: Vec<Series>, op: Op, m: Option<&LabelModifier>, n: usize) -> Result<Value, PromqlError> {
    let lsig: Vec<Labels> = l.iter().map(|s| signature(&s.labels, m)).collect();
    let rsig: Vec<Labels> = r.iter().map(|s| signature(&s.labels, m)).collect();
    let mut out: Vec<Series> = l.iter().map(|s| Series { labels: s.labels.clone(), vals: vec![None; n] }).collect();
    let mut right: Vec<Series> = Vec::new();
    if op == Op::Or {
        right = r.iter().map(|s| Series { labels: s.labels.clone(), vals: vec![None; n] }).collect();
    }
    for i in 0..n {
        let rset: HashSet<&Labels> = r.iter().zip(&rsig).filter(|(s, _)| s.vals[i].is_some()).map(|(_, g)| g).collect();
        let lset: HashSet<&Labels> = l.iter().zip(&lsig).filter(|(s, _)| s.vals[i].is_some()).map(|(_, g)| g).collect();
        for (k, s) in l.iter().enumerate() {
            let Some(v) = s.vals[i] else { continue };
            let keep = match op {
                Op::And => rset.contains(&lsig[k]),
                Op::Unless => !rset.contains(&lsig[k]),
                _ => true,
            };
            if keep {
                out[k].vals[i] = Some(v);
            }
        }
        if op == Op::Or {
            for (k, s) in r.iter().enumerate() {
                if let Some(v) = s.vals[i] {
                    if !lset.contains(&rsig[k]) {
                        right[k].vals[i] = Some(v);
                    }
                }
            }
        }
    }
    // The same label set on both sides of `or` (at different steps) is one series.
    let mut c = Collector::new(n);
    for s in out.into_iter().chain(right) {
        if s.vals.iter().all(Option::is_none) {
            continue;
        }
        let k = c.slot(s.labels);
        for (i, v) in s.vals.into_iter().enumerate() {
            if v.is_some() {
                c.out[k].vals[i] = v;
            }
        }
    }
    Ok(Value::Vector(c.finish()))
}

fn vector_vector(
    l: Vec<Series>,
    r: Vec<Series>,
    op: Op,
    card: VectorMatchCardinality,
    m: Option<&LabelModifier>,
    return_bool: bool,
    n: usize,
) -> Result<Value, PromqlError> {
    // The "many" side is iterated, the "one" side looked up.
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if one_to_many { (&r, &l) } else { (&l, &r) };
    let include: Vec<String> = card.labels().map(|ls| ls.labels.clone()).unwrap_or_default();
    let msig: Vec<Labels> = many.iter().map(|s| signature(&s.labels, m)).collect();
    let osig: Vec<Labels> = one.iter().map(|s| signature(&s.labels, m)).collect();
    let drop_name = !op.comparison() || return_bool;
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    // Result labels per (many, one) pair, computed once.
    let mut result_labels: HashMap<(usize, usize), Labels> = HashMap::new();
    let mut c = Collector::new(n);
    for i in 0..n {
        let mut one_at: HashMap<&Labels, usize> = HashMap::new();
        for (k, s) in one.iter().enumerate() {
            if s.vals[i].is_none() {
                continue;
            }
            if let Some(prev) = one_at.insert(&osig[k], k) {
                let side = if one_to_many { "left" } else { "right" };
                let mut pair = [fmt_labels(&one[k].labels), fmt_labels(&one[prev].labels)];
                pair.sort();
                return Err(exec(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    fmt_labels(&osig[k]),
                    pair[0],
                    pair[1]
                )));
            }
        }
        let mut matched: HashMap<&Labels, HashSet<Labels>> = HashMap::new();
        for (k, s) in many.iter().enumerate() {
            let Some(mv) = s.vals[i] else { continue };
            let Some(&o) = one_at.get(&msig[k]) else { continue };
            let ov = one[o].vals[i].expect("present at this step");
            let (lv, rv) = if one_to_many { (ov, mv) } else { (mv, ov) };
            let (v, keep) = op.apply(lv, rv);
            let labels = result_labels
                .entry((k, o))
                .or_insert_with(|| {
                    let mut ls = s.labels.clone();
                    if drop_name {
                        ls.retain(|(k, _)| k != NAME);
                    }
                    if one_to_one {
                        match m {
                            Some(LabelModifier::Include(on)) => ls.retain(|(k, _)| on.labels.iter().any(|l| l == k)),
                            Some(LabelModifier::Exclude(ign)) => ls.retain(|(k, _)| !ign.labels.iter().any(|l| l == k)),
                            None => {}
                        }
                    }
                    for name in &include {
                        let v = label(&one[o].labels, name).unwrap_or("").to_string();
                        set_label(&mut ls, name, &v);
                    }
                    ls
                })
                .clone();
            let seen = matched.entry(&msig[k]).or_default();
            if one_to_one {
                if !seen.is_empty() {
                    return Err(exec(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    ));
                }
                seen.insert(Vec::new());
            } else if !seen.insert(labels.clone()) {
                return Err(exec("multiple matches for labels: grouping labels must ensure unique matches"));
            }
            if return_bool {
                c.put(labels, i, if keep { 1.0 } else { 0.0 })?;
            } else if keep {
                c.put(labels, i, v)?;
            }
        }
    }
    Ok(Value::Vector(c.finish()))
}
