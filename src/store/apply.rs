//! Applying a validated batch: de-duplication by (client, kind, seq), then metrics to the
//! memtable, events to the in-memory aggregates, counters; and, once the batch's WAL record is
//! synced, its raw logs and events to the block files ([`Store::persist`]).
use super::*;

pub(super) struct EventsState {
    pub(super) groups: HashMap<[String; 4], u32>,
    pub(super) group_list: Vec<(u32, [String; 4])>,
    pub(super) aggs: index::FxMap<(u32, i64), MemAgg>,
    /// Lsn the in-memory aggregates started accumulating from (their rows' epoch).
    pub(super) epoch: u64,
    /// Hours (group, pack start) with aggregate rows not packed yet ([`super::packs`]).
    pub(super) loose: std::collections::BTreeSet<(u32, i64)>,
}

/// An in-memory aggregate with its encoding, kept until the next event of its bucket: readers
/// and the checkpoint encode a bucket once, not on every query.
#[derive(Default)]
pub(super) struct MemAgg {
    pub(super) agg: tally::Acc,
    enc: Option<sled::IVec>,
}

impl MemAgg {
    pub(super) fn record(&mut self, e: &pb::InferenceEvent) {
        self.enc = None;
        self.agg.record(e);
    }

    pub(super) fn encoded(&mut self) -> sled::IVec {
        self.enc.get_or_insert_with(|| self.agg.encode().into()).clone()
    }
}

impl Store {
    /// Applies one validated batch; `lsn` is the WAL position its record will take.
    pub fn apply(&self, batch: &mut Batch, lsn: u64) -> Result<Applied, StoreError> {
        let rejected_before = batch.rejected;
        let (ack, dup) = self.apply_inner(batch, lsn, false, true)?;
        let record = match (dup, batch.encoded.take()) {
            (true, _) => None,
            (false, Some(enc)) if batch.rejected == rejected_before => Some(enc),
            (false, _) => Some(batch.body.encode()),
        };
        Ok(Applied { record, ack })
    }

    /// `trusted`: a WAL replay (no limits, no dedup skip). `fresh`: the record is newer than the
    /// last checkpoint, so it also feeds aggregates and counters.
    pub(super) fn apply_inner(
        &self,
        batch: &mut Batch,
        lsn: u64,
        trusted: bool,
        fresh: bool,
    ) -> Result<(pb::Ack, bool), StoreError> {
        let kind = batch.body.kind();
        let (client, seq) = batch.body.client_seq();
        let mut acked_seq = seq;
        if !client.is_empty() && seq > 0 {
            let mut d = lock(&self.dedup);
            let seen = if batch.received_ms > 0 { batch.received_ms } else { crate::clock::wall_ms() };
            let slot = d.entry((client.to_string(), kind as u8)).or_insert((0, seen));
            slot.1 = slot.1.max(seen);
            if !trusted && seq <= slot.0 {
                let ack = pb::Ack { seq, acked_seq: slot.0, duplicate: true, ..Default::default() };
                return Ok((ack, true));
            }
            slot.0 = slot.0.max(seq);
            acked_seq = slot.0;
        }
        if batch.item_map.is_empty() {
            let n = match &batch.body {
                Body::Metrics(b) => b.len(),
                Body::Logs(b) => b.records.len(),
                Body::Events(b) => b.events.len(),
            };
            batch.item_map = (0..n as u32).collect();
        }
        let accepted = match kind {
            Kind::Metrics => self.apply_metrics(batch, lsn, trusted, fresh)?,
            Kind::Logs => self.apply_logs(batch, fresh)?,
            Kind::Events => self.apply_events(batch, fresh)?,
        };
        let ack = pb::Ack {
            seq,
            acked_seq,
            accepted,
            rejected_count: batch.rejected,
            rejections: std::mem::take(&mut batch.rejections),
            duplicate: false,
        };
        Ok((ack, false))
    }

