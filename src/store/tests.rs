//! The store against a model: random pushes, cuts, checkpoints and reopens (with or without a
//! final checkpoint). Dropping the store in-process is not a crash (sled flushes on drop):
//! real crashes are SIGKILLs of the daemon, in `tests/integrity.rs` and `tests/durability.rs`.
use super::*;
use crate::config::Config;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Op {
    /// Append `n` samples to series `s` (timestamps continue the series), as one batch;
    /// `cut: false` leaves full heads uncut, as when the committer's cut budget ran out (they
    /// wait in `due` for the next group, and a checkpoint may plan them meanwhile).
    Push {
        s: u8,
        n: u16,
        cut: bool,
    },
    /// Two batches for one series in one commit group.
    PushTwice {
        s: u8,
        n: u16,
    },
    /// `n` inference events spread over hour `hour` (of four), as one batch: a group's older
    /// hours get packed, and events for an hour that is packed already come late.
    Events {
        hour: u8,
        n: u8,
    },
    Checkpoint,
    /// A checkpoint whose steps interleave with pushes, as when its middle step runs on its
    /// own thread: pushes after it began, pushes after its write; `finish: false` stops
    /// before its last step (the process dies there; the next op reopens or checkpoints).
    CheckpointAround {
        during: Vec<Push>,
        after: Vec<Push>,
        finish: bool,
    },
    /// A checkpoint whose middle step fails before it writes anything (as on a full disk):
    /// its last step learns that and the daemon goes on.
    CheckpointFails {
        during: Vec<Push>,
    },
    /// A checkpoint that the process dies in before its record: begun, pushes, then an open.
    CheckpointTorn {
        during: Vec<Push>,
    },
    /// Close and reopen (WAL replay).
    Reopen,
    /// Drop and reopen without a final checkpoint: the WAL replays (sled flushes on drop, so
    /// this is not a crash).
    ReopenWithoutCheckpoint,
}

/// A push between a checkpoint's steps: samples (series, count, cut: as in [`Op::Push`]),
/// events (hour, count), or a series' head cut whole into chunks, as the committer cuts heads
/// past `max_head_age` (or saved whole at 120 samples) after a checkpoint began.
#[derive(Debug, Clone)]
enum Push {
    Samples(u8, u16, bool),
    Events(u8, u8),
    CutWhole(u8),
}

fn push_op() -> impl Strategy<Value = Push> {
    prop_oneof![
        2 => (0u8..4, 1u16..40, proptest::bool::weighted(0.75)).prop_map(|(s, n, cut)| Push::Samples(s, n, cut)),
        1 => (0u8..4, 1u8..30).prop_map(|(h, n)| Push::Events(h, n)),
        1 => (0u8..4).prop_map(Push::CutWhole),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 1u16..40, proptest::bool::weighted(0.75)).prop_map(|(s, n, cut)| Op::Push { s, n, cut }),
        2 => (0u8..4, 1u16..40).prop_map(|(s, n)| Op::PushTwice { s, n }),
        3 => (0u8..4, 1u8..30).prop_map(|(hour, n)| Op::Events { hour, n }),
        1 => Just(Op::Checkpoint),
        2 => (
            proptest::collection::vec(push_op(), 0..4),
            proptest::collection::vec(push_op(), 0..3),
            proptest::bool::weighted(0.8)
        )
            .prop_map(|(during, after, finish)| Op::CheckpointAround { during, after, finish }),
        1 => proptest::collection::vec(push_op(), 0..3).prop_map(|during| Op::CheckpointFails { during }),
        1 => proptest::collection::vec(push_op(), 0..3).prop_map(|during| Op::CheckpointTorn { during }),
        1 => Just(Op::Reopen),
        1 => Just(Op::ReopenWithoutCheckpoint),
    ]
}

pub(crate) fn open(dir: &Path) -> (StoreRef, Wal) {
    open_chunked(dir, 16)
}

/// [`open`] with heads cut at `chunk_samples`.
fn open_chunked(dir: &Path, chunk_samples: usize) -> (StoreRef, Wal) {
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.to_owned();
    cfg.storage.chunk_samples = chunk_samples;
    cfg.storage.wal_segment_bytes = 1 << 20;
    // sled releases its file lock from a background thread after the Db is dropped, so an
    // immediate reopen in the same process can race it (a restarted daemon is a new
    // process: exit releases the lock). Retry that case only.
    for _ in 0..200 {
        let opts =
            StoreOptions { storage: cfg.storage.clone(), limits: cfg.limits.clone(), retention: cfg.retention.clone() };
        match Store::open(opts) {
            Ok(s) => return s,
            Err(e) if e.to_string().contains("lock") => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("reopen failed: {e}"),
        }
    }
    panic!("the sled lock was not released within 2 s");
}

fn batch(s: u8, from: i64, n: u16) -> Batch {
    let ts: Vec<i64> = (0..i64::from(n)).map(|i| from + i).collect();
    let values = ts.iter().map(|t| (*t as f64) / 8.0).collect();
    let series = vec![pb::Series { name: format!("m{s}"), timestamps_ms: ts, values, ..Default::default() }];
    Batch::new(Body::Metrics(pb::MetricBatch { service: "t".into(), series, ..Default::default() }.into()))
}

/// Per (model, bucket start): events, latency sum (µs), observations in the histogram.
type AggModel = BTreeMap<(String, i64), (u64, u64, u64)>;

/// `n` events in hour `hour`, the `k`-th event overall placed by `k` (two models, buckets all
/// over the hour), recorded in `model`.
fn events_batch(hour: u8, n: u8, k: &mut u64, model: &mut AggModel) -> Batch {
    let mut events = Vec::new();
    for _ in 0..n {
        *k += 1;
        let ts = 1_700_002_800_000 + i64::from(hour) * 3_600_000 + (*k as i64 * 7_919_000) % 3_600_000;
        let name = format!("m{}", *k % 2);
        let latency_us = 1_000 + (*k * 7_877) % 90_000;
        let e = model.entry((name.clone(), ts.div_euclid(10_000) * 10_000)).or_default();
        *e = (e.0 + 1, e.1 + latency_us, e.2 + 1);
        events.push(pb::InferenceEvent {
            service: "s".into(),
            model: name,
            timestamp_ms: ts,
            latency_us,
            ..Default::default()
        });
    }
    Batch::new(Body::Events(pb::EventBatch { events, ..Default::default() }))
}

/// What the store's aggregates say, in the model's terms.
fn stored_aggs(store: &Store) -> AggModel {
    let groups = store.inference_groups(|_| true);
    let ids: Vec<u32> = groups.iter().map(|(id, _)| *id).collect();
    let mut out = AggModel::new();
    store
        .read_aggs(&ids, i64::MIN / 2, i64::MAX / 2, |g, b, a| {
            let name = groups.iter().find(|x| x.0 == g).expect("a known group").1[1].clone();
            let e = out.entry((name, b)).or_default();
            *e = (e.0 + a.figures.count, e.1 + a.figures.latency_sum_us, e.2 + a.latency.len());
            true
        })
        .unwrap();
    out
}

/// Commits batches as the committer does: apply, WAL append, sync, persist, cut.
pub(crate) fn commit(store: &Store, wal: &mut Wal, batches: Vec<Batch>) {
    commit_cutting(store, wal, batches, true);
}

