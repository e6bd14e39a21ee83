//! One lane per kind (metrics, logs, events), all on the client's background thread: connect,
//! register, open the stream, resend the unacked window in order, then cut batches (when the
//! queue holds a batch, after the linger time, or on flush) while the window has room and
//! match acks to batches. Any stream error closes the connection and the lane reconnects with
//! exponential backoff; the window survives, so nothing sent and unacked is lost, and the
//! daemon de-duplicates what it already had by (client id, kind, seq).
//!
//! A batch is protobuf-encoded once, when it is cut: the window keeps those bytes and the
//! stream sends them as they are ([`RawCodec`]), so a resend costs a reference count, not a
//! copy of thousands of items (cloning each batch for the window was a string allocation per
//! label, model name and request id of every item).
use crate::pb::{self, ingest_client::IngestClient};
use crate::{now_ms, Queue, Sample, Shared};
use prost::bytes::Bytes;
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Adds the configured bearer token to every call.
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

type Channel = InterceptedService<tonic::transport::Channel, Bearer>;
use tonic::{Status, Streaming};

/// Sends requests that are already protobuf-encoded, as they are; decodes the acks.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;

struct AckDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = pb::Ack;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        prost::bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for AckDecoder {
    type Item = pb::Ack;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<pb::Ack>, Status> {
        pb::Ack::decode(src).map(Some).map_err(|e| Status::internal(format!("ack: {e}")))
    }
}

/// Opens one of the ingest streams (`path`, e.g. `/modelwatch.v1.Ingest/StreamEvents`) that
/// sends encoded batches from `rx`.
async fn open_stream(
    channel: Channel,
    path: &'static str,
    rx: ReceiverStream<Bytes>,
) -> Result<Streaming<pb::Ack>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("channel not ready: {}", tonic::codegen::StdError::from(e))))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    Ok(grpc.streaming(tonic::Request::new(rx), path, RawCodec).await?.into_inner())
}

pub(crate) fn run(shared: Arc<Shared>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            // Without a runtime nothing is sent; the service carries on and items are dropped
            // at the queue bound.
            eprintln!("modelwatch-client: cannot start its runtime: {e}");
            return;
        }
    };
    // Unique per process start, so a restarted service (same pid in a container) never
    // collides with the sequences its previous incarnation left in the daemon, and per client
    // in the process: two clients of one service started in the same millisecond would
    // otherwise share the id, and the second one's batches be acked as duplicates, unstored.
    static CLIENT_NUMBERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CLIENT_NUMBERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let c = &shared.cfg;
    let client_id = format!("{}/{}/{}/{}/{}.{n}", c.service, c.instance, c.host, c.pid, now_ms());
    rt.block_on(async {
        tokio::join!(
            lane::<Metrics>(&shared, &client_id),
            lane::<Logs>(&shared, &client_id),
            lane::<Events>(&shared, &client_id)
        );
    });
}

trait Kind {
    type Item;
    type Batch: Message;
    /// The stream's gRPC method.
    const PATH: &'static str;
    fn queue(s: &Shared) -> &Queue<Self::Item>;
    fn build(items: Vec<Self::Item>, client_id: &str, seq: u64, service: &str) -> Self::Batch;
    fn last_seq(r: &pb::RegisterResponse) -> u64;
}

struct Metrics;
struct Logs;
struct Events;

