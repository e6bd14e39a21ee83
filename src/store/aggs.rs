//! Inference aggregates: per (service, model, version, endpoint) group and time bucket, HDR
//! histograms of total and stage latencies (microseconds, 2 significant digits, so quantiles are
//! within 1%) plus counts by status and error type and token and byte sums. Aggregates of
//! different buckets, or of the same bucket written by different checkpoints, merge by addition.
use super::keys::{put_string, put_varint, DecodeError, Reader};
use crate::pb;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

pub const STAGES: [&str; 6] =
    ["queue", "preprocess", "inference", "postprocess", "time_to_first_token", "time_per_output_token"];

/// Status names indexed by the proto enum value (unspecified is counted as ok).
pub const STATUS_NAMES: [&str; 5] = ["ok", "ok", "error", "timeout", "rejected"];

const SIGFIG: u8 = 2;

#[derive(Clone)]
pub struct Agg {
    pub count: u64,
    pub by_status: [u64; 5],
    pub by_error: BTreeMap<String, u64>,
    pub latency: Histogram<u64>,
    pub latency_sum_us: u64,
    pub stages: [Option<Histogram<u64>>; 6],
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

/// Records `v`, growing the histogram as needed (`saturating_record` would clamp instead).
fn record(h: &mut Histogram<u64>, v: u64) {
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

fn histogram() -> Histogram<u64> {
    // Auto-resizing: memory follows the largest value seen, not a preset ceiling.
    Histogram::new(SIGFIG).expect("2 significant digits is a valid precision")
}

impl Default for Agg {
    fn default() -> Self {
        Agg {
            count: 0,
            by_status: [0; 5],
            by_error: BTreeMap::new(),
            latency: histogram(),
            latency_sum_us: 0,
            stages: Default::default(),
            prompt_tokens: 0,
            completion_tokens: 0,
            input_bytes: 0,
            output_bytes: 0,
        }
    }
}

pub fn stage_values(s: &pb::Stages) -> [u64; 6] {
    [
        s.queue_us,
        s.preprocess_us,
        s.inference_us,
        s.postprocess_us,
        s.time_to_first_token_us,
        s.time_per_output_token_us,
    ]
}

impl Agg {
    pub fn record(&mut self, e: &pb::InferenceEvent) {
        self.count += 1;
        let st = usize::try_from(e.status).ok().filter(|&s| s < 5).unwrap_or(0);
        self.by_status[st] += 1;
        if !e.error_type.is_empty() {
            *self.by_error.entry(e.error_type.clone()).or_default() += 1;
        }
        record(&mut self.latency, e.latency_us);
        self.latency_sum_us = self.latency_sum_us.saturating_add(e.latency_us);
        if let Some(stages) = &e.stages {
            for (slot, v) in self.stages.iter_mut().zip(stage_values(stages)) {
                if v > 0 {
                    record(slot.get_or_insert_with(histogram), v);
                }
            }
        }
        self.prompt_tokens += u64::from(e.prompt_tokens);
        self.completion_tokens += u64::from(e.completion_tokens);
        self.input_bytes = self.input_bytes.saturating_add(e.input_bytes);
        self.output_bytes = self.output_bytes.saturating_add(e.output_bytes);
    }

    pub fn merge(&mut self, o: &Agg) {
        self.count += o.count;
        for (a, b) in self.by_status.iter_mut().zip(o.by_status) {
            *a += b;
        }
        for (k, v) in &o.by_error {
            *self.by_error.entry(k.clone()).or_default() += v;
        }
        // Auto-resizing histograms of the same precision always merge.
        self.latency.add(&o.latency).expect("auto-resizing histograms merge");
        self.latency_sum_us = self.latency_sum_us.saturating_add(o.latency_sum_us);
        for (a, b) in self.stages.iter_mut().zip(&o.stages) {
            if let Some(b) = b {
                a.get_or_insert_with(histogram).add(b).expect("auto-resizing histograms merge");
            }
        }
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.input_bytes = self.input_bytes.saturating_add(o.input_bytes);
        self.output_bytes = self.output_bytes.saturating_add(o.output_bytes);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        put_varint(&mut out, self.count);
        for s in self.by_status {
            put_varint(&mut out, s);
        }
        put_varint(&mut out, self.by_error.len() as u64);
        for (k, v) in &self.by_error {
            put_string(&mut out, k);
            put_varint(&mut out, *v);
        }
        for v in [self.latency_sum_us, self.prompt_tokens, self.completion_tokens, self.input_bytes, self.output_bytes]
        {
            put_varint(&mut out, v);
        }
        let mut ser = V2Serializer::new();
        let mut hist = |out: &mut Vec<u8>, h: &Histogram<u64>| {
            let mut buf = Vec::new();
            ser.serialize(h, &mut buf).expect("serializing into memory");
            put_varint(out, buf.len() as u64);
            out.extend_from_slice(&buf);
        };
        hist(&mut out, &self.latency);
        let mask = self.stages.iter().enumerate().fold(0u8, |m, (i, s)| if s.is_some() { m | 1 << i } else { m });
        out.push(mask);
        for h in self.stages.iter().flatten() {
            hist(&mut out, h);
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Agg, DecodeError> {
        let mut r = Reader::new(buf, "inference aggregate");
        if r.byte()? != 1 {
            return Err(r.err("unknown version"));
        }
        let mut a = Agg { count: r.varint()?, ..Agg::default() };
        for s in a.by_status.iter_mut() {
            *s = r.varint()?;
        }
        let n = r.varint()?;
        for _ in 0..n {
            let k = r.string()?;
            a.by_error.insert(k, r.varint()?);
        }
        a.latency_sum_us = r.varint()?;
        a.prompt_tokens = r.varint()?;
        a.completion_tokens = r.varint()?;
        a.input_bytes = r.varint()?;
        a.output_bytes = r.varint()?;
        let mut de = Deserializer::new();
        let mut hist = |r: &mut Reader| -> Result<Histogram<u64>, DecodeError> {
            let n = r.varint()? as usize;
            let mut bytes = r.bytes(n)?;
            let mut h: Histogram<u64> = de.deserialize(&mut bytes).map_err(|e| r.err(&format!("histogram: {e:?}")))?;
            // Decoded histograms have a fixed range; merging assumes they grow as needed.
            h.auto(true);
            Ok(h)
        };
        a.latency = hist(&mut r)?;
        let mask = r.byte()?;
        for i in 0..6 {
            if mask & (1 << i) != 0 {
                a.stages[i] = Some(hist(&mut r)?);
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(latency_us: u64, status: i32, err: &str, queue: u64) -> pb::InferenceEvent {
        pb::InferenceEvent {
            latency_us,
            status,
            error_type: err.into(),
            stages: Some(pb::Stages { queue_us: queue, ..Default::default() }),
            prompt_tokens: 3,
            ..Default::default()
        }
    }

    #[test]
    fn record_merge_encode_round_trip() {
        let mut a = Agg::default();
        let mut b = Agg::default();
        for i in 1..=1000u64 {
            a.record(&ev(i * 100, 1, "", 0));
            b.record(&ev(i * 100, if i % 10 == 0 { 2 } else { 1 }, if i % 10 == 0 { "oom" } else { "" }, i));
        }
        a.merge(&b);
        let back = Agg::decode(&a.encode()).unwrap();
        assert_eq!(back.count, 2000);
        assert_eq!(back.by_status[2], 100);
        assert_eq!(back.by_error.get("oom"), Some(&100));
        assert_eq!(back.prompt_tokens, 6000);
        assert_eq!(back.latency.len(), 2000);
        let p95 = back.latency.value_at_quantile(0.95) as f64;
        assert!((p95 - 95_000.0).abs() / 95_000.0 < 0.01, "p95 {p95}");
        assert!(back.stages[0].as_ref().unwrap().len() == 1000);
        assert!(back.stages[1].is_none());
        assert!(Agg::decode(&[1, 2, 3]).is_err());
    }
}
