//! OTLP in: OpenTelemetry metrics, logs and GenAI spans turned into the daemon's own batches,
//! one per resource (its `service.name` is the batch's service), which then go through the
//! same validation, limits and commit as native ingest ([`crate::api::otlp`]).
//!
//! - Metrics, as Prometheus' OTLP translation names them: the name with characters outside
//!   `[a-zA-Z0-9_:]` made `_`; monotonic cumulative sums are counters with `_total` added;
//!   histograms become `_bucket{le}`, `_sum` and `_count`; summaries `{quantile}`, `_sum` and
//!   `_count`. Data point attributes are labels (names sanitized the same way), and
//!   `service.instance.id` becomes `instance`. Delta temporality and exponential histograms are
//!   refused (counted in the partial success, with the reason).
//! - Logs: severity number to level, the body as the message, attributes as fields
//!   (`request_id`, and `error.type` or `exception.type` as the error type), the scope's name
//!   as the logger, the trace id as a `trace_id` field.
//! - Spans that carry `gen_ai.request.model` (or `gen_ai.response.model`) become inference
//!   events: latency from start to end, an error status as an error (`error.type` as its
//!   type), tokens from `gen_ai.usage.input_tokens`/`output_tokens` (or the older
//!   `prompt_tokens`/`completion_tokens`), time to first token from
//!   `gen_ai.server.time_to_first_token` (seconds), `gen_ai.operation.name` as the endpoint,
//!   `gen_ai.response.id` as the request id. Other spans are skipped (said in the answer).
use crate::pb;
use crate::pb::opentelemetry::proto::collector::{logs::v1 as logs, metrics::v1 as metrics, trace::v1 as trace};
use crate::pb::opentelemetry::proto::common::v1::{any_value, AnyValue, KeyValue, Resource};
use std::collections::{BTreeMap, HashMap};

/// What a request turned into: one batch per resource, and what could not be taken.
pub struct Converted<B> {
    pub batches: Vec<B>,
    /// Data points, records or spans refused before validation.
    pub refused: u64,
    /// Why (one line per reason, with a count), or what was skipped.
    pub notes: BTreeMap<String, u64>,
}

impl<B> Default for Converted<B> {
    fn default() -> Self {
        Converted { batches: Vec::new(), refused: 0, notes: BTreeMap::new() }
    }
}

impl<B> Converted<B> {
    fn refuse(&mut self, n: usize, why: &str) {
        self.refused += n as u64;
        *self.notes.entry(why.to_string()).or_default() += n as u64;
    }
}

/// An attribute value as text (arrays and maps as JSON-like text).
pub fn text(v: &Option<AnyValue>) -> String {
    let Some(v) = v.as_ref().and_then(|v| v.value.as_ref()) else { return String::new() };
    match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        any_value::Value::BytesValue(b) => hex(b),
        any_value::Value::ArrayValue(a) => {
            let parts: Vec<String> = a.values.iter().map(|x| text(&Some(x.clone()))).collect();
            format!("[{}]", parts.join(","))
        }
        any_value::Value::KvlistValue(kv) => {
            let parts: Vec<String> = kv.values.iter().map(|x| format!("{}={}", x.key, text(&x.value))).collect();
            format!("{{{}}}", parts.join(","))
        }
    }
}

fn number(v: &Option<AnyValue>) -> Option<f64> {
    match v.as_ref()?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i as f64),
        any_value::Value::DoubleValue(d) => Some(*d),
        any_value::Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `[a-zA-Z0-9_:]`, not starting with a digit (a metric name; `colons` false: a label name).