/// [`commit`], cutting due heads only with `cut`.
fn commit_cutting(store: &Store, wal: &mut Wal, mut batches: Vec<Batch>, cut: bool) {
    let mut lsns = Vec::new();
    for b in batches.iter_mut() {
        let lsn = wal.next_lsn();
        let applied = store.apply(b, lsn).unwrap();
        wal.append(&applied.record.unwrap()).unwrap();
        lsns.push(lsn);
    }
    wal.sync().unwrap();
    for (b, lsn) in batches.iter().zip(lsns) {
        store.persist(b, lsn).unwrap();
    }
    if cut {
        store.cut_due().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn samples_match_a_model_across_cuts_checkpoints_and_restarts(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut wal) = open(dir.path());
        let mut model: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
        // Events pushed so far, and what they add up to.
        let mut ev: (u64, AggModel) = (0, AggModel::new());
        let push = |store: &Store, wal: &mut Wal, model: &mut BTreeMap<u8, Vec<i64>>, s: u8, n: u16, cut: bool| {
            let from = model.get(&s).and_then(|v| v.last()).map_or(1000, |t| t + 1);
            commit_cutting(store, wal, vec![batch(s, from, n)], cut);
            model.entry(s).or_default().extend(from..from + i64::from(n));
        };
        let push_any = |store: &Store, wal: &mut Wal, model: &mut BTreeMap<u8, Vec<i64>>, ev: &mut (u64, AggModel), p: Push| match p {
            Push::Samples(s, n, cut) => push(store, wal, model, s, n, cut),
            Push::Events(h, n) => commit(store, wal, vec![events_batch(h, n, &mut ev.0, &mut ev.1)]),
            Push::CutWhole(s) => {
                let m = Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, &format!("m{s}")).unwrap();
                if let Some(series) = store.select(&[m]).first() {
                    let mut st = lock(&store.metrics);
                    store.cut(&mut st, vec![series.id], true).unwrap();
                }
            }
        };
        for op in ops {
            match op {
                Op::Push { s, n, cut } => push(&store, &mut wal, &mut model, s, n, cut),
                Op::Events { hour, n } => push_any(&store, &mut wal, &mut model, &mut ev, Push::Events(hour, n)),
                Op::CheckpointAround { during, after, finish } => {
                    let mut c = store.checkpoint_begin(&mut wal, false).unwrap();
                    for p in during {
                        push_any(&store, &mut wal, &mut model, &mut ev, p);
                    }
                    store.checkpoint_write(&mut c).unwrap();
                    for p in after {
                        push_any(&store, &mut wal, &mut model, &mut ev, p);
                    }
                    if finish {
                        store.checkpoint_finish(&mut wal, c).unwrap();
                    } else {
                        drop((store, wal));
                        (store, wal) = open(dir.path());
                    }
                }
                Op::CheckpointFails { during } => {
                    let c = store.checkpoint_begin(&mut wal, false).unwrap();
                    for p in during {
                        push_any(&store, &mut wal, &mut model, &mut ev, p);
                    }
                    store.checkpoint_finish(&mut wal, c).unwrap();
                }
                Op::CheckpointTorn { during } => {
                    let c = store.checkpoint_begin(&mut wal, false).unwrap();
                    for p in during {
                        push_any(&store, &mut wal, &mut model, &mut ev, p);
                    }
                    drop((c, store, wal));
                    (store, wal) = open(dir.path());
                }
                Op::PushTwice { s, n } => {
                    let from = model.get(&s).and_then(|v| v.last()).map_or(1000, |t| t + 1);
                    let mid = from + i64::from(n);
                    commit(&store, &mut wal, vec![batch(s, from, n), batch(s, mid, n)]);
                    model.entry(s).or_default().extend(from..mid + i64::from(n));
                }
                Op::Checkpoint => store.checkpoint(&mut wal, false).unwrap(),
                Op::Reopen => {
                    store.checkpoint(&mut wal, true).unwrap();
                    // Every head cut (a slice of heads at a time), none left to the parts.
                    prop_assert!(lock(&store.metrics).heads.values().all(|h| h.samples.is_empty()));
                    drop((store, wal));
                    (store, wal) = open(dir.path());
                }
                Op::ReopenWithoutCheckpoint => {
                    drop((store, wal));
                    (store, wal) = open(dir.path());
                }
            }
            for (s, want) in &model {
                let m = Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, &format!("m{s}")).unwrap();
                let id = store.select(&[m])[0].id;
                let (ts, vals) = store.read_samples(id, i64::MIN, i64::MAX).unwrap();
                prop_assert_eq!(&ts, want);
                prop_assert!(ts.iter().zip(&vals).all(|(t, v)| *v == (*t as f64) / 8.0));
                let (mid_ts, _) = store.read_samples(id, want[want.len() / 2], i64::MAX).unwrap();
                prop_assert_eq!(&mid_ts[..], &want[want.len() / 2..]);
            }
            prop_assert_eq!(&stored_aggs(&store), &ev.1);
            // Raw events: each pushed one once (replays rewrite the same keys).
            let mut raw = Vec::new();
            store.scan_events(i64::MIN / 2, i64::MAX / 2, None, |_, e| {
                raw.push((e.timestamp_ms, e.latency_us));
                true
            })
            .unwrap();
            prop_assert_eq!(raw.len() as u64, ev.0);
        }
    }
}

/// Chunk summaries answer min, max and count like the samples they stand for: values with NaNs
/// and staleness markers (all-NaN and all-stale chunks among them), windows of every size.
#[test]
fn pieces_and_summaries_match_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    let stale = f64::from_bits(STALE_NAN);
    let ts: Vec<i64> = (0..200).map(|i| 1000 + i * 10).collect();
    let values: Vec<f64> = (0..200)
        .map(|i| match i {
            16..=31 => f64::NAN,
            32..=47 => stale,
            _ if i % 7 == 0 => f64::NAN,
            _ if i % 11 == 0 => stale,
            _ => ((i * 37) % 101) as f64 - 50.0,
        })
        .collect();
    let series = vec![pb::Series { name: "m".into(), timestamps_ms: ts.clone(), values, ..Default::default() }];
    let b = Batch::new(Body::Metrics(pb::MetricBatch { service: "t".into(), series, ..Default::default() }.into()));
    commit(&store, &mut wal, vec![b]);
    let id = store.select(&[Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, "m").unwrap()])[0].id;
    let reduce = |vals: &mut dyn Iterator<Item = (f64, f64, u64)>| {
        let (mut min, mut max, mut n) = (f64::NAN, f64::NAN, 0);
        for (lo, hi, c) in vals {
            if n == 0 || lo < min || min.is_nan() {
                min = lo;
            }
            if n == 0 || hi > max || max.is_nan() {
                max = hi;
            }
            n += c;
        }
        (min, max, n)
    };
    let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
    let mut summarized = 0;
    for start in (900..3100).step_by(70) {
        for len in [5, 40, 170, 400, 1200, 3000] {
            let end = start + len;
            let (_, vals) = store.read_samples(id, start, end).unwrap();
            let want = reduce(&mut vals.iter().filter(|v| v.to_bits() != STALE_NAN).map(|&v| (v, v, 1)));
            let pieces = store.read_pieces(id, start, end).unwrap();
            let got = reduce(&mut pieces.iter().flat_map(|p| -> Vec<(f64, f64, u64)> {
                match p {
                    Piece::Summary { summary: s, .. } if s.count == 0 => vec![],
                    Piece::Summary { summary: s, .. } => {
                        summarized += 1;
                        vec![(s.min, s.max, u64::from(s.count))]
                    }
                    Piece::Samples(_, v) => v.iter().filter(|v| v.to_bits() != STALE_NAN).map(|&v| (v, v, 1)).collect(),
                }
            }));
            assert!(
                same(want.0, got.0) && same(want.1, got.1) && want.2 == got.2,
                "[{start}, {end}]: {want:?} {got:?}"
            );
        }
    }
    assert!(summarized > 100, "{summarized}");
}

