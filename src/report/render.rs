//! Reports rendered for people: aligned text with units and sparklines for a terminal, and a
//! self-contained HTML page with inline SVG charts (no script, no network); JSON is the proto3
//! JSON mapping, the same text grpcurl prints.
use crate::pb;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The proto3 JSON of a message of `modelwatch.v1` (what grpcurl prints).
pub fn json<M: prost::Message>(msg: &M, name: &str) -> String {
    use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the built-in descriptor set decodes");
    let desc = pool.get_message_by_name(&format!("modelwatch.v1.{name}")).expect("a message of our proto");
    let dynamic = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).expect("a message decodes as itself");
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::pretty(&mut out);
    dynamic.serialize_with_options(&mut ser, &SerializeOptions::new()).expect("JSON of a message");
    String::from_utf8(out).expect("JSON is UTF-8") + "\n"
}

pub fn ms_of(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// `2026-11-23 10:04:05` (UTC).
pub fn when(t: &Option<prost_types::Timestamp>) -> String {
    let s = crate::notify::payload::rfc3339(ms_of(t) / 1000 * 1000);
    s.trim_end_matches(".000Z").replace('T', " ")
}

fn dur_ms(d: &Option<prost_types::Duration>) -> i64 {
    d.as_ref().map_or(0, |d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
}

/// A duration for people: `3h00m`, `5m00s`, `10s`.
pub fn span(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Milliseconds with a unit that suits them.
pub fn ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

pub fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

pub fn bytes(v: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}/s")
    } else {
        format!("{v:.2}/s")
    }
}

/// One character per value, eight heights.
pub fn sparkline(vals: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = vals.iter().copied().fold(0.0, f64::max);
    vals.iter()
        .map(|v| if max <= 0.0 { BARS[0] } else { BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize] })
        .collect()
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    crate::cli::alerts::table(head, rows)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

fn latency_row(name: &str, l: &pb::LatencySummary) -> Vec<String> {
    vec![
        name.to_string(),
        l.count.to_string(),
        if l.mean_ms > 0.0 { ms(l.mean_ms) } else { "-".into() },
        ms(l.p50_ms),
        ms(l.p95_ms),
        ms(l.p99_ms),
        ms(l.max_ms),
    ]
}

fn heading(
    out: &mut String,
    title: &str,
    start: &Option<prost_types::Timestamp>,
    end: &Option<prost_types::Timestamp>,
) {
    let _ = writeln!(out, "{title}  {} → {} UTC ({})", when(start), when(end), span(ms_of(end) - ms_of(start)));
}

pub fn service_text(r: &pb::ServiceReportResponse, what: &str) -> String {
    let mut o = String::new();
    heading(&mut o, &format!("service report: {what}"), &r.start, &r.end);
    let _ = writeln!(
        o,
        "\nrequests {}   errors {} ({})   success {}   throughput {}",
        r.requests,
        r.errors,
        pct(1.0 - r.success_rate),
        pct(r.success_rate),
        rate(r.throughput_per_s)
    );
    let _ = writeln!(
        o,
        "slower than {}: {} ({})",
        ms(dur_ms(&r.slow_threshold) as f64),
        r.slow_requests,
        pct(r.slow_share)
    );
    let _ = writeln!(
        o,
        "tokens: prompt {}  completion {}   bytes: in {}  out {}",
        r.prompt_tokens,
        r.completion_tokens,
        bytes(r.input_bytes as f64),
        bytes(r.output_bytes as f64)
    );
    let mut rows = Vec::new();
    if let Some(l) = &r.latency {
        rows.push(latency_row("total", l));
    }
    for (st, l) in sorted(&r.stages) {
        rows.push(latency_row(st, l));
    }
    let _ = write!(o, "\nlatency\n{}", indent(&table(&["STAGE", "COUNT", "MEAN", "P50", "P95", "P99", "MAX"], &rows)));
    if !r.series.is_empty() {
        let reqs: Vec<f64> = r.series.iter().map(|i| i.requests as f64).collect();
        let p95: Vec<f64> = r.series.iter().map(|i| i.p95_ms).collect();
        let errs: Vec<f64> = r.series.iter().map(|i| i.error_rate).collect();
        let every = span(dur_ms(&r.step));
        let _ = writeln!(o, "\nper {every}");
        let _ = writeln!(o, "  requests  {}  max {}", sparkline(&reqs), reqs.iter().copied().fold(0.0, f64::max));
        let _ = writeln!(o, "  p95       {}  max {}", sparkline(&p95), ms(p95.iter().copied().fold(0.0, f64::max)));
        let _ = writeln!(o, "  errors    {}  max {}", sparkline(&errs), pct(errs.iter().copied().fold(0.0, f64::max)));
    }
    if !r.busiest_hours.is_empty() {
        let rows: Vec<Vec<String>> = r
            .busiest_hours
            .iter()
            .map(|h| {
                vec![when(&h.start), h.requests.to_string(), rate(h.throughput_per_s), pct(h.error_rate), ms(h.p95_ms)]
            })
            .collect();
        let _ = write!(
            o,
            "\nbusiest hours\n{}",
            indent(&table(&["HOUR (UTC)", "REQUESTS", "RATE", "ERRORS", "P95"], &rows))
        );
    }
    if !r.label.is_empty() {
        let rows: Vec<Vec<String>> = r
            .label_distribution
            .iter()
            .map(|s| {
                let v = if s.value.is_empty() { "(none)".to_string() } else { s.value.clone() };
                vec![v, s.count.to_string(), pct(s.share)]
            })
            .collect();
        let _ = write!(o, "\n{}\n{}", r.label, indent(&table(&["VALUE", "EVENTS", "SHARE"], &rows)));
    }
    if !r.top_errors.is_empty() {
        let rows: Vec<Vec<String>> = r
            .top_errors
            .iter()
            .map(|e| vec![e.error_type.clone(), e.count.to_string(), pct(e.share), examples(&e.examples)])
            .collect();
        let _ = write!(o, "\ntop errors\n{}", indent(&table(&["TYPE", "COUNT", "SHARE", "EXAMPLES"], &rows)));
    }
    if !r.scan_complete {
        let _ = writeln!(o, "\n(label and examples from the newest {} events: report.max_scan)", r.events_scanned);
    }
    o
}

fn examples(ex: &[pb::ErrorExample]) -> String {
    let mut parts: Vec<String> = ex.iter().map(|x| x.request_id.clone()).filter(|x| !x.is_empty()).collect();
    if let Some(m) = ex.iter().find(|x| !x.message.is_empty()) {
        parts.push(format!("“{}”", m.message.chars().take(80).collect::<String>()));
    }
    parts.join(" ")
}

fn sorted<V>(m: &std::collections::HashMap<String, V>) -> Vec<(&String, &V)> {
    let b: BTreeMap<&String, &V> = m.iter().collect();
    b.into_iter().collect()
}

pub fn errors_text(r: &pb::ErrorReportResponse) -> String {
    let mut o = String::new();
    heading(&mut o, "error report", &r.start, &r.end);
    let _ = writeln!(
        o,
        "\nrequests {}   failed {} ({})   error logs {}",
        r.requests,
        r.failed_requests,
        pct(r.error_rate),
        r.error_logs
    );
    let rows: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|g| {
            let models: Vec<String> = sorted(&g.models).iter().map(|(m, n)| format!("{m}:{n}")).collect();
            vec![
                g.service.clone(),
                if g.error_type.is_empty() { "(none)".into() } else { g.error_type.clone() },
                g.events.to_string(),
                g.logs.to_string(),
                models.join(" "),
                if g.last_seen.is_some() { when(&g.last_seen) } else { "-".into() },
                examples(&g.examples),
            ]
        })
        .collect();
    let _ = write!(
        o,
        "\n{}",
        table(&["SERVICE", "TYPE", "EVENTS", "LOGS", "MODELS", "LAST SEEN (UTC)", "EXAMPLES"], &rows)
    );
    o
}

