//! Arbitrary values in every numeric and enum field of every batch kind, through the real
//! validation and the real store: no panic; every rejection names the field it is about (a
//! path under the item it rejects); and exactly the items an independent statement of the
//! rules calls valid are stored (the store's counters and reads agree).
use modelwatch::config::Config;
use modelwatch::ingest::{prepare, Validator};
use modelwatch::pb;
use modelwatch::store::{Store, StoreOptions};
use proptest::prelude::*;

const NOW: i64 = 1_795_400_000_000;

fn any_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(NOW),
        NOW - 7_200_000..NOW + 1_200_000,
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(NOW * 1000),
    ]
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0u64..5_000_000_000, any::<u64>(), Just(u64::MAX)]
}

fn any_enum() -> impl Strategy<Value = i32> {
    prop_oneof![0i32..8, any::<i32>()]
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), -1e6f64..1e6]
}

fn event() -> impl Strategy<Value = pb::InferenceEvent> {
    (any_i64(), any_enum(), any_u64(), any_u64(), any::<u32>(), any::<u32>(), any_u64(), prop::bool::ANY).prop_map(
        |(ts, status, lat, stage, pt, gpu, bytes, named)| pb::InferenceEvent {
            timestamp_ms: ts,
            model: if named { "m".into() } else { String::new() },
            status,
            latency_us: lat,
            stages: Some(pb::Stages { inference_us: stage, ..Default::default() }),
            prompt_tokens: pt,
            gpu,
            input_bytes: bytes,
            ..Default::default()
        },
    )
}

fn record() -> impl Strategy<Value = pb::LogRecord> {
    (any_i64(), any_enum()).prop_map(|(ts, level)| pb::LogRecord {
        timestamp_ms: ts,
        level,
        message: "x".into(),
        ..Default::default()
    })
}

fn series() -> impl Strategy<Value = pb::Series> {
    (any_enum(), prop::collection::vec((any_i64(), any_f64()), 0..6)).prop_map(|(kind, samples)| pb::Series {
        name: "m".into(),
        kind,
        timestamps_ms: samples.iter().map(|s| s.0).collect(),
        values: samples.iter().map(|s| s.1).collect(),
        ..Default::default()
    })
}

/// The rules, stated independently of the validator.
fn in_window(ts: i64) -> bool {
    let ts = if ts == 0 { NOW } else { ts };
    (NOW - 3_600_000..=NOW + 600_000).contains(&ts)
}

fn event_valid(e: &pb::InferenceEvent) -> bool {
    let max = 3_600_000_000u64;
    in_window(e.timestamp_ms)
        && !e.model.is_empty()
        && (0..=4).contains(&e.status)
        && e.latency_us <= max
        && e.stages.as_ref().is_none_or(|s| s.inference_us <= max)
}

fn record_valid(r: &pb::LogRecord) -> bool {
    in_window(r.timestamp_ms) && (0..=6).contains(&r.level)
}

fn open_store(dir: &std::path::Path) -> (modelwatch::store::StoreRef, modelwatch::store::wal::Wal) {
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.to_owned();
    cfg.storage.wal_segment_bytes = 1 << 20;
    Store::open(StoreOptions { storage: cfg.storage, limits: cfg.limits, retention: cfg.retention }).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_numbers_and_enums_are_named_and_valid_items_kept(
        events in prop::collection::vec(event(), 0..12),
        records in prop::collection::vec(record(), 0..12),
        series in prop::collection::vec(series(), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut wal) = open_store(dir.path());
        let limits = Config::default().limits;
        let v = Validator::new(limits.clone());

        let want_events = events.iter().filter(|e| event_valid(e)).count() as u64;
        let want_logs = records.iter().filter(|r| record_valid(r)).count() as u64;
        let b = v.events(pb::EventBatch { service: "s".into(), events: events.clone(), ..Default::default() }, NOW);
        let mut b = prepare(b, &limits);
        let applied = store.apply(&mut b, wal.next_lsn()).unwrap();
        prop_assert_eq!(applied.ack.accepted, want_events);
        prop_assert_eq!(applied.ack.rejected_count, events.len() as u64 - want_events);
        for r in &applied.ack.rejections {
            prop_assert!(r.field.starts_with(&format!("events[{}].", r.item)), "{:?}", r);
            prop_assert!(!event_valid(&events[r.item as usize]), "a valid event was rejected: {:?}", r);
        }
        wal.append(&applied.record.unwrap()).unwrap();
        wal.sync().unwrap();
        store.persist(&b, wal.next_lsn() - 1).unwrap();

        let b = v.logs(pb::LogBatch { service: "s".into(), records: records.clone(), ..Default::default() }, NOW);
        let mut b = prepare(b, &limits);
        let applied = store.apply(&mut b, wal.next_lsn()).unwrap();
        prop_assert_eq!(applied.ack.accepted, want_logs);
        for r in &applied.ack.rejections {
            prop_assert!(r.field.starts_with(&format!("records[{}].", r.item)), "{:?}", r);
            prop_assert!(!record_valid(&records[r.item as usize]), "a valid record was rejected: {:?}", r);
        }

        // Metrics: one series name per batch position, so "in time order" is per series.
        let series: Vec<pb::Series> = series
            .into_iter()
            .enumerate()
            .map(|(i, s)| pb::Series { name: format!("m{i}"), ..s })
            .collect();
        let want_samples: u64 = series
            .iter()
            .filter(|s| (0..=2).contains(&s.kind))
            .map(|s| {
                let mut last = i64::MIN;
                let mut n = 0;
                for (t, x) in s.timestamps_ms.iter().zip(&s.values) {
                    let t = if *t == 0 { NOW } else { *t };
                    if in_window(t) && x.is_finite() && t > last {
                        last = t;
                        n += 1;
                    }
                }
                n
            })
            .sum();
        let b = v.metrics(pb::MetricBatch { service: "s".into(), series: series.clone(), ..Default::default() }, NOW);
        let mut b = prepare(b, &limits);
        let applied = store.apply(&mut b, wal.next_lsn()).unwrap();
        prop_assert_eq!(applied.ack.accepted, want_samples);
        for r in &applied.ack.rejections {
            prop_assert!(r.field.starts_with(&format!("series[{}]", r.item)), "{:?}", r);
        }
        let c = &store.counters;
        use std::sync::atomic::Ordering::Relaxed;
        prop_assert_eq!(
            (c.events.load(Relaxed), c.logs.load(Relaxed), c.samples.load(Relaxed)),
            (want_events, want_logs, want_samples)
        );
    }
}
