//! Ingest, gRPC-free: [`validate`] checks batches against the limits (in parallel on the
//! runtime's threads) and encodes their WAL records; [`registry`] tracks who is pushing. The
//! validated batches go to the store's committer ([`crate::store::commit`]), which makes them
//! durable and acks them.
pub mod limiter;
pub mod registry;
pub mod validate;

pub use registry::Registry;
pub use validate::Validator;

use crate::config::Limits;
use crate::store::{Batch, Body};

/// Encodes the batch's WAL record (a metric batch that validation left as it came from a
/// stream is its message: [`crate::store::SeriesBatch::protobuf`]), hashes its series for the
/// index and groups its raw records for the block files here, on the runtime's threads, so the
/// single committer thread does as little per batch as it can; a record larger than
/// `limits.max_batch_bytes` (validation adds a service and a timestamp to every log record and
/// event, so a small message can grow) is refused whole: every item rejected and named,
/// nothing stored.
pub fn prepare(mut batch: Batch, limits: &Limits) -> Batch {
    // The bound is on the protobuf (what memory and a replay hold), compressed or not. The
    // record is encoded before the check, which measures it: a batch refused for its size has
    // been encoded for nothing, one that is kept is measured once.
    let (record, len) = batch.body.encode_measured();
    if let Body::Metrics(b) = &mut batch.body {
        b.drop_wire();
    }
    if len <= limits.max_batch_bytes {
        batch.encoded = Some(record);
        batch.decoded_len = len;
        batch.hash_series();
        batch.prepare_raw();
        return batch;
    }
    let reason = format!(
        "the batch's stored form of {len} bytes exceeds limits.max_batch_bytes = {}: send smaller batches",
        limits.max_batch_bytes
    );
    let items = std::mem::take(&mut batch.item_map);
    match &mut batch.body {
        Body::Metrics(b) => b.clear_series(),
        Body::Logs(b) => b.records.clear(),
        Body::Events(b) => b.events.clear(),
    }
    batch.sample_maps.clear();
    for item in items {
        batch.reject(item, -1, "RESOURCE_EXHAUSTED", "batch".into(), reason.clone());
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use crate::store::SeriesBatch;
    use prost::Message;

    /// The protobuf in a WAL record (the tag's compression flag read).
    fn protobuf_of(record: &[u8]) -> Vec<u8> {
        if record[0] & crate::store::batch::COMPRESSED != 0 {
            snap::raw::Decoder::new().decompress_vec(&record[1..]).unwrap()
        } else {
            record[1..].to_vec()
        }
    }

    #[test]
    fn a_metric_batch_left_as_it_came_is_stored_as_its_message() {
        let now = 1_800_000_000_000;
        let v = Validator::new(Limits::default());
        let series = |ts: i64, value: f64| pb::Series {
            name: "m".into(),
            labels: vec![pb::Label { name: "a".into(), value: "1".into() }],
            kind: 1,
            timestamps_ms: vec![now - 1, ts],
            values: vec![1.0, value],
        };
        let batch = |ts, value| pb::MetricBatch {
            client_id: "c".into(),
            seq: 7,
            service: "svc".into(),
            series: vec![series(now - 2, 2.0), series(ts, value)],
            backfill: false,
        };
        // Another encoder's message: a field this daemon does not know, after the batch.
        let sent = |b: &pb::MetricBatch| {
            let mut wire = b.encode_to_vec();
            wire.extend([0x78, 0x2a]);
            wire
        };
        let prepared = |wire: &[u8]| {
            let mut sb = SeriesBatch::decode(wire).unwrap();
            sb.keep_wire(bytes::Bytes::copy_from_slice(wire));
            prepare(v.metrics(sb, now), &Limits::default())
        };

        let good = batch(now, 3.0);
        let b = prepared(&sent(&good));
        let record = b.encoded.as_deref().unwrap();
        assert_eq!(protobuf_of(record), sent(&good), "unchanged: the message itself");
        let Body::Metrics(back) = Body::decode(record).unwrap() else { panic!("kind") };
        let Body::Metrics(kept) = &b.body else { panic!("kind") };
        assert_eq!(&back, kept);
        assert_eq!(kept.protobuf_len(), good.encoded_len(), "the message is let go once the record is made");

        // A timestamp of 0 (now) and a value refused each change the batch: the record is the
        // batch as changed, encoded again.
        for (ts, value, want) in [
            (0, 3.0, batch(now, 3.0)),
            (
                now,
                f64::NAN,
                pb::MetricBatch {
                    series: vec![
                        series(now - 2, 2.0),
                        pb::Series { timestamps_ms: vec![now - 1], values: vec![1.0], ..series(0, 0.0) },
                    ],
                    ..batch(0, 0.0)
                },
            ),
        ] {
            let b = prepared(&sent(&batch(ts, value)));
            let record = b.encoded.as_deref().unwrap();
            assert_eq!(protobuf_of(record), want.encode_to_vec(), "ts {ts}, value {value}");
        }
    }
}