pub fn sanitize(s: &str, colons: bool) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':') { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn find<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a Option<AnyValue>> {
    kvs.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

/// The resource's service name (OpenTelemetry's default when it has none) and instance id.
fn service_of(r: &Option<Resource>) -> (String, String) {
    let attrs = r.as_ref().map_or(&[][..], |r| &r.attributes[..]);
    let service = find(attrs, "service.name").map(text).filter(|s| !s.is_empty());
    let instance = find(attrs, "service.instance.id").map(text).unwrap_or_default();
    (service.unwrap_or_else(|| "unknown_service".into()), instance)
}

fn ms(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

/// Prometheus' text for an `le` or `quantile` bound.
fn bound(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        let mut s = String::new();
        crate::promql::write_value(&mut s, v);
        s
    }
}

/// Series of one resource, gathered by name and labels so that a series' points (from
/// several data points or metrics) land in one `Series`, in time order.
/// (name, labels) → (kind, points).
type SeriesKey = (String, Vec<(String, String)>);

#[derive(Default)]
struct Gather {
    series: BTreeMap<SeriesKey, (i32, Vec<(i64, f64)>)>,
}

impl Gather {
    fn add(
        &mut self,
        name: &str,
        labels: &[(String, String)],
        extra: Option<(&str, String)>,
        counter: bool,
        t: i64,
        v: f64,
    ) {
        let mut ls = labels.to_vec();
        if let Some((k, val)) = extra {
            ls.push((k.to_string(), val));
            ls.sort();
        }
        let kind = if counter { pb::MetricKind::Counter } else { pb::MetricKind::Gauge } as i32;
        self.series.entry((name.to_string(), ls)).or_insert_with(|| (kind, Vec::new())).1.push((t, v));
    }

    fn into_series(self) -> Vec<pb::Series> {
        self.series
            .into_iter()
            .map(|((name, labels), (kind, mut pts))| {
                pts.sort_by_key(|p| p.0);
                pb::Series {
                    name,
                    labels: labels.into_iter().map(|(name, value)| pb::Label { name, value }).collect(),
                    kind,
                    timestamps_ms: pts.iter().map(|p| p.0).collect(),
                    values: pts.iter().map(|p| p.1).collect(),
                }
            })
            .collect()
    }
}

fn point_labels(attrs: &[KeyValue], instance: &str) -> Vec<(String, String)> {
    let mut ls: BTreeMap<String, String> =
        attrs.iter().map(|kv| (sanitize(&kv.key, false), text(&kv.value))).filter(|(_, v)| !v.is_empty()).collect();
    if !instance.is_empty() {
        ls.entry("instance".into()).or_insert_with(|| instance.to_string());
    }
    ls.into_iter().collect()
}

const DELTA: i32 = metrics::AggregationTemporality::Delta as i32;

pub fn metrics(req: metrics::ExportMetricsServiceRequest) -> Converted<pb::MetricBatch> {
    use metrics::metric::Data;
    let mut out = Converted::default();
    for rm in req.resource_metrics {
        let (service, instance) = service_of(&rm.resource);
        let mut g = Gather::default();
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                let base = sanitize(&m.name, true);
                match m.data {
                    None => {}
                    Some(Data::Gauge(x)) => {
                        for dp in x.data_points {
                            let ls = point_labels(&dp.attributes, &instance);
                            g.add(&base, &ls, None, false, ms(dp.time_unix_nano), value(&dp));
                        }
                    }
                    Some(Data::Sum(x)) if x.aggregation_temporality == DELTA => out.refuse(
                        x.data_points.len(),
                        "data points with delta temporality are refused: set the exporter's temporality preference to cumulative",
                    ),
                    Some(Data::Sum(x)) => {
                        let name = if x.is_monotonic && !base.ends_with("_total") { format!("{base}_total") } else { base };
                        for dp in x.data_points {
                            let ls = point_labels(&dp.attributes, &instance);
                            g.add(&name, &ls, None, x.is_monotonic, ms(dp.time_unix_nano), value(&dp));
                        }
                    }
                    Some(Data::Histogram(x)) if x.aggregation_temporality == DELTA => out.refuse(
                        x.data_points.len(),
                        "data points with delta temporality are refused: set the exporter's temporality preference to cumulative",
                    ),
                    Some(Data::Histogram(x)) => {
                        for dp in x.data_points {
                            let ls = point_labels(&dp.attributes, &instance);
                            let t = ms(dp.time_unix_nano);
                            let mut cum = 0u64;
                            for (i, c) in dp.bucket_counts.iter().enumerate() {
                                cum += c;
                                let le = dp.explicit_bounds.get(i).copied().unwrap_or(f64::INFINITY);
                                g.add(&format!("{base}_bucket"), &ls, Some(("le", bound(le))), true, t, cum as f64);
                            }
                            if dp.bucket_counts.is_empty() {
                                g.add(&format!("{base}_bucket"), &ls, Some(("le", "+Inf".into())), true, t, dp.count as f64);
                            }
                            g.add(&format!("{base}_count"), &ls, None, true, t, dp.count as f64);
                            if let Some(sum) = dp.sum {
                                g.add(&format!("{base}_sum"), &ls, None, true, t, sum);
                            }
                        }
                    }
                    Some(Data::ExponentialHistogram(x)) => out.refuse(
                        x.data_points.len(),
                        "exponential histograms are refused (native histograms are not stored): use explicit bucket boundaries",
                    ),
                    Some(Data::Summary(x)) => {
                        for dp in x.data_points {
                            let ls = point_labels(&dp.attributes, &instance);
                            let t = ms(dp.time_unix_nano);
                            for q in &dp.quantile_values {
                                g.add(&base, &ls, Some(("quantile", bound(q.quantile))), false, t, q.value);
                            }
                            g.add(&format!("{base}_sum"), &ls, None, true, t, dp.sum);
                            g.add(&format!("{base}_count"), &ls, None, true, t, dp.count as f64);
                        }
                    }
                }
            }
        }
        let series = g.into_series();
        if !series.is_empty() {
            out.batches.push(pb::MetricBatch { service, series, ..Default::default() });
        }
    }
    out
}

