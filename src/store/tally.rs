//! A bucket's aggregate as ingest fills it, from its first event to the checkpoint that writes
//! it ([`super::apply`]), in the encoding of [`super::aggs`].
//!
//! An HDR histogram of the store's layout keeps a count for every slot from 0 up to the highest
//! value it has seen: one 40 ms latency takes 10 KB, an aggregate with its stages 30–50 KB,
//! however few events it holds. Live traffic fills few buckets, each with many events; a
//! backfill spreads its events over many buckets, one or two each, and a month of 40 groups
//! pushed 20,000 events at a time held about 1 GB of nearly empty histograms until the next
//! checkpoint (the daemon sat at `limits.memory_limit` and refused every other push). So a
//! [`Tally`] keeps its non-empty slots as (slot, count) pairs, and becomes an HDR histogram
//! only once it has more than [`FEW`] of them. Both write the same bytes.
use super::aggs::{
    encode_blocked, encode_parts, encode_slots, histogram, record, slot_of, slot_value, stage_values, Figures,
};
use crate::pb;
use hdrhistogram::Histogram;

/// Non-empty slots a tally keeps as pairs (16 bytes each) before it becomes an HDR histogram.
pub const FEW: usize = 64;

/// Values from here on go to an HDR histogram at once, which saturates them in its own way.
const HUGE: u64 = 1 << 62;

/// One histogram of an aggregate being filled.
pub enum Tally {
    /// Its non-empty slots with their counts, in slot order.
    Few(Vec<(u32, u64)>),
    /// Boxed: the histogram's own fields take 96 bytes, and most tallies are few.
    Many(Box<Histogram<u64>>),
}

impl Default for Tally {
    fn default() -> Self {
        Tally::Few(Vec::new())
    }
}

impl Tally {
    pub fn record(&mut self, v: u64) {
        match self {
            Tally::Few(pairs) if v < HUGE => {
                let slot = slot_of(v) as u32;
                match pairs.binary_search_by_key(&slot, |p| p.0) {
                    Ok(i) => pairs[i].1 += 1,
                    Err(i) if pairs.len() < FEW => {
                        // Most tallies of a backfill hold one slot: room for one, not Vec's four.
                        pairs.reserve_exact(1);
                        pairs.insert(i, (slot, 1))
                    }
                    Err(_) => record(self.many(), v),
                }
            }
            Tally::Few(_) => record(self.many(), v),
            Tally::Many(h) => record(h, v),
        }
    }

    /// The HDR histogram, made from the pairs if need be.
    fn many(&mut self) -> &mut Histogram<u64> {
        if let Tally::Few(pairs) = self {
            let mut h = histogram();
            for &(slot, n) in pairs.iter() {
                // A slot's highest value falls in that slot: the histogram's slots are the store's.
                if h.record_n(slot_value(slot as usize), n).is_err() {
                    h.saturating_record_n(slot_value(slot as usize), n);
                }
            }
            *self = Tally::Many(Box::new(h));
        }
        match self {
            Tally::Many(h) => h,
            Tally::Few(_) => unreachable!("made above"),
        }
    }

    /// Writes the tally in the blocked form, as [`encode_blocked`] writes a histogram.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Tally::Few(pairs) => {
                let entries: Vec<(usize, u64)> = pairs.iter().map(|&(s, n)| (s as usize, n)).collect();
                encode_slots(&entries, out);
            }
            Tally::Many(h) => encode_blocked(h, out),
        }
    }

    /// Heap bytes it holds.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        match self {
            Tally::Few(pairs) => pairs.capacity() * std::mem::size_of::<(u32, u64)>(),
            // Its counts array, the bulk of it.
            Tally::Many(h) => h.distinct_values() * std::mem::size_of::<u64>(),
        }
    }
}

/// An aggregate being filled: [`super::aggs::Agg`]'s figures, its histograms as tallies. 144
/// bytes, 144 more on the heap once an event had stages, and 16 a slot a tally holds (an
/// [`Agg`](super::aggs::Agg) is about 800 before its histograms' counts, 30–50 KB with them):
/// a checkpoint's worth of a backfill holds a couple of hundred thousand.
#[derive(Default)]
pub struct Acc {
    pub figures: Figures,
    latency: Tally,
    /// By their index in [`super::aggs::STAGES`]; None until an event had a stage time.
    stages: Option<Box<[Option<Tally>; 6]>>,
}

