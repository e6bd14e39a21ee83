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

/// Encodes the batch's WAL record, hashes its series for the index and groups its raw
/// records for the block files here, on the runtime's threads, so the single committer thread does as little per batch as it can; a record larger than `limits.max_batch_bytes`
/// (validation adds a service and a timestamp to every log record and event, so a small
/// message can grow) is refused whole: every item rejected and named, nothing stored.
pub fn prepare(mut batch: Batch, limits: &Limits) -> Batch {
    // The bound is on the protobuf (what memory and a replay hold), compressed or not. The
    // record is encoded before the check, which measures it: a batch refused for its size has
    // been encoded for nothing, one that is kept is measured once.
    let (record, len) = batch.body.encode_measured();
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
