//! `modelwatch report service|errors|gpu|capacity|compare` and `modelwatch logs`: the report
//! RPCs and log search of a running daemon, as text for a terminal, JSON (`--json`, as
//! grpcurl prints it) or a self-contained HTML page (`--html FILE`).
use super::conn::Conn;
use crate::pb::{self, query_client::QueryClient};
use crate::report::render;
use std::path::PathBuf;

pub enum Format {
    Text,
    Json,
    Html(PathBuf),
}

async fn connect(addr: &str) -> Result<QueryClient<Conn>, String> {
    Ok(QueryClient::new(super::conn::connect(addr).await?).max_decoding_message_size(64 << 20))
}

fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A range from `--since` or `--start`/`--end` (default: the last `default`).
pub fn range(since: Option<String>, start: Option<String>, end: Option<String>, default: &str) -> pb::TimeRange {
    match (since, start) {
        (Some(s), _) => pb::TimeRange { last: s, ..Default::default() },
        (None, Some(s)) => pb::TimeRange { start: s, end: end.unwrap_or_default(), last: String::new() },
        (None, None) => pb::TimeRange { last: default.into(), ..Default::default() },
    }
}

/// One side of `compare`: `FROM..TO`, each `now`, a duration ago (`24h`) or a time (RFC 3339
/// or Unix seconds); `24h` alone means `24h..now`.
pub fn side(s: &str, now: i64) -> Result<pb::TimeRange, String> {
    let (a, b) = s.split_once("..").unwrap_or((s, "now"));
    let at = |x: &str| -> Result<String, String> {
        let x = x.trim();
        if x.is_empty() || x == "now" {
            return Ok(format!("{}", now as f64 / 1000.0));
        }
        if let Ok(d) = humantime::parse_duration(x) {
            return Ok(format!("{}", (now - d.as_millis() as i64) as f64 / 1000.0));
        }
        crate::query::parse_time("range", x).map(|_| x.to_string()).map_err(|e| e.to_string())
    };
    Ok(pb::TimeRange { start: at(a)?, end: at(b)?, last: String::new() })
}

fn emit<M: prost::Message>(
    msg: &M,
    name: &str,
    format: &Format,
    text: impl FnOnce(&M) -> String,
    html: impl FnOnce(&M) -> String,
) -> Result<String, String> {
    match format {
        Format::Text => Ok(text(msg)),
        Format::Json => Ok(render::json(msg, name)),
        Format::Html(path) => {
            std::fs::write(path, html(msg)).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(format!("wrote {}\n", path.display()))
        }
    }
}

/// What a service report is about, for its title.
pub fn subject(service: &str, model: &str, version: &str) -> String {
    let parts: Vec<String> = [("service", service), ("model", model), ("version", version)]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if parts.is_empty() {
        "every service".into()
    } else {
        parts.join(", ")
    }
}

pub async fn service(addr: &str, req: pb::ServiceReportRequest, format: Format) -> Result<String, String> {
    let what = subject(&req.service, &req.model, &req.version);
    let r = connect(addr).await?.service_report(req).await.map_err(status)?.into_inner();
    emit(&r, "ServiceReportResponse", &format, |r| render::service_text(r, &what), |r| render::service_html(r, &what))
}

pub async fn errors(addr: &str, req: pb::ErrorReportRequest, format: Format) -> Result<String, String> {
    let r = connect(addr).await?.error_report(req).await.map_err(status)?.into_inner();
    emit(&r, "ErrorReportResponse", &format, render::errors_text, render::errors_html)
}

pub async fn gpu(addr: &str, req: pb::GpuReportRequest, format: Format) -> Result<String, String> {
    let r = connect(addr).await?.gpu_report(req).await.map_err(status)?.into_inner();
    emit(&r, "GpuReportResponse", &format, render::gpu_text, render::gpu_html)
}

pub async fn capacity(addr: &str, req: pb::CapacityReportRequest, format: Format) -> Result<String, String> {
    let r = connect(addr).await?.capacity_report(req).await.map_err(status)?.into_inner();
    emit(&r, "CapacityReportResponse", &format, render::capacity_text, render::capacity_html)
}

pub struct CompareArgs {
    pub report: String,
    pub a: String,
    pub b: String,
    pub service: pb::ServiceReportRequest,
    pub gpu: String,
    pub slo: String,
}