/// Two checkpoints with no record between them name the same checkpoint lsn. If sled comes
/// back from a crash with the first one's record, the WAL must still hold what it needs.
#[test]
fn the_previous_checkpoint_record_still_finds_its_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    commit(&store, &mut wal, vec![batch(0, 1000, 5)]);
    store.checkpoint(&mut wal, false).unwrap();
    let first = store.t.meta.get(keys::META_KEY).unwrap().unwrap();
    store.checkpoint(&mut wal, false).unwrap();
    let second = store.t.meta.get(keys::META_KEY).unwrap().unwrap();
    let (a, b) = (keys::decode_meta(&first).unwrap(), keys::decode_meta(&second).unwrap());
    assert_eq!(a.checkpoint_lsn, b.checkpoint_lsn, "no record came between the two");
    // The second saves no parts (see `plan_parts`): replay starts where it did.
    assert_eq!(a.replay_from, b.replay_from);
    // sled comes back with the first record.
    store.t.meta.insert(keys::META_KEY, first).unwrap();
    store.db.flush().unwrap();
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    let id = store.select(&[Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, "m0").unwrap()])[0].id;
    let (ts, _) = store.read_samples(id, i64::MIN, i64::MAX).unwrap();
    assert_eq!(ts, (1000..1005).collect::<Vec<_>>(), "every sample, once");
}

/// An in-memory aggregate keeps its encoding for readers until its bucket gets another event:
/// every read sees every event, before and after a checkpoint.
#[test]
fn in_memory_aggregates_read_fresh_after_each_event() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    let ev = |ts: i64, latency_us: u64| pb::InferenceEvent {
        service: "s".into(),
        model: "m".into(),
        timestamp_ms: ts,
        latency_us,
        ..Default::default()
    };
    let events =
        |e: Vec<pb::InferenceEvent>| Batch::new(Body::Events(pb::EventBatch { events: e, ..Default::default() }));
    let total = |store: &Store| {
        let groups: Vec<u32> = store.inference_groups(|_| true).iter().map(|(id, _)| *id).collect();
        let (mut count, mut hist) = (0, 0);
        store
            .read_aggs(&groups, i64::MIN / 2, i64::MAX / 2, |_, _, a| {
                count += a.figures.count;
                hist += a.latency.len();
                true
            })
            .unwrap();
        (count, hist)
    };
    let t0 = 1_700_000_000_000;
    commit(&store, &mut wal, vec![events(vec![ev(t0, 5_000), ev(t0 + 1, 7_000)])]);
    assert_eq!(total(&store), (2, 2));
    assert_eq!(total(&store), (2, 2), "a second read, from the kept encoding");
    commit(&store, &mut wal, vec![events(vec![ev(t0 + 2, 9_000)])]);
    assert_eq!(total(&store), (3, 3), "the same bucket after another event");
    store.checkpoint(&mut wal, false).unwrap();
    commit(&store, &mut wal, vec![events(vec![ev(t0 + 3, 9_000), ev(t0 + 60_000, 1_000)])]);
    assert_eq!(total(&store), (5, 5), "stored rows and memory together");
}

/// A busy bucket's row is stored through zstd; it reads back the same from the rows' tree,
/// after an open, and from the pack it moves into.
#[test]
fn long_rows_are_stored_through_zstd_and_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    let mut model = AggModel::new();
    let busy = |hour: i64, n: u64, model: &mut AggModel| {
        let ts = 1_700_002_800_000 + hour * 3_600_000;
        let events = (0..n)
            .map(|i| {
                let latency_us = 1_000 + i * 7_877 % 900_000;
                let e = model.entry(("m0".to_string(), ts.div_euclid(10_000) * 10_000)).or_default();
                *e = (e.0 + 1, e.1 + latency_us, e.2 + 1);
                pb::InferenceEvent {
                    service: "s".into(),
                    model: "m0".into(),
                    timestamp_ms: ts,
                    latency_us,
                    stages: Some(pb::Stages { queue_us: latency_us / 7, ..Default::default() }),
                    ..Default::default()
                }
            })
            .collect();
        Batch::new(Body::Events(pb::EventBatch { events, ..Default::default() }))
    };
    commit(&store, &mut wal, vec![busy(0, 2_000, &mut model)]);
    store.checkpoint(&mut wal, false).unwrap();
    let rows: Vec<sled::IVec> = store.t.aggs.iter().values().map(|v| v.unwrap()).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], aggs::ROW_ZSTD, "a row of {} bytes", rows[0].len());
    assert_eq!(stored_aggs(&store), model);
    drop((store, wal));
    let (store, mut wal) = open(dir.path());
    assert_eq!(stored_aggs(&store), model, "after an open");
    // A newer hour packs hour 0, its row made plain inside the pack's part.
    commit(&store, &mut wal, vec![busy(1, 10, &mut model)]);
    store.checkpoint(&mut wal, false).unwrap();
    assert!(!store.t.agg_packs.is_empty(), "hour 0 packed");
    assert_eq!(stored_aggs(&store), model, "from the pack");
    // A late busy bucket for hour 0 merges with the pack's row at the next packing.
    commit(&store, &mut wal, vec![busy(0, 500, &mut model)]);
    store.checkpoint(&mut wal, false).unwrap();
    store.checkpoint(&mut wal, false).unwrap();
    assert_eq!(stored_aggs(&store), model, "pack and late row merged");
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    assert_eq!(stored_aggs(&store), model);
}

/// A crash between a pack's write and the deletion of the rows it took leaves both: readers
/// count them once, and the next packing of the hour deletes the rows.
#[test]
fn a_pack_and_the_rows_it_took_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    let mut ev = (0u64, AggModel::new());
    commit(&store, &mut wal, vec![events_batch(0, 40, &mut ev.0, &mut ev.1)]);
    store.checkpoint(&mut wal, false).unwrap();
    let rows: Vec<(sled::IVec, sled::IVec)> = store.t.aggs.iter().map(|r| r.unwrap()).collect();
    assert!(!rows.is_empty() && store.t.agg_packs.is_empty());
    // A newer hour: the next checkpoint packs hour 0.
    commit(&store, &mut wal, vec![events_batch(1, 5, &mut ev.0, &mut ev.1)]);
    store.checkpoint(&mut wal, false).unwrap();
    assert!(!store.t.agg_packs.is_empty(), "hour 0 packed");
    assert!(rows.iter().all(|(k, _)| !store.t.aggs.contains_key(k).unwrap()), "its rows deleted");
    assert_eq!(stored_aggs(&store), ev.1);
    // The deletion is lost.
    for (k, v) in &rows {
        store.t.aggs.insert(k, v.clone()).unwrap();
    }
    assert_eq!(stored_aggs(&store), ev.1, "rows the pack holds are not counted again");
    drop((store, wal));
    let (store, mut wal) = open(dir.path());
    assert_eq!(stored_aggs(&store), ev.1);
    // A late event for hour 0, then the packing after the open: one pack, no rows of hour 0.
    commit(&store, &mut wal, vec![events_batch(0, 3, &mut ev.0, &mut ev.1)]);
    store.checkpoint(&mut wal, false).unwrap();
    store.checkpoint(&mut wal, false).unwrap();
    assert!(rows.iter().all(|(k, _)| !store.t.aggs.contains_key(k).unwrap()), "stale rows deleted");
    let hour0 = store.pack_start(1_700_002_800_000);
    assert!(store
        .t
        .aggs
        .iter()
        .keys()
        .all(|k| store.pack_start(keys::decode_agg_key(&k.unwrap()).unwrap().1) != hour0));
    assert_eq!(stored_aggs(&store), ev.1);
}

