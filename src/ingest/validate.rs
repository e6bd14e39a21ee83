//! Stateless checks of incoming batches against [`Limits`], run by the handlers in parallel on
//! the runtime: each rejected item is removed and named (field, limit, value); the valid items
//! beside it go on to the committer.
use crate::config::Limits;
use crate::pb;
use crate::store::{Batch, Body, SeriesBatch, SeriesRef};
use std::time::{Duration, UNIX_EPOCH};

/// Latest instant humantime formats (9999-12-31T23:59:59.999Z); later ones panic there.
const MAX_FORMATTED_MS: i64 = 253_402_300_799_999;

/// A timestamp for a message, whatever its value: never panics.
pub fn fmt_ts(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(_) if ms > MAX_FORMATTED_MS => "after the year 9999; was it sent in micro- or nanoseconds?".into(),
        Ok(ms) => humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
        Err(_) => "before 1970".into(),
    }
}

const INVALID: &str = "INVALID_ARGUMENT";
const EXHAUSTED: &str = "RESOURCE_EXHAUSTED";

/// Stateless checks of incoming batches.
#[derive(Clone)]
pub struct Validator {
    limits: Limits,
}

/// Prometheus' metric name syntax (also what recording rules may record as).
pub fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// Prometheus' label name syntax.
pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Problem found with one item: (code, field, reason).
type Problem = (&'static str, String, String);

/// An enum field's value must be one the proto defines (prost keeps unknown numbers as they
/// came).
fn check_enum<E: TryFrom<i32>>(what: &str, v: i32) -> Option<(&'static str, String)> {
    E::try_from(v).is_err().then(|| (INVALID, format!("{what} {v} is not a known value")))
}

/// Keeps the items `check(index, item, batch)` accepts, in place, and records each kept item's
/// index in the request in `batch.item_map`. Until 2026-12-06 each kept item was moved into a
/// new vector: a copy of the whole batch (about 1.6 MB for 5,000 events) and its page faults,
/// the costliest step of the event handlers after string comparison (`perf`).
fn keep_valid<T>(items: &mut Vec<T>, batch: &mut Batch, mut check: impl FnMut(usize, &mut T, &mut Batch) -> bool) {
    let mut i = 0;
    items.retain_mut(|x| {
        let keep = check(i, x, batch);
        if keep {
            batch.item_map.push(i as u32);
        }
        i += 1;
        keep
    });
}

impl Validator {
    pub fn new(limits: Limits) -> Validator {
        Validator { limits }
    }

    fn window(&self, backfill: bool, now: i64) -> (i64, i64, &'static str, Duration) {
        let (age, key) = if backfill {
            (self.limits.backfill_max_age, "limits.backfill_max_age")
        } else {
            (self.limits.max_age, "limits.max_age")
        };
        (now - age.as_millis() as i64, now + self.limits.max_future.as_millis() as i64, key, age)
    }

    /// Checks run on every item and sample: they return the problem without the item's
    /// path, which is formatted only when there is one (formatting it for every sample cost
    /// more than the rest of validation).
    fn check_ts(&self, ts: i64, win: (i64, i64, &'static str, Duration)) -> Option<(&'static str, String)> {
        let (lo, hi, key, age) = win;
        if ts < lo {
            let hint = if key == "limits.max_age" {
                " (mark the batch `backfill` to allow up to limits.backfill_max_age)"
            } else {
                ""
            };
            let d = humantime::format_duration(age);
            return Some((INVALID, format!("timestamp {ts} ({}) is older than {key} = {d}{hint}", fmt_ts(ts))));
        }
        if ts > hi {
            let d = humantime::format_duration(self.limits.max_future);
            return Some((
                INVALID,
                format!("timestamp {ts} ({}) is ahead of now by more than limits.max_future = {d}", fmt_ts(ts)),
            ));
        }
        None
    }

    fn check_name(&self, what: &str, v: &str, required: bool) -> Option<(&'static str, String)> {
        if required && v.is_empty() {
            return Some((INVALID, format!("{what} is required")));
        }
        if v.len() > self.limits.max_name_len {
            let max = self.limits.max_name_len;
            return Some((INVALID, format!("{what} of {} bytes exceeds limits.max_name_len = {max}", v.len())));
        }
        None
    }

    /// Label-like pairs (series labels, event labels, log fields); the problem's path is
    /// relative to the list (`""` or `"[i].name"`).
    fn check_pairs<'a>(
        &self,
        pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
        extra: usize,
        strict_names: bool,
    ) -> Option<Problem> {
        let lim = &self.limits;
        let n = pairs.len() + extra;
        if n > lim.max_labels {
            return Some((
                EXHAUSTED,
                String::new(),
                format!("{n} labels exceed limits.max_labels = {}", lim.max_labels),
            ));
        }
        for (i, (k, v)) in pairs.enumerate() {
            let name = || format!("[{i}].name");
            if k.is_empty() || (strict_names && !valid_label_name(k)) {
                return Some((
                    INVALID,
                    name(),
                    format!("label name {k:?} is not a valid name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                ));
            }
            if strict_names && k.starts_with("__") {
                return Some((INVALID, name(), format!("label name {k:?} is reserved (starts with __)")));
            }
            if k.len() > lim.max_label_name_len {
                let max = lim.max_label_name_len;
                return Some((
                    INVALID,
                    name(),
                    format!("label name of {} bytes exceeds limits.max_label_name_len = {max}", k.len()),
                ));
            }
            if v.len() > lim.max_label_value_len {
                let max = lim.max_label_value_len;
                let reason =
                    format!("label {k:?} value of {} bytes exceeds limits.max_label_value_len = {max}", v.len());
                return Some((INVALID, format!("[{i}].value"), reason));
            }
        }
        None
    }

    /// Latencies above `limits.max_latency` are a unit mistake or garbage, and one of them
    /// would swamp every mean it enters.
    fn check_latencies(&self, e: &pb::InferenceEvent) -> Option<Problem> {
        let max = self.limits.max_latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let st = e.stages.unwrap_or_default();
        let fields = [
            ("latency_us", e.latency_us),
            ("stages.queue_us", st.queue_us),
            ("stages.preprocess_us", st.preprocess_us),
            ("stages.inference_us", st.inference_us),
            ("stages.postprocess_us", st.postprocess_us),
            ("stages.time_to_first_token_us", st.time_to_first_token_us),
            ("stages.time_per_output_token_us", st.time_per_output_token_us),
        ];
        fields.into_iter().find(|(_, v)| *v > max).map(|(f, v)| {
            let lim = humantime::format_duration(self.limits.max_latency);
            (INVALID, format!(".{f}"), format!("{f} of {v} µs exceeds limits.max_latency = {lim}"))
        })
    }

    fn check_request_id(&self, rid: &str) -> Option<(&'static str, String)> {
        let max = self.limits.max_label_value_len;
        (rid.len() > max)
            .then(|| (INVALID, format!("request id of {} bytes exceeds limits.max_label_value_len = {max}", rid.len())))
    }

    fn check_series(&self, s: SeriesRef<'_>, service: &str) -> Option<Problem> {
        let at = |suffix: &str, p: Option<(&'static str, String)>| p.map(|(c, r)| (c, suffix.to_string(), r));
        let name = s.name();
        at(".name", self.check_name("metric name", name, true))
            .or_else(|| {
                (!valid_metric_name(name)).then(|| {
                    (INVALID, ".name".into(), format!("metric name {name:?} is not valid ([a-zA-Z_:][a-zA-Z0-9_:]*)"))
                })
            })
            .or_else(|| {
                let extra = usize::from(!service.is_empty() && !s.labels().any(|(k, _)| k == "service"));
                self.check_pairs(s.labels(), extra, true).map(|(c, p, r)| (c, format!(".labels{p}"), r))
            })
            .or_else(|| {
                // Duplicate names: quadratic, but label lists are short and this allocates nothing.
                let names = s.labels().map(|(k, _)| k);
                names
                    .clone()
                    .enumerate()
                    .find_map(|(i, n)| names.clone().take(i).any(|x| x == n).then_some(n))
                    .map(|n| (INVALID, ".labels".into(), format!("label {n:?} appears twice")))
            })
            .or_else(|| at(".kind", check_enum::<pb::MetricKind>("kind", s.kind())))
            .or_else(|| {
                (s.timestamps().len() != s.values().len()).then(|| {
                    let (v, t) = (s.values().len(), s.timestamps().len());
                    (INVALID, ".values".into(), format!("{v} values for {t} timestamps: they must pair up"))
                })
            })
    }

    pub fn metrics(&self, b: impl Into<SeriesBatch>, now: i64) -> Batch {
        let mut mb: SeriesBatch = b.into();
        let win = self.window(mb.backfill(), now);
        let mut batch = Batch::new(Body::Metrics(SeriesBatch::default()));
        batch.received_ms = now;
        let mut keep = Vec::with_capacity(mb.len());
        for i in 0..mb.len() {
            if let Some((code, suffix, reason)) = self.check_series(mb.get(i), mb.service()) {
                batch.reject(i as u32, -1, code, format!("series[{i}]{suffix}"), reason);
                keep.push(false);
                continue;
            }
            // A timestamp of 0 means "now", as in logs and events (handy with grpcurl). The
            // batch is changed only where it must be: one left as it came is stored as its
            // message ([`SeriesBatch::protobuf`]).
            if mb.get(i).timestamps().contains(&0) {
                mb.samples_mut(i).0.iter_mut().filter(|t| **t == 0).for_each(|t| *t = now);
            }
            // Per-sample checks; bad samples are dropped, the rest of the series kept.
            let (lo, hi) = (win.0, win.1);
            let finite_only = !self.limits.allow_non_finite;
            let s = mb.get(i);
            let clean = s.timestamps().iter().all(|&t| t >= lo && t <= hi)
                && (!finite_only || s.values().iter().all(|v| v.is_finite()));
            if !clean {
                let (ts, vals) = mb.samples_mut(i);
                let mut map = Vec::with_capacity(ts.len());
                let mut w = 0;
                for j in 0..ts.len() {
                    let (t, v) = (ts[j], vals[j]);
                    if let Some((code, reason)) = self.check_ts(t, win) {
                        batch.reject(i as u32, j as i32, code, format!("series[{i}].timestamps_ms[{j}]"), reason);
                        continue;
                    }
                    if finite_only && !v.is_finite() {
                        let reason = format!("value {v} is not finite (limits.allow_non_finite = false)");
                        batch.reject(i as u32, j as i32, INVALID, format!("series[{i}].values[{j}]"), reason);
                        continue;
                    }
                    ts[w] = t;
                    vals[w] = v;
                    map.push(j as u32);
                    w += 1;
                }
                mb.truncate_samples(i, w);
                if w == 0 {
                    keep.push(false);
                    continue;
                }
                // Keyed by the series' place among those kept: the ones kept so far.
                batch.sample_maps.insert(batch.item_map.len(), map);
            }
            batch.item_map.push(i as u32);
            keep.push(true);
        }
        mb.retain(|i| keep[i]);
        batch.body = Body::Metrics(mb);
        batch
    }

    pub fn logs(&self, mut b: pb::LogBatch, now: i64) -> Batch {
        let win = self.window(b.backfill, now);
        let mut records = std::mem::take(&mut b.records);
        let service = b.service.clone();
        let mut batch = Batch::new(Body::Logs(b));
        batch.received_ms = now;
        keep_valid(&mut records, &mut batch, |i, r, batch| {
            if r.timestamp_ms == 0 {
                r.timestamp_ms = now;
            }
            if r.service.is_empty() {
                r.service = service.clone();
            }
            if r.level == pb::Level::Unspecified as i32 {
                r.level = pb::Level::Info as i32;
            }
            let level = check_enum::<pb::Level>("level", r.level);
            let lim = &self.limits;
            let at = |suffix: &str, p: Option<(&'static str, String)>| p.map(|(c, r)| (c, suffix.to_string(), r));
            let problem = at(".timestamp_ms", self.check_ts(r.timestamp_ms, win))
                .or_else(|| at(".level", level))
                .or_else(|| {
                    let (n, max) = (r.message.len(), lim.max_log_message_len);
                    at(
                        ".message",
                        (n > max).then(|| {
                            (INVALID, format!("message of {n} bytes exceeds limits.max_log_message_len = {max}"))
                        }),
                    )
                })
                .or_else(|| at(".service", self.check_name("service", &r.service, false)))
                .or_else(|| at(".error_type", self.check_name("error type", &r.error_type, false)))
                .or_else(|| at(".logger", self.check_name("logger", &r.logger, false)))
                .or_else(|| at(".request_id", self.check_request_id(&r.request_id)))
                .or_else(|| {
                    let pairs = r.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                    self.check_pairs(pairs, 0, false).map(|(c, p, r)| (c, format!(".fields{p}"), r))
                });
            if let Some((code, suffix, reason)) = problem {
                batch.reject(i as u32, -1, code, format!("records[{i}]{suffix}"), reason);
                return false;
            }
            true
        });
        if let Body::Logs(lb) = &mut batch.body {
            lb.records = records;
        }
        batch
    }

    pub fn events(&self, mut b: pb::EventBatch, now: i64) -> Batch {
        let win = self.window(b.backfill, now);
        let mut events = std::mem::take(&mut b.events);
        let service = b.service.clone();
        let mut batch = Batch::new(Body::Events(b));
        batch.received_ms = now;
        keep_valid(&mut events, &mut batch, |i, e, batch| {
            if e.timestamp_ms == 0 {
                e.timestamp_ms = now;
            }
            if e.service.is_empty() {
                e.service = service.clone();
            }
            if e.status == pb::Status::Unspecified as i32 {
                e.status = pb::Status::Ok as i32;
            }
            let at = |suffix: &str, p: Option<(&'static str, String)>| p.map(|(c, r)| (c, suffix.to_string(), r));
            let problem = at(".timestamp_ms", self.check_ts(e.timestamp_ms, win))
                .or_else(|| at(".model", self.check_name("model", &e.model, true)))
                .or_else(|| at(".model_version", self.check_name("model version", &e.model_version, false)))
                .or_else(|| at(".endpoint", self.check_name("endpoint", &e.endpoint, false)))
                .or_else(|| at(".service", self.check_name("service", &e.service, false)))
                .or_else(|| at(".error_type", self.check_name("error type", &e.error_type, false)))
                .or_else(|| at(".request_id", self.check_request_id(&e.request_id)))
                .or_else(|| at(".status", check_enum::<pb::Status>("status", e.status)))
                .or_else(|| self.check_latencies(e))
                .or_else(|| {
                    let pairs = e.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                    self.check_pairs(pairs, 0, true).map(|(c, p, r)| (c, format!(".labels{p}"), r))
                });
            if let Some((code, suffix, reason)) = problem {
                batch.reject(i as u32, -1, code, format!("events[{i}]{suffix}"), reason);
                return false;
            }
            true
        });
        if let Body::Events(eb) = &mut batch.body {
            eb.events = events;
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, labels: &[(&str, &str)], ts: Vec<i64>, vals: Vec<f64>) -> pb::Series {
        pb::Series {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| pb::Label { name: k.to_string(), value: v.to_string() }).collect(),
            kind: 1,
            timestamps_ms: ts,
            values: vals,
        }
    }

    #[test]
    fn bad_samples_are_dropped_and_named_good_ones_kept() {
        let v = Validator::new(Limits::default());
        let now = 1_800_000_000_000;
        let b = pb::MetricBatch {
            service: "svc".into(),
            series: vec![
                series("ok_metric", &[("a", "1")], vec![now - 10, now - 5, now], vec![1.0, f64::NAN, 3.0]),
                series("bad name", &[], vec![now], vec![1.0]),
                series("old", &[], vec![now - 7_200_000, now], vec![1.0, 2.0]),
                series("clean", &[], vec![now], vec![4.0]),
            ],
            ..Default::default()
        };
        let batch = v.metrics(b, now);
        let Body::Metrics(mb) = &batch.body else { panic!() };
        let mb = mb.to_pb();
        assert_eq!(mb.series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["ok_metric", "old", "clean"]);
        assert_eq!(mb.series[0].values, vec![1.0, 3.0]);
        assert_eq!(mb.series[1].values, vec![2.0]);
        assert_eq!(batch.item_map, vec![0, 2, 3]);
        // By place among the series kept.
        assert_eq!(batch.sample_maps.get(&0), Some(&vec![0, 2]));
        assert_eq!(batch.sample_maps.get(&1), Some(&vec![1]));
        assert_eq!(batch.sample_maps.len(), 2);
        assert_eq!(batch.rejected, 3);
        let r = &batch.rejections;
        assert_eq!(r[0].field, "series[0].values[1]");
        assert!(r[0].reason.contains("allow_non_finite"), "{}", r[0].reason);
        assert_eq!(r[1].field, "series[1].name");
        assert_eq!(r[2].field, "series[2].timestamps_ms[0]");
        assert!(r[2].reason.contains("limits.max_age = 1h"), "{}", r[2].reason);
    }

    #[test]
    fn events_and_logs_keep_the_valid_items_in_order_with_their_defaults() {
        let v = Validator::new(Limits::default());
        let now = 1_800_000_000_000;
        let ev = |model: &str, rid: &str| pb::InferenceEvent {
            model: model.into(),
            request_id: rid.into(),
            latency_us: 10,
            ..Default::default()
        };
        let b = pb::EventBatch {
            service: "svc".into(),
            events: vec![ev("a", "r0"), ev("", "r1"), ev("b", "r2"), ev("c", &"x".repeat(10_000))],
            ..Default::default()
        };
        let batch = v.events(b, now);
        let Body::Events(eb) = &batch.body else { panic!() };
        assert_eq!(eb.events.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>(), ["r0", "r2"]);
        assert!(eb.events.iter().all(|e| e.service == "svc" && e.timestamp_ms == now && e.status == 1));
        assert_eq!(eb.service, "svc");
        assert_eq!(batch.item_map, vec![0, 2]);
        let fields: Vec<&str> = batch.rejections.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(fields, ["events[1].model", "events[3].request_id"]);
        let log = |msg: &str, level: i32| pb::LogRecord { message: msg.into(), level, ..Default::default() };
        let b =
            pb::LogBatch { service: "svc".into(), records: vec![log("bad", 99), log("ok", 0)], ..Default::default() };
        let batch = v.logs(b, now);
        let Body::Logs(lb) = &batch.body else { panic!() };
        assert_eq!(lb.records.len(), 1);
        assert_eq!((lb.records[0].message.as_str(), lb.records[0].level), ("ok", pb::Level::Info as i32));
        assert_eq!(batch.item_map, vec![1]);
        assert_eq!(batch.rejections[0].field, "records[0].level");
    }

    #[test]
    fn label_limits_name_field_limit_and_value() {
        let lim = Limits { max_labels: 2, max_label_value_len: 4, ..Limits::default() };
        let v = Validator::new(lim);
        let now = 1_800_000_000_000;
        let b = pb::MetricBatch {
            service: "svc".into(),
            series: vec![
                series("m", &[("a", "1"), ("b", "2")], vec![now], vec![1.0]),
                series("m", &[("a", "12345")], vec![now], vec![1.0]),
                series("m", &[("a", "1")], vec![now], vec![1.0]),
            ],
            ..Default::default()
        };
        let batch = v.metrics(b, now);
        assert_eq!(batch.item_map, vec![2]);
        assert_eq!(batch.rejections[0].code, "RESOURCE_EXHAUSTED");
        assert!(
            batch.rejections[0].reason.contains("3 labels exceed limits.max_labels = 2"),
            "{}",
            batch.rejections[0].reason
        );
        assert_eq!(batch.rejections[1].field, "series[1].labels[0].value");
        assert!(batch.rejections[1].reason.contains("5 bytes exceeds limits.max_label_value_len = 4"));
    }
}