pub fn gpu_text(r: &pb::GpuReportResponse) -> String {
    let mut o = String::new();
    heading(&mut o, "GPU report", &r.start, &r.end);
    let rows: Vec<Vec<String>> = r
        .gpus
        .iter()
        .map(|g| {
            vec![
                g.gpu.clone(),
                g.model_name.clone(),
                format!("{:.0}% / {:.0}%", g.utilization_avg_percent, g.utilization_max_percent),
                format!("{} / {}", bytes(g.memory_peak_bytes), bytes(g.memory_total_bytes)),
                format!("{:.0} °C", g.temperature_max_celsius),
                format!("{:.0} W", g.power_avg_watts),
                format!("{}", g.xid_errors + g.ecc_uncorrected_errors),
                g.services.join(" "),
            ]
        })
        .collect();
    let _ = write!(
        o,
        "\n{}",
        table(&["GPU", "MODEL", "UTIL AVG/MAX", "MEMORY PEAK/TOTAL", "TEMP MAX", "POWER", "FAULTS", "SERVICES"], &rows)
    );
    if !r.processes.is_empty() {
        let rows: Vec<Vec<String>> = r
            .processes
            .iter()
            .map(|p| {
                vec![
                    p.gpu.clone(),
                    p.pid.to_string(),
                    p.service.clone(),
                    p.model.clone(),
                    bytes(p.memory_peak_bytes),
                    format!("{:.0}%", p.utilization_max_percent),
                ]
            })
            .collect();
        let _ = write!(
            o,
            "\nprocesses\n{}",
            indent(&table(&["GPU", "PID", "SERVICE", "MODEL", "MEMORY PEAK", "UTIL MAX"], &rows))
        );
    }
    o
}