impl Acc {
    /// As [`super::aggs::Agg::record`].
    pub fn record(&mut self, e: &pb::InferenceEvent) {
        self.figures.record(e);
        self.latency.record(e.latency_us);
        if let Some(stages) = &e.stages {
            let values = stage_values(stages);
            if values.iter().all(|&v| v == 0) {
                return;
            }
            let tallies = self.stages.get_or_insert_with(Box::default);
            for (t, v) in tallies.iter_mut().zip(values) {
                if v > 0 {
                    t.get_or_insert_with(Tally::default).record(v);
                }
            }
        }
    }

    /// The bytes [`super::aggs::Agg::encode`] writes for an aggregate of the same events.
    pub fn encode(&self) -> Vec<u8> {
        let stages = match &self.stages {
            Some(s) => s.each_ref().map(Option::as_ref),
            None => Default::default(),
        };
        encode_parts(&self.figures, &self.latency, &stages, Tally::encode)
    }

    /// Heap bytes its histograms hold.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.latency.heap_bytes()
            + self.stages.as_ref().map_or(0, |s| {
                std::mem::size_of::<[Option<Tally>; 6]>() + s.iter().flatten().map(Tally::heap_bytes).sum::<usize>()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::aggs::Agg;

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Tallies write exactly what HDR histograms of the same events write, on either side of
    /// [`FEW`] and for values from 0 to past [`HUGE`].
    #[test]
    fn a_tally_encodes_as_the_hdr_histogram_of_the_same_events() {
        let mut r = rng(11);
        for round in 0..400u64 {
            let (mut agg, mut acc) = (Agg::default(), Acc::default());
            let n = [1, 2, 5, 30, 63, 64, 65, 66, 200, 3000][round as usize % 10];
            let spread = 1 + (r() % 40);
            for _ in 0..n {
                let top = if spread >= 39 { u64::MAX } else { 10u64 << spread.min(40) };
                let v = match r() % 8 {
                    0 => 0,
                    1 => r() % 300,
                    _ => r() % top,
                };
                let e = pb::InferenceEvent {
                    latency_us: v,
                    status: (r() % 5) as i32,
                    error_type: if r().is_multiple_of(10) { "oom".into() } else { String::new() },
                    stages: Some(pb::Stages {
                        queue_us: v / 7,
                        inference_us: if r().is_multiple_of(2) { v / 2 } else { 0 },
                        ..Default::default()
                    }),
                    prompt_tokens: (r() % 100) as u32,
                    ..Default::default()
                };
                agg.record(&e);
                acc.record(&e);
            }
            assert_eq!(acc.encode(), agg.encode(), "round {round}: {n} events, spread {spread}");
        }
    }

    #[test]
    fn a_tally_of_few_slots_holds_a_fraction_of_an_hdr_histogram() {
        let e = pb::InferenceEvent {
            latency_us: 40_000,
            stages: Some(pb::Stages {
                queue_us: 4_000,
                preprocess_us: 2_000,
                inference_us: 30_000,
                postprocess_us: 1_000,
                time_to_first_token_us: 8_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut acc = Acc::default();
        acc.record(&e);
        // A pair a tally, and the six stages' tallies.
        assert_eq!(acc.heap_bytes(), 6 * 16 + 6 * 24);
        assert!(std::mem::size_of::<Acc>() <= 160, "{} bytes inline", std::mem::size_of::<Acc>());
        let mut agg = Agg::default();
        agg.record(&e);
        let hdr: usize =
            [&agg.latency].into_iter().chain(agg.stages.iter().flatten()).map(|h| h.distinct_values() * 8).sum();
        assert!(hdr > 40 * acc.heap_bytes(), "HDR {hdr} bytes, tallies {}", acc.heap_bytes());
        // Past FEW slots, a histogram.
        let mut t = Tally::default();
        for v in 0..=FEW as u64 {
            t.record(v);
        }
        assert!(matches!(t, Tally::Many(_)));
    }
}
