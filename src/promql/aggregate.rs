//! Aggregation operators (`sum by (model) (...)` and the rest), per step and group.
use super::eval::{Collector, Evaluator, Series, Value};
use super::functions::{kahan_inc, quantile};
use super::{exec, fmt_value, set_label, Labels, PromqlError, NAME};
use promql_parser::parser::{AggregateExpr, LabelModifier};

fn group_labels(ls: &Labels, m: Option<&LabelModifier>) -> Labels {
    match m {
        None => Vec::new(),
        Some(LabelModifier::Include(keep)) => {
            ls.iter().filter(|(k, _)| keep.labels.iter().any(|l| l == k)).cloned().collect()
        }
        Some(LabelModifier::Exclude(drop)) => {
            ls.iter().filter(|(k, _)| k != NAME && !drop.labels.iter().any(|l| l == k)).cloned().collect()
        }
    }
}

pub fn eval(ev: &mut Evaluator, a: &AggregateExpr) -> Result<Value, PromqlError> {
    let op = a.op.to_string().to_lowercase();
    let n = ev.n();
    let param = match &a.param {
        Some(p) if op == "count_values" => match ev.eval(p)? {
            Value::String(s) => Param::Str(s),
            _ => return Err(exec("count_values needs a string parameter")),
        },
        Some(p) => Param::Num(ev.eval_scalar(p)?),
        None => Param::None,
    };
    let vs = ev.eval_vector(&a.expr)?;
    // Group of each input series (once, not per step).
    let mut keys: Vec<Labels> = Vec::new();
    let mut group_of = Vec::with_capacity(vs.len());
    let mut index = std::collections::HashMap::new();
    for s in &vs {
        let k = group_labels(&s.labels, a.modifier.as_ref());
        let g = *index.entry(k.clone()).or_insert_with(|| {
            keys.push(k);
            keys.len() - 1
        });
        group_of.push(g);
    }
    let mut c = Collector::new(n);
    match op.as_str() {
        "topk" | "bottomk" | "limitk" | "limit_ratio" => {
            let Param::Num(k) = &param else { return Err(exec(format!("{op} needs a number parameter"))) };
            for &kv in k.iter() {
                if kv.is_nan() {
                    return Err(exec(if op == "limit_ratio" {
                        "Ratio value is NaN".to_string()
                    } else {
                        format!("Parameter value is NaN for {op}")
                    }));
                }
                if op == "limit_ratio" && !(-1.0..=1.0).contains(&kv) {
                    return Err(exec(format!("Ratio value {kv} is not in [-1, 1]")));
                }
            }
            let mut out: Vec<Series> =
                vs.iter().map(|s| Series { labels: s.labels.clone(), vals: vec![None; n] }).collect();
            let mut order: Vec<Vec<usize>> = Vec::new();
            for (i, &kv) in k.iter().enumerate().take(n) {
                let mut per_group: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
                for (s, series) in vs.iter().enumerate() {
                    if series.vals[i].is_some() {
                        per_group[group_of[s]].push(s);
                    }
                }
                let mut step_order = Vec::new();
                for members in per_group.iter_mut() {
                    let chosen: Vec<usize> = match op.as_str() {
                        "limit_ratio" => members.iter().copied().filter(|&s| ratio_keep(&vs[s].labels, kv)).collect(),
                        _ => {
                            let take = if kv < 1.0 { 0 } else { kv.min(members.len() as f64) as usize };
                            if op != "limitk" {
                                let top = op == "topk";
                                members.sort_by(|&x, &y| {
                                    let (a, b) = (vs[x].vals[i].unwrap(), vs[y].vals[i].unwrap());
                                    // NaN is never preferred.
                                    let o = match (a.is_nan(), b.is_nan()) {
                                        (true, true) => std::cmp::Ordering::Equal,
                                        (true, false) => std::cmp::Ordering::Greater,
                                        (false, true) => std::cmp::Ordering::Less,
                                        _ if top => b.total_cmp(&a),
                                        _ => a.total_cmp(&b),
                                    };
                                    o.then(x.cmp(&y))
                                });
                            }
                            members[..take].to_vec()
                        }
                    };
                    for s in chosen {
                        out[s].vals[i] = vs[s].vals[i];
                        step_order.push(s);
                    }
                }
                order.push(step_order);
            }
            // An instant answer keeps the operator's order (`expect ordered`).
            let mut out: Vec<Series> = if n == 1 {
                order[0].iter().map(|&s| out[s].clone()).collect()
            } else {
                out.into_iter().filter(|s| s.vals.iter().any(Option::is_some)).collect()
            };
            out.retain(|s| s.vals.iter().any(Option::is_some));
            return Ok(Value::Vector(out));
        }
        "count_values" => {
            let Param::Str(lname) = &param else { return Err(exec("count_values needs a string parameter")) };
            if !super::functions::valid_label_name(lname) {
                return Err(exec(format!("invalid label name {lname:?}")));
            }
            for i in 0..n {
                let mut counts: std::collections::BTreeMap<(usize, String), f64> = Default::default();
                for (s, series) in vs.iter().enumerate() {
                    if let Some(v) = series.vals[i] {
                        *counts.entry((group_of[s], fmt_value(v))).or_default() += 1.0;
                    }
                }
                let before = c.out.len();
                for ((g, v), cnt) in counts {
                    let mut ls = keys[g].clone();
                    set_label(&mut ls, lname, &v);
                    c.put(ls, i, cnt)?;
                }
                // A series per value seen: more than went in when values change from step to
                // step, each with a value slot per step.
                ev.budget.values((c.out.len() - before) * n)?;
            }
            return Ok(Value::Vector(c.finish()));
        }
        _ => {}
    }
    let q = match &param {
        Param::Num(v) => v.clone(),
        _ => vec![0.0; n],
    };
    let kind = match op.as_str() {
        "sum" => Kind::Sum,
        "avg" => Kind::Avg,
        "min" => Kind::Min,
        "max" => Kind::Max,
        "stddev" | "stdvar" => Kind::Var,
        "quantile" => Kind::Quantile,
        _ => Kind::Count,
    };
    let value = |acc: &mut Acc, i: usize| -> Result<f64, PromqlError> {
        Ok(match op.as_str() {
            "sum" => acc.sum_value(),
            "avg" => acc.mean_value(),
            "count" => acc.count as f64,
            "group" => 1.0,
            "min" | "max" => acc.ext,
            "stddev" => (acc.aux / acc.count as f64).sqrt(),
            "stdvar" => acc.aux / acc.count as f64,
            "quantile" => quantile(q[i], &mut acc.values),
            other => return Err(exec(format!("aggregation {other} is not supported"))),
        })
    };
    if n > 1 && n * keys.len() <= 1 << 20 {
        // Series by series into one accumulator per (group, step): each series is read in
        // order once (a step at a time would stride across every series), and each
        // accumulator still sees its values in series order, so the results are the same.
        let mut accs: Vec<Acc> = std::iter::repeat_with(Acc::default).take(n * keys.len()).collect();
        for (s, series) in vs.iter().enumerate() {
            let row = &mut accs[group_of[s] * n..(group_of[s] + 1) * n];
            for (acc, v) in row.iter_mut().zip(&series.vals) {
                if let Some(v) = v {
                    acc.add(kind, *v);
                }
            }
        }
        for (g, row) in accs.chunks_mut(n).enumerate() {
            let mut slot = None;
            for (i, acc) in row.iter_mut().enumerate() {
                if acc.count == 0 {
                    continue;
                }
                let v = value(acc, i)?;
                let k = *slot.get_or_insert_with(|| c.slot(keys[g].clone()));
                c.out[k].vals[i] = Some(v);
            }
        }
        return Ok(Value::Vector(c.finish()));
    }
    let mut accs: Vec<Acc> = Vec::new();
    // Each group's output series, found once (groups are distinct: no step can collide).
    let mut slots: Vec<Option<usize>> = vec![None; keys.len()];
    for i in 0..n {
        accs.clear();
        accs.resize_with(keys.len(), Acc::default);
        for (s, series) in vs.iter().enumerate() {
            if let Some(v) = series.vals[i] {
                accs[group_of[s]].add(kind, v);
            }
        }
        for (g, acc) in accs.iter_mut().enumerate() {
            if acc.count == 0 {
                continue;
            }
            let v = value(acc, i)?;
            let k = *slots[g].get_or_insert_with(|| c.slot(keys[g].clone()));
            c.out[k].vals[i] = Some(v);
        }
    }
    Ok(Value::Vector(c.finish()))
}

