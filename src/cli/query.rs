//! `modelwatch query 'EXPR' [--at T | --start T --end T --step D] [--json]`: a PromQL query
//! through `Query/Eval` or `Query/EvalRange`, printed as an aligned table or as JSON in the
//! Prometheus API's `data` shape.
use crate::pb;
use crate::promql::fmt_value;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub struct Args {
    pub addr: String,
    pub query: String,
    pub at: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub step: Option<String>,
    pub json: bool,
}

fn fmt_time(t: &Option<prost_types::Timestamp>) -> String {
    let ms = t.as_ref().map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    crate::query::fmt_ms(ms)
}

fn secs(t: &Option<prost_types::Timestamp>) -> f64 {
    t.as_ref().map_or(0.0, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

fn series_name(labels: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = labels.iter().collect();
    let name = labels.get("__name__").cloned().unwrap_or_default();
    let rest: Vec<String> =
        sorted.iter().filter(|(k, _)| k.as_str() != "__name__").map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", rest.join(", "))
}

/// Renders an answer: a table for people, or JSON (`--json`).
pub fn render(r: &pb::EvalResponse, as_json: bool) -> String {
    if as_json {
        let result = match r.result_type.as_str() {
            "scalar" => json!([
                r.scalar.as_ref().map_or(0.0, |p| secs(&p.time)),
                r.scalar.as_ref().map_or("NaN".into(), |p| fmt_value(p.value))
            ]),
            "string" => json!([r.scalar.as_ref().map_or(0.0, |p| secs(&p.time)), r.string_value]),
            kind => Value::Array(
                r.series
                    .iter()
                    .map(|s| {
                        let pts: Vec<Value> =
                            s.points.iter().map(|p| json!([secs(&p.time), fmt_value(p.value)])).collect();
                        let sorted: BTreeMap<&String, &String> = s.labels.iter().collect();
                        if kind == "vector" {
                            json!({"metric": sorted, "value": pts.first().cloned().unwrap_or(Value::Null)})
                        } else {
                            json!({"metric": sorted, "values": pts})
                        }
                    })
                    .collect(),
            ),
        };
        return serde_json::to_string_pretty(&json!({"resultType": r.result_type, "result": result}))
            .unwrap_or_default();
    }
    let mut out = String::new();
    match r.result_type.as_str() {
        "scalar" => {
            if let Some(p) = &r.scalar {
                out.push_str(&format!("{}  {}\n", fmt_value(p.value), fmt_time(&p.time)));
            }
        }
        "string" => out.push_str(&format!("{:?}\n", r.string_value)),
        "vector" => {
            let rows: Vec<(String, String)> = r
                .series
                .iter()
                .map(|s| (series_name(&s.labels), s.points.first().map_or(String::new(), |p| fmt_value(p.value))))
                .collect();
            let w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(6).max(6);
            out.push_str(&format!("{:<w$}  VALUE\n", "SERIES"));
            for (n, v) in rows {
                out.push_str(&format!("{n:<w$}  {v}\n"));
            }
            if r.series.is_empty() {
                out.push_str("(no series)\n");
            }
        }
        _ => {
            for s in &r.series {
                out.push_str(&format!("{}\n", series_name(&s.labels)));
                for p in &s.points {
                    out.push_str(&format!("  {}  {}\n", fmt_time(&p.time), fmt_value(p.value)));
                }
            }
            if r.series.is_empty() {
                out.push_str("(no series)\n");
            }
        }
    }
    out
}

pub async fn run(a: Args) -> Result<String, String> {
    let mut client =
        pb::query_client::QueryClient::new(super::conn::connect(&a.addr).await?).max_decoding_message_size(256 << 20);
    let ranged = a.start.is_some() || a.end.is_some() || a.step.is_some();
    if ranged && a.at.is_some() {
        return Err("--at is for an instant query; give --start/--end/--step for a range, not both".into());
    }
    let resp = if ranged {
        let range = pb::TimeRange {
            start: a.start.clone().unwrap_or_default(),
            end: a.end.clone().unwrap_or_default(),
            last: if a.start.is_none() { "1h".into() } else { String::new() },
        };
        client
            .eval_range(pb::EvalRangeRequest {
                query: a.query.clone(),
                range: Some(range),
                step: a.step.clone().unwrap_or_default(),
            })
            .await
    } else {
        client.eval(pb::EvalRequest { query: a.query.clone(), time: a.at.clone().unwrap_or_default() }).await
    };
    let r = resp.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?.into_inner();
    Ok(render(&r, a.json))
}
