//! criterion benches of the hot paths: chunk encode/decode, HDR record and merge, key
//! encoding, batch decode and validation, WAL append (buffered, then with its fsync).
//!
//!     cargo bench --bench hot [-- FILTER]
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use modelwatch::pb;
use modelwatch::store::{chunk, keys, wal, SeriesBatch};
use prost::Message;

/// A gauge that moves like the bench data set's: a random walk of small integers at 10 s.
fn samples(n: usize) -> (Vec<i64>, Vec<f64>) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = 50.0;
    let ts = (0..n as i64).map(|i| 1_700_000_000_000 + i * 10_000).collect();
    let vals = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v = (v + (x % 5) as f64 - 2.0_f64).clamp(0.0, 100.0);
            v
        })
        .collect();
    (ts, vals)
}

fn chunks(c: &mut Criterion) {
    let (ts, vals) = samples(1024);
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Elements(ts.len() as u64));
    g.bench_function("encode 1024 samples", |b| b.iter(|| chunk::encode(black_box(&ts), black_box(&vals))));
    let enc = chunk::encode(&ts, &vals);
    g.bench_function("decode 1024 samples", |b| {
        let (mut t, mut v) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
        b.iter(|| {
            t.clear();
            v.clear();
            chunk::decode_into(black_box(&enc), &mut t, &mut v).unwrap();
        })
    });
    g.finish();
}

fn hdr(c: &mut Criterion) {
    let mut g = c.benchmark_group("hdr");
    let lat: Vec<u64> = (0..10_000u64).map(|i| 1_000 + (i * 7919) % 2_000_000).collect();
    g.throughput(Throughput::Elements(lat.len() as u64));
    g.bench_function("record 10k latencies", |b| {
        b.iter_batched(
            || hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap(),
            |mut h| {
                for &l in &lat {
                    h.record(l).unwrap();
                }
                h
            },
            BatchSize::SmallInput,
        )
    });
    let mut a = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    for &l in &lat {
        a.record(l).unwrap();
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("merge two histograms", |b| {
        b.iter_batched(|| a.clone(), |mut x| x.add(black_box(&a)).unwrap(), BatchSize::SmallInput)
    });
    g.finish();
}

fn key_encoding(c: &mut Criterion) {
    let labels: Vec<(String, String)> =
        [("gpu", "3"), ("host", "gpu-07"), ("model", "llama-3-70b"), ("service", "chat")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let mut g = c.benchmark_group("keys");
    g.bench_function("chunk key", |b| b.iter(|| keys::chunk_key(black_box(42), black_box(1_700_000_000_000))));
    g.bench_function("decode chunk key", |b| {
        let k = keys::chunk_key(42, 1_700_000_000_000);
        b.iter(|| keys::decode_chunk_key(black_box(&k)).unwrap())
    });
    g.bench_function("series entry (name and 4 labels)", |b| {
        b.iter(|| keys::encode_series(1, black_box("gpu_utilization_percent"), black_box(&labels)))
    });
    g.finish();
}

fn batches(c: &mut Criterion) {
    let series: Vec<pb::Series> = (0..100)
        .map(|i| {
            let (ts, vals) = samples(100);
            pb::Series {
                name: "gpu_utilization_percent".into(),
                labels: vec![
                    pb::Label { name: "gpu".into(), value: (i % 8).to_string() },
                    pb::Label { name: "host".into(), value: format!("gpu-{i}") },
                ],
                kind: pb::MetricKind::Gauge as i32,
                timestamps_ms: ts,
                values: vals,
            }
        })
        .collect();
    let batch =
        pb::MetricBatch { client_id: "bench/1".into(), seq: 1, service: "bench".into(), series, backfill: true };
    let bytes = batch.encode_to_vec();
    let validator = modelwatch::ingest::Validator::new(modelwatch::config::Limits::default());
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(10_000));
    // What prost's generated type costs against the daemon's own form (the gRPC handler and
    // WAL replay decode into [`SeriesBatch`]).
    g.bench_function("decode 10k-sample MetricBatch (prost)", |b| {
        b.iter(|| pb::MetricBatch::decode(black_box(&bytes[..])).unwrap())
    });
    g.bench_function("decode 10k-sample MetricBatch (SeriesBatch)", |b| {
        b.iter(|| SeriesBatch::decode(black_box(&bytes[..])).unwrap())
    });
    g.bench_function("decode and validate 10k-sample MetricBatch", |b| {
        b.iter(|| {
            let m = SeriesBatch::decode(black_box(&bytes[..])).unwrap();
            validator.metrics(m, 1_700_000_000_000 + 100 * 10_000)
        })
    });
    // The WAL record a handler writes for it: the protobuf, Snappy-compressed.
    let decoded = SeriesBatch::decode(&bytes[..]).unwrap();
    let body = modelwatch::store::Body::Metrics(SeriesBatch::decode(&bytes[..]).unwrap());
    g.bench_function("encode 10k-sample MetricBatch (prost's way)", |b| b.iter(|| black_box(&decoded).encode_to_vec()));
    g.bench_function("encode 10k-sample MetricBatch (measured once)", |b| b.iter(|| black_box(&decoded).to_protobuf()));
    g.bench_function("WAL record of a 10k-sample MetricBatch", |b| b.iter(|| black_box(&body).encode()));
    // `loadgen --live`'s shape: every series of a service once per message, one sample each.
    let wide = pb::MetricBatch {
        service: "bench".into(),
        series: (0..25_000)
            .map(|i| pb::Series {
                name: "loadgen_value".into(),
                labels: vec![
                    pb::Label { name: "i".into(), value: i.to_string() },
                    pb::Label { name: "run".into(), value: "1764979200".into() },
                ],
                kind: pb::MetricKind::Gauge as i32,
                timestamps_ms: vec![1_700_000_000_000],
                values: vec![(i % 100) as f64],
            })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec();
    g.throughput(Throughput::Elements(25_000));
    g.bench_function("decode 25k one-sample series (prost)", |b| {
        b.iter(|| pb::MetricBatch::decode(black_box(&wide[..])).unwrap())
    });
    g.bench_function("decode 25k one-sample series (SeriesBatch)", |b| {
        b.iter(|| SeriesBatch::decode(black_box(&wide[..])).unwrap())
    });
    g.finish();
}

fn wal_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = wal::Wal::open(dir.path(), 8 << 20, 0, false, |_, _| Ok(())).unwrap();
    let payload = vec![7u8; 16 << 10];
    // Every 256 records the log is synced, rotated and emptied (as a checkpoint would), so the
    // benchmark's disk use stays bounded.
    let mut n = 0u64;
    let mut bound = move |w: &mut wal::Wal| {
        n += 1;
        if n.is_multiple_of(256) {
            w.sync().unwrap();
            w.rotate().unwrap();
            let keep = w.next_lsn();
            w.truncate_before(keep).unwrap();
        }
    };
    let mut g = c.benchmark_group("wal");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("append 16 KiB, fsync every 256", |b| {
        b.iter(|| {
            w.append(black_box(&payload)).unwrap();
            bound(&mut w);
        })
    });
    g.bench_function("append 16 KiB and fsync each", |b| {
        b.iter(|| {
            w.append(black_box(&payload)).unwrap();
            w.sync().unwrap();
            bound(&mut w);
        })
    });
    g.finish();
}

criterion_group!(benches, chunks, hdr, key_encoding, batches, wal_append);
criterion_main!(benches);
