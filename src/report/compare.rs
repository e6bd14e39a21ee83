//! One report over two ranges (today against yesterday, before and after a deploy), with the
//! change of every figure the two have in common.
use super::{capacity, errors, gpu, service, Env};
use crate::pb;
use crate::promql::PromqlError;
use crate::query::{Budget, QueryError};
use std::collections::BTreeMap;

type Figures = BTreeMap<String, f64>;

pub fn compare(
    env: &Env,
    req: &pb::CompareRequest,
    instances: &BTreeMap<String, u32>,
    budget: &mut Budget,
) -> Result<pb::CompareResponse, PromqlError> {
    let (a, b) = (req.a.clone(), req.b.clone());
    if a.is_none() || b.is_none() {
        return Err(QueryError::Invalid { field: "a", reason: "both ranges, a and b, are required".into() }.into());
    }
    let mut out = pb::CompareResponse { report: req.report.clone(), ..Default::default() };
    let (fa, fb) = match req.report.as_str() {
        "service" => {
            let base = req.service.clone().unwrap_or_default();
            let ra = service::service_report(env, &pb::ServiceReportRequest { range: a, ..base.clone() }, budget)?;
            let rb = service::service_report(env, &pb::ServiceReportRequest { range: b, ..base }, budget)?;
            let f = (service_figures(&ra), service_figures(&rb));
            (out.service_a, out.service_b) = (Some(ra), Some(rb));
            f
        }
        "errors" => {
            let base = req.errors.clone().unwrap_or_default();
            let ra = errors::error_report(env, &pb::ErrorReportRequest { range: a, ..base.clone() }, budget)?;
            let rb = errors::error_report(env, &pb::ErrorReportRequest { range: b, ..base }, budget)?;
            let f = (error_figures(&ra), error_figures(&rb));
            (out.errors_a, out.errors_b) = (Some(ra), Some(rb));
            f
        }
        "gpu" => {
            let base = req.gpu.clone().unwrap_or_default();
            let ra = gpu::gpu_report(env.store, &pb::GpuReportRequest { range: a, ..base.clone() }, env.now, budget)?;
            let rb = gpu::gpu_report(env.store, &pb::GpuReportRequest { range: b, ..base }, env.now, budget)?;
            let f = (gpu_figures(&ra), gpu_figures(&rb));
            (out.gpu_a, out.gpu_b) = (Some(ra), Some(rb));
            f
        }
        "capacity" => {
            let base = req.capacity.clone().unwrap_or_default();
            let ra = capacity::capacity_report(
                env,
                &pb::CapacityReportRequest { range: a, ..base.clone() },
                instances,
                budget,
            )?;
            let rb =
                capacity::capacity_report(env, &pb::CapacityReportRequest { range: b, ..base }, instances, budget)?;
            let f = (capacity_figures(&ra), capacity_figures(&rb));
            (out.capacity_a, out.capacity_b) = (Some(ra), Some(rb));
            f
        }
        other => {
            return Err(QueryError::Invalid {
                field: "report",
                reason: format!("{other:?} is not one of service, errors, gpu, capacity"),
            }
            .into())
        }
    };
    out.deltas = deltas(&fa, &fb);
    Ok(out)
}

/// Figures present in either side (a missing one counts as 0), in the order of their names.
pub fn deltas(a: &Figures, b: &Figures) -> Vec<pb::FigureDelta> {
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|k| {
            let (x, y) = (a.get(k).copied().unwrap_or(0.0), b.get(k).copied().unwrap_or(0.0));
            pb::FigureDelta {
                figure: k.clone(),
                a: x,
                b: y,
                delta: y - x,
                change: if x != 0.0 { y / x - 1.0 } else { 0.0 },
            }
        })
        .collect()
}

fn latency(f: &mut Figures, prefix: &str, l: &pb::LatencySummary) {
    for (k, v) in [
        ("count", l.count as f64),
        ("mean_ms", l.mean_ms),
        ("p50_ms", l.p50_ms),
        ("p90_ms", l.p90_ms),
        ("p95_ms", l.p95_ms),
        ("p99_ms", l.p99_ms),
        ("max_ms", l.max_ms),
    ] {
        f.insert(format!("{prefix}.{k}"), v);
    }
}

