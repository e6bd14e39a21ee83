//! Capacity advice per service: scale up, scale down or hold, from how busy its GPUs and CPU
//! are at its peak, its p95 against the objective and its throughput trend, with what it costs.
//!
//! - Utilization is the GPUs' (the service's processes hold memory on them; a shared GPU counts
//!   for each service on it), else the service's CPU as a share of the host's cores; at peak
//!   it is scaled by peak / mean throughput.
//! - Scale up when p95 is over the objective or peak utilization is over
//!   `report.scale_up_utilization`: replicas × the larger of p95/objective and
//!   utilization/`target_utilization`.
//! - Scale down when peak utilization is under `report.scale_down_utilization`, p95 is under
//!   half the objective and throughput is not rising (trend under 5% a day): replicas ×
//!   utilization/target, at least 1.
//! - Replicas are the service's processes that the host sampler saw (registered pids), or its
//!   connected instances, or 1.
//! - Cost per hour is what the service uses: its GPUs, CPU cores (average) and memory
//!   (average) at the `report.price_*` prices; the recommendation scales it by replicas.
use super::{selector, Env, Prom, Span};
use crate::pb;
use crate::promql::{label, PromqlError};
use crate::query::{parse_duration, timestamp, Budget};
use std::collections::{BTreeMap, BTreeSet};

const REQ: &str = "modelwatch_inference_requests_total";
const LAT: &str = "modelwatch_inference_latency_seconds";
const HOURS_PER_MONTH: f64 = 730.0;