impl Kind for Metrics {
    type Item = Sample;
    type Batch = pb::MetricBatch;
    const PATH: &'static str = "/modelwatch.v1.Ingest/StreamMetrics";
    fn queue(s: &Shared) -> &Queue<Sample> {
        &s.metrics
    }
    fn build(items: Vec<Sample>, client_id: &str, seq: u64, service: &str) -> pb::MetricBatch {
        // Group samples by series: labels once, packed timestamps and values.
        let mut index: HashMap<(String, Vec<(String, String)>), usize> = HashMap::new();
        let mut series: Vec<pb::Series> = Vec::new();
        for s in items {
            let kind = s.kind as i32;
            let i = *index.entry((s.name, s.labels)).or_insert_with_key(|(name, labels)| {
                series.push(pb::Series {
                    name: name.clone(),
                    labels: labels.iter().map(|(k, v)| pb::Label { name: k.clone(), value: v.clone() }).collect(),
                    kind,
                    ..Default::default()
                });
                series.len() - 1
            });
            series[i].timestamps_ms.push(s.ts);
            series[i].values.push(s.value);
        }
        // The daemon wants each series in time order with distinct timestamps; threads can
        // enqueue a few microseconds out of order, and a second sample in the same millisecond
        // replaces the first.
        for ser in series.iter_mut() {
            if ser.timestamps_ms.windows(2).all(|w| w[0] < w[1]) {
                continue;
            }
            let mut pairs: Vec<(i64, f64)> =
                ser.timestamps_ms.iter().copied().zip(ser.values.iter().copied()).collect();
            pairs.sort_by_key(|p| p.0);
            let mut out: Vec<(i64, f64)> = Vec::with_capacity(pairs.len());
            for p in pairs {
                match out.last_mut() {
                    Some(last) if last.0 == p.0 => *last = p,
                    _ => out.push(p),
                }
            }
            ser.timestamps_ms = out.iter().map(|p| p.0).collect();
            ser.values = out.iter().map(|p| p.1).collect();
        }
        pb::MetricBatch { client_id: client_id.into(), seq, service: service.into(), series, backfill: false }
    }
    fn last_seq(r: &pb::RegisterResponse) -> u64 {
        r.last_metrics_seq
    }
}

impl Kind for Logs {
    type Item = pb::LogRecord;
    type Batch = pb::LogBatch;
    const PATH: &'static str = "/modelwatch.v1.Ingest/StreamLogs";
    fn queue(s: &Shared) -> &Queue<pb::LogRecord> {
        &s.logs
    }
    fn build(records: Vec<pb::LogRecord>, client_id: &str, seq: u64, service: &str) -> pb::LogBatch {
        pb::LogBatch { client_id: client_id.into(), seq, service: service.into(), records, backfill: false }
    }
    fn last_seq(r: &pb::RegisterResponse) -> u64 {
        r.last_logs_seq
    }
}

impl Kind for Events {
    type Item = pb::InferenceEvent;
    type Batch = pb::EventBatch;
    const PATH: &'static str = "/modelwatch.v1.Ingest/StreamEvents";
    fn queue(s: &Shared) -> &Queue<pb::InferenceEvent> {
        &s.events
    }
    fn build(events: Vec<pb::InferenceEvent>, client_id: &str, seq: u64, service: &str) -> pb::EventBatch {
        pb::EventBatch { client_id: client_id.into(), seq, service: service.into(), events, backfill: false }
    }
    fn last_seq(r: &pb::RegisterResponse) -> u64 {
        r.last_events_seq
    }
}

struct InFlight {
    seq: u64,
    /// The batch, encoded.
    batch: Bytes,
    items: u64,
}

/// Sleeps `d`, waking early when the client closes; returns whether it is closing.
async fn pause(shared: &Shared, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if shared.closing.load(Ordering::Relaxed) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20).min(until - Instant::now())).await;
    }
    shared.closing.load(Ordering::Relaxed)
}