/// A checkpoint packs for a while, not every hour it took: the hours it did not get to stay
/// loose, readers count their rows, and a later checkpoint packs them.
#[test]
fn hours_a_packing_did_not_get_to_stay_loose_and_count_once() {
    // The hours go to rows, not straight to packs.
    packs::FROM_MEMORY.set(false);
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    let mut ev = (0u64, AggModel::new());
    for hour in 0..6 {
        commit(&store, &mut wal, vec![events_batch(hour, 30, &mut ev.0, &mut ev.1)]);
    }
    store.checkpoint(&mut wal, false).unwrap();
    let (hours, below) = {
        let mut st = lock(&store.events);
        let hours: Vec<(u32, i64)> = packs::packable(&st.loose).collect();
        for h in &hours {
            st.loose.remove(h);
        }
        (hours, st.epoch)
    };
    assert_eq!(hours.len(), 10, "two groups' hours but their newest");
    store.pack_hours_within(&hours, below, std::time::Duration::ZERO).unwrap();
    let packed: BTreeSet<(u32, i64)> = store
        .t
        .agg_packs
        .iter()
        .keys()
        .map(|k| keys::decode_pack_key(&k.unwrap()).unwrap())
        .map(|k| (k.0, k.1))
        .collect();
    assert_eq!(packed, BTreeSet::from([hours[0]]), "one hour packed in no time");
    assert!(hours[1..].iter().all(|h| lock(&store.events).loose.contains(h)), "the rest given back");
    assert_eq!(stored_aggs(&store), ev.1);
    store.checkpoint(&mut wal, false).unwrap();
    let packed =
        store.t.agg_packs.iter().keys().map(|k| keys::decode_pack_key(&k.unwrap()).unwrap()).map(|k| (k.0, k.1));
    assert_eq!(packed.collect::<BTreeSet<_>>(), hours.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(stored_aggs(&store), ev.1);
}

/// A folder from before the catalog file kept its series in sled's `series` tree, and its
/// checkpoint record (version 2) names no catalog end: the series are read from sled, written
/// into the file by the next checkpoint, and the tree is emptied after that checkpoint's flush.
#[test]
fn series_of_a_folder_from_before_the_catalog_file_move_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    commit(&store, &mut wal, vec![batch(0, 1000, 5), batch(1, 1000, 5)]);
    store.checkpoint(&mut wal, false).unwrap();
    // As an older modelwatch left it.
    for id in read(&store.index).ids().collect::<Vec<_>>() {
        let m = read(&store.index).get(id).unwrap();
        store.t.series.insert(keys::series_key(id), keys::encode_series(m.kind, &m.name, &m.labels)).unwrap();
    }
    let mut meta = keys::decode_meta(&store.t.meta.get(keys::META_KEY).unwrap().unwrap()).unwrap();
    assert!(meta.catalog_end.is_some());
    meta.catalog_end = None;
    store.t.meta.insert(keys::META_KEY, keys::encode_meta(&meta)).unwrap();
    store.db.flush().unwrap();
    drop((store, wal));
    std::fs::remove_file(dir.path().join(catalog::FILE)).unwrap();

    let samples = |store: &Store| -> Vec<(String, Vec<i64>)> {
        let mut out: Vec<_> = read(&store.index)
            .ids()
            .map(|id| {
                (
                    read(&store.index).get(id).unwrap().name.clone(),
                    store.read_samples(id, i64::MIN, i64::MAX).unwrap().0,
                )
            })
            .collect();
        out.sort();
        out
    };
    let want = vec![("m0".to_string(), (1000..1005).collect::<Vec<_>>()), ("m1".to_string(), (1000..1005).collect())];
    let (store, mut wal) = open(dir.path());
    assert_eq!(samples(&store), want);
    assert_eq!(store.t.series.len(), 2, "kept until a checkpoint has written the file");
    commit(&store, &mut wal, vec![batch(2, 1000, 5)]);
    store.checkpoint(&mut wal, false).unwrap();
    assert!(store.t.series.is_empty());
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    let mut want = want;
    want.push(("m2".to_string(), (1000..1005).collect()));
    assert_eq!(samples(&store), want);
    let meta = keys::decode_meta(&store.t.meta.get(keys::META_KEY).unwrap().unwrap()).unwrap();
    assert_eq!(meta.catalog_end, Some(std::fs::metadata(dir.path().join(catalog::FILE)).unwrap().len()));
}

/// New databases leave sled's log plain; one made before (compressed) opens as it was made,
/// since sled refuses a database opened with the other setting.
#[test]
fn a_sled_database_made_with_compression_opens_as_made() {
    let conf = |dir: &Path| String::from_utf8_lossy(&std::fs::read(dir.join("db").join("conf")).unwrap()).into_owned();
    let fresh = tempfile::tempdir().unwrap();
    drop(open(fresh.path()));
    assert!(conf(fresh.path()).contains("use_compression: false"), "{}", conf(fresh.path()));

    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path().join("db")).use_compression(true).open().unwrap();
    db.flush().unwrap();
    drop(db);
    let (store, mut wal) = open(dir.path());
    commit(&store, &mut wal, vec![batch(0, 1000, 5)]);
    store.checkpoint(&mut wal, true).unwrap();
    drop((store, wal));
    assert!(conf(dir.path()).contains("use_compression: true"), "{}", conf(dir.path()));
    let (store, _wal) = open(dir.path());
    let id = store.select(&[Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, "m0").unwrap()])[0].id;
    assert_eq!(store.read_samples(id, i64::MIN, i64::MAX).unwrap().0, (1000..1005).collect::<Vec<_>>());
}

/// A folder from before the grouped chunk index keeps one sled entry per chunk in `chunks`:
/// the open moves them into the index and drops the tree, and every sample reads as before.
#[test]
fn chunk_entries_of_a_folder_from_before_the_grouped_index_move_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    // 40 series (two index groups), 3 chunks of 16 each and a head.
    commit(&store, &mut wal, (0..40).map(|s| batch(s, 1000, 50)).collect());
    while store.has_due() {
        store.cut_due().unwrap();
    }
    store.checkpoint(&mut wal, false).unwrap();
    let before: Vec<(u64, Vec<i64>, Vec<f64>)> = read(&store.index)
        .ids()
        .map(|id| {
            let (t, v) = store.read_samples(id, i64::MIN, i64::MAX).unwrap();
            (id, t, v)
        })
        .collect();
    // As an older modelwatch left it.
    let entries = store.chunks.all().unwrap();
    assert_eq!(entries.len(), 40 * 3);
    let legacy = store.db.open_tree(keys::TREE_CHUNKS).unwrap();
    for e in &entries {
        let v = match e.summary {
            Some(s) => keys::encode_chunk_ref(&e.r, &s).to_vec(),
            None => keys::encode_block_ref(&e.r).to_vec(),
        };
        legacy.insert(keys::chunk_key(e.series, e.first_ts), v).unwrap();
    }
    store.db.drop_tree(keys::TREE_CHUNK_INDEX).unwrap();
    store.db.flush().unwrap();
    drop((legacy, store, wal));

    let (store, mut wal) = open(dir.path());
    assert!(!store.db.tree_names().iter().any(|n| n.as_ref() == keys::TREE_CHUNKS.as_bytes()));
    assert_eq!(store.chunks.all().unwrap().len(), 40 * 3);
    for (id, t, v) in &before {
        let (t2, v2) = store.read_samples(*id, i64::MIN, i64::MAX).unwrap();
        assert_eq!((&t2, &v2), (t, v), "series {id}");
    }
    // And they stay there: more samples, a clean stop, an open.
    commit(&store, &mut wal, vec![batch(0, 2000, 20)]);
    store.checkpoint(&mut wal, true).unwrap();
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    let id = store.select(&[Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, "m0").unwrap()])[0].id;
    assert_eq!(store.read_samples(id, i64::MIN, i64::MAX).unwrap().0.len(), 70);
}

/// A head whose samples span a day or more is cut before the sample that passes a day from its
/// first, so that the chunk index finds every chunk by that bound; reads see every sample.
#[test]
fn a_chunk_spans_less_than_the_index_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    let hour = 3600 * 1000;
    let ts: Vec<i64> = (0..5).map(|i| i * 10 * hour).collect();
    let values = vec![1.0; 5];
    let series = vec![pb::Series { name: "wide".into(), timestamps_ms: ts.clone(), values, ..Default::default() }];
    let b = Batch::new(Body::Metrics(pb::MetricBatch { service: "t".into(), series, ..Default::default() }.into()));
    commit(&store, &mut wal, vec![b]);
    store.cut_due().unwrap();
    let spans = |store: &Store| -> Vec<(i64, i64)> {
        store.chunks.all().unwrap().iter().map(|e| (e.first_ts, e.r.last_ts)).collect()
    };
    assert_eq!(spans(&store), vec![(0, 20 * hour)], "cut before 30 h; 30 h and 40 h wait in the head");
    let id = store.select(&[Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, "wide").unwrap()])[0].id;
    assert_eq!(store.read_samples(id, i64::MIN, i64::MAX).unwrap().0, ts);
    assert_eq!(store.read_samples(id, 19 * hour, 31 * hour).unwrap().0, vec![20 * hour, 30 * hour]);
    store.checkpoint(&mut wal, true).unwrap();
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    assert_eq!(spans(&store), vec![(0, 20 * hour), (30 * hour, 40 * hour)]);
    assert_eq!(store.read_samples(id, 35 * hour, 45 * hour).unwrap().0, vec![40 * hour]);
    assert_eq!(store.read_samples(id, i64::MIN, i64::MAX).unwrap().0, ts);
}

