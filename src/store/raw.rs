//! Raw logs and inference events, stored in groups: the records one WAL record brought for one
//! 10-second bucket form one group, appended to the block files; sled keeps one index entry
//! per group (`(bucket, lsn) → location`) and the request-id index. One sled insert per record
//! capped event ingest near 75k events/s (sled copies a node and faults in pages per insert);
//! per group, the rest of the pipeline runs near 1M/s.
//!
//! A record's identity stays its time key `(ts, lsn, index in batch)`: the request-id index
//! ([`super::rid_index`]) and page tokens use it, and it finds the group `(slot(ts), lsn)`. Writes are idempotent per
//! WAL record: a replay rewrites the same group keys (releasing the old block space).
//! Group layout: `count`, then per record `index | length | bytes` (LEB128 integers).
use super::blocks::Blocks;
use super::keys::{self, put_varint, BlockRef, DecodeError, Reader};
use super::rid_index::RidIndex;
use super::StoreError;
use prost::Message;
use std::collections::{BTreeMap, HashMap};

pub const SLOT_MS: i64 = 10_000;

pub fn slot(ts: i64) -> i64 {
    ts.div_euclid(SLOT_MS) * SLOT_MS
}

/// Writes one WAL record's raw records (ts, request id, encoded record).
pub fn write<'a>(
    blocks: &Blocks,
    main: &sled::Tree,
    index: &RidIndex,
    lsn: u64,
    items: impl Iterator<Item = (i64, &'a String, Vec<u8>)>,
) -> Result<(), StoreError> {
    let mut groups: BTreeMap<i64, (Vec<u8>, u32, i64)> = BTreeMap::new();
    let mut ids = Vec::new();
    for (i, (ts, rid, bytes)) in items.enumerate() {
        let g = groups.entry(slot(ts)).or_insert_with(|| (Vec::new(), 0, i64::MIN));
        put_varint(&mut g.0, i as u64);
        put_varint(&mut g.0, bytes.len() as u64);
        g.0.extend_from_slice(&bytes);
        g.1 += 1;
        g.2 = g.2.max(ts);
        if !rid.is_empty() {
            ids.push((super::rid_index::hash(rid), keys::time_key(ts, lsn, i as u32), ts));
        }
    }
    for (b, (body, count, max_ts)) in groups {
        let mut enc = Vec::with_capacity(body.len() + 5);
        put_varint(&mut enc, u64::from(count));
        enc.extend_from_slice(&body);
        let l = blocks.append(&enc)?;
        let r = BlockRef { file: l.file, offset: l.offset, len: l.len, count, last_ts: max_ts };
        if let Some(prev) = main.insert(keys::raw_group_key(b, lsn), &keys::encode_block_ref(&r)[..])? {
            // A replayed record rewrote its group: the old copy is dead space.
            blocks.release(&keys::decode_block_ref(&prev)?.loc());
        }
    }
    index.add(&ids);
    Ok(())
}

/// A group's records: (index in the group, encoded record).
type Records = Vec<(u32, Vec<u8>)>;

fn read_group(blocks: &Blocks, r: &BlockRef) -> Result<Records, StoreError> {
    let data = blocks.read(&r.loc())?;
    let mut rd = Reader::new(&data, "raw record group");
    let n = rd.varint()?;
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let idx = u32::try_from(rd.varint()?).map_err(|_| rd.err("record index"))?;
        let len = rd.varint()? as usize;
        out.push((idx, rd.bytes(len)?.to_vec()));
    }
    Ok(out)
}

