//! Reads: series selection, samples (chunks plus the head), aggregates, raw logs and events.
use super::*;

impl Store {
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub fn series_count(&self) -> usize {
        read(&self.index).len()
    }

    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesMeta> {
        let ix = read(&self.index);
        ix.select(matchers).into_iter().filter_map(|id| ix.get(id)).collect()
    }

    /// Each series' newest sample's timestamp (in its head, else in its last chunk), for the
    /// series that have one: what an exporter compares its cursors with.
    pub fn last_sample_times(&self) -> Vec<(u64, i64)> {
        let st = lock(&self.metrics);
        let mut out: Vec<(u64, i64)> = st.persisted.iter().map(|(&id, &t)| (id, t)).collect();
        for (id, h) in st.heads.iter() {
            if let Some(t) = h.samples.last_ts() {
                if st.persisted.get(id).is_none_or(|&p| t > p) {
                    out.push((*id, t));
                }
            }
        }
        out.sort_unstable();
        // A series with both a head and a chunk is listed twice; keep the later (the head).
        out.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 = a.1.max(b.1);
                true
            } else {
                false
            }
        });
        out
    }

    /// How many samples of `id` are newer than `after`: exact for the head, whole chunks for
    /// the stored part (a chunk that straddles `after` counts whole). For lag figures.
    pub fn samples_after(&self, id: u64, after: i64) -> Result<u64, StoreError> {
        let (head, _, boundary) = self.head_snapshot(id, after.saturating_add(1), i64::MAX);
        let mut n = head.len() as u64;
        self.each_chunk(id, after.saturating_add(1), i64::MAX, boundary, |e| {
            n += u64::from(e.r.count);
            Ok(())
        })?;
        Ok(n)
    }

    /// One series' name and labels.
    pub fn series_meta(&self, id: u64) -> Option<SeriesMeta> {
        read(&self.index).get(id)
    }

    /// Samples of one series with `start <= ts <= end`, in time order.
    pub fn read_samples(&self, id: u64, start: i64, end: i64) -> Result<(Vec<i64>, Vec<f64>), StoreError> {
        let (head_ts, head_vals, boundary) = self.head_snapshot(id, start, end);
        // The chunks' references first, so that the columns are allocated once.
        let mut refs = Vec::new();
        self.each_chunk(id, start, end, boundary, |e| {
            refs.push(e.r);
            Ok(())
        })?;
        let n = refs.iter().map(|r| r.count as usize).sum::<usize>() + head_ts.len();
        let (mut ts, mut vals) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for r in &refs {
            self.decode_chunk(r, start, end, boundary, &mut ts, &mut vals)?;
        }
        ts.extend(head_ts);
        vals.extend(head_vals);
        Ok((ts, vals))
    }

    /// One series' samples with `start <= ts <= end` as [`Piece`]s in time order: each stored
    /// chunk that lies wholly in the range and has a summary by that summary, unread; the
    /// rest as samples.
    pub fn read_pieces(&self, id: u64, start: i64, end: i64) -> Result<Vec<Piece>, StoreError> {
        // A head wholly in the range is read by its summary, as a chunk would be; one lock
        // snapshots it (or its samples in the range) with the persisted boundary.
        let (head_summary, head_ts, head_vals, boundary) = {
            let st = lock(&self.metrics);
            let boundary = st.persisted.get(&id).copied().unwrap_or(i64::MIN);
            match st.heads.get(&id) {
                Some(h) => match (h.samples.first_ts(), h.samples.last_ts()) {
                    (Some(first_ts), Some(last_ts)) if first_ts >= start && last_ts <= end => {
                        let summary = h.samples.summary();
                        let piece = Piece::Summary { first_ts, last_ts, samples: h.samples.len() as u32, summary };
                        (Some(piece), Vec::new(), Vec::new(), boundary)
                    }
                    _ => {
                        let (ts, vals) = h.samples.window(start, end);
                        (None, ts, vals, boundary)
                    }
                },
                None => (None, Vec::new(), Vec::new(), boundary),
            }
        };
        let mut out = Vec::new();
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        self.each_chunk(id, start, end, boundary, |e| {
            let (r, first_ts) = (e.r, e.first_ts);
            match e.summary {
                Some(summary) if first_ts >= start && r.last_ts <= end && r.last_ts <= boundary => {
                    if !ts.is_empty() {
                        out.push(Piece::Samples(std::mem::take(&mut ts), std::mem::take(&mut vals)));
                    }
                    out.push(Piece::Summary { first_ts, last_ts: r.last_ts, samples: r.count, summary });
                }
                _ => self.decode_chunk(&r, start, end, boundary, &mut ts, &mut vals)?,
            }
            Ok(())
        })?;
        ts.extend(head_ts);
        vals.extend(head_vals);
        if !ts.is_empty() {
            out.push(Piece::Samples(ts, vals));
        }
        out.extend(head_summary);
        Ok(out)
    }

    /// The head's samples in the range and the persisted boundary, snapshot together: chunk
    /// samples past the boundary (cut after the snapshot) are ignored, so a concurrent cut
    /// neither hides nor doubles samples.
    fn head_snapshot(&self, id: u64, start: i64, end: i64) -> (Vec<i64>, Vec<f64>, i64) {
        let st = lock(&self.metrics);
        let boundary = st.persisted.get(&id).copied().unwrap_or(i64::MIN);
        match st.heads.get(&id) {
            Some(h) => {
                let (ts, vals) = h.samples.window(start, end);
                (ts, vals, boundary)
            }
            None => (Vec::new(), Vec::new(), boundary),
        }
    }

    /// Calls `f` with the index entry of each stored chunk of `id` that can hold samples in
    /// `[start, min(end, boundary)]`, in time order.
    fn each_chunk(
        &self,
        id: u64,
        start: i64,
        end: i64,
        boundary: i64,
        mut f: impl FnMut(&chunk_index::Entry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if boundary < start {
            return Ok(());
        }
        for e in self.chunks.series(id, start, end.min(boundary))? {
            f(&e)?;
        }
        Ok(())
    }

    /// Appends a chunk's samples in `[start, end]` up to `boundary` to `ts` and `vals`.
    fn decode_chunk(
        &self,
        r: &keys::BlockRef,
        start: i64,
        end: i64,
        boundary: i64,
        ts: &mut Vec<i64>,
        vals: &mut Vec<f64>,
    ) -> Result<(), StoreError> {
        let data = self.blocks.read(&r.loc())?;
        let base = ts.len();
        let h = chunk::decode_into(&data, ts, vals)?;
        if h.first_ts >= start && h.last_ts <= end && h.last_ts <= boundary {
            return Ok(());
        }
        // Trim to the range and the boundary, keeping ts and vals aligned.
        let mut w = base;
        for r in base..ts.len() {
            let t = ts[r];
            if t >= start && t <= end && t <= boundary {
                ts[w] = t;
                vals[w] = vals[r];
                w += 1;
            }
        }
        ts.truncate(w);
        vals.truncate(w);
        Ok(())
    }

    /// Groups (service, model, version, endpoint) that pass `keep`.
    pub fn inference_groups(&self, keep: impl Fn(&[String; 4]) -> bool) -> Vec<(u32, [String; 4])> {
        lock(&self.events).group_list.iter().filter(|(_, g)| keep(g)).cloned().collect()
    }

    pub fn bucket_ms(&self) -> i64 {
        self.bucket_ms
    }

    /// Calls `f(group, bucket_start, agg)` for every stored and in-memory aggregate of `groups`
    /// with `b0 <= bucket_start <= b1` (several calls per bucket are possible: merge them).
    pub fn read_aggs(
        &self,
        groups: &[u32],
        b0: i64,
        b1: i64,
        mut f: impl FnMut(u32, i64, &Agg) -> bool,
    ) -> Result<(), StoreError> {
        self.read_aggs_with(groups, b0, b1, Agg::decode, |g, b, a| f(g, b, &a))
    }

    /// [`Store::read_aggs`] with aggregates in another form: `decode` reads one from its
    /// encoding (stored and in-memory ones alike).
    pub fn read_aggs_with<T>(
        &self,
        groups: &[u32],
        b0: i64,
        b1: i64,
        decode: impl Fn(&[u8]) -> Result<T, keys::DecodeError>,
        mut f: impl FnMut(u32, i64, T) -> bool,
    ) -> Result<(), StoreError> {
        self.scan_aggs(groups, b0, b1, |g, b, row| Ok(f(g, b, decode(row.bytes())?)))
    }

    /// [`Store::read_aggs`] with aggregates left encoded, where they lie: each group's stored
    /// rows in bucket order, then the in-memory ones.
    pub fn read_aggs_encoded(
        &self,
        groups: &[u32],
        b0: i64,
        b1: i64,
        mut f: impl FnMut(u32, i64, aggs::RowAt<'_>) -> bool,
    ) -> Result<(), StoreError> {
        self.scan_aggs(groups, b0, b1, |g, b, row| Ok(f(g, b, row)))
    }

    fn scan_aggs(
        &self,
        groups: &[u32],
        b0: i64,
        b1: i64,
        mut f: impl FnMut(u32, i64, aggs::RowAt<'_>) -> Result<bool, keys::DecodeError>,
    ) -> Result<(), StoreError> {
        // A snapshot of memory (encoded: each in-memory aggregate keeps its encoding until its
        // bucket changes, so a query over a busy or backfilled stretch that a checkpoint has
        // not written yet does not encode every bucket again) and its epoch, then the sled scan
        // without the lock (the committer needs it for every event batch): rows of that epoch
        // or later are what the snapshot holds (a checkpoint writes memory as rows of its
        // epoch), so they are skipped and each aggregate is seen exactly once. The pack lock
        // keeps those rows out of packs until the scan is done ([`super::packs`]).
        let _packing = read(&self.pack_lock);
        let (epoch, mem): (u64, Vec<(AggKey, sled::IVec)>) = {
            let mut st = lock(&self.events);
            let mem = st
                .aggs
                .iter_mut()
                .filter(|((g, b), _)| groups.contains(g) && *b >= b0 && *b <= b1)
                .map(|(k, a)| (*k, a.encoded()))
                .collect();
            (st.epoch, mem)
        };
        for &g in groups {
            if !self.scan_group_aggs(g, b0, b1, epoch, |bucket, row| Ok(f(g, bucket, row)?))? {
                return Ok(());
            }
        }
        for ((g, bucket), enc) in mem {
            if !f(g, bucket, aggs::RowAt::whole(&enc))? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Log records with `start <= ts <= end`, newest first, strictly before `before` (a page
    /// token) when given; `f` returns false to stop. Returns the key of the last record seen.
    pub fn scan_logs(
        &self,
        start: i64,
        end: i64,
        before: Option<[u8; 20]>,
        f: impl FnMut(&[u8; 20], pb::LogRecord) -> bool,
    ) -> Result<(), StoreError> {
        raw::scan(&self.blocks, &self.t.logs, start, end, before, f)
    }

    /// Log records with `start <= ts <= end` as times and tuples (service, logger, error type;
    /// level), a group at a time in no particular order; `f` returns false to stop. Counting
    /// them this way skips their messages, request ids and fields.
    pub fn tally_logs(&self, start: i64, end: i64, f: impl FnMut(&columns::Tally) -> bool) -> Result<(), StoreError> {
        raw::tally::<pb::LogRecord>(&self.blocks, &self.t.logs, start, end, f)
    }

    /// [`Store::scan_logs`] of the records whose tuple `want` accepts: (service, logger, error
    /// type, "", ""; level). Groups none of whose records it accepts are not decoded.
    pub fn scan_logs_where(
        &self,
        start: i64,
        end: i64,
        before: Option<[u8; 20]>,
        want: raw::TupleFilter,
        f: impl FnMut(raw::Scanned<pb::LogRecord>) -> bool,
    ) -> Result<(), StoreError> {
        raw::scan_where(&self.blocks, &self.t.logs, start, end, before, Some(want), f)
    }

    /// [`Store::scan_events`] of the events whose tuple `want` accepts: (service, model,
    /// version, endpoint, error type; status).
    pub fn scan_events_where(
        &self,
        start: i64,
        end: i64,
        want: raw::TupleFilter,
        f: impl FnMut(raw::Scanned<pb::InferenceEvent>) -> bool,
    ) -> Result<(), StoreError> {
        raw::scan_where(&self.blocks, &self.t.events, start, end, None, Some(want), f)
    }

    /// Inference events with `start <= ts <= end`, newest first; `f` returns false to stop.
    pub fn scan_events(
        &self,
        start: i64,
        end: i64,
        before: Option<[u8; 20]>,
        f: impl FnMut(&[u8; 20], pb::InferenceEvent) -> bool,
    ) -> Result<(), StoreError> {
        raw::scan(&self.blocks, &self.t.events, start, end, before, f)
    }

    pub fn logs_by_request(&self, request_id: &str) -> Result<Vec<pb::LogRecord>, StoreError> {
        raw::by_request(&self.blocks, &self.t.logs, &self.log_rids, request_id)
    }

    pub fn events_by_request(&self, request_id: &str) -> Result<Vec<pb::InferenceEvent>, StoreError> {
        raw::by_request(&self.blocks, &self.t.events, &self.event_rids, request_id)
    }

    /// Bytes the data folder takes on disk (sled and WAL).
    pub fn disk_bytes(&self) -> u64 {
        bytes_under(&self.dir)
    }
}

/// Bytes of the files under `p`, folders walked.
pub(super) fn bytes_under(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// An aggregate's group and bucket start.
type AggKey = (u32, i64);

/// A stretch of one series' samples, from [`Store::read_pieces`].
pub enum Piece {
    /// A stored chunk wholly in the range: `samples` samples (staleness markers included) from
    /// `first_ts` to `last_ts`, by their summary.
    Summary { first_ts: i64, last_ts: i64, samples: u32, summary: keys::Summary },
    /// Samples in time order.
    Samples(Vec<i64>, Vec<f64>),
}