/// A head fed one sample between checkpoints keeps at most two parts: the checkpoint that finds
/// two saves the whole head as one part, and the old ones go after the next record. Every
/// sample survives a crash at any point of that (the open reads what the last record vouches
/// for), and a clean reopen.
#[test]
fn a_slowly_fed_head_keeps_few_parts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    let id = |store: &Store| store.select(&[Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, "m0").unwrap()])[0].id;
    for i in 0..12 {
        commit(&store, &mut wal, vec![batch(0, 1000 + i, 1)]);
        store.checkpoint(&mut wal, false).unwrap();
        assert!(part_files(&store).len() <= 3, "{:?} after {} checkpoints", part_files(&store), i + 1);
        assert!(lock(&store.metrics).heads.values().all(|h| h.parts.len() <= 2));
    }
    // A crash: no clean stop, the WAL replays from the last record.
    drop((store, wal));
    let (store, mut wal) = open(dir.path());
    assert_eq!(store.read_samples(id(&store), i64::MIN, i64::MAX).unwrap().0, (1000..1012).collect::<Vec<_>>());
    for i in 12..15 {
        commit(&store, &mut wal, vec![batch(0, 1000 + i, 1)]);
        store.checkpoint(&mut wal, false).unwrap();
    }
    store.checkpoint(&mut wal, true).unwrap();
    assert!(part_files(&store).len() <= 3);
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    assert_eq!(store.read_samples(id(&store), i64::MIN, i64::MAX).unwrap().0, (1000..1015).collect::<Vec<_>>());
}

#[test]
fn a_slowly_fed_head_is_cut_once_long_instead_of_saved_whole_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open_chunked(dir.path(), 4096);
    let (mut t, per) = (1000, 25);
    let mut cut = 0;
    for _ in 0..12 {
        commit(&store, &mut wal, vec![batch(0, t, per as u16)]);
        t += per as i64;
        store.checkpoint(&mut wal, false).unwrap();
        store.cut_due().unwrap();
        let st = lock(&store.metrics);
        let held = st.heads.values().map(|h| h.samples.len()).max().unwrap_or(0);
        assert!(held < parts::CUT_WHOLE_FROM + 2 * per, "a head held {held} samples");
        cut = cut.max(st.persisted.values().count());
    }
    assert_eq!(cut, 1, "the head went into chunks long before chunk_samples or max_head_age");
    // A crash: every sample comes back from the chunks, the parts and the WAL.
    drop((store, wal));
    let (store, _wal) = open_chunked(dir.path(), 4096);
    let id = store.select(&[Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, "m0").unwrap()])[0].id;
    assert_eq!(store.read_samples(id, i64::MIN, i64::MAX).unwrap().0, (1000..t).collect::<Vec<_>>());
}

/// `n` series (`m0`..), one sample each at `t`.
fn wide_batch(n: u16, t: i64) -> Batch {
    range_batch(0..n, t)
}

/// Series `m{s}` for `s` in `r`, one sample each at `t`.
fn range_batch(r: std::ops::Range<u16>, t: i64) -> Batch {
    let series = r
        .map(|s| pb::Series {
            name: format!("m{s}"),
            timestamps_ms: vec![t],
            values: vec![(t as f64) / 8.0],
            ..Default::default()
        })
        .collect();
    Batch::new(Body::Metrics(pb::MetricBatch { service: "t".into(), series, ..Default::default() }.into()))
}

fn samples_of(store: &Store, s: u16) -> Vec<i64> {
    let m = Matcher::new(index::NAME_LABEL, index::MatchOp::Eq, &format!("m{s}")).unwrap();
    let id = store.select(&[m])[0].id;
    store.read_samples(id, i64::MIN, i64::MAX).unwrap().0
}

/// The lsns of the part files in the folder.
fn part_files(store: &Store) -> Vec<u64> {
    part_files::list(&store.dir.join(part_files::DIR)).unwrap().into_iter().map(|(lsn, _)| lsn).collect()
}

/// A checkpoint saves its parts as one file; a file goes once none of its parts is live, and
/// never before: every sample survives crashes at each step, and once the heads are cut
/// nothing is left.
#[test]
fn head_parts_are_saved_per_checkpoint_file_and_deleted_when_all_are_dead() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut wal) = open(dir.path());
    let n = 100;
    for i in 0..9 {
        commit(&store, &mut wal, vec![wide_batch(n, 1000 + i)]);
        store.checkpoint(&mut wal, false).unwrap();
        // A head's two parts and the whole one that replaces them until the next checkpoint
        // deletes them; after a crash, one more (the open loads the replaced parts too, as
        // their deletion was not recorded, and the next whole save replaces all three).
        let files = part_files(&store);
        assert!(files.len() <= 4, "part files {files:?} after {} checkpoints", i + 1);
        assert!(store.t.head_parts.is_empty());
        if i % 3 == 2 {
            // A crash: the open reads what the last record vouches for.
            drop((store, wal));
            (store, wal) = open(dir.path());
            for s in 0..n {
                assert_eq!(
                    samples_of(&store, s),
                    (1000..1001 + i).collect::<Vec<_>>(),
                    "m{s} after {} checkpoints",
                    i + 1
                );
            }
        }
    }
    assert!(!part_files(&store).is_empty());
    // A clean stop cuts every head: each part is dead, and the next checkpoint deletes every
    // file (the open after a clean stop would do it too).
    store.checkpoint(&mut wal, true).unwrap();
    store.checkpoint(&mut wal, false).unwrap();
    assert_eq!(part_files(&store), Vec::<u64>::new());
    assert_eq!(lock(&store.metrics).live_parts.files(), 0);
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    for s in 0..n {
        assert_eq!(samples_of(&store, s), (1000..1009).collect::<Vec<_>>());
    }
}

/// A file that few live parts keep (series that went quiet while the others were cut) is
/// emptied: the next checkpoint saves those heads whole again, and the file goes after the
/// one after. Nothing is lost across a crash in between.
#[test]
fn quiet_heads_in_a_mostly_dead_part_file_are_saved_again_and_the_file_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut wal) = open(dir.path());
    commit(&store, &mut wal, vec![wide_batch(40, 1000)]);
    store.checkpoint(&mut wal, false).unwrap();
    commit(&store, &mut wal, vec![wide_batch(40, 1001)]);
    store.checkpoint(&mut wal, false).unwrap();
    let first = part_files(&store);
    assert_eq!(first.len(), 1, "the second checkpoint saves the 40 heads: {first:?}");
    // m0..m29 fill and are cut (chunk_samples 16): 10 of the file's 40 parts stay live.
    for t in (1002..1020).step_by(2) {
        commit(&store, &mut wal, vec![range_batch(0..30, t), range_batch(0..30, t + 1)]);
    }
    store.checkpoint(&mut wal, false).unwrap();
    let files = part_files(&store);
    assert!(files.contains(&first[0]) && files.len() == 2, "{files:?}: m30..m39 saved whole again");
    drop((store, wal));
    (store, wal) = open(dir.path());
    // The first file's deletion was not recorded, so the open finds it: every part in it is
    // dead (chunks hold m0..m29's samples, the later file m30..m39 whole), and it goes.
    let files = part_files(&store);
    assert!(!files.contains(&first[0]) && files.len() == 1, "{files:?}: the first file went at the open");
    store.checkpoint(&mut wal, false).unwrap();
    commit(&store, &mut wal, vec![range_batch(0..1, 1020)]);
    store.checkpoint(&mut wal, false).unwrap();
    store.checkpoint(&mut wal, false).unwrap();
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    for s in 30..40 {
        assert_eq!(samples_of(&store, s), vec![1000, 1001], "m{s}");
    }
    assert_eq!(samples_of(&store, 0), (1000..1021).collect::<Vec<_>>(), "m0");
    for s in 1..30 {
        assert_eq!(samples_of(&store, s), (1000..1020).collect::<Vec<_>>(), "m{s}");
    }
}

