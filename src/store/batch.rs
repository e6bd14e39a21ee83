//! The unit of ingest: a validated batch of one kind, its WAL record codec, and what applying
//! it returns (the ack and the record to write).
use crate::pb;
use prost::Message;
use std::borrow::Cow;
use std::collections::HashMap;

/// The three kinds of telemetry; the number is the WAL record tag and the dedup key part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Metrics = 0,
    Logs = 1,
    Events = 2,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Metrics => "metrics",
            Kind::Logs => "logs",
            Kind::Events => "events",
        }
    }
}

pub enum Body {
    Metrics(super::SeriesBatch),
    Logs(pb::LogBatch),
    Events(pb::EventBatch),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Metrics(_) => Kind::Metrics,
            Body::Logs(_) => Kind::Logs,
            Body::Events(_) => Kind::Events,
        }
    }

    pub fn client_seq(&self) -> (&str, u64) {
        match self {
            Body::Metrics(b) => (b.client_id(), b.seq()),
            Body::Logs(b) => (&b.client_id, b.seq),
            Body::Events(b) => (&b.client_id, b.seq),
        }
    }

    /// WAL payload: the kind tag, then the protobuf batch, Snappy-compressed when that is
    /// smaller (the tag then carries [`COMPRESSED`]). Labels repeat from series to series, so
    /// a metric batch shrinks three- to six-fold: fewer bytes for every group's fsync to wait
    /// on. Records written before compression existed have the bare tag and read as before.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_measured().0
    }

    /// [`Body::encode`], and the length of the protobuf (before compression).
    pub fn encode_measured(&self) -> (Vec<u8>, usize) {
        let pb = match self {
            Body::Metrics(b) => b.protobuf(),
            Body::Logs(b) => Cow::Owned(b.encode_to_vec()),
            Body::Events(b) => Cow::Owned(b.encode_to_vec()),
        };
        (Self::compress(&pb, self.kind() as u8), pb.len())
    }

    fn compress(pb: &[u8], tag: u8) -> Vec<u8> {
        let mut out = vec![0u8; 1 + snap::raw::max_compress_len(pb.len())];
        match snap::raw::Encoder::new().compress(pb, &mut out[1..]) {
            Ok(n) if n < pb.len() => {
                out[0] = tag | COMPRESSED;
                out.truncate(1 + n);
                out
            }
            _ => {
                out.clear();
                out.push(tag);
                out.extend_from_slice(pb);
                out
            }
        }
    }

    /// Logs and events: the records grouped and encoded as the block files store them
    /// ([`super::raw::group`]); metrics: none.
    pub fn group_raw(&self) -> Option<super::raw::Grouped> {
        match self {
            Body::Metrics(_) => None,
            Body::Logs(lb) => Some(super::raw::group(&lb.records)),
            Body::Events(eb) => Some(super::raw::group(&eb.events)),
        }
    }

    /// An upper bound of [`Body::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Body::Metrics(b) => b.protobuf_len(),
            Body::Logs(b) => b.encoded_len(),
            Body::Events(b) => b.encoded_len(),
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Body, String> {
        let (&tag, rest) = buf.split_first().ok_or("empty record")?;
        let inflated;
        let rest = if tag & COMPRESSED != 0 {
            let len = snap::raw::decompress_len(rest).map_err(|e| e.to_string())?;
            if len > super::wal::MAX_RECORD {
                return Err(format!(
                    "compressed record claims {len} bytes, over the {} a record may hold",
                    super::wal::MAX_RECORD
                ));
            }
            inflated = snap::raw::Decoder::new().decompress_vec(rest).map_err(|e| e.to_string())?;
            &inflated[..]
        } else {
            rest
        };
        let e = |e: prost::DecodeError| e.to_string();
        Ok(match tag & !COMPRESSED {
            0 => Body::Metrics(super::SeriesBatch::decode(rest).map_err(e)?),
            1 => Body::Logs(pb::LogBatch::decode(rest).map_err(e)?),
            2 => Body::Events(pb::EventBatch::decode(rest).map_err(e)?),
            t => return Err(format!("unknown record kind {t}")),
        })
    }
}

/// The WAL record tag's flag for a Snappy-compressed (raw format) protobuf.
pub(crate) const COMPRESSED: u8 = 0x80;