fn value(dp: &metrics::NumberDataPoint) -> f64 {
    match dp.value {
        Some(metrics::number_data_point::Value::AsDouble(v)) => v,
        Some(metrics::number_data_point::Value::AsInt(v)) => v as f64,
        None => f64::NAN,
    }
}

/// OpenTelemetry's severity number (1–24, four per level) as the daemon's level, else from
/// the severity text.
fn level(number: i32, text: &str) -> pb::Level {
    match number {
        1..=4 => pb::Level::Trace,
        5..=8 => pb::Level::Debug,
        9..=12 => pb::Level::Info,
        13..=16 => pb::Level::Warn,
        17..=20 => pb::Level::Error,
        21..=24 => pb::Level::Fatal,
        _ => match text.to_ascii_lowercase().as_str() {
            "trace" => pb::Level::Trace,
            "debug" => pb::Level::Debug,
            "info" | "information" => pb::Level::Info,
            "warn" | "warning" => pb::Level::Warn,
            "error" => pb::Level::Error,
            "fatal" | "critical" => pb::Level::Fatal,
            _ => pb::Level::Unspecified,
        },
    }
}

pub fn logs(req: logs::ExportLogsServiceRequest) -> Converted<pb::LogBatch> {
    let mut out = Converted::default();
    for rl in req.resource_logs {
        let (service, _) = service_of(&rl.resource);
        let mut records = Vec::new();
        for sl in rl.scope_logs {
            let logger = sl.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            for r in sl.log_records {
                let t = if r.time_unix_nano > 0 { r.time_unix_nano } else { r.observed_time_unix_nano };
                let mut fields: HashMap<String, String> = HashMap::new();
                let (mut request_id, mut error_type) = (String::new(), String::new());
                for kv in &r.attributes {
                    let v = text(&kv.value);
                    match kv.key.as_str() {
                        "request_id" | "request.id" => request_id = v,
                        "error.type" | "exception.type" if error_type.is_empty() => error_type = v,
                        _ => {
                            fields.insert(kv.key.clone(), v);
                        }
                    }
                }
                if !r.trace_id.is_empty() {
                    fields.insert("trace_id".into(), hex(&r.trace_id));
                }
                records.push(pb::LogRecord {
                    timestamp_ms: ms(t),
                    level: level(r.severity_number, &r.severity_text) as i32,
                    message: text(&r.body),
                    service: String::new(),
                    request_id,
                    error_type,
                    fields,
                    logger: logger.clone(),
                });
            }
        }
        if !records.is_empty() {
            out.batches.push(pb::LogBatch { service, records, ..Default::default() });
        }
    }
    out
}

