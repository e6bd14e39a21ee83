//! The HTTP listener: Prometheus' query API under `/api/v1/` (the shapes and error format of
//! Prometheus' `web/api/v1`), so that Grafana's Prometheus data source, curl and scripts query
//! the daemon as they would query Prometheus. GET and POST (form-encoded) alike. Every query
//! runs on the query threads with the `[query]` budget, like the gRPC ones.
//!
//! For people: the status page at `/` and the reports as pages at `/report/service`,
//! `/report/errors`, `/report/gpu` and `/report/capacity` (parameters as the CLI's flags:
//! `service`, `model`, `version`, `label`, `slow`, `gpu`, `slo`, `since` or `start`/`end`).
use crate::promql::{self, derived, Answer, Labels, PromqlError, NAME};
use crate::query::eval::{default_step, parse_time};
use crate::query::{Budget, QueryError};
use crate::state::Ctx;
use crate::store::Store;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/query_exemplars", get(exemplars).post(exemplars))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/metrics", get(metrics))
        .route("/federate", get(federate).post(federate))
        // Liveness and readiness probes, open without credentials (as Prometheus' are).
        .route("/-/healthy", get(|| async { "modelwatch is healthy.\n" }))
        .route("/-/ready", get(|| async { "modelwatch is ready.\n" }))
        .route("/", get(status_page))
        .route("/report/{kind}", get(report_page))
        .fallback(not_found)
        .with_state(ctx)
}

/// Prometheus' error body and status: `bad_data` (400) for what the caller sent,
/// `execution` (422) for a query that cannot run or passes a limit, `timeout` (503).
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.1, "error": self.2});
        (self.0, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_data", msg.into())
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid { .. } => bad(e.to_string()),
            QueryError::TooCostly(m) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
            QueryError::Timeout(m) => ApiError(StatusCode::SERVICE_UNAVAILABLE, "timeout", m),
            QueryError::Store(s) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", s.to_string()),
            QueryError::Failed(_) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl From<PromqlError> for ApiError {
    fn from(e: PromqlError) -> Self {
        match e {
            PromqlError::Parse(m) => bad(format!("invalid parameter \"query\": {m}")),
            PromqlError::Exec(m) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
            PromqlError::Query(q) => q.into(),
        }
    }
}

fn ok(data: Value) -> Response {
    let body = json!({"status": "success", "data": data});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The request's parameters: the query string, then a form body (POST), repeated keys kept.
fn params(q: Option<String>, body: &Bytes) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in [q.unwrap_or_default().as_bytes(), body.as_ref()] {
        if let Ok(v) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(part) {
            out.extend(v);
        }
    }
    out
}

fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn time_param(p: &[(String, String)], k: &'static str, default: i64) -> Result<i64, ApiError> {
    match param(p, k) {
        None | Some("") => Ok(default),
        Some(v) => parse_time(k, v, default).map_err(|e| bad(format!("invalid parameter \"{k}\": {e}"))),
    }
}

/// A step as Prometheus takes it: a float of seconds or a duration (`15s`, `1m`).
fn step_param(v: &str) -> Result<i64, ApiError> {
    if let Ok(s) = v.parse::<f64>() {
        if s.is_finite() && s > 0.0 {
            return Ok((s * 1000.0).round().max(1.0) as i64);
        }
    }
    match promql::script::parse_duration(v) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad(format!(
            "invalid parameter \"step\": {v:?}: zero or negative query resolution step widths are not accepted. Try a positive integer"
        ))),
    }
}