enum Param {
    None,
    Num(Vec<f64>),
    Str(String),
}

/// `limit_ratio(r, v)`: keeps a series when its label hash falls in the first (r > 0) or last
/// (r < 0) fraction of the hash space, so the same series are kept at every step.
fn ratio_keep(ls: &Labels, r: f64) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in ls {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    let f = h as f64 / u64::MAX as f64;
    if r >= 0.0 {
        f < r
    } else {
        f >= 1.0 + r
    }
}

#[derive(Default)]
struct Acc {
    count: u64,
    sum: f64,
    c: f64,
    /// Incremental mean once the plain sum overflows.
    mean: f64,
    incremental: bool,
    ext: f64,
    aux: f64,
    welford_mean: f64,
    values: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sum,
    Avg,
    Min,
    Max,
    Var,
    Quantile,
    Count,
}

impl Acc {
    fn add(&mut self, op: Kind, v: f64) {
        self.count += 1;
        let first = self.count == 1;
        match op {
            Kind::Sum | Kind::Avg => {
                if first {
                    self.sum = v;
                    return;
                }
                if op == Kind::Avg && self.incremental {
                    let count = self.count as f64;
                    let q = (count - 1.0) / count;
                    (self.mean, self.c) = kahan_inc(v / count, q * self.mean, q * self.c);
                    return;
                }
                let (s, c) = kahan_inc(v, self.sum, self.c);
                if op == Kind::Avg && s.is_infinite() && !v.is_infinite() && !self.sum.is_infinite() {
                    let count = self.count as f64;
                    self.incremental = true;
                    self.mean = self.sum / (count - 1.0);
                    self.c /= count - 1.0;
                    let q = (count - 1.0) / count;
                    (self.mean, self.c) = kahan_inc(v / count, q * self.mean, q * self.c);
                    return;
                }
                self.sum = s;
                self.c = c;
            }
            Kind::Min => {
                if first || v < self.ext || self.ext.is_nan() {
                    self.ext = v;
                }
            }
            Kind::Max => {
                if first || v > self.ext || self.ext.is_nan() {
                    self.ext = v;
                }
            }
            Kind::Var => {
                if first {
                    self.welford_mean = v;
                    // A first value that is not finite makes the deviation undefined.
                    self.aux = if v.is_finite() { 0.0 } else { f64::NAN };
                    return;
                }
                let delta = v - self.welford_mean;
                self.welford_mean += delta / self.count as f64;
                self.aux += delta * (v - self.welford_mean);
            }
            Kind::Quantile => self.values.push(v),
            Kind::Count => {}
        }
    }

    fn sum_value(&self) -> f64 {
        if self.sum.is_infinite() {
            self.sum
        } else {
            self.sum + self.c
        }
    }

    fn mean_value(&self) -> f64 {
        if self.incremental {
            self.mean + self.c
        } else {
            let n = self.count as f64;
            self.sum / n + self.c / n
        }
    }
}
