//! The unit of ingest: a validated batch of one kind, its WAL record codec, and what applying
//! it returns (the ack and the record to write).
use crate::pb;
use prost::Message;
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
    Metrics(pb::MetricBatch),
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
            Body::Metrics(b) => (&b.client_id, b.seq),
            Body::Logs(b) => (&b.client_id, b.seq),
            Body::Events(b) => (&b.client_id, b.seq),
        }
    }

    /// WAL payload: the kind tag, then the protobuf batch.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.kind() as u8];
        match self {
            Body::Metrics(b) => b.encode(&mut out),
            Body::Logs(b) => b.encode(&mut out),
            Body::Events(b) => b.encode(&mut out),
        }
        .expect("encoding into a Vec cannot fail");
        out
    }

    /// Length of [`Body::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Body::Metrics(b) => b.encoded_len(),
            Body::Logs(b) => b.encoded_len(),
            Body::Events(b) => b.encoded_len(),
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Body, String> {
        let (&tag, rest) = buf.split_first().ok_or("empty record")?;
        let e = |e: prost::DecodeError| e.to_string();
        Ok(match tag {
            0 => Body::Metrics(pb::MetricBatch::decode(rest).map_err(e)?),
            1 => Body::Logs(pb::LogBatch::decode(rest).map_err(e)?),
            2 => Body::Events(pb::EventBatch::decode(rest).map_err(e)?),
            t => return Err(format!("unknown record kind {t}")),
        })
    }
}

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