/// A batch after the handlers' stateless checks: rejected items are already removed.
pub struct Batch {
    pub body: Body,
    pub rejections: Vec<pb::Rejection>,
    pub rejected: u64,
    /// Original batch index of each item left in `body`.
    pub item_map: Vec<u32>,
    /// Metrics: original sample indices of the series (by position in `body`) that lost samples.
    pub sample_maps: HashMap<usize, Vec<u32>>,
    /// When the handler received it (ms since the epoch; 0 on replay).
    pub received_ms: i64,
    /// The WAL record of `body`, encoded by the handler (in parallel, off the committer); used
    /// when the committer rejects nothing more.
    pub encoded: Option<Vec<u8>>,
    /// Metrics: the series' index hashes by position in `body`, made by the handler
    /// ([`Batch::hash_series`]); empty otherwise (the committer hashes them itself).
    pub series_hashes: Vec<(u64, u64)>,
    /// Logs and events: the raw records as the block files store them, made by the handler
    /// ([`Batch::prepare_raw`]); `None`: the committer groups them itself.
    pub raw: Option<super::raw::Grouped>,
    /// [`Body::encoded_len`] when the handler encoded the record (0: not known): what the
    /// record costs a replay, compressed or not.
    pub decoded_len: usize,
}

/// At most this many rejections travel in one ack; `rejected_count` has the total.
pub const MAX_REJECTIONS: usize = 100;

impl Batch {
    pub fn new(body: Body) -> Batch {
        Batch {
            body,
            rejections: Vec::new(),
            rejected: 0,
            item_map: Vec::new(),
            sample_maps: HashMap::new(),
            received_ms: 0,
            encoded: None,
            series_hashes: Vec::new(),
            raw: None,
            decoded_len: 0,
        }
    }

    /// Logs and events: groups and encodes the raw records for the block files, so that the
    /// committer only writes them (called by the handler once the batch is validated).
    pub fn prepare_raw(&mut self) {
        self.raw = self.body.group_raw();
    }

    /// Metrics: hashes each series for the index look-up, so that the committer need not
    /// (called by the handler once the batch is validated; see [`Batch::series_hashes`]).
    pub fn hash_series(&mut self) {
        if let Body::Metrics(mb) = &self.body {
            self.series_hashes = mb.iter().map(|s| super::memtable::hash_series(s, mb.service())).collect();
        }
    }

    pub fn reject(&mut self, item: u32, sample: i32, code: &str, field: String, reason: String) {
        self.rejected += 1;
        if self.received_ms != 0 {
            crate::telemetry::T.reject(self.body.kind() as usize, code, &field);
        }
        if self.rejections.len() < MAX_REJECTIONS {
            self.rejections.push(pb::Rejection { item, sample, code: code.into(), field, reason });
        }
    }
}

/// What the committer needs back from [`Store::apply`].
pub struct Applied {
    pub ack: pb::Ack,
    /// The WAL record to write, or `None` for a duplicate (nothing new to keep).
    pub record: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(series: usize) -> Body {
        let label = |name: &str, value: String| pb::Label { name: name.into(), value };
        Body::Metrics(
            pb::MetricBatch {
                client_id: "c".into(),
                seq: 7,
                service: "svc".into(),
                series: (0..series)
                    .map(|i| pb::Series {
                        name: "model_latency_seconds".into(),
                        labels: vec![label("model", "resnet50".into()), label("replica", format!("r{i}"))],
                        timestamps_ms: vec![1_700_000_000_000 + i as i64],
                        values: vec![i as f64 * 0.5],
                        ..Default::default()
                    })
                    .collect(),
                backfill: false,
            }
            .into(),
        )
    }

    #[test]
    fn records_compress_and_round_trip() {
        let body = metrics(500);
        let rec = body.encode();
        assert_eq!(rec[0], Kind::Metrics as u8 | COMPRESSED);
        assert!(rec.len() * 3 < body.encoded_len(), "{} vs {}", rec.len(), body.encoded_len());
        let Body::Metrics(back) = Body::decode(&rec).unwrap() else { panic!("kind") };
        let Body::Metrics(orig) = body else { unreachable!() };
        assert_eq!(back, orig);
    }

    #[test]
    fn records_without_compression_still_read() {
        // What every record was before compression: the bare tag, then the protobuf.
        let Body::Metrics(orig) = metrics(3) else { unreachable!() };
        let mut rec = vec![Kind::Metrics as u8];
        rec.extend(orig.to_pb().encode_to_vec());
        let Body::Metrics(back) = Body::decode(&rec).unwrap() else { panic!("kind") };
        assert_eq!(back, orig);
        // A tiny body stays bare: compressing would not make it smaller.
        let tiny = Body::Logs(pb::LogBatch::default());
        assert_eq!(tiny.encode(), vec![Kind::Logs as u8]);
    }

    #[test]
    fn damaged_compressed_records_are_errors() {
        let mut rec = metrics(50).encode();
        // Claims 2^35 bytes decompressed: refused before any allocation.
        rec.truncate(1);
        rec.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(Body::decode(&rec).is_err());
        let mut rec = metrics(50).encode();
        let n = rec.len();
        rec.truncate(n / 2);
        assert!(Body::decode(&rec).is_err());
    }
}