pub async fn compare(addr: &str, args: CompareArgs, format: Format) -> Result<String, String> {
    let now = now_ms();
    let req = pb::CompareRequest {
        report: args.report,
        a: Some(side(&args.a, now)?),
        b: Some(side(&args.b, now)?),
        errors: Some(pb::ErrorReportRequest {
            service: args.service.service.clone(),
            model: args.service.model.clone(),
            ..Default::default()
        }),
        gpu: Some(pb::GpuReportRequest { gpu: args.gpu, ..Default::default() }),
        capacity: Some(pb::CapacityReportRequest {
            service: args.service.service.clone(),
            slo_p95: args.slo,
            ..Default::default()
        }),
        service: Some(args.service),
    };
    let r = connect(addr).await?.compare(req).await.map_err(status)?.into_inner();
    emit(&r, "CompareResponse", &format, render::compare_text, render::compare_html)
}

pub struct LogArgs {
    pub request_id: String,
    pub service: String,
    pub level: String,
    pub contains: String,
    pub range: pb::TimeRange,
    pub limit: u32,
    pub follow: bool,
    pub json: bool,
}

fn level_of(s: &str) -> Result<i32, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "" => 0,
        "trace" => pb::Level::Trace as i32,
        "debug" => pb::Level::Debug as i32,
        "info" => pb::Level::Info as i32,
        "warn" | "warning" => pb::Level::Warn as i32,
        "error" => pb::Level::Error as i32,
        "fatal" => pb::Level::Fatal as i32,
        other => return Err(format!("--level {other:?} is not one of trace, debug, info, warn, error, fatal")),
    })
}

fn level_name(l: i32) -> &'static str {
    match pb::Level::try_from(l).unwrap_or(pb::Level::Unspecified) {
        pb::Level::Trace => "TRACE",
        pb::Level::Debug => "DEBUG",
        pb::Level::Info | pb::Level::Unspecified => "INFO",
        pb::Level::Warn => "WARN",
        pb::Level::Error => "ERROR",
        pb::Level::Fatal => "FATAL",
    }
}

/// One log line: `time LEVEL service [request id] error_type: message key=value ...`.
pub fn log_line(r: &pb::LogRecord) -> String {
    let t = crate::notify::payload::rfc3339(r.timestamp_ms);
    let mut s = format!("{t} {:<5} {}", level_name(r.level), r.service);
    if !r.request_id.is_empty() {
        s.push_str(&format!(" [{}]", r.request_id));
    }
    if !r.error_type.is_empty() {
        s.push_str(&format!(" {}:", r.error_type));
    }
    s.push(' ');
    s.push_str(&r.message);
    let fields: std::collections::BTreeMap<&String, &String> = r.fields.iter().collect();
    for (k, v) in fields {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

/// Prints matching log records oldest first; with `follow`, polls once a second for newer ones
/// until interrupted.
pub async fn logs(addr: &str, a: LogArgs) -> Result<String, String> {
    let mut c = connect(addr).await?;
    let min_level = level_of(&a.level)?;
    let limit = if a.limit == 0 { 1000 } else { a.limit };
    let print = |recs: &[pb::LogRecord]| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for r in recs {
            let line = if a.json { render::json(r, "LogRecord").replace('\n', "") } else { log_line(r) };
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    };
    let req = |range: pb::TimeRange| pb::SearchLogsRequest {
        range: Some(range),
        service: a.service.clone(),
        min_level,
        request_id: a.request_id.clone(),
        contains: a.contains.clone(),
        limit,
        page_token: String::new(),
    };
    let mut recs = c.search_logs(req(a.range.clone())).await.map_err(status)?.into_inner().records;
    recs.reverse();
    print(&recs);
    if !a.follow {
        return Ok(String::new());
    }
    // Newest seen: (time, message) of the records at that time, so none prints twice.
    let mut last = recs.last().map_or(now_ms(), |r| r.timestamp_ms);
    let mut seen: Vec<pb::LogRecord> = recs.iter().filter(|r| r.timestamp_ms == last).cloned().collect();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let range =
            pb::TimeRange { start: format!("{}", last as f64 / 1000.0), end: String::new(), last: String::new() };
        let mut recs = c.search_logs(req(range)).await.map_err(status)?.into_inner().records;
        recs.reverse();
        recs.retain(|r| !(r.timestamp_ms == last && seen.contains(r)));
        print(&recs);
        if let Some(newest) = recs.iter().map(|r| r.timestamp_ms).max() {
            if newest > last {
                last = newest;
                seen.clear();
            }
            seen.extend(recs.into_iter().filter(|r| r.timestamp_ms == last));
        }
    }
}