    fn apply_logs(&self, batch: &mut Batch, fresh: bool) -> Result<u64, StoreError> {
        let Body::Logs(lb) = &batch.body else { unreachable!("kind checked by caller") };
        let n = lb.records.len() as u64;
        if fresh {
            self.counters.logs.fetch_add(n, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn apply_events(&self, batch: &mut Batch, fresh: bool) -> Result<u64, StoreError> {
        let Body::Events(eb) = &batch.body else { unreachable!("kind checked by caller") };
        let n = eb.events.len() as u64;
        if fresh {
            let mut st = lock(&self.events);
            // A service's events rotate among a few models and endpoints: a recent group is
            // found by comparing its strings, without hashing or copying them (the map's
            // SipHash, string compares and copies were a third of the committer's time at
            // 1 M events/s).
            const RECENT: usize = 8;
            let mut recent: Vec<([&str; 4], u32)> = Vec::with_capacity(RECENT);
            for (k, e) in eb.events.iter().enumerate() {
                let key = [e.service.as_str(), e.model.as_str(), e.model_version.as_str(), e.endpoint.as_str()];
                let hit = recent.iter().find(|(r, _)| r.iter().zip(&key).all(|(a, b)| keys::same(a, b)));
                let gid = match hit {
                    Some(&(_, id)) => id,
                    None => {
                        let g = key.map(str::to_string);
                        let id = match st.groups.get(&g) {
                            Some(&id) => id,
                            None => {
                                let id = st.group_list.iter().map(|(id, _)| id + 1).max().unwrap_or(1);
                                self.t.groups.insert(keys::group_key(id), keys::encode_group(&g))?;
                                st.groups.insert(g.clone(), id);
                                st.group_list.push((id, g));
                                id
                            }
                        };
                        if recent.len() < RECENT {
                            recent.push((key, id));
                        } else {
                            recent[k % RECENT] = (key, id);
                        }
                        id
                    }
                };
                let bucket = e.timestamp_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
                st.aggs.entry((gid, bucket)).or_default().record(e);
            }
            self.counters.events.fetch_add(n, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// Inference aggregates held in memory until the next checkpoint.
    pub fn held_buckets(&self) -> usize {
        lock(&self.events).aggs.len()
    }

    /// Writes a batch's raw records to sled. Called only once the batch's WAL record is synced:
    /// a record that reached sled before its WAL record was durable would, after a crash, be
    /// stored again when the client resends the unacked batch (under a new lsn).
    pub fn persist(&self, batch: &Batch, lsn: u64) -> Result<(), StoreError> {
        let (tree, rids, n) = match &batch.body {
            Body::Metrics(_) => return Ok(()),
            Body::Logs(lb) => (&self.t.logs, &self.log_rids, lb.records.len()),
            Body::Events(eb) => (&self.t.events, &self.event_rids, eb.events.len()),
        };
        match &batch.raw {
            // Grouped by the handler from these very records.
            Some(g) if g.count == n => raw::write(&self.blocks, tree, rids, lsn, g),
            _ => raw::write(&self.blocks, tree, rids, lsn, &batch.body.group_raw().expect("logs or events")),
        }
    }

    /// Highest stored sequence per kind for a client (for Register).
    pub fn last_seqs(&self, client: &str) -> [u64; 3] {
        let d = lock(&self.dedup);
        [Kind::Metrics, Kind::Logs, Kind::Events].map(|k| d.get(&(client.to_string(), k as u8)).map_or(0, |e| e.0))
    }

    /// Forgets the de-duplication state of clients not seen since `before` (ms): a client
    /// that comes back after that starts over (its resends are no longer recognised).
    pub fn expire_clients(&self, before: i64) -> usize {
        let mut d = lock(&self.dedup);
        let n = d.len();
        d.retain(|_, (_, seen)| *seen >= before);
        n - d.len()
    }
}