pub fn capacity_report(
    env: &Env,
    req: &pb::CapacityReportRequest,
    instances: &BTreeMap<String, u32>,
    budget: &mut Budget,
) -> Result<pb::CapacityReportResponse, PromqlError> {
    let span = Span::of(env, req.range.as_ref())?;
    let slo_ms = if req.slo_p95.is_empty() {
        env.cfg.slo_p95.as_millis() as f64
    } else {
        parse_duration("slo_p95", &req.slo_p95)?.as_millis() as f64
    };
    let days = if req.days == 0 { 7 } else { req.days.min(60) };
    let sel = selector(&[("service", &req.service)], &[]);
    let w = span.window();
    let mut p = Prom::new(env, budget, span);
    let rps = p.by("requests_per_s", "service", &format!("sum by (service) (rate({REQ}{sel}[{w}]))"))?;
    let peak = p.by(
        "peak_requests_per_s",
        "service",
        &format!("max_over_time(sum by (service) (rate({REQ}{sel}[5m]))[{w}:1m])"),
    )?;
    let p95 =
        p.by("p95", "service", &format!("histogram_quantile(0.95, sum by (service) (rate({LAT}_bucket{sel}[{w}])))"))?;
    let trend = if span.ms() >= 2 * 3_600_000 {
        p.by("trend", "service", &format!("deriv(sum by (service) (rate({REQ}{sel}[1h]))[{w}:1h])"))?
    } else {
        BTreeMap::new()
    };
    let mut previous: Vec<BTreeMap<String, f64>> = Vec::new();
    for d in 1..=days {
        previous.push(p.by(
            &format!("previous_day_{d}"),
            "service",
            &format!("sum by (service) (rate({REQ}{sel}[{w}] offset {d}d))"),
        )?);
    }
    // GPUs each service holds memory on, and how busy those GPUs were.
    let held = p.vector(
        "service_gpus",
        &format!("max by (service, gpu) (max_over_time(gpu_process_memory_bytes{sel}[{w}]))"),
    )?;
    let gpu_util =
        p.by("gpu_utilization", "gpu", &format!("avg by (gpu) (avg_over_time(gpu_utilization_percent[{w}]))"))?;
    let gpu_mem = p.by(
        "gpu_memory_percent",
        "gpu",
        &format!(
            "100 * max by (gpu) (max_over_time(gpu_memory_used_bytes[{w}])) / max by (gpu) (max_over_time(gpu_memory_total_bytes[{w}]))"
        ),
    )?;
    let cpu =
        p.by("cpu_percent", "service", &format!("sum by (service) (avg_over_time(process_cpu_percent{sel}[{w}]))"))?;
    let mem = p.by(
        "memory_bytes",
        "service",
        &format!("sum by (service) (avg_over_time(process_resident_memory_bytes{sel}[{w}]))"),
    )?;
    let replicas = p.by(
        "replicas",
        "service",
        &format!(
            "count by (service) (max by (service, instance) (max_over_time(process_resident_memory_bytes{sel}[{w}])))"
        ),
    )?;
    let cores = p.scalar("host_cores", &format!("count(last_over_time(host_cpu_utilization_percent[{w}]))"))?;
    let queries = p.into_queries();

    let mut gpus_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (ls, _) in &held {
        if let (Some(s), Some(g)) = (label(ls, "service"), label(ls, "gpu")) {
            gpus_of.entry(s.to_string()).or_default().insert(g.to_string());
        }
    }
    let c = env.cfg;
    let mut services = Vec::new();
    for (service, &mean) in &rps {
        if service.is_empty() {
            continue;
        }
        let gpus = gpus_of.get(service).cloned().unwrap_or_default();
        let avg_of = |m: &BTreeMap<String, f64>| {
            let v: Vec<f64> = gpus.iter().filter_map(|g| m.get(g).copied()).collect();
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let gpu_u = avg_of(&gpu_util);
        let cpu_pct = cpu.get(service).copied().unwrap_or(0.0);
        let util = if gpus.is_empty() {
            if cores > 0.0 {
                cpu_pct / (100.0 * cores)
            } else {
                0.0
            }
        } else {
            gpu_u / 100.0
        };
        let peak_rps = peak.get(service).copied().unwrap_or(mean).max(mean);
        let peak_util = if mean > 0.0 { util * peak_rps / mean } else { util };
        let p95_ms = p95.get(service).copied().filter(|v| v.is_finite()).unwrap_or(0.0) * 1000.0;
        let trend_day = match trend.get(service) {
            Some(slope) if mean > 0.0 => slope * 86_400.0 / mean,
            _ => 0.0,
        };
        let n = replicas
            .get(service)
            .map(|v| *v as u32)
            .or_else(|| instances.get(service).copied())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        let (rec, reason) = advise(c, n, p95_ms, slo_ms, util, peak_util, trend_day);
        let mem_b = mem.get(service).copied().unwrap_or(0.0);
        let cost = gpus.len() as f64 * c.price_gpu_hour
            + cpu_pct / 100.0 * c.price_cpu_core_hour
            + mem_b / (1u64 << 30) as f64 * c.price_memory_gib_hour;
        let rec_cost = cost * rec as f64 / n as f64;
        services.push(pb::CapacityFigures {
            service: service.clone(),
            recommendation: match rec.cmp(&n) {
                std::cmp::Ordering::Greater => "scale_up",
                std::cmp::Ordering::Less => "scale_down",
                std::cmp::Ordering::Equal => "hold",
            }
            .into(),
            reason,
            replicas: n,
            recommended_replicas: rec,
            requests_per_s: mean,
            peak_requests_per_s: peak_rps,
            p95_ms,
            slo_p95_ms: slo_ms,
            trend_per_day: trend_day,
            previous_days_per_s: previous.iter().map(|m| m.get(service).copied().unwrap_or(0.0)).collect(),
            gpu_utilization_percent: gpu_u,
            gpu_memory_percent: avg_of(&gpu_mem),
            gpus: gpus.len() as u32,
            cpu_percent: cpu_pct,
            memory_bytes: mem_b,
            cost_per_hour: cost,
            recommended_cost_per_hour: rec_cost,
            savings_per_month: (cost - rec_cost) * HOURS_PER_MONTH,
            queries: queries.clone(),
        });
    }
    Ok(pb::CapacityReportResponse {
        start: timestamp(span.start),
        end: timestamp(span.end),
        services,
        price_gpu_hour: c.price_gpu_hour,
        price_cpu_core_hour: c.price_cpu_core_hour,
        price_memory_gib_hour: c.price_memory_gib_hour,
    })
}

/// Recommended replicas and why.
fn advise(
    c: &crate::config::ReportConfig,
    n: u32,
    p95_ms: f64,
    slo_ms: f64,
    util: f64,
    peak_util: f64,
    trend_day: f64,
) -> (u32, String) {
    let pct = |x: f64| format!("{:.0}%", x * 100.0);
    if p95_ms > slo_ms || peak_util > c.scale_up_utilization {
        let factor = (p95_ms / slo_ms).max(peak_util / c.target_utilization).max(1.0);
        let rec = ((n as f64 * factor).ceil() as u32).max(n + 1);
        let why = if p95_ms > slo_ms {
            format!("p95 {p95_ms:.0} ms is over the {slo_ms:.0} ms objective")
        } else {
            format!("peak utilization {} is over {}", pct(peak_util), pct(c.scale_up_utilization))
        };
        return (rec, format!("{why}: {n} → {rec} replicas for {} utilization", pct(c.target_utilization)));
    }
    if peak_util < c.scale_down_utilization && p95_ms < slo_ms / 2.0 && trend_day < 0.05 && n > 1 {
        let rec = ((n as f64 * peak_util / c.target_utilization).ceil() as u32).clamp(1, n);
        if rec < n {
            return (
                rec,
                format!(
                    "peak utilization {} is under {}, p95 {p95_ms:.0} ms is well inside {slo_ms:.0} ms and throughput is not rising: {n} → {rec} replicas",
                    pct(peak_util),
                    pct(c.scale_down_utilization)
                ),
            );
        }
    }
    (
        n,
        format!(
            "utilization {} (peak {}), p95 {p95_ms:.0} ms of {slo_ms:.0} ms, trend {:+.0}%/day: {n} replicas fit",
            pct(util),
            pct(peak_util),
            trend_day * 100.0
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice() {
        let c = crate::config::ReportConfig::default();
        // Over the objective: scale by p95 / objective.
        assert_eq!(advise(&c, 2, 900.0, 300.0, 0.5, 0.5, 0.0).0, 6);
        // Busy at peak: scale for the target utilization.
        assert_eq!(advise(&c, 3, 100.0, 500.0, 0.7, 0.9, 0.0).0, 5);
        // Idle, fast, flat: fewer replicas, never none.
        assert_eq!(advise(&c, 4, 50.0, 500.0, 0.1, 0.12, 0.0).0, 1);
        // Idle but rising: hold.
        assert_eq!(advise(&c, 4, 50.0, 500.0, 0.1, 0.15, 0.2).0, 4);
        assert_eq!(advise(&c, 1, 50.0, 500.0, 0.1, 0.15, 0.0).0, 1);
    }
}