/// Connects and registers: the channel (with the token) for the stream, and what the daemon
/// already holds of this client.
async fn connect(shared: &Shared, client_id: &str) -> Result<(Channel, pb::RegisterResponse), String> {
    let cfg = &shared.cfg;
    let mut ep =
        Endpoint::from_shared(cfg.endpoint.clone()).map_err(|e| e.to_string())?.connect_timeout(Duration::from_secs(2));
    if cfg.endpoint.starts_with("https://") {
        let mut tls = match &cfg.ca_pem {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        if let Some((cert, key)) = &cfg.client_identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        ep = ep.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let token = match &cfg.token {
        Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| "token: not a valid header value".to_string())?),
        None => None,
    };
    let channel = InterceptedService::new(ep.connect().await.map_err(|e| e.to_string())?, Bearer(token));
    let mut c = IngestClient::new(channel.clone());
    let reg = pb::RegisterRequest {
        service: cfg.service.clone(),
        instance: cfg.instance.clone(),
        host: cfg.host.clone(),
        pid: cfg.pid,
        models: cfg.models.iter().map(|(n, v)| pb::ModelRef { name: n.clone(), version: v.clone() }).collect(),
        client_id: client_id.to_string(),
        labels: Default::default(),
    };
    let resp = c.register(reg).await.map_err(|e| e.to_string())?.into_inner();
    *shared.client_id.lock().unwrap_or_else(|p| p.into_inner()) = resp.client_id.clone();
    Ok((channel, resp))
}

async fn lane<K: Kind>(shared: &Shared, client_id: &str) {
    let cfg = &shared.cfg;
    let c = &shared.counters;
    let queue = K::queue(shared);
    let mut window: VecDeque<InFlight> = VecDeque::new();
    let mut next_seq = 1u64;
    let mut backoff = Duration::from_millis(50);
    loop {
        if shared.closing.load(Ordering::Relaxed) {
            return;
        }
        let (channel, reg) = match connect(shared, client_id).await {
            Ok(x) => x,
            Err(_) => {
                if pause(shared, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(cfg.max_backoff);
                continue;
            }
        };
        // What the daemon already holds needs no resend.
        let last = K::last_seq(&reg);
        while window.front().is_some_and(|f| f.seq <= last) {
            let f = window.pop_front().expect("checked");
            c.acked.fetch_add(f.items, Ordering::Relaxed);
        }
        next_seq = next_seq.max(last + 1);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(cfg.window + 1);
        let mut acks = match open_stream(channel, K::PATH, ReceiverStream::new(rx)).await {
            Ok(a) => a,
            Err(_) => {
                if pause(shared, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(cfg.max_backoff);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let mut broken = false;
        for f in &window {
            c.retried.fetch_add(f.items, Ordering::Relaxed);
            if tx.send(f.batch.clone()).await.is_err() {
                broken = true;
                break;
            }
        }
        let mut last_cut = Instant::now();
        while !broken {
            // Cut batches while the window has room: a full batch at once, a partial one after
            // the linger time or on flush.
            while window.len() < cfg.window {
                let queued = queue.len();
                let due = queued >= cfg.batch_size
                    || (queued > 0 && (shared.flushing.load(Ordering::Relaxed) || last_cut.elapsed() >= cfg.linger));
                if !due {
                    break;
                }
                let items = queue.take(cfg.batch_size);
                let n = items.len() as u64;
                let batch = Bytes::from(K::build(items, client_id, next_seq, &cfg.service).encode_to_vec());
                window.push_back(InFlight { seq: next_seq, batch: batch.clone(), items: n });
                next_seq += 1;
                last_cut = Instant::now();
                c.sent.fetch_add(n, Ordering::Relaxed);
                if tx.send(batch).await.is_err() {
                    broken = true;
                    break;
                }
            }
            if broken {
                break;
            }
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(a)) => {
                        if let Some(pos) = window.iter().position(|f| f.seq == a.seq) {
                            let f = window.remove(pos).expect("position is valid");
                            c.acked.fetch_add(f.items, Ordering::Relaxed);
                            c.rejected.fetch_add(a.rejected_count, Ordering::Relaxed);
                        }
                    }
                    // The daemon went away or refused the stream: reconnect, resend.
                    _ => broken = true,
                },
                _ = queue.wake.notified() => {}
                _ = tokio::time::sleep(cfg.linger.min(Duration::from_millis(50))) => {}
            }
            if shared.closing.load(Ordering::Relaxed) {
                return;
            }
        }
        if pause(shared, backoff).await {
            return;
        }
    }
}
