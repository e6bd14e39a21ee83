//! The status page at `/` of the HTTP address: services, firing alerts and GPUs, each with a
//! chart of the last hour, linking to the reports as pages. Figures are PromQL, as everywhere.
use super::render::{esc, line_chart, ms, page, pct, rate};
use super::{Env, Prom, Span};
use crate::promql::{label, PromqlError};
use crate::query::Budget;
use std::collections::BTreeMap;
use std::fmt::Write;

const REQ: &str = "modelwatch_inference_requests_total";
const LAT: &str = "modelwatch_inference_latency_seconds";

/// An alert as the page shows it.
pub struct FiringAlert {
    pub name: String,
    pub labels: String,
    pub since_ms: i64,
    pub summary: String,
}

/// A query-string value, percent-encoded.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn status_page(env: &Env, alerts: &[FiringAlert], budget: &mut Budget) -> Result<String, PromqlError> {
    let span = Span::of(env, Some(&crate::pb::TimeRange { last: "1h".into(), ..Default::default() }))?;
    let mut p = Prom::new(env, budget, span);
    let w = span.window();
    let reqs = p.by("requests", "service", &format!("sum by (service) (increase({REQ}[{w}]))"))?;
    let errs = p.by("errors", "service", &format!("sum by (service) (increase({REQ}{{status!=\"ok\"}}[{w}]))"))?;
    let p95 =
        p.by("p95", "service", &format!("histogram_quantile(0.95, sum by (service) (rate({LAT}_bucket[{w}])))"))?;
    let per_min = p.range(
        "requests_per_minute",
        &format!("sum by (service) (increase({REQ}[1m]))"),
        span.start + 60_000,
        span.end,
        60_000,
    )?;
    let gpu_util =
        p.range("gpu_utilization", "max by (gpu) (gpu_utilization_percent)", span.start, span.end, 60_000)?;
    let gpu_mem = p.by("gpu_memory", "gpu", "max by (gpu) (gpu_memory_used_bytes)")?;
    let gpu_total = p.by("gpu_memory_total", "gpu", "max by (gpu) (gpu_memory_total_bytes)")?;
    let gpu_temp = p.by("gpu_temperature", "gpu", "max by (gpu) (gpu_temperature_celsius)")?;

    let mut b = String::new();
    let _ = write!(
        b,
        "<p class=\"muted\">the last hour, to {} UTC · reports: <a href=\"/report/errors?since=24h\">errors</a> · \
         <a href=\"/report/gpu?since=24h\">GPUs</a> · <a href=\"/report/capacity?since=24h\">capacity</a></p>",
        super::render::when(&crate::query::timestamp(env.now))
    );
    let _ = write!(b, "<h2>Firing alerts ({})</h2>", alerts.len());
    if alerts.is_empty() {
        b.push_str("<p class=\"ok\">none</p>");
    } else {
        b.push_str("<table><tr><th>alert</th><th>labels</th><th>since (UTC)</th><th>summary</th></tr>");
        for a in alerts {
            let _ = write!(
                b,
                "<tr><td class=\"bad\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.name),
                esc(&a.labels),
                super::render::when(&crate::query::timestamp(a.since_ms)),
                esc(&a.summary)
            );
        }
        b.push_str("</table>");
    }
    let _ = write!(b, "<h2>Services ({})</h2>", reqs.len());
    if reqs.is_empty() {
        b.push_str("<p class=\"muted\">no inference events in the last hour</p>");
    }
    for (service, n) in &reqs {
        let e = errs.get(service).copied().unwrap_or(0.0);
        let _ = write!(
            b,
            "<h3><a href=\"/report/service?service={}&amp;since=24h\">{}</a></h3><p>{} requests · {} · errors {} · p95 {}</p>",
            enc(service),
            esc(service),
            n.round(),
            rate(n / span.secs()),
            pct(if *n > 0.0 { e / n } else { 0.0 }),
            ms(p95.get(service).copied().filter(|v| v.is_finite()).unwrap_or(0.0) * 1000.0)
        );
        let pts: Vec<(i64, f64)> = per_min
            .iter()
            .find(|s| label(&s.labels, "service") == Some(service.as_str()))
            .map(|s| s.ts.iter().copied().zip(s.vals.iter().copied()).collect())
            .unwrap_or_default();
        b.push_str(&line_chart(&format!("{service}: requests per minute"), &pts, "requests"));
    }
    let _ = write!(b, "<h2>GPUs ({})</h2>", gpu_util.len());
    if gpu_util.is_empty() {
        b.push_str("<p class=\"muted\">no GPU samples in the last hour</p>");
    }
    for s in &gpu_util {
        let gpu = label(&s.labels, "gpu").unwrap_or("").to_string();
        let _ = write!(
            b,
            "<h3>GPU {}</h3><p>memory {} of {} · {:.0} °C</p>",
            esc(&gpu),
            super::render::bytes(gpu_mem.get(&gpu).copied().unwrap_or(0.0)),
            super::render::bytes(gpu_total.get(&gpu).copied().unwrap_or(0.0)),
            gpu_temp.get(&gpu).copied().unwrap_or(0.0)
        );
        let pts: Vec<(i64, f64)> = s.ts.iter().copied().zip(s.vals.iter().copied()).collect();
        b.push_str(&line_chart(&format!("GPU {gpu}: utilization"), &pts, "%"));
    }
    let queries: BTreeMap<String, String> = p.queries;
    let _ = write!(b, "<details><summary>PromQL behind this page</summary><table>");
    for (k, q) in &queries {
        let _ = write!(b, "<tr><td>{}</td><td><code>{}</code></td></tr>", esc(k), esc(q));
    }
    b.push_str("</table></details>");
    Ok(page("modelwatch", &b))
}