pub fn capacity_text(r: &pb::CapacityReportResponse) -> String {
    let mut o = String::new();
    heading(&mut o, "capacity report", &r.start, &r.end);
    let rows: Vec<Vec<String>> = r
        .services
        .iter()
        .map(|s| {
            vec![
                s.service.clone(),
                s.recommendation.replace('_', " "),
                format!("{} → {}", s.replicas, s.recommended_replicas),
                format!("{} (peak {})", rate(s.requests_per_s), rate(s.peak_requests_per_s)),
                format!("{} / {}", ms(s.p95_ms), ms(s.slo_p95_ms)),
                format!("{:.0}%", s.gpu_utilization_percent),
                format!("{:.0}%", s.cpu_percent),
                format!("{:.2}/h → {:.2}/h", s.cost_per_hour, s.recommended_cost_per_hour),
                sparkline(&s.previous_days_per_s.iter().rev().copied().chain([s.requests_per_s]).collect::<Vec<_>>()),
            ]
        })
        .collect();
    let _ = write!(
        o,
        "\n{}",
        table(&["SERVICE", "ADVICE", "REPLICAS", "THROUGHPUT", "P95 / SLO", "GPU", "CPU", "COST", "DAYS"], &rows)
    );
    for s in &r.services {
        let _ = writeln!(o, "{}: {}", s.service, s.reason);
    }
    let _ = writeln!(
        o,
        "prices per hour: GPU {:.2}, CPU core {:.3}, memory GiB {:.4} (report.price_*)",
        r.price_gpu_hour, r.price_cpu_core_hour, r.price_memory_gib_hour
    );
    o
}

pub fn compare_text(r: &pb::CompareResponse) -> String {
    let range =
        |a: &Option<prost_types::Timestamp>, b: &Option<prost_types::Timestamp>| format!("{} → {}", when(a), when(b));
    let (ra, rb) = match r.report.as_str() {
        "service" => (
            r.service_a.as_ref().map(|x| range(&x.start, &x.end)),
            r.service_b.as_ref().map(|x| range(&x.start, &x.end)),
        ),
        "errors" => {
            (r.errors_a.as_ref().map(|x| range(&x.start, &x.end)), r.errors_b.as_ref().map(|x| range(&x.start, &x.end)))
        }
        "gpu" => (r.gpu_a.as_ref().map(|x| range(&x.start, &x.end)), r.gpu_b.as_ref().map(|x| range(&x.start, &x.end))),
        _ => (
            r.capacity_a.as_ref().map(|x| range(&x.start, &x.end)),
            r.capacity_b.as_ref().map(|x| range(&x.start, &x.end)),
        ),
    };
    let mut o =
        format!("compare {}\n  a: {} UTC\n  b: {} UTC\n\n", r.report, ra.unwrap_or_default(), rb.unwrap_or_default());
    let num = |v: f64| if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.4}") };
    let rows: Vec<Vec<String>> = r
        .deltas
        .iter()
        .map(|d| {
            vec![
                d.figure.clone(),
                num(d.a),
                num(d.b),
                format!("{}{}", if d.delta > 0.0 { "+" } else { "" }, num(d.delta)),
                if d.a != 0.0 { format!("{:+.1}%", d.change * 100.0) } else { "-".into() },
            ]
        })
        .collect();
    o.push_str(&table(&["FIGURE", "A", "B", "DELTA", "CHANGE"], &rows));
    o
}