/// The record with index `idx` in a group's bytes, found by walking the length prefixes
/// (a request-id look-up decodes one record, not the group's thousands).
fn record_at(data: &[u8], idx: u32) -> Result<Option<&[u8]>, StoreError> {
    let mut rd = Reader::new(data, "raw record group");
    let n = rd.varint()?;
    for _ in 0..n {
        let i = rd.varint()?;
        let len = rd.varint()? as usize;
        let b = rd.bytes(len)?;
        if i == u64::from(idx) {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

fn decode<M: Message + Default>(b: &[u8]) -> Result<M, StoreError> {
    M::decode(b).map_err(|e| StoreError::Decode(DecodeError { what: "stored record", detail: e.to_string() }))
}

/// Every record with this request id.
pub fn by_request<M: Message + Default>(
    blocks: &Blocks,
    main: &sled::Tree,
    index: &RidIndex,
    request_id: &str,
    rid_of: impl Fn(&M) -> &String,
) -> Result<Vec<M>, StoreError> {
    let mut groups: HashMap<[u8; 16], Option<Vec<u8>>> = HashMap::new();
    let mut out = Vec::new();
    for tk in index.lookup(request_id)? {
        let (ts, lsn, idx) = keys::decode_time_key(&tk)?;
        let gk = keys::raw_group_key(slot(ts), lsn);
        if let std::collections::hash_map::Entry::Vacant(e) = groups.entry(gk) {
            // An entry whose group retention removed is skipped.
            let g = match main.get(gk)? {
                Some(v) => Some(blocks.read(&keys::decode_block_ref(&v)?.loc())?),
                None => None,
            };
            e.insert(g);
        }
        if let Some(Some(data)) = groups.get(&gk) {
            if let Some(b) = record_at(data, idx)? {
                let m: M = decode(b)?;
                // The index matches hashes: keep only the records with this very id.
                if rid_of(&m) == request_id {
                    out.push(m);
                }
            }
        }
    }
    Ok(out)
}

/// Records with `start <= ts <= end`, newest first, strictly before the time key `before`
/// when given; `f` returns false to stop. Records are sorted within each 10-second bucket, so
/// memory holds one bucket at a time.
pub fn scan<M: Message + Default>(
    blocks: &Blocks,
    main: &sled::Tree,
    start: i64,
    end: i64,
    before: Option<[u8; 20]>,
    ts_of: impl Fn(&M) -> i64,
    mut f: impl FnMut(&[u8; 20], M) -> bool,
) -> Result<(), StoreError> {
    let mut end = end;
    if let Some(b) = before {
        end = end.min(keys::decode_time_key(&b)?.0);
    }
    if end < start {
        return Ok(());
    }
    let lo = keys::raw_group_key(slot(start), 0);
    let hi = keys::raw_group_key(slot(end), u64::MAX);
    let mut pending: Vec<([u8; 20], M)> = Vec::new();
    let mut current: Option<i64> = None;
    let flush = |pending: &mut Vec<([u8; 20], M)>, f: &mut dyn FnMut(&[u8; 20], M) -> bool| -> bool {
        pending.sort_by_key(|p| std::cmp::Reverse(p.0));
        for (k, m) in pending.drain(..) {
            if !f(&k, m) {
                return false;
            }
        }
        true
    };
    for item in main.range(lo..=hi).rev() {
        let (k, v) = item?;
        let (b, lsn) = keys::decode_raw_group_key(&k)?;
        if current != Some(b) {
            if !flush(&mut pending, &mut f) {
                return Ok(());
            }
            current = Some(b);
        }
        for (idx, bytes) in read_group(blocks, &keys::decode_block_ref(&v)?)? {
            let m: M = decode(&bytes)?;
            let ts = ts_of(&m);
            let tk = keys::time_key(ts, lsn, idx);
            if ts >= start && ts <= end && before.is_none_or(|b| tk < b) {
                pending.push((tk, m));
            }
        }
    }
    flush(&mut pending, &mut f);
    Ok(())
}

/// Deletes groups whose newest record is older than `cutoff`, and the index runs that only
/// point before it.
pub fn expire(blocks: &Blocks, main: &sled::Tree, index: &RidIndex, cutoff: i64) -> Result<u64, StoreError> {
    let mut n = 0;
    for item in main.range(..keys::raw_group_key(slot(cutoff), 0)) {
        let (k, v) = item?;
        let r = keys::decode_block_ref(&v)?;
        if r.last_ts >= cutoff {
            continue;
        }
        n += u64::from(r.count);
        main.remove(&k)?;
        blocks.release(&r.loc());
    }
    index.expire(cutoff)?;
    Ok(n)
}