pub fn service_figures(r: &pb::ServiceReportResponse) -> Figures {
    let mut f = Figures::new();
    for (k, v) in [
        ("requests", r.requests as f64),
        ("errors", r.errors as f64),
        ("success_rate", r.success_rate),
        ("throughput_per_s", r.throughput_per_s),
        ("slow_requests", r.slow_requests as f64),
        ("slow_share", r.slow_share),
        ("prompt_tokens", r.prompt_tokens as f64),
        ("completion_tokens", r.completion_tokens as f64),
        ("input_bytes", r.input_bytes as f64),
        ("output_bytes", r.output_bytes as f64),
    ] {
        f.insert(k.into(), v);
    }
    if let Some(l) = &r.latency {
        latency(&mut f, "latency", l);
    }
    for (st, l) in &r.stages {
        latency(&mut f, &format!("stages[{st}]"), l);
    }
    for e in &r.top_errors {
        f.insert(format!("top_errors[{}].count", e.error_type), e.count as f64);
    }
    for s in &r.label_distribution {
        f.insert(format!("label_distribution[{}].share", s.value), s.share);
    }
    f
}

pub fn error_figures(r: &pb::ErrorReportResponse) -> Figures {
    let mut f = Figures::new();
    f.insert("requests".into(), r.requests as f64);
    f.insert("failed_requests".into(), r.failed_requests as f64);
    f.insert("error_rate".into(), r.error_rate);
    f.insert("error_logs".into(), r.error_logs as f64);
    for g in &r.groups {
        let k = format!("groups[{}/{}]", g.service, g.error_type);
        f.insert(format!("{k}.events"), g.events as f64);
        f.insert(format!("{k}.logs"), g.logs as f64);
    }
    f
}

pub fn gpu_figures(r: &pb::GpuReportResponse) -> Figures {
    let mut f = Figures::new();
    for g in &r.gpus {
        let k = format!("gpus[{}]", g.gpu);
        for (n, v) in [
            ("utilization_avg_percent", g.utilization_avg_percent),
            ("utilization_max_percent", g.utilization_max_percent),
            ("memory_peak_bytes", g.memory_peak_bytes),
            ("temperature_max_celsius", g.temperature_max_celsius),
            ("power_avg_watts", g.power_avg_watts),
            ("throttled_seconds", g.throttled_seconds),
            ("xid_errors", g.xid_errors as f64),
        ] {
            f.insert(format!("{k}.{n}"), v);
        }
    }
    for s in &r.services {
        f.insert(format!("services[{}].memory_peak_bytes", s.service), s.memory_peak_bytes);
    }
    f
}

pub fn capacity_figures(r: &pb::CapacityReportResponse) -> Figures {
    let mut f = Figures::new();
    for s in &r.services {
        let k = format!("services[{}]", s.service);
        for (n, v) in [
            ("requests_per_s", s.requests_per_s),
            ("peak_requests_per_s", s.peak_requests_per_s),
            ("p95_ms", s.p95_ms),
            ("gpu_utilization_percent", s.gpu_utilization_percent),
            ("cpu_percent", s.cpu_percent),
            ("memory_bytes", s.memory_bytes),
            ("recommended_replicas", s.recommended_replicas as f64),
            ("cost_per_hour", s.cost_per_hour),
        ] {
            f.insert(format!("{k}.{n}"), v);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_cover_both_sides() {
        let a: Figures = [("x".to_string(), 2.0), ("y".to_string(), 1.0)].into();
        let b: Figures = [("x".to_string(), 3.0), ("z".to_string(), 5.0)].into();
        let d = deltas(&a, &b);
        assert_eq!(d.iter().map(|d| d.figure.as_str()).collect::<Vec<_>>(), ["x", "y", "z"]);
        assert_eq!((d[0].delta, d[0].change), (1.0, 0.5));
        assert_eq!((d[1].b, d[1].delta), (0.0, -1.0));
        assert_eq!((d[2].a, d[2].change), (0.0, 0.0));
    }
}