// ---- HTML ------------------------------------------------------------------------------------

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A page: title, a little CSS, the body. Nothing is fetched.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\n\
         body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2430;background:#fff}}\n\
         h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}\n\
         table{{border-collapse:collapse;margin:8px 0}} td,th{{padding:3px 10px;border-bottom:1px solid #e3e6ea;text-align:left}}\n\
         th{{color:#5b6573;font-weight:600}} .num{{text-align:right;font-variant-numeric:tabular-nums}}\n\
         .figs{{display:flex;gap:24px;flex-wrap:wrap}} .fig b{{display:block;font-size:22px}}\n\
         svg.chart{{background:#fafbfc;border:1px solid #e3e6ea}} .muted{{color:#7a8594}}\n\
         .bad{{color:#b42318}} .ok{{color:#067647}} a{{color:#1a56db}}\n\
         </style></head><body>\n<h1>{t}</h1>\n{body}\n</body></html>\n",
        t = esc(title)
    )
}

/// A line chart of (time ms, value) points as inline SVG; each point's value is in the path's
/// `data-values`, so a test (or a person) can read what was drawn.
pub fn line_chart(title: &str, pts: &[(i64, f64)], unit: &str) -> String {
    let (w, h, pad) = (640.0, 160.0, 28.0);
    if pts.is_empty() {
        return format!("<p class=\"muted\">{}: no data</p>", esc(title));
    }
    let t0 = pts.iter().map(|p| p.0).min().unwrap_or(0) as f64;
    let t1 = pts.iter().map(|p| p.0).max().unwrap_or(0) as f64;
    let vmax = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let x = |t: i64| pad + if t1 > t0 { (t as f64 - t0) / (t1 - t0) * (w - 2.0 * pad) } else { (w - 2.0 * pad) / 2.0 };
    let y = |v: f64| h - pad - v / vmax * (h - 2.0 * pad);
    let mut d = String::new();
    for (i, (t, v)) in pts.iter().enumerate() {
        let _ = write!(d, "{}{:.1} {:.1} ", if i == 0 { "M" } else { "L" }, x(*t), y(*v));
    }
    let values: Vec<String> = pts.iter().map(|p| format!("{}", p.1)).collect();
    let dots: String = if pts.len() == 1 {
        format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1a56db\"/>", x(pts[0].0), y(pts[0].1))
    } else {
        String::new()
    };
    format!(
        "<figure><figcaption>{title} <span class=\"muted\">(max {max} {unit})</span></figcaption>\
         <svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\
         <line x1=\"{pad}\" y1=\"{base}\" x2=\"{xe}\" y2=\"{base}\" stroke=\"#c7ccd3\"/>\
         <path class=\"series\" d=\"{d}\" data-values=\"{vals}\" fill=\"none\" stroke=\"#1a56db\" stroke-width=\"2\"/>{dots}\
         <text x=\"{pad}\" y=\"16\" font-size=\"11\" fill=\"#7a8594\">{max} {unit}</text></svg></figure>",
        title = esc(title),
        max = fmt_num(vmax),
        unit = esc(unit),
        base = h - pad,
        xe = w - pad,
        d = d.trim_end(),
        vals = values.join(" "),
    )
}

/// Horizontal bars of (label, value), values in `data-value`.
pub fn bar_chart(title: &str, bars: &[(String, f64)], fmt: impl Fn(f64) -> String) -> String {
    if bars.is_empty() {
        return String::new();
    }
    let (w, row) = (640.0, 22.0);
    let h = row * bars.len() as f64 + 8.0;
    let vmax = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let mut body = String::new();
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 4.0 + i as f64 * row;
        let bw = (v / vmax * 360.0).max(1.0);
        let _ = write!(
            body,
            "<text x=\"4\" y=\"{ty:.1}\" font-size=\"12\">{l}</text>\
             <path class=\"bar\" d=\"M180 {y:.1} h{bw:.1} v16 h-{bw:.1} Z\" data-value=\"{v}\" fill=\"#1a56db\"/>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"12\" fill=\"#5b6573\">{f}</text>",
            ty = y + 13.0,
            l = esc(label),
            tx = 186.0 + bw,
            f = esc(&fmt(*v)),
        );
    }
    format!(
        "<figure><figcaption>{}</figcaption><svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">{body}</svg></figure>",
        esc(title)
    )
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn html_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", esc(c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn figures(figs: &[(&str, String)]) -> String {
    let mut s = String::from("<div class=\"figs\">");
    for (k, v) in figs {
        let _ = write!(s, "<div class=\"fig\"><span class=\"muted\">{}</span><b>{}</b></div>", esc(k), esc(v));
    }
    s.push_str("</div>");
    s
}

pub fn service_html(r: &pb::ServiceReportResponse, what: &str) -> String {
    let mut b = format!("<p class=\"muted\">{} → {} UTC</p>", when(&r.start), when(&r.end));
    let l = r.latency.unwrap_or_default();
    b.push_str(&figures(&[
        ("requests", r.requests.to_string()),
        ("success", pct(r.success_rate)),
        ("throughput", rate(r.throughput_per_s)),
        ("p50", ms(l.p50_ms)),
        ("p95", ms(l.p95_ms)),
        ("p99", ms(l.p99_ms)),
        ("max", ms(l.max_ms)),
        (&format!("slower than {}", ms(dur_ms(&r.slow_threshold) as f64)), r.slow_requests.to_string()),
    ]));
    let every = span(dur_ms(&r.step));
    let pts = |f: &dyn Fn(&pb::IntervalFigures) -> f64| -> Vec<(i64, f64)> {
        r.series.iter().map(|i| (ms_of(&i.start), f(i))).collect()
    };
    b.push_str(&line_chart(&format!("requests per {every}"), &pts(&|i| i.requests as f64), "requests"));
    b.push_str(&line_chart(&format!("p95 per {every}"), &pts(&|i| i.p95_ms), "ms"));
    b.push_str(&line_chart(&format!("error rate per {every}"), &pts(&|i| i.error_rate * 100.0), "%"));
    let mut rows = vec![latency_row("total", &l)];
    for (st, l) in sorted(&r.stages) {
        rows.push(latency_row(st, l));
    }
    b.push_str("<h2>Latency</h2>");
    b.push_str(&html_table(&["stage", "count", "mean", "p50", "p95", "p99", "max"], &rows));
    if !r.busiest_hours.is_empty() {
        b.push_str("<h2>Busiest hours</h2>");
        let bars: Vec<(String, f64)> = r.busiest_hours.iter().map(|h| (when(&h.start), h.requests as f64)).collect();
        b.push_str(&bar_chart("requests per hour (UTC)", &bars, |v| format!("{v:.0}")));
    }
    if !r.label.is_empty() {
        let _ = write!(b, "<h2>{}</h2>", esc(&r.label));
        let bars: Vec<(String, f64)> = r.label_distribution.iter().map(|s| (s.value.clone(), s.count as f64)).collect();
        b.push_str(&bar_chart(&format!("events by {}", r.label), &bars, |v| format!("{v:.0}")));
    }
    if !r.top_errors.is_empty() {
        b.push_str("<h2>Top errors</h2>");
        let rows: Vec<Vec<String>> = r
            .top_errors
            .iter()
            .map(|e| vec![e.error_type.clone(), e.count.to_string(), pct(e.share), examples(&e.examples)])
            .collect();
        b.push_str(&html_table(&["type", "count", "share", "examples"], &rows));
    }
    let _ = write!(
        b,
        "<h2>Tokens and bytes</h2><p>prompt {} · completion {} · in {} · out {}</p>",
        r.prompt_tokens,
        r.completion_tokens,
        bytes(r.input_bytes as f64),
        bytes(r.output_bytes as f64)
    );
    b.push_str(&queries_html(&r.queries));
    page(&format!("Service report: {what}"), &b)
}

fn queries_html(q: &std::collections::HashMap<String, String>) -> String {
    if q.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = sorted(q).into_iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
    format!("<h2>PromQL behind the figures</h2>{}", html_table(&["figure", "query"], &rows))
}

pub fn errors_html(r: &pb::ErrorReportResponse) -> String {
    let mut b = format!("<p class=\"muted\">{} → {} UTC</p>", when(&r.start), when(&r.end));
    b.push_str(&figures(&[
        ("requests", r.requests.to_string()),
        ("failed", r.failed_requests.to_string()),
        ("error rate", pct(r.error_rate)),
        ("error logs", r.error_logs.to_string()),
    ]));
    let bars: Vec<(String, f64)> =
        r.groups.iter().map(|g| (format!("{} {}", g.service, g.error_type), (g.events + g.logs) as f64)).collect();
    b.push_str(&bar_chart("events and error logs by service and type", &bars, |v| format!("{v:.0}")));
    let rows: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|g| {
            vec![
                g.service.clone(),
                g.error_type.clone(),
                g.events.to_string(),
                g.logs.to_string(),
                if g.last_seen.is_some() { when(&g.last_seen) } else { "-".into() },
                examples(&g.examples),
            ]
        })
        .collect();
    b.push_str(&html_table(&["service", "type", "events", "logs", "last seen", "examples"], &rows));
    b.push_str(&queries_html(&r.queries));
    page("Error report", &b)
}

pub fn gpu_html(r: &pb::GpuReportResponse) -> String {
    let mut b = format!("<p class=\"muted\">{} → {} UTC</p>", when(&r.start), when(&r.end));
    let bars: Vec<(String, f64)> =
        r.gpus.iter().map(|g| (format!("GPU {} {}", g.gpu, g.model_name), g.utilization_avg_percent)).collect();
    b.push_str(&bar_chart("average utilization", &bars, |v| format!("{v:.0}%")));
    let text = gpu_text(r);
    let _ = write!(b, "<pre>{}</pre>", esc(&text));
    page("GPU report", &b)
}

pub fn capacity_html(r: &pb::CapacityReportResponse) -> String {
    let mut b = format!("<p class=\"muted\">{} → {} UTC</p>", when(&r.start), when(&r.end));
    for s in &r.services {
        let _ = write!(
            b,
            "<h2>{} — {}</h2><p>{}</p>",
            esc(&s.service),
            esc(&s.recommendation.replace('_', " ")),
            esc(&s.reason)
        );
        let days: Vec<(String, f64)> = s
            .previous_days_per_s
            .iter()
            .enumerate()
            .rev()
            .map(|(i, v)| (format!("{} day(s) before", i + 1), *v))
            .chain([("this range".to_string(), s.requests_per_s)])
            .collect();
        b.push_str(&bar_chart("requests per second, same hours", &days, rate));
    }
    let _ = write!(b, "<pre>{}</pre>", esc(&capacity_text(r)));
    page("Capacity report", &b)
}

pub fn compare_html(r: &pb::CompareResponse) -> String {
    let bars: Vec<(String, f64)> =
        r.deltas.iter().filter(|d| d.a != 0.0).map(|d| (d.figure.clone(), d.change * 100.0)).collect();
    let mut b = bar_chart("change from a to b (%)", &bars, |v| format!("{v:+.1}%"));
    let _ = write!(b, "<pre>{}</pre>", esc(&compare_text(r)));
    page(&format!("Compare: {}", r.report), &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sparklines() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0]), "▁▃▅█");
        assert_eq!(sparkline(&[0.0, 0.0]), "▁▁");
        assert_eq!(ms(1234.0), "1234 ms");
        assert_eq!(ms(12_345.0), "12.3 s");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(span(3_600_000 * 3), "3h00m");
        let svg = line_chart("x", &[(0, 1.0), (1000, 3.0)], "req");
        assert!(svg.contains("data-values=\"1 3\"") && svg.contains("M28.0 "), "{svg}");
    }
}