/// Damage in a part file (samples that exist nowhere else once the WAL is cut) stops the open
/// and names the file; `modelwatch recover`'s salvaging open keeps the frames that check out,
/// lists what it lost, and leaves a folder that opens.
#[test]
fn a_damaged_part_file_stops_the_open_and_recover_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open_chunked(dir.path(), 4096);
    let n = 6000;
    for t in 0..12 {
        commit(&store, &mut wal, vec![wide_batch(n, 1000 + t * 1000)]);
    }
    store.checkpoint(&mut wal, false).unwrap();
    commit(&store, &mut wal, vec![wide_batch(n, 13_000)]);
    store.checkpoint(&mut wal, false).unwrap();
    // Two more checkpoints: the WAL before the parts' checkpoint is cut.
    for t in 14..16 {
        commit(&store, &mut wal, vec![range_batch(0..1, t * 1000)]);
        store.checkpoint(&mut wal, false).unwrap();
    }
    let files = part_files(&store);
    drop((store, wal));
    let path = part_files::path(&dir.path().join(part_files::DIR), files[0]);
    let mut data = std::fs::read(&path).unwrap();
    assert!(data.len() > 140_000, "{} bytes: three frames or more", data.len());
    data[200] ^= 0xA5;
    std::fs::write(&path, &data).unwrap();
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.path().to_owned();
    cfg.storage.chunk_samples = 4096;
    cfg.storage.wal_segment_bytes = 1 << 20;
    let opts =
        || StoreOptions { storage: cfg.storage.clone(), limits: cfg.limits.clone(), retention: cfg.retention.clone() };
    let err = Store::open(opts()).err().expect("the open stops").to_string();
    assert!(err.contains(&path.display().to_string()) && err.contains("damaged") && err.contains("recover"), "{err}");
    let (store, _wal, rep) = Store::open_with(opts(), true).unwrap();
    assert_eq!(rep.salvage.skipped.len(), 1, "{:?}", rep.salvage.skipped);
    assert_eq!(rep.salvage.skipped[0].0, path);
    // The series of the damaged frame lost the saved samples; the others have all of theirs.
    let whole = (0..n).filter(|s| samples_of(&store, *s).len() == 13).count();
    assert!(whole > n as usize / 2 && whole < n as usize, "{whole} series whole");
    drop(store);
    drop(_wal);
    let (store, _wal) = open_chunked(dir.path(), 4096);
    assert_eq!((0..n).filter(|s| samples_of(&store, *s).len() == 13).count(), whole);
}

/// A part file of a checkpoint whose record was never written is dropped at open (replay
/// rebuilds its samples), as is the temporary file of one that stopped before its rename.
#[test]
fn part_files_past_the_last_record_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    for t in 0..3 {
        commit(&store, &mut wal, vec![wide_batch(10, 1000 + t)]);
        store.checkpoint(&mut wal, false).unwrap();
    }
    let files = part_files(&store);
    let pdir = dir.path().join(part_files::DIR);
    std::fs::copy(part_files::path(&pdir, files[0]), part_files::path(&pdir, 1 << 40)).unwrap();
    std::fs::write(pdir.join("00000000001099511627777.tmp"), b"half").unwrap();
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    assert_eq!(part_files(&store), files);
    assert_eq!(std::fs::read_dir(&pdir).unwrap().count(), files.len());
    for s in 0..10 {
        assert_eq!(samples_of(&store, s), vec![1000, 1001, 1002]);
    }
}

/// Rewrites every part file as the sled group entries of a folder from before part files
/// (same lsn and content), and deletes the files; returns how many entries.
fn to_group_entries(store: &Store) -> usize {
    let pdir = store.dir.join(part_files::DIR);
    let mut entries: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    for (lsn, path) in part_files::list(&pdir).unwrap() {
        let damage = part_files::read(&path, lsn, |id, bytes| {
            let v = entries.entry((id >> 5, lsn)).or_insert_with(|| {
                let mut v = Vec::new();
                keys::put_varint(&mut v, lsn);
                v
            });
            keys::put_varint(v, id & 31);
            keys::put_varint(v, bytes.len() as u64);
            v.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
        assert!(damage.is_empty());
        std::fs::remove_file(path).unwrap();
    }
    for ((group, lsn), v) in &entries {
        store.t.head_parts.insert(keys::part_group_key(*group, *lsn), v.clone()).unwrap();
    }
    store.t.head_parts.flush().unwrap();
    entries.len()
}

/// Folders from before part files hold the parts in sled, one entry per 32 series: they load,
/// their samples are kept, the first checkpoint with a new lsn saves their heads whole into a
/// file, and the entries go after the next record.
#[test]
fn sled_group_entries_of_older_folders_load_and_move_into_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    let n = 100;
    for i in 0..3 {
        commit(&store, &mut wal, vec![wide_batch(n, 1000 + i)]);
        store.checkpoint(&mut wal, false).unwrap();
    }
    assert!(to_group_entries(&store) >= 4);
    drop((store, wal));
    let (store, mut wal) = open(dir.path());
    assert!(lock(&store.metrics).live_parts.legacy() >= 4);
    for s in 0..n {
        assert_eq!(samples_of(&store, s), vec![1000, 1001, 1002]);
    }
    // The old daemon's lsn: nothing saved.
    store.checkpoint(&mut wal, false).unwrap();
    assert!(part_files(&store).is_empty());
    commit(&store, &mut wal, vec![wide_batch(n, 1003)]);
    store.checkpoint(&mut wal, false).unwrap();
    assert_eq!(part_files(&store).len(), 1, "every head saved whole into one file");
    assert_eq!(lock(&store.metrics).live_parts.legacy(), 0);
    store.checkpoint(&mut wal, false).unwrap();
    assert_eq!(store.t.head_parts.len(), 0, "the entries went after the next record");
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    for s in 0..n {
        assert_eq!(samples_of(&store, s), vec![1000, 1001, 1002, 1003]);
    }
}

/// Folders from before grouped parts hold one `head_parts` entry per series' part: they load,
/// their samples are kept, and they are deleted one by one as their heads are saved again.
#[test]
fn single_head_parts_of_older_folders_load_and_die() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    let n = 40;
    for i in 0..2 {
        commit(&store, &mut wal, vec![wide_batch(n, 1000 + i)]);
        store.checkpoint(&mut wal, false).unwrap();
    }
    commit(&store, &mut wal, vec![wide_batch(n, 1002)]);
    store.checkpoint(&mut wal, false).unwrap();
    // Rewrite every part as the single parts an older daemon wrote, then crash.
    to_group_entries(&store);
    let singles = to_single_parts(&store);
    assert!(singles >= n as usize, "{singles} parts");
    drop((store, wal));
    let (store, mut wal) = open(dir.path());
    for s in 0..n {
        assert_eq!(samples_of(&store, s), vec![1000, 1001, 1002]);
    }
    // Single parts and a part file side by side, then every head cut.
    commit(&store, &mut wal, vec![wide_batch(n, 1003)]);
    store.checkpoint(&mut wal, false).unwrap();
    store.checkpoint(&mut wal, true).unwrap();
    store.checkpoint(&mut wal, false).unwrap();
    assert_eq!(store.t.head_parts.len(), 0);
    assert!(part_files(&store).is_empty());
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    for s in 0..n {
        assert_eq!(samples_of(&store, s), vec![1000, 1001, 1002, 1003]);
    }
}

