//! The GPU report: per GPU (with the services on it), per process and per model service, over
//! a range.
use crate::pb;
use crate::query::{parse_range, passed_cost, timestamp, Budget, QueryError};
use crate::store::index::{MatchOp, Matcher, SeriesMeta, NAME_LABEL};
use crate::store::{Scanned, Store};
use std::collections::BTreeMap;

type Samples = (SeriesMeta, Vec<i64>, Vec<f64>);

fn series(
    store: &Store,
    budget: &mut Budget,
    name: &str,
    gpu: &str,
    start: i64,
    end: i64,
) -> Result<Vec<Samples>, QueryError> {
    let mut ms = vec![Matcher::new(NAME_LABEL, MatchOp::Eq, name).expect("plain matcher")];
    if !gpu.is_empty() {
        ms.push(Matcher::new("gpu", MatchOp::Eq, gpu).expect("plain matcher"));
    }
    let mut out = Vec::new();
    let selected = store.select(&ms);
    budget.series(selected.len())?;
    for s in selected {
        let (ts, vals) = store.read_samples(s.id, start, end)?;
        budget.read(ts.len())?;
        if !ts.is_empty() {
            out.push((s, ts, vals));
        }
    }
    Ok(out)
}

fn label<'a>(s: &'a SeriesMeta, k: &str) -> &'a str {
    s.label(k).unwrap_or("")
}

/// Increase of a counter over the samples (a drop is a restart from 0).
fn increase(vals: &[f64]) -> f64 {
    vals.windows(2).map(|w| if w[1] >= w[0] { w[1] - w[0] } else { w[1] }).sum()
}