fn secs(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn metric(ls: &Labels) -> Value {
    Value::Object(ls.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

/// `[t, "v"]` as Prometheus writes a point (seconds with millisecond decimals).
fn push_point(out: &mut String, t: i64, v: f64) {
    use std::fmt::Write;
    if t % 1000 == 0 {
        let _ = write!(out, "[{},\"", t / 1000);
    } else {
        let _ = write!(out, "[{}.{:03},\"", t.div_euclid(1000), t.rem_euclid(1000));
    }
    crate::promql::write_value(out, v);
    out.push_str("\"]");
}

/// A successful answer's whole body, written directly (a range answer has one entry per point;
/// building a JSON tree for it first costs more than the query).
fn answer_json(a: &Answer) -> String {
    let points = match a {
        Answer::Matrix(m) => m.iter().map(|s| s.ts.len()).sum(),
        Answer::Vector { series, .. } => series.len(),
        _ => 1,
    };
    let mut out = String::with_capacity(64 + points * 24);
    out.push_str("{\"status\":\"success\",\"data\":");
    out.push_str(&format!("{{\"resultType\":\"{}\",\"result\":", a.result_type()));
    match a {
        Answer::Scalar { t, v } => push_point(&mut out, *t, *v),
        Answer::String { t, s } => {
            out.push_str(&format!("[{},{}]", secs(*t), Value::String(s.clone())));
        }
        Answer::Vector { t, series } => {
            out.push('[');
            for (k, (ls, v)) in series.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                out.push_str(&metric(ls).to_string());
                out.push_str(",\"value\":");
                push_point(&mut out, *t, *v);
                out.push('}');
            }
            out.push(']');
        }
        Answer::Matrix(m) => {
            out.push('[');
            for (k, s) in m.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                out.push_str(&metric(&s.labels).to_string());
                out.push_str(",\"values\":[");
                for (j, (t, v)) in s.ts.iter().zip(&s.vals).enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    push_point(&mut out, *t, *v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push_str("}}");
    out
}

fn json_body(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn on_pool<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&Store, &mut Budget) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = ctx.store.clone();
    let mut budget = Budget::new(&ctx.query);
    match ctx.query_pool.run(crate::telemetry::HTTP, move || f(&store, &mut budget)).await {
        Ok(r) => r,
        Err(e) => Err(e.into()),
    }
}

async fn query(State(ctx): State<Arc<Ctx>>, RawQuery(q): RawQuery, body: Bytes) -> Result<Response, ApiError> {
    let p = params(q, &body);
    let expr = param(&p, "query").ok_or_else(|| bad("invalid parameter \"query\": the query is empty"))?.to_string();
    let t = time_param(&p, "time", ctx.clock.now_ms())?;
    let opts = ctx.query.promql();
    let a = on_pool(&ctx, move |s, b| Ok(crate::query::eval::instant(s, &expr, t, &opts, b)?)).await?;
    Ok(json_body(answer_json(&a)))
}

async fn query_range(State(ctx): State<Arc<Ctx>>, RawQuery(q): RawQuery, body: Bytes) -> Result<Response, ApiError> {
    let p = params(q, &body);
    let expr = param(&p, "query").ok_or_else(|| bad("invalid parameter \"query\": the query is empty"))?.to_string();
    let now = ctx.clock.now_ms();
    let start = time_param(&p, "start", now - 3_600_000)?;
    let end = time_param(&p, "end", now)?;
    if end < start {
        return Err(bad("invalid parameter \"end\": end timestamp must not be before start time"));
    }
    let step = match param(&p, "step") {
        Some(v) if !v.is_empty() => step_param(v)?,
        _ => default_step(start, end),
    };
    let opts = ctx.query.promql();
    let a = on_pool(&ctx, move |s, b| Ok(crate::query::eval::range(s, &expr, (start, end, step), &opts, b)?)).await?;
    Ok(json_body(answer_json(&a)))
}

/// The label sets of the series `match[]` selects (all series without one), metric series
/// from the index and derived series over the last hour of the range.
fn matched_series(
    store: &Store,
    p: &[(String, String)],
    start: i64,
    end: i64,
    budget: &mut Budget,
) -> Result<Vec<Labels>, ApiError> {
    let selectors: Vec<&str> = p.iter().filter(|(k, _)| k == "match[]").map(|(_, v)| v.as_str()).collect();
    let mut sets: Vec<Vec<promql_parser::label::Matcher>> = Vec::new();
    for sel in &selectors {
        match promql::parse(sel)? {
            promql_parser::parser::Expr::VectorSelector(vs) => sets.extend(promql::eval::selector_matchers(&vs)),
            _ => return Err(bad(format!("invalid parameter \"match[]\": {sel:?} is not a series selector"))),
        }
    }
    if sets.is_empty() {
        sets.push(Vec::new());
    }
    let mut out: BTreeSet<Labels> = BTreeSet::new();
    for ms in &sets {
        let store_ms = promql::source::convert_matchers(ms)?;
        for m in store.select(&store_ms) {
            let mut ls = m.labels;
            let at = ls.partition_point(|(k, _)| k.as_str() < NAME);
            ls.insert(at, (NAME.to_string(), m.name));
            out.insert(ls);
        }
        let from = start.max(end - 3_600_000);
        for s in derived::select(store, ms, from, end, budget)? {
            out.insert(s.labels);
        }
        budget.series(out.len())?;
    }
    Ok(out.into_iter().collect())
}

fn range_params(ctx: &Ctx, p: &[(String, String)]) -> Result<(i64, i64), ApiError> {
    let now = ctx.clock.now_ms();
    Ok((time_param(p, "start", i64::MIN / 4)?, time_param(p, "end", now)?))
}

async fn series(State(ctx): State<Arc<Ctx>>, RawQuery(q): RawQuery, body: Bytes) -> Result<Response, ApiError> {
    let p = params(q, &body);
    if !p.iter().any(|(k, _)| k == "match[]") {
        return Err(bad("no match[] parameter provided"));
    }
    let (start, end) = range_params(&ctx, &p)?;
    let found = on_pool(&ctx, move |s, b| matched_series(s, &p, start, end, b)).await?;
    Ok(ok(Value::Array(found.iter().map(metric).collect())))
}

async fn labels(State(ctx): State<Arc<Ctx>>, RawQuery(q): RawQuery, body: Bytes) -> Result<Response, ApiError> {
    let p = params(q, &body);
    let (start, end) = range_params(&ctx, &p)?;
    let found = on_pool(&ctx, move |s, b| matched_series(s, &p, start, end, b)).await?;
    let names: BTreeSet<&str> = found.iter().flat_map(|ls| ls.iter().map(|(k, _)| k.as_str())).collect();
    Ok(ok(json!(names)))
}

async fn label_values(
    State(ctx): State<Arc<Ctx>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = params(q, &Bytes::new());
    let (start, end) = range_params(&ctx, &p)?;
    let found = on_pool(&ctx, move |s, b| matched_series(s, &p, start, end, b)).await?;
    let values: BTreeSet<&str> = found.iter().filter_map(|ls| promql::label(ls, &name)).collect();
    Ok(ok(json!(values)))
}

async fn metadata(State(ctx): State<Arc<Ctx>>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = params(q, &Bytes::new());
    let only = param(&p, "metric").map(str::to_string);
    let md = on_pool(&ctx, move |s, _| {
        let mut md: BTreeMap<String, &'static str> = BTreeMap::new();
        for m in s.select(&[]) {
            let kind = if m.kind == crate::pb::MetricKind::Counter as i32 { "counter" } else { "gauge" };
            md.insert(m.name, kind);
        }
        for n in derived::names() {
            let kind = if n.ends_with("_bucket") || n.ends_with("_count") || n.ends_with("_sum") {
                "histogram"
            } else {
                "counter"
            };
            let base = n.trim_end_matches("_bucket").trim_end_matches("_count").trim_end_matches("_sum");
            md.insert(if kind == "histogram" { base.to_string() } else { n.clone() }, kind);
        }
        Ok(md)
    })
    .await?;
    let data: serde_json::Map<String, Value> = md
        .into_iter()
        .filter(|(n, _)| only.as_ref().is_none_or(|o| o == n))
        .map(|(n, kind)| (n, json!([{"type": kind, "help": "", "unit": ""}])))
        .collect();
    Ok(ok(Value::Object(data)))
}

/// Prometheus' `/federate`: the newest sample of each series `match[]` selects.
async fn federate(State(ctx): State<Arc<Ctx>>, RawQuery(q): RawQuery, body: Bytes) -> Result<Response, ApiError> {
    let p = params(q, &body);
    let selectors: Vec<String> = p.iter().filter(|(k, _)| k == "match[]").map(|(_, v)| v.clone()).collect();
    if selectors.is_empty() {
        return Err(bad("no match[] parameter provided: /federate?match[]={job=\"x\"} selects what to serve"));
    }
    let now = ctx.clock.now_ms();
    let lookback = ctx.query.lookback_delta.as_millis() as i64;
    let external = ctx.external_labels.clone();
    let text =
        on_pool(&ctx, move |s, b| Ok(crate::export::federate::federate(s, &selectors, now, lookback, &external, b)?))
            .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

async fn exemplars() -> Response {
    // No exemplars are stored; Grafana asks anyway.
    ok(json!([]))
}

async fn buildinfo() -> Response {
    ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "modelwatch"
    }))
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{method} {}: no such endpoint (the Prometheus API is under /api/v1/)", uri.path()),
    )
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn page_error(e: PromqlError) -> Response {
    let code = match &e {
        PromqlError::Query(QueryError::Invalid { .. }) | PromqlError::Parse(_) => StatusCode::BAD_REQUEST,
        PromqlError::Query(QueryError::Timeout(_)) => StatusCode::SERVICE_UNAVAILABLE,
        PromqlError::Query(QueryError::Failed(_) | QueryError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    html(
        code,
        crate::report::render::page(
            "modelwatch: error",
            &format!("<p class=\"bad\">{}</p>", crate::report::render::esc(&e.to_string())),
        ),
    )
}

/// The daemon's own metrics in the Prometheus text format ([`crate::telemetry`]).
async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    let Ok(scrape) = tokio::task::spawn_blocking(move || crate::sample::own::scrape(&ctx)).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the scrape task failed").into_response();
    };
    let body = crate::telemetry::render(&scrape);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn status_page(State(ctx): State<Arc<Ctx>>) -> Response {
    let alerts: Vec<crate::report::status::FiringAlert> = ctx
        .alerts
        .alerts()
        .into_iter()
        .filter(|a| a.alert.state == crate::alert::eval::State::Firing)
        .map(|a| crate::report::status::FiringAlert {
            name: a.rule.clone(),
            labels: a
                .alert
                .labels
                .iter()
                .filter(|(k, _)| k != "alertname")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            since_ms: a.alert.fired_at.unwrap_or(a.alert.active_at),
            summary: a
                .alert
                .annotations
                .iter()
                .find(|(k, _)| k == "summary")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        })
        .collect();
    match ctx.report(move |env, b| crate::report::status::status_page(env, &alerts, b)).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => page_error(e),
    }
}

async fn report_page(State(ctx): State<Arc<Ctx>>, Path(kind): Path<String>, RawQuery(q): RawQuery) -> Response {
    use crate::pb;
    use crate::report::render;
    let p = params(q, &Bytes::new());
    let get = |k: &str| param(&p, k).unwrap_or("").to_string();
    let range = Some(crate::cli::report::range(
        param(&p, "since").map(str::to_string),
        param(&p, "start").map(str::to_string),
        param(&p, "end").map(str::to_string),
        "24h",
    ));
    let instances = ctx.instances();
    let r = match kind.as_str() {
        "service" => {
            let req = pb::ServiceReportRequest {
                service: get("service"),
                model: get("model"),
                version: get("version"),
                range,
                slow_threshold: get("slow"),
                label: get("label"),
                step: get("step"),
                top_errors: 0,
            };
            let what = crate::cli::report::subject(&req.service, &req.model, &req.version);
            ctx.report(move |env, b| {
                crate::report::service::service_report(env, &req, b).map(|r| render::service_html(&r, &what))
            })
            .await
        }
        "errors" => {
            let req = pb::ErrorReportRequest { range, service: get("service"), model: get("model"), examples: 0 };
            ctx.report(move |env, b| crate::report::errors::error_report(env, &req, b).map(|r| render::errors_html(&r)))
                .await
        }
        "gpu" => {
            let req = pb::GpuReportRequest { range, gpu: get("gpu") };
            ctx.report(move |env, b| {
                crate::report::gpu::gpu_report(env.store, &req, env.now, b)
                    .map(|r| render::gpu_html(&r))
                    .map_err(Into::into)
            })
            .await
        }
        "capacity" => {
            let req = pb::CapacityReportRequest { range, service: get("service"), slo_p95: get("slo"), days: 0 };
            ctx.report(move |env, b| {
                crate::report::capacity::capacity_report(env, &req, &instances, b).map(|r| render::capacity_html(&r))
            })
            .await
        }
        other => {
            return html(
                StatusCode::NOT_FOUND,
                render::page(
                    "modelwatch: not found",
                    &format!("<p>no report {:?}: service, errors, gpu or capacity</p>", render::esc(other)),
                ),
            )
        }
    };
    match r {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => page_error(e),
    }
}