/// Rewrites every group entry of `head_parts` as the single parts an older daemon wrote
/// (same lsn, same value after the key); returns how many.
fn to_single_parts(store: &Store) -> usize {
    let mut singles = 0;
    for item in store.t.head_parts.iter() {
        let (k, v) = item.unwrap();
        let keys::PartKey::Group(group, lsn) = keys::decode_part_key(&k).unwrap() else { continue };
        let mut rd = keys::Reader::new(&v, "test");
        let saved_at = rd.varint().unwrap();
        while !rd.done() {
            let id = (group << 5) | rd.varint().unwrap();
            let len = rd.varint().unwrap() as usize;
            let bytes = rd.bytes(len).unwrap();
            let (mut ts, mut vals) = (Vec::new(), Vec::new());
            chunk::decode_into(bytes, &mut ts, &mut vals).unwrap();
            let mut value = Vec::new();
            keys::put_varint(&mut value, saved_at);
            value.extend_from_slice(bytes);
            store.t.head_parts.insert(keys::part_key(id, ts[0], lsn), value).unwrap();
            singles += 1;
        }
        store.t.head_parts.remove(&k).unwrap();
    }
    store.t.head_parts.flush().unwrap();
    singles
}

/// Group entries and single parts of older folders side by side (a folder from before
/// grouping that a daemon from before part files ran on): both load, and the heads move into
/// one file; every sample survives a crash, and nothing is left once the heads are cut.
#[test]
fn group_entries_beside_single_parts_of_an_older_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    // m0..m9 from the first record on; m10..m19 only after the first checkpoint, so the second
    // saves m0..m9 and the third all.
    commit(&store, &mut wal, vec![range_batch(0..10, 1000)]);
    store.checkpoint(&mut wal, false).unwrap();
    commit(&store, &mut wal, vec![range_batch(0..20, 1001)]);
    store.checkpoint(&mut wal, false).unwrap();
    to_group_entries(&store);
    assert_eq!(to_single_parts(&store), 10);
    commit(&store, &mut wal, vec![range_batch(0..20, 1002)]);
    store.checkpoint(&mut wal, false).unwrap();
    to_group_entries(&store);
    let groups = |store: &Store| {
        store
            .t
            .head_parts
            .iter()
            .filter(|e| matches!(keys::decode_part_key(&e.as_ref().unwrap().0).unwrap(), keys::PartKey::Group(..)))
            .count()
    };
    assert_eq!(groups(&store), 1, "m0..m19 in one group entry");
    assert_eq!(store.t.head_parts.len(), 11, "beside the 10 single parts");
    drop((store, wal));
    let (store, mut wal) = open(dir.path());
    for s in 0..20 {
        let want: Vec<i64> = if s < 10 { vec![1000, 1001, 1002] } else { vec![1001, 1002] };
        assert_eq!(samples_of(&store, s), want, "m{s} after a crash");
    }
    commit(&store, &mut wal, vec![range_batch(0..20, 1003)]);
    store.checkpoint(&mut wal, false).unwrap();
    store.checkpoint(&mut wal, false).unwrap();
    assert_eq!(store.t.head_parts.len(), 0);
    drop((store, wal));
    let (store, mut wal) = open(dir.path());
    for s in 0..20 {
        let want: Vec<i64> = if s < 10 { vec![1000, 1001, 1002, 1003] } else { vec![1001, 1002, 1003] };
        assert_eq!(samples_of(&store, s), want, "m{s} after a crash");
    }
    store.checkpoint(&mut wal, true).unwrap();
    store.checkpoint(&mut wal, false).unwrap();
    assert!(part_files(&store).is_empty());
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    for s in 0..20 {
        let want: Vec<i64> = if s < 10 { vec![1000, 1001, 1002, 1003] } else { vec![1001, 1002, 1003] };
        assert_eq!(samples_of(&store, s), want, "m{s}");
    }
}

/// Found by `samples_match_a_model_across_cuts_checkpoints_and_restarts` (2026-12-06): a
/// checkpoint with the lsn of the one before it (no record between them) merged its parts
/// into that one's entry while the cut of the entry's only other part doomed it; the next
/// checkpoint deleted the entry, and a crash lost the samples that only it held.
#[test]
fn a_checkpoint_with_the_last_ones_lsn_writes_no_part_into_a_doomed_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut wal) = open(dir.path());
    commit(&store, &mut wal, vec![batch(1, 1000, 1)]);
    // A checkpoint whose record is written, then a crash before its last step; m0's sample
    // comes after its lsn, so it stays unsaved through the next checkpoint.
    let mut c = store.checkpoint_begin(&mut wal, false).unwrap();
    commit(&store, &mut wal, vec![batch(0, 1000, 1)]);
    store.checkpoint_write(&mut c).unwrap();
    drop((store, wal));
    (store, wal) = open(dir.path());
    // Saves m1's head as a part: the group entry (0, lsn) holds it alone.
    store.checkpoint(&mut wal, false).unwrap();
    // The same lsn (no record since). While it runs, m1's head fills and is cut, so its part
    // dies and the entry with it; m0 is saved nowhere but in the WAL still.
    let before = lock(&store.metrics).last_checkpoint;
    let mut c = store.checkpoint_begin(&mut wal, false).unwrap();
    assert_eq!(lock(&store.metrics).last_checkpoint, before);
    commit(&store, &mut wal, vec![batch(1, 1001, 15)]);
    store.checkpoint_write(&mut c).unwrap();
    store.checkpoint_finish(&mut wal, c).unwrap();
    // The next checkpoint deletes the dead entry; a crash follows its record.
    let mut c = store.checkpoint_begin(&mut wal, false).unwrap();
    store.checkpoint_write(&mut c).unwrap();
    drop((store, wal));
    let (store, _wal) = open(dir.path());
    assert_eq!(samples_of(&store, 0), vec![1000], "m0's acked sample");
    assert_eq!(samples_of(&store, 1), (1000..1016).collect::<Vec<_>>());
}

/// A batch may name a series more than once, a new one too, in one block of the series that
/// `apply_metrics` looks up ahead or in two: its samples go to one series, in order, and a
/// sample not after the series' last is refused.
#[test]
fn a_series_named_twice_in_one_batch_is_one_series() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut wal) = open(dir.path());
    let one = |name: String, t: i64| pb::Series {
        name,
        timestamps_ms: vec![t],
        values: vec![t as f64],
        ..Default::default()
    };
    let make = || {
        let mut series: Vec<pb::Series> =
            (0..40u16).map(|k| one(format!("m{}", k % 20), 1000 + i64::from(k))).collect();
        series.extend((0..20u16).map(|k| one(format!("m{}", 100 + k / 2), 2000 + i64::from(k))));
        series.push(one("m5".into(), 1010));
        Batch::new(Body::Metrics(pb::MetricBatch { service: "t".into(), series, ..Default::default() }.into()))
    };
    let mut b = make();
    let applied = store.apply(&mut b, wal.next_lsn()).unwrap();
    assert_eq!((applied.ack.accepted, applied.ack.rejected_count), (60, 1), "{:?}", applied.ack);
    wal.append(&applied.record.unwrap()).unwrap();
    wal.sync().unwrap();
    let again = store.apply(&mut make(), wal.next_lsn()).unwrap();
    assert_eq!((again.ack.accepted, again.ack.rejected_count), (0, 61), "{:?}", again.ack);
    let all = Matcher::new(index::NAME_LABEL, index::MatchOp::Re, "m.*").unwrap();
    assert_eq!(store.select(&[all]).len(), 30);
    for s in 0..20u16 {
        assert_eq!(samples_of(&store, s), vec![1000 + i64::from(s), 1020 + i64::from(s)], "m{s}");
    }
    for s in 100..110u16 {
        let t = 2000 + 2 * i64::from(s - 100);
        assert_eq!(samples_of(&store, s), vec![t, t + 1], "m{s}");
    }
}

