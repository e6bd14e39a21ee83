//! The daemon's own figures: ingest rates over the last minute, from the store's counters
//! sampled every few seconds.
use crate::store::Store;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<(Instant, [u64; 3])>>,
}

fn totals(store: &Store) -> [u64; 3] {
    let c = &store.counters;
    [c.samples.load(Ordering::Relaxed), c.events.load(Ordering::Relaxed), c.logs.load(Ordering::Relaxed)]
}

impl Rates {
    /// Records the counters now (called by a ticker and by each Status call).
    pub fn tick(&self, store: &Store) {
        let now = Instant::now();
        let mut q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back((now, totals(store)));
        while q.len() > 2 && q.front().is_some_and(|(t, _)| now.duration_since(*t) > WINDOW) {
            q.pop_front();
        }
    }

    /// Per-second rates of samples, events and logs over the window.
    pub fn per_second(&self, store: &Store) -> [f64; 3] {
        self.tick(store);
        let q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(a), Some(b)) = (q.front(), q.back()) else {
            return [0.0; 3];
        };
        let dt = b.0.duration_since(a.0).as_secs_f64();
        if dt <= 0.0 {
            return [0.0; 3];
        }
        [0, 1, 2].map(|i| (b.1[i] - a.1[i]) as f64 / dt)
    }
}
