//! Retention: deletes data older than its kind's retention, in the background.
use super::*;

impl Store {
    /// Deletes data older than its kind's retention. Safe beside ingest: it only removes keys
    /// older than every range ingest still writes to (apart from a backfill older than the
    /// retention, which the next run removes).
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport, StoreError> {
        let _maintenance = lock(&self.maintenance);
        let cutoff = |d: Duration| now_ms.saturating_sub(d.as_millis() as i64);
        let mut rep = RetentionReport::default();
        let metrics_cut = cutoff(self.retention.metrics);
        let mut groups: Vec<u64> = read(&self.index).ids().map(|id| id >> chunk_index::GROUP_BITS).collect();
        groups.sort_unstable();
        groups.dedup();
        rep.chunks = self.chunks.expire(&groups, metrics_cut, &self.blocks)?;
        let agg_cut = cutoff(self.retention.inference_stats);
        let groups: Vec<u32> = lock(&self.events).group_list.iter().map(|(g, _)| *g).collect();
        for &g in &groups {
            for item in self.t.aggs.range(keys::agg_key(g, i64::MIN, 0)..keys::agg_key(g, agg_cut - self.bucket_ms, 0))
            {
                self.t.aggs.remove(item?.0)?;
                rep.aggregates += 1;
            }
        }
        rep.aggregates += self.expire_packs(&groups, agg_cut - self.bucket_ms)?;
        rep.events =
            raw::expire(&self.blocks, &self.t.events, &self.event_rids, cutoff(self.retention.inference_events))?;
        rep.logs = raw::expire(&self.blocks, &self.t.logs, &self.log_rids, cutoff(self.retention.logs))?;
        Ok(rep)
    }
}

#[derive(Debug, Default)]
pub struct RetentionReport {
    pub chunks: u64,
    pub aggregates: u64,
    pub events: u64,
    pub logs: u64,
}