/// Found by the model test: a head saved whole (its new part in a later file) beside a dead part
/// of it in a file that another series' part keeps; the open took the dead part first and added
/// only what the whole part held past it, losing the whole part's first sample.
#[test]
fn a_whole_part_after_a_dead_part_of_its_head_loads_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut wal) = open(dir.path());
    let mut want = Vec::new();
    let mut next = 1000i64;
    let push0 = |store: &Store, wal: &mut Wal, next: &mut i64, want: &mut Vec<i64>, n: u16| {
        commit_cutting(store, wal, vec![batch(0, *next, n)], false);
        want.extend(*next..*next + i64::from(n));
        *next += i64::from(n);
    };
    let mut other = 1000i64;
    let mut push_other = |store: &Store, wal: &mut Wal, s: u8| {
        commit_cutting(store, wal, vec![batch(s, other, 1)], false);
        other += 1;
    };
    push0(&store, &mut wal, &mut next, &mut want, 17);
    store.checkpoint(&mut wal, false).unwrap();
    push_other(&store, &mut wal, 1);
    // Begun, pushes, written, and the process dies before the last step.
    let mut c = store.checkpoint_begin(&mut wal, false).unwrap();
    push0(&store, &mut wal, &mut next, &mut want, 1);
    push_other(&store, &mut wal, 2);
    store.checkpoint_write(&mut c).unwrap();
    drop((c, store, wal));
    (store, wal) = open(dir.path());
    drop((store, wal));
    (store, wal) = open(dir.path());
    store.checkpoint(&mut wal, false).unwrap();
    push_other(&store, &mut wal, 1);
    let mut c = store.checkpoint_begin(&mut wal, false).unwrap();
    push0(&store, &mut wal, &mut next, &mut want, 1);
    store.checkpoint_write(&mut c).unwrap();
    drop((c, store, wal));
    (store, wal) = open(dir.path());
    store.checkpoint(&mut wal, false).unwrap();
    push0(&store, &mut wal, &mut next, &mut want, 1);
    store.checkpoint(&mut wal, false).unwrap();
    let mut c = store.checkpoint_begin(&mut wal, false).unwrap();
    store.checkpoint_write(&mut c).unwrap();
    drop((c, store, wal));
    (store, wal) = open(dir.path());
    assert_eq!(samples_of(&store, 0), want);
    // The same parts as the sled entries of older folders: group entries load in lsn order, as
    // files do; single parts by first timestamp, so the whole part comes before the dead one,
    // which must then add nothing.
    assert!(to_group_entries(&store) > 0);
    drop((store, wal));
    (store, wal) = open(dir.path());
    assert_eq!(samples_of(&store, 0), want);
    assert!(to_single_parts(&store) > 0);
    drop((store, wal));
    (store, wal) = open(dir.path());
    assert_eq!(samples_of(&store, 0), want);
    drop(wal);
}

/// Found by the model test: a checkpoint whose middle step failed left its aggregate rows and
/// moved memory's epoch on; the next one died before its record; the open dropped the rows of
/// one epoch only and counted the others' events twice.
#[test]
fn rows_of_a_failed_checkpoint_and_a_torn_one_after_it_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut wal) = open(dir.path());
    let mut ev = (0u64, AggModel::new());
    commit(&store, &mut wal, vec![events_batch(0, 3, &mut ev.0, &mut ev.1)]);
    let c = store.checkpoint_begin(&mut wal, false).unwrap();
    store.checkpoint_finish(&mut wal, c).unwrap();
    commit(&store, &mut wal, vec![events_batch(0, 2, &mut ev.0, &mut ev.1)]);
    let c = store.checkpoint_begin(&mut wal, false).unwrap();
    drop((c, store, wal));
    (store, wal) = open(dir.path());
    assert_eq!(stored_aggs(&store), ev.1);
    store.checkpoint(&mut wal, false).unwrap();
    assert_eq!(stored_aggs(&store), ev.1);
}

/// A backfill's finished hours go straight from memory to packs, with no rows written; each
/// group's newest hour stays rows. A checkpoint that dies before its record leaves packs that
/// the replay rebuilds: the open drops them, and its entry, and everything counts once.
#[test]
fn finished_hours_pack_from_memory_and_a_torn_checkpoints_packs_go_at_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut wal) = open(dir.path());
    let mut ev = (0u64, AggModel::new());
    for hour in 0..4 {
        commit(&store, &mut wal, vec![events_batch(hour, 20, &mut ev.0, &mut ev.1)]);
    }
    store.checkpoint(&mut wal, false).unwrap();
    let row_hours: BTreeSet<i64> =
        store.t.aggs.iter().keys().map(|k| store.pack_start(keys::decode_agg_key(&k.unwrap()).unwrap().1)).collect();
    let pack_hours: BTreeSet<i64> =
        store.t.agg_packs.iter().keys().map(|k| keys::decode_pack_key(&k.unwrap()).unwrap().1).collect();
    assert_eq!(row_hours.len(), 1, "only the newest hour as rows");
    assert_eq!(pack_hours.len(), 3, "the others packed");
    assert!(pack_hours.iter().all(|h| h < row_hours.first().unwrap()));
    assert_eq!(store.t.meta.scan_prefix(keys::DIRECT_PREFIX).count(), 0, "the record vouches for them");
    assert_eq!(stored_aggs(&store), ev.1);
    // Four more hours, and a checkpoint that dies after its first step.
    for hour in 4..8 {
        commit(&store, &mut wal, vec![events_batch(hour, 20, &mut ev.0, &mut ev.1)]);
    }
    let c = store.checkpoint_begin(&mut wal, false).unwrap();
    let packs_then = store.t.agg_packs.len();
    assert!(packs_then > 3 && store.t.meta.scan_prefix(keys::DIRECT_PREFIX).count() == 1);
    assert_eq!(stored_aggs(&store), ev.1, "packed and taken from memory at once");
    drop((c, store, wal));
    (store, wal) = open(dir.path());
    assert_eq!(store.t.meta.scan_prefix(keys::DIRECT_PREFIX).count(), 0);
    assert_eq!(stored_aggs(&store), ev.1);
    store.checkpoint(&mut wal, false).unwrap();
    assert_eq!(stored_aggs(&store), ev.1);
    // A late event for a packed hour makes a row again, and reads beside the pack.
    commit(&store, &mut wal, vec![events_batch(1, 5, &mut ev.0, &mut ev.1)]);
    store.checkpoint(&mut wal, false).unwrap();
    assert_eq!(stored_aggs(&store), ev.1);
    drop((store, wal));
    (store, _) = open(dir.path());
    assert_eq!(stored_aggs(&store), ev.1);
}

/// Found by the model test: an open's replay cut two chunks from a head loaded from a part
/// (17 saved samples and 16 replayed); the head's one sample left was taken for saved, the next
/// checkpoint let its WAL go, and the open after a torn checkpoint lost it.
#[test]
fn a_sample_left_after_replay_cuts_two_chunks_survives_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut wal) = open(dir.path());
    commit_cutting(&store, &mut wal, vec![batch(0, 1000, 7)], false);
    store.checkpoint(&mut wal, false).unwrap();
    commit_cutting(&store, &mut wal, vec![batch(0, 1007, 10)], false);
    let mut c = store.checkpoint_begin(&mut wal, false).unwrap();
    store.checkpoint_write(&mut c).unwrap();
    commit_cutting(&store, &mut wal, vec![batch(0, 1017, 16)], false);
    drop((c, store, wal));
    (store, wal) = open(dir.path());
    store.checkpoint(&mut wal, false).unwrap();
    let c = store.checkpoint_begin(&mut wal, false).unwrap();
    drop((c, store, wal));
    (store, wal) = open(dir.path());
    assert_eq!(samples_of(&store, 0), (1000..1033).collect::<Vec<_>>());
    drop(wal);
}