pub fn traces(req: trace::ExportTraceServiceRequest) -> Converted<pb::EventBatch> {
    let mut out = Converted::default();
    for rs in req.resource_spans {
        let (service, _) = service_of(&rs.resource);
        let mut events = Vec::new();
        for ss in rs.scope_spans {
            for s in ss.spans {
                let a = &s.attributes;
                let get = |k: &str| find(a, k).map(text).filter(|v| !v.is_empty());
                let Some(model) = get("gen_ai.request.model").or_else(|| get("gen_ai.response.model")) else {
                    *out.notes.entry("spans without gen_ai.request.model were skipped (only GenAI spans become inference events)".into()).or_default() += 1;
                    continue;
                };
                let tokens = |new: &str, old: &str| {
                    find(a, new)
                        .or_else(|| find(a, old))
                        .and_then(number)
                        .map_or(0, |v| v.clamp(0.0, u32::MAX as f64) as u32)
                };
                let failed = s.status.as_ref().is_some_and(|st| st.code == 2);
                let error_type = if failed {
                    get("error.type")
                        .or_else(|| s.status.as_ref().map(|st| st.message.clone()).filter(|m| !m.is_empty()))
                        .unwrap_or_else(|| "error".into())
                } else {
                    String::new()
                };
                let ttft = find(a, "gen_ai.server.time_to_first_token").and_then(number);
                events.push(pb::InferenceEvent {
                    timestamp_ms: ms(s.end_time_unix_nano),
                    model,
                    endpoint: get("gen_ai.operation.name").unwrap_or_else(|| s.name.clone()),
                    request_id: get("gen_ai.response.id").unwrap_or_default(),
                    status: if failed { pb::Status::Error } else { pb::Status::Ok } as i32,
                    error_type,
                    latency_us: s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) / 1000,
                    stages: ttft.map(|secs| pb::Stages {
                        time_to_first_token_us: (secs.max(0.0) * 1e6) as u64,
                        ..Default::default()
                    }),
                    prompt_tokens: tokens("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
                    completion_tokens: tokens("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
                    ..Default::default()
                });
            }
        }
        if !events.is_empty() {
            out.batches.push(pb::EventBatch { service, events, ..Default::default() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::opentelemetry::proto::common::v1::KeyValue;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }) }
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", service), kv("service.instance.id", "i-1")],
            dropped_attributes_count: 0,
        })
    }

    #[test]
    fn histograms_sums_and_refusals() {
        use metrics::metric::Data;
        let dp = |t: u64, v: f64| metrics::NumberDataPoint {
            attributes: vec![kv("http.route", "/v1")],
            time_unix_nano: t,
            value: Some(metrics::number_data_point::Value::AsDouble(v)),
            ..Default::default()
        };
        let req = metrics::ExportMetricsServiceRequest {
            resource_metrics: vec![metrics::ResourceMetrics {
                resource: resource("ocr"),
                scope_metrics: vec![metrics::ScopeMetrics {
                    scope: None,
                    metrics: vec![
                        metrics::Metric {
                            name: "http.requests".into(),
                            data: Some(Data::Sum(metrics::Sum {
                                data_points: vec![dp(2_000_000, 5.0), dp(1_000_000, 3.0)],
                                aggregation_temporality: 2,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        },
                        metrics::Metric {
                            name: "latency".into(),
                            data: Some(Data::Histogram(metrics::Histogram {
                                data_points: vec![metrics::HistogramDataPoint {
                                    time_unix_nano: 1_000_000,
                                    count: 6,
                                    sum: Some(1.5),
                                    bucket_counts: vec![1, 2, 3],
                                    explicit_bounds: vec![0.1, 0.5],
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                            })),
                            ..Default::default()
                        },
                        metrics::Metric {
                            name: "d".into(),
                            data: Some(Data::Sum(metrics::Sum {
                                data_points: vec![dp(1, 1.0)],
                                aggregation_temporality: 1,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        },
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let c = metrics(req);
        assert_eq!(c.refused, 1);
        assert!(c.notes.keys().next().unwrap().contains("delta"));
        let b = &c.batches[0];
        assert_eq!(b.service, "ocr");
        let find = |name: &str, le: Option<&str>| {
            b.series
                .iter()
                .find(|s| {
                    s.name == name && le.is_none_or(|le| s.labels.iter().any(|l| l.name == "le" && l.value == le))
                })
                .unwrap_or_else(|| panic!("{name} {le:?}"))
        };
        let req = find("http_requests_total", None);
        assert_eq!((req.timestamps_ms.clone(), req.values.clone()), (vec![1, 2], vec![3.0, 5.0]));
        assert!(req.labels.iter().any(|l| l.name == "http_route" && l.value == "/v1"));
        assert!(req.labels.iter().any(|l| l.name == "instance" && l.value == "i-1"));
        assert_eq!(find("latency_bucket", Some("0.5")).values, vec![3.0]);
        assert_eq!(find("latency_bucket", Some("+Inf")).values, vec![6.0]);
        assert_eq!(find("latency_sum", None).values, vec![1.5]);
    }
}
