//! The remote-write 1.0 body: a protobuf `prometheus.WriteRequest` (fields from Prometheus'
//! `prompb/remote.proto` and `types.proto`: `timeseries` = 1; a `TimeSeries` has `labels` = 1
//! and `samples` = 2; a `Label` `name` = 1, `value` = 2; a `Sample` `value` = 1 (double),
//! `timestamp` = 2 (int64 ms)), compressed with snappy's block format. Written by hand into
//! one reused buffer: no message structs to build per request.
use super::remote_write::Outgoing;

/// Buffers reused from one request to the next.
#[derive(Default)]
pub struct Wire {
    pb: Vec<u8>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn label_len(name: &str, value: &str) -> usize {
    1 + varint_len(name.len() as u64) + name.len() + 1 + varint_len(value.len() as u64) + value.len()
}

fn sample_len(t: i64) -> usize {
    // value: tag + 8 bytes; timestamp: tag + varint (negative int64s take 10 bytes).
    1 + 8 + 1 + varint_len(t as u64)
}

fn series_len(s: &Outgoing) -> usize {
    let mut n = 0;
    for (k, v) in s.labels.iter() {
        let l = label_len(k, v);
        n += 1 + varint_len(l as u64) + l;
    }
    for &t in &s.ts {
        let l = sample_len(t);
        n += 1 + varint_len(l as u64) + l;
    }
    n
}

/// The protobuf of a WriteRequest holding `series` (labels sorted by name, as the protocol
/// asks; the store keeps them sorted).
pub fn encode_protobuf(out: &mut Vec<u8>, series: &[Outgoing]) {
    out.clear();
    for s in series {
        out.push(0x0a); // timeseries, length-delimited
        varint(out, series_len(s) as u64);
        for (k, v) in s.labels.iter() {
            out.push(0x0a); // labels
            varint(out, label_len(k, v) as u64);
            out.push(0x0a);
            varint(out, k.len() as u64);
            out.extend_from_slice(k.as_bytes());
            out.push(0x12);
            varint(out, v.len() as u64);
            out.extend_from_slice(v.as_bytes());
        }
        for (&t, &v) in s.ts.iter().zip(&s.vals) {
            out.push(0x12); // samples
            varint(out, sample_len(t) as u64);
            out.push(0x09); // value, fixed64
            out.extend_from_slice(&v.to_le_bytes());
            out.push(0x10); // timestamp, varint
            varint(out, t as u64);
        }
    }
}

/// The request body: the protobuf, snappy-compressed.
pub fn encode_write_request(w: &mut Wire, series: &[Outgoing]) -> Vec<u8> {
    encode_protobuf(&mut w.pb, series);
    snap::raw::Encoder::new().compress_vec(&w.pb).unwrap_or_else(|_| {
        // Only an input past snappy's 4 GiB limit fails; a request is far below it.
        unreachable!("snappy refused {} bytes", w.pb.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::sync::Arc;

    #[derive(Clone, PartialEq, Message)]
    struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Label {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        value: String,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Sample {
        #[prost(double, tag = "1")]
        value: f64,
        #[prost(int64, tag = "2")]
        timestamp: i64,
    }

    #[test]
    fn prost_reads_what_is_written() {
        let series = vec![
            Outgoing {
                labels: Arc::new(vec![("__name__".into(), "up".into()), ("host".into(), "é".repeat(100))]),
                ts: vec![-5, 0, 1_700_000_000_000, i64::MAX],
                vals: vec![1.5, f64::NAN, -0.0, f64::INFINITY],
            },
            Outgoing { labels: Arc::new(vec![("__name__".into(), "x".into())]), ts: vec![7], vals: vec![2.0] },
        ];
        let mut w = Wire::default();
        let body = encode_write_request(&mut w, &series);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let got = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(got.timeseries.len(), 2);
        let a = &got.timeseries[0];
        assert_eq!(a.labels[1].value, "é".repeat(100));
        assert_eq!(a.samples.iter().map(|s| s.timestamp).collect::<Vec<_>>(), vec![-5, 0, 1_700_000_000_000, i64::MAX]);
        assert!(a.samples[1].value.is_nan());
        assert_eq!(a.samples[2].value.to_bits(), (-0.0f64).to_bits());
        assert_eq!(got.timeseries[1].samples, vec![Sample { value: 2.0, timestamp: 7 }]);
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}