pub fn gpu_report(
    store: &Store,
    req: &pb::GpuReportRequest,
    now: i64,
    budget: &mut Budget,
) -> Result<pb::GpuReportResponse, QueryError> {
    let (start, end) = parse_range(req.range.as_ref(), now)?;
    let mut gpus: BTreeMap<u32, pb::GpuSummary> = BTreeMap::new();
    let key = |s: &SeriesMeta| label(s, "gpu").parse::<u32>().unwrap_or(u32::MAX);
    let entry = |s: &SeriesMeta| -> pb::GpuSummary {
        pb::GpuSummary {
            gpu: label(s, "gpu").into(),
            uuid: label(s, "uuid").into(),
            model_name: label(s, "model_name").into(),
            ..Default::default()
        }
    };
    for (s, _, vals) in series(store, budget, "gpu_up", &req.gpu, start, end)? {
        let g = gpus.entry(key(&s)).or_insert_with(|| entry(&s));
        g.up_ratio = vals.iter().sum::<f64>() / vals.len() as f64;
    }
    let mut fold = |name: &str, f: &mut dyn FnMut(&mut pb::GpuSummary, &[f64])| -> Result<(), QueryError> {
        for (s, _, vals) in series(store, budget, name, &req.gpu, start, end)? {
            let g = gpus.entry(key(&s)).or_insert_with(|| entry(&s));
            f(g, &vals);
        }
        Ok(())
    };
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    fold("gpu_utilization_percent", &mut |g, v| {
        g.utilization_avg_percent = avg(v);
        g.utilization_max_percent = max(v);
    })?;
    fold("gpu_memory_used_bytes", &mut |g, v| g.memory_peak_bytes = max(v))?;
    fold("gpu_memory_total_bytes", &mut |g, v| g.memory_total_bytes = *v.last().unwrap_or(&0.0))?;
    fold("gpu_temperature_celsius", &mut |g, v| g.temperature_max_celsius = max(v))?;
    fold("gpu_power_watts", &mut |g, v| g.power_avg_watts = avg(v))?;
    fold("gpu_throttled_seconds_total", &mut |g, v| g.throttled_seconds = increase(v))?;

    // Fault events are log records of logger `gpu`: count them and list the newest.
    // Only groups with such records are decoded; the rest count a sixteenth of a record each.
    let want = |t: &[&str; 5], _: i32| t[1] == "gpu" && t[0] == crate::sample::SERVICE;
    let mut over = None;
    store.scan_logs_where(start, end, None, &want, |s| {
        let (n, r) = match s {
            Scanned::Passed(n) => (passed_cost(n), None),
            Scanned::Record(_, r) => (1, Some(r)),
        };
        if let Err(e) = budget.read(n) {
            over = Some(e);
            return false;
        }
        let Some(r) = r else { return true };
        if r.logger != "gpu" || r.service != crate::sample::SERVICE {
            return true;
        }
        let gpu = r.fields.get("gpu").cloned().unwrap_or_default();
        if !req.gpu.is_empty() && gpu != req.gpu {
            return true;
        }
        let Ok(idx) = gpu.parse::<u32>() else { return true };
        let g = gpus.entry(idx).or_insert_with(|| pb::GpuSummary { gpu: gpu.clone(), ..Default::default() });
        let kind = r.fields.get("kind").cloned().unwrap_or_default();
        let delta = r.fields.get("delta").and_then(|d| d.parse::<u64>().ok()).unwrap_or(1);
        match kind.as_str() {
            "xid" => g.xid_errors += 1,
            "ecc_corrected" => g.ecc_corrected_errors += delta,
            "ecc_uncorrected" => g.ecc_uncorrected_errors += delta,
            _ => {}
        }
        if g.faults.len() < 100 {
            g.faults.push(pb::GpuFault {
                time: timestamp(r.timestamp_ms),
                kind,
                message: r.message.clone(),
                xid: r.fields.get("xid").cloned().unwrap_or_default(),
                pid: r.fields.get("pid").cloned().unwrap_or_default(),
                service: r.fields.get("service").cloned().unwrap_or_default(),
            });
        }
        true
    })?;
    if let Some(e) = over {
        return Err(e);
    }

    let mut procs: BTreeMap<(String, u32, String, String), pb::GpuProcessSummary> = BTreeMap::new();
    for (name, is_mem) in [("gpu_process_memory_bytes", true), ("gpu_process_utilization_percent", false)] {
        for (s, _, vals) in series(store, budget, name, &req.gpu, start, end)? {
            let pid: u32 = label(&s, "pid").parse().unwrap_or(0);
            let k =
                (label(&s, "gpu").to_string(), pid, label(&s, "service").to_string(), label(&s, "model").to_string());
            let p = procs.entry(k.clone()).or_insert_with(|| pb::GpuProcessSummary {
                gpu: k.0,
                pid,
                service: k.2,
                model: k.3,
                ..Default::default()
            });
            if is_mem {
                p.memory_peak_bytes = p.memory_peak_bytes.max(max(&vals));
            } else {
                p.utilization_max_percent = p.utilization_max_percent.max(max(&vals));
            }
        }
    }
    for p in procs.values().filter(|p| !p.service.is_empty()) {
        if let Some(g) = p.gpu.parse::<u32>().ok().and_then(|i| gpus.get_mut(&i)) {
            if !g.services.contains(&p.service) {
                g.services.push(p.service.clone());
                g.services.sort();
            }
        }
    }
    let mut services: BTreeMap<String, pb::GpuServiceSummary> = BTreeMap::new();
    for p in procs.values().filter(|p| !p.service.is_empty()) {
        let s = services
            .entry(p.service.clone())
            .or_insert_with(|| pb::GpuServiceSummary { service: p.service.clone(), ..Default::default() });
        s.memory_peak_bytes += p.memory_peak_bytes;
        s.processes += 1;
    }
    Ok(pb::GpuReportResponse {
        gpus: gpus.into_values().collect(),
        processes: procs.into_values().collect(),
        services: services.into_values().collect(),
        start: timestamp(start),
        end: timestamp(end),
    })
}
