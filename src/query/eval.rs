//! `Query/Eval` and `Query/EvalRange`: PromQL through [`crate::promql`], answered in the
//! proto's shapes (JSON-friendly for grpcurl). The HTTP API shares the time parsing.
use super::{parse_duration, parse_range, plan, timestamp, Budget, QueryError};
use crate::pb;
use crate::promql::{self, Answer, Labels, Opts, PromqlError, StoreSource};
use crate::store::Store;

/// A time as RFC 3339 (any offset) or Unix seconds; empty is `now`.
pub fn parse_time(field: &'static str, s: &str, now: i64) -> Result<i64, QueryError> {
    if s.trim().is_empty() {
        return Ok(now);
    }
    plan::parse_time(field, s)
}

fn labels_map(ls: Labels) -> std::collections::HashMap<String, String> {
    ls.into_iter().collect()
}

fn to_proto(a: Answer) -> pb::EvalResponse {
    let result_type = a.result_type().to_string();
    match a {
        Answer::Scalar { t, v } => pb::EvalResponse {
            result_type,
            scalar: Some(pb::Point { time: timestamp(t), value: v }),
            ..Default::default()
        },
        Answer::String { t, s } => pb::EvalResponse {
            result_type,
            scalar: Some(pb::Point { time: timestamp(t), value: 0.0 }),
            string_value: s,
            ..Default::default()
        },
        Answer::Vector { t, series } => pb::EvalResponse {
            result_type,
            series: series
                .into_iter()
                .map(|(ls, v)| pb::EvalSeries {
                    labels: labels_map(ls),
                    points: vec![pb::Point { time: timestamp(t), value: v }],
                })
                .collect(),
            ..Default::default()
        },
        Answer::Matrix(m) => pb::EvalResponse {
            result_type,
            series: m
                .into_iter()
                .map(|s| pb::EvalSeries {
                    labels: labels_map(s.labels),
                    points: s
                        .ts
                        .iter()
                        .zip(&s.vals)
                        .map(|(t, v)| pb::Point { time: timestamp(*t), value: *v })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        },
    }
}

pub fn instant(store: &Store, query: &str, t: i64, opts: &Opts, budget: &mut Budget) -> Result<Answer, PromqlError> {
    let expr = promql::parse(query)?;
    promql::instant(&StoreSource { store }, &expr, t, opts, budget)
}

pub fn range(
    store: &Store,
    query: &str,
    (start, end, step): (i64, i64, i64),
    opts: &Opts,
    budget: &mut Budget,
) -> Result<Answer, PromqlError> {
    let expr = promql::parse(query)?;
    promql::range(&StoreSource { store }, &expr, start, end, step, opts, budget)
}

pub fn eval(
    store: &Store,
    req: &pb::EvalRequest,
    now: i64,
    opts: &Opts,
    budget: &mut Budget,
) -> Result<pb::EvalResponse, PromqlError> {
    let t = parse_time("time", &req.time, now)?;
    instant(store, &req.query, t, opts, budget).map(to_proto)
}

/// The step of a range without one: about 120 points, at least a second.
pub fn default_step(start: i64, end: i64) -> i64 {
    ((end - start) / 120).max(1000)
}

pub fn eval_range(
    store: &Store,
    req: &pb::EvalRangeRequest,
    now: i64,
    opts: &Opts,
    budget: &mut Budget,
) -> Result<pb::EvalResponse, PromqlError> {
    let (start, end) = parse_range(req.range.as_ref(), now)?;
    let step = if req.step.trim().is_empty() {
        default_step(start, end)
    } else {
        parse_duration("step", &req.step)?.as_millis() as i64
    };
    if step <= 0 {
        return Err(QueryError::Invalid { field: "step", reason: "must be positive".into() }.into());
    }
    range(store, &req.query, (start, end, step), opts, budget).map(to_proto)
}
